"""Connection: one SMTP server session, sans-IO (SPEC.md §1-§5).

Owns the input buffer, dispatch of command lines, the envelope, and the
pauses at decisions the core cannot make alone (TLS, credentials, hand-off).
It imports nothing that does I/O: bytes go in through `receive`, replies
come out of `data_to_send`, and the shell acts on the events returned.
Whether a command may run in a state is decided in `states.py` only.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol
from collections.abc import Callable

from . import commands as C
from .auth import AuthExchange
from . import replies as R
from .data import DataDecoder, DataError
from .events import (
    Close,
    DataChunk,
    DataEnd,
    DataStart,
    Ehlo,
    Envelope,
    Event,
    MailFrom,
    RcptTo,
    Refused,
    Reset,
    StartTls,
)
from .limits import (
    MAX_AUTH_LINE,
    MAX_COMMAND_LINE,
    MAX_ERRORS,
    MAX_JUNK_COMMANDS,
    MAX_MESSAGES,
    MAX_PENDING_INPUT,
)
from .replies import Reply
from .states import ANY_STATE, JUNK, NOT_IMPLEMENTED, State, refusal


class Policy(Protocol):
    """Sender policy and sending limits, supplied by the shell (S-601,
    S-603, S-1201). Called synchronously; the shell answers from memory
    or its state store and fails open.

    The limits are reservations (S-1201 amended): ``reserve_message`` at
    MAIL and ``reserve_recipient`` at each new RCPT check and count in one
    step, False when the limit is reached. The shell gives them back when
    the transaction ends without an accepted message (the Reset, Close and
    DataEnd events tell it when)."""

    def may_send_as(self, user: str, address: str) -> bool: ...

    def reserve_message(self, user: str) -> bool: ...

    def reserve_recipient(self, user: str) -> bool: ...


@dataclass(frozen=True, slots=True)
class Settings:
    hostname: str
    max_message_size: int = 26214400
    max_recipients: int = 100
    starttls: bool = False  # a certificate is configured (S-202)
    require_tls_for_auth: bool = True
    auth_mechanisms: tuple[str, ...] = ()  # what may be offered now
    new_mechanism: Callable[[str], Any] | None = None  # sasl.new_mechanism bound
    auth_failures: int = 3
    dsn: bool = False  # offer DSN (S-202, S-809: only with the SMTP hand-off)


_DATA_ERRORS = {
    DataError.TOO_BIG: R.SIZE_EXCEEDED,
    DataError.BARE_CR: R.BARE_CR,
    DataError.NUL: R.NUL_IN_DATA,
}


class _Transaction:
    """The envelope being built (OpenSMTPD's smtp_tx); cleared by RSET,
    EHLO/HELO, STARTTLS and after each message (S-203)."""

    __slots__ = ("sender", "params", "recipients", "rcpt_dsn", "keys")

    def __init__(self, sender: str, params: C.MailParams) -> None:
        self.sender = sender
        self.params = params
        self.recipients: list[str] = []
        self.rcpt_dsn: list[tuple[str | None, str | None]] = []
        self.keys: set[str] = set()

    @property
    def smtputf8(self) -> bool:
        return self.params.smtputf8

    def envelope(self) -> Envelope:
        p = self.params
        dsn = tuple(self.rcpt_dsn) if any(n or o for n, o in self.rcpt_dsn) else ()
        return Envelope(self.sender, tuple(self.recipients), p.size, p.body, p.smtputf8, p.ret, p.envid, dsn)


class Connection(AuthExchange):
    def __init__(self, settings: Settings, policy: Policy, *, tls: bool, trusted: bool) -> None:
        self.settings = settings
        self.policy = policy
        self.tls = tls
        self.trusted = trusted
        self.state = State.FRESH
        self.helo: str | None = None
        self.esmtp: bool | None = None  # None until EHLO/HELO
        self.user: str | None = None
        self.counts: dict[str, int] = {}
        self._tx: _Transaction | None = None
        self._in = bytearray()
        self._out = bytearray()
        self._paused: type | None = None
        self._discarding = False  # inside an over-long line (S-102)
        self._first = True
        self._errors = 0
        self._junk = 0  # NOOP, RSET, VRFY, HELP so far (S-106)
        self._skip = 0  # octets of a refused BDAT chunk still to drop (S-203)
        self._auth_failures = 0
        self._mails = 0
        self._mech: Any = None
        self._mech_name = ""
        self._decoder: DataDecoder | None = None

    # -- the shell's side -------------------------------------------------------
    def start(self) -> None:
        self._send(R.greeting(self.settings.hostname))

    def data_to_send(self) -> bytes:
        out = bytes(self._out)
        self._out.clear()
        return out

    @property
    def closed(self) -> bool:
        return self.state is State.CLOSED

    @property
    def in_data(self) -> bool:
        """Receiving the message (the shell's timeout is then per chunk, S-308)."""
        return self.state is State.DATA

    @property
    def in_transaction(self) -> bool:
        return self._tx is not None or self._paused is not None

    def wants_input(self) -> bool:
        """False once the held pipelined input reaches its bound (S-105)."""
        return not self.closed and (self._paused is None or len(self._in) < MAX_PENDING_INPUT)

    def receive(self, data: bytes) -> list[Event]:
        """Feed bytes from the client; b"" means the client closed."""
        if self.closed:
            return []
        if not data:
            self.state = State.CLOSED
            return [Close("lost")]
        if self._paused is StartTls:
            return []  # S-401: nothing sent before the handshake is a command
        if self._paused is not None:
            self._in += data
            return []
        if self.state is State.DATA and not self._in:
            return self._run(data)
        self._in += data
        return self._run(None)

    def tls_started(self) -> list[Event]:
        """RFC 3207 §4.2: forget everything learnt before the handshake (S-402)."""
        self.tls = True
        self.state = State.FRESH
        self.helo = None
        self.esmtp = None
        self.user = None
        self._tx = None
        self._paused = None
        return self._run(None)

    def delivery_done(self, reply: Reply) -> list[Event]:
        """Answer a DataEnd with the final reply (S-309, S-803)."""
        self._paused = None
        self._send(reply)
        self._tx = None
        self.state = State.GREETED
        if reply.code == 250:
            self._junk = 0  # S-106: as Postfix, counted again after a delivery
        return self._run(None)

    def abort(self, reply: Reply, reason: str = "aborted") -> list[Event]:
        """Timeout or shutdown: send `reply` and close (S-108, S-110)."""
        if self.closed:
            return []
        return self._close(reply, reason)

    # -- the loop ----------------------------------------------------------------
    def _run(self, direct: bytes | None) -> list[Event]:
        events: list[Event] = []
        while not self.closed and self._paused is None:
            if self._skip:
                if not self._drop_bdat_chunk(events):
                    break
                continue
            if self.state is State.DATA:
                if direct is not None:
                    chunk, direct = direct, None
                elif self._in:
                    chunk = bytes(self._in)
                    self._in.clear()
                else:
                    break
                self._data(chunk, events)
                continue
            line = self._next_line(events)
            if line is None:
                if self.closed or self._discarding or b"\n" not in self._in:
                    break
                continue
            if self.state is State.AUTH:
                self._auth_response(line, events)
            else:
                self._command(line, events)
        return events

    def _limit(self) -> int:
        if self.state is State.AUTH or self._in[:5].upper() == b"AUTH ":
            return MAX_AUTH_LINE
        return MAX_COMMAND_LINE

    def _next_line(self, events: list[Event]) -> bytes | None:
        """One line, or None. Over-long lines are dropped as they arrive and
        answered once their end is seen (S-102, S-504)."""
        buf = self._in
        i = buf.find(b"\n")
        if i == -1:
            if self._discarding:
                buf.clear()
            elif len(buf) >= MAX_COMMAND_LINE and len(buf) >= self._limit():
                self._discarding = True
                buf.clear()
            return None
        # The limit depends on the line's start, so it is looked at before
        # the line leaves the buffer; no line of the common length passes it.
        too_long = i + 1 > MAX_COMMAND_LINE and i + 1 > self._limit()
        line = bytes(buf[: i + 1])
        del buf[: i + 1]
        if self._discarding or too_long:
            self._discarding = False
            if self.state is State.AUTH:
                self._end_auth()
                self._reply(R.AUTH_LINE_TOO_LONG, events, "AUTH")
            else:
                self._first = False
                self._reply(R.LINE_TOO_LONG, events, "?")
            return None
        return line

    def _send(self, reply: Reply) -> None:
        self._out += reply.to_bytes()

    def _reply(self, reply: Reply, events: list[Event], verb: str, arg: str | bytes = "") -> None:
        """Send a reply to a command; refusals become events and errors count.
        `arg`: the address for the log, or the raw argument to find it in."""
        self._send(reply)
        if reply.code >= 400:
            sender = self._tx.sender if self._tx is not None else None
            shown = _address_shown(verb, arg) if isinstance(arg, bytes) else arg
            events.append(Refused(verb, reply, shown, sender))
        if reply.is_error:
            self._count_error(events)

    def _count_error(self, events: list[Event]) -> None:
        self._errors += 1
        if self._errors >= MAX_ERRORS and not self.closed:  # S-106
            events.extend(self._close(R.too_many_errors(self.settings.hostname), "too many errors"))

    def _close(self, reply: Reply, reason: str) -> list[Event]:
        self._send(reply)
        self.state = State.CLOSED
        self._tx = None
        self._decoder = None
        return [Close(reason, reply)]

    def _reset(self, events: list[Event], reason: str) -> None:
        if self._tx is not None:
            events.append(Reset(reason))
            self._tx = None
        if self.state in (State.MAIL, State.RCPT):
            self.state = State.GREETED

    # -- commands ------------------------------------------------------------------
    def _command(self, line: bytes, events: list[Event]) -> None:
        text = C.split_line(line)
        first, self._first = self._first, False
        if first and C.is_http(text):
            events.extend(self._close(R.not_smtp(self.settings.hostname), "not SMTP"))
            return
        verb, arg = C.verb_and_argument(text)
        key = verb.lower() if verb in _HANDLERS or verb in NOT_IMPLEMENTED else "unknown"
        self.counts[key] = self.counts.get(key, 0) + 1
        self.counts["commands"] = self.counts.get("commands", 0) + 1
        if C.has_bad_character(text) or (
            not text.isascii() if verb not in ("MAIL", "RCPT") else C.eight_bit_outside_path(text)
        ):
            self._reply(R.INVALID_CHARACTER, events, verb, arg)  # S-101, S-103
            return
        handler = _HANDLERS.get(verb)
        if handler is None:
            unknown = R.NOT_IMPLEMENTED if verb in NOT_IMPLEMENTED else R.UNRECOGNIZED
            self._reply(unknown, events, verb)
            return
        if verb not in ANY_STATE:
            refused = refusal(verb, self.state)
            if refused is not None:
                self._reply(refused, events, verb, arg)
                return
        handler(self, arg, events)
        if verb in JUNK:
            self._junk += 1
            if self._junk > MAX_JUNK_COMMANDS:  # S-106: no session lives on NOOPs
                self._count_error(events)

    def _ehlo(self, arg: bytes, events: list[Event], esmtp: bool = True) -> None:
        if not arg:
            self._reply(R.SYNTAX_EHLO if esmtp else R.SYNTAX_HELO, events, "EHLO" if esmtp else "HELO")
            return
        self._reset(events, "EHLO" if esmtp else "HELO")
        name = arg.decode("ascii")
        self.helo = name
        self.esmtp = esmtp
        self.state = State.GREETED
        host = self.settings.hostname
        if not esmtp:
            self._send(R.Reply(250, "", host))
        else:
            s = self.settings
            lines = [host, "PIPELINING", f"SIZE {s.max_message_size}", "8BITMIME", "SMTPUTF8", "ENHANCEDSTATUSCODES"]
            if s.starttls and not self.tls:
                lines.append("STARTTLS")
            if self._auth_offered():
                lines.append("AUTH " + " ".join(s.auth_mechanisms))
            if s.dsn:
                lines.append("DSN")
            self._send(R.Reply(250, "", tuple(lines)))
        events.append(Ehlo(name, esmtp))

    def _helo(self, arg: bytes, events: list[Event]) -> None:
        self._ehlo(arg, events, esmtp=False)

    def _starttls(self, arg: bytes, events: list[Event]) -> None:
        if arg:
            self._reply(R.SYNTAX_NO_ARGS, events, "STARTTLS")
        elif self.tls:
            self._reply(R.TLS_ACTIVE, events, "STARTTLS")
        elif not self.settings.starttls:
            self._reply(R.TLS_UNAVAILABLE, events, "STARTTLS")
        elif self.esmtp is False:
            self._reply(R.SEND_EHLO_FIRST, events, "STARTTLS")
        else:
            self._send(R.TLS_READY)
            discarded = len(self._in)  # S-401: never read as commands
            self._in.clear()
            self._reset(events, "STARTTLS")
            self._paused = StartTls
            events.append(StartTls(discarded))

    def _mail(self, arg: bytes, events: list[Event]) -> None:
        host = self.settings.hostname
        if self._mails >= MAX_MESSAGES:  # S-207
            events.extend(self._close(R.too_many_messages(host), "too many messages"))
            return
        if self.user is None and not self.trusted:
            self._reply(R.AUTH_REQUIRED, events, "MAIL", arg)  # S-204, RFC 4954 §6
            return
        split = C.split_path_and_params(arg, b"FROM:")
        if split is None:
            self._reply(R.SYNTAX_MAIL, events, "MAIL", arg)
            return
        raw, params = split
        if not all(p.isascii() for p in params):
            self._reply(R.INVALID_CHARACTER, events, "MAIL", arg)
            return
        parsed = C.parse_mail_params(params, self.settings.max_message_size, bool(self.esmtp), self.settings.dsn)
        if isinstance(parsed, Reply):
            self._reply(parsed, events, "MAIL", arg)
            return
        path = C.parse_path(raw, null_ok=True, utf8_ok=parsed.smtputf8, bare_ok=self.user is None)
        if isinstance(path, str):
            bad = R.SENDER_NOT_UTF8 if path == "utf8" else R.BAD_SENDER_SYNTAX
            self._reply(bad, events, "MAIL", arg)
            return
        if self.user is not None and path.address:
            if not path.qualified:
                self._reply(R.SENDER_NOT_FQDN, events, "MAIL", path.address)  # RFC 6409 §4.2
                return
            if not self.policy.may_send_as(self.user, path.address):  # S-601
                self._reply(R.sender_not_owned(path.address, self.user), events, "MAIL", path.address)
                return
        if self.user is not None and not self.policy.reserve_message(self.user):  # S-1201, the last check
            self._reply(R.RATE_LIMITED, events, "MAIL", path.address)
            return
        self._mails += 1
        self._tx = _Transaction(path.address, parsed)
        self.state = State.MAIL
        self._send(R.SENDER_OK)
        events.append(MailFrom(path.address, parsed.size, parsed.body, parsed.smtputf8))

    def _rcpt(self, arg: bytes, events: list[Event]) -> None:
        tx = self._tx
        assert tx is not None  # the state table guarantees it
        split = C.split_path_and_params(arg, b"TO:")
        if split is None:
            self._reply(R.SYNTAX_RCPT, events, "RCPT", arg)
            return
        raw, params = split
        dsn = C.parse_rcpt_params(params, self.settings.dsn and bool(self.esmtp)) if params else C.RcptParams()
        if isinstance(dsn, Reply):
            self._reply(dsn, events, "RCPT", arg)  # S-205, S-809
            return
        path = C.parse_path(raw, null_ok=False, utf8_ok=tx.smtputf8, bare_ok=self.user is None and self.trusted)
        if isinstance(path, str):
            bad = R.RECIPIENT_NOT_UTF8 if path == "utf8" else R.BAD_RECIPIENT_SYNTAX
            self._reply(bad, events, "RCPT", arg)
            return
        if self.user is not None and path.domain and not path.qualified:
            self._reply(R.RECIPIENT_NOT_FQDN, events, "RCPT", path.address)
            return
        key = f"{path.local}@{path.domain.lower()}"  # RFC 5321 §2.4
        if key not in tx.keys:
            if len(tx.recipients) >= self.settings.max_recipients:  # S-205
                self._reply(R.TOO_MANY_RECIPIENTS, events, "RCPT", path.address)
                return
            if self.user is not None and not self.policy.reserve_recipient(self.user):  # S-1201, the last check
                self._reply(R.RECIPIENT_LIMIT, events, "RCPT", path.address)
                return
            tx.keys.add(key)
            tx.recipients.append(path.address)
            tx.rcpt_dsn.append((dsn.notify, dsn.orcpt))
            events.append(RcptTo(path.address))
        self.state = State.RCPT
        self._send(R.RECIPIENT_OK)

    def _data_command(self, arg: bytes, events: list[Event]) -> None:
        if arg:
            self._reply(R.SYNTAX_NO_ARGS, events, "DATA")
            return
        self._send(R.START_DATA)
        self.state = State.DATA
        self._decoder = DataDecoder(self.settings.max_message_size)
        assert self._tx is not None
        events.append(DataStart(self._tx.envelope()))

    def _data(self, chunk: bytes, events: list[Event]) -> None:
        decoder = self._decoder
        assert decoder is not None and self._tx is not None
        out, consumed = decoder.feed(chunk)
        if out:
            events.append(DataChunk(out))
        if consumed is None:
            return
        if consumed < len(chunk):
            self._in[:0] = chunk[consumed:]
        self._decoder = None
        if decoder.error is not None:
            self.state = State.GREETED
            self._reset(events, "message refused")
            self._reply(_DATA_ERRORS[decoder.error], events, "DATA")
            return
        self._paused = DataEnd
        events.append(DataEnd(self._tx.envelope(), decoder.size))

    def _rset(self, arg: bytes, events: list[Event]) -> None:
        if arg:
            self._reply(R.SYNTAX_NO_ARGS, events, "RSET")
            return
        self._reset(events, "RSET")
        self._send(R.OK)

    def _noop(self, arg: bytes, events: list[Event]) -> None:
        self._send(R.OK)

    def _help(self, arg: bytes, events: list[Event]) -> None:
        self._send(R.HELP)

    def _vrfy(self, arg: bytes, events: list[Event]) -> None:
        self._send(R.VRFY) if arg else self._reply(R.SYNTAX_VRFY, events, "VRFY")

    def _bdat(self, arg: bytes, events: list[Event]) -> None:
        """S-203: CHUNKING is not offered, but the octets a `BDAT SIZE`
        announces are the client's data, never commands: they are read and
        dropped, then refused. Without a usable SIZE the framing is lost."""
        words = arg.split()
        size = words[0] if words else b""
        if not (size.isdigit() and len(size) <= 20 and int(size) <= self.settings.max_message_size):
            events.extend(self._close(R.bdat_framing_lost(self.settings.hostname), "BDAT framing lost"))
            return
        self._skip = int(size)
        if not self._skip:
            self._reply(R.NOT_IMPLEMENTED, events, "BDAT")

    def _drop_bdat_chunk(self, events: list[Event]) -> bool:
        """Drop what has arrived of a refused BDAT chunk; False when more is needed."""
        n = min(self._skip, len(self._in))
        del self._in[:n]
        self._skip -= n
        if self._skip:
            return False
        self._reply(R.NOT_IMPLEMENTED, events, "BDAT")
        return True

    def _quit(self, arg: bytes, events: list[Event]) -> None:
        events.extend(self._close(R.BYE, "quit"))

    # -- AUTH (RFC 4954, SPEC.md §5) ----------------------------------------------------
def _address_shown(verb: str, arg: bytes) -> str:
    """The address a MAIL or RCPT names, for the log whatever its fate:
    the text inside `<...>` when there is one, else the whole argument,
    as the client sent it (the log escapes it, S-901); "" for other verbs."""
    if verb not in ("MAIL", "RCPT"):
        return ""
    split = C.split_path_and_params(arg, b"FROM:" if verb == "MAIL" else b"TO:")
    raw = split[0][1:-1] if split is not None else arg
    return raw.decode("utf-8", "surrogateescape")


_HANDLERS: dict[str, Callable[[Connection, bytes, list[Event]], None]] = {
    "EHLO": Connection._ehlo,
    "HELO": Connection._helo,
    "STARTTLS": Connection._starttls,
    "AUTH": Connection._auth,
    "MAIL": Connection._mail,
    "RCPT": Connection._rcpt,
    "DATA": Connection._data_command,
    "RSET": Connection._rset,
    "NOOP": Connection._noop,
    "HELP": Connection._help,
    "VRFY": Connection._vrfy,
    "QUIT": Connection._quit,
    "BDAT": Connection._bdat,
}
