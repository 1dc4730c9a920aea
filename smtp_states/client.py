"""Client: msa's side of an SMTP connection to the local MTA, sans-IO
(SPEC.md S-806 to S-809; DESIGN.md "The message pipeline and the hand-offs").

The server role (`connection.py`) and this client role share the package,
as h11 holds both roles of HTTP. Bytes from the MTA go in through
`receive` (b"" when it closed), commands come out of `data_to_send`, and the
events returned say what happened. The shell owns the socket, the clock and
the spool file: on `SendBody` it streams the message through `stuff()` (dot-
stuffing at C speed, S-303) straight to the socket, then calls `end_body()`.

One transaction at a time: `start(Outgoing)` in READY sends XFORWARD (when
offered), MAIL and every RCPT (pipelined when offered), then DATA only once
every recipient was accepted: never DATA after a refused RCPT (S-807), so a
message reaches the MTA for all its recipients or for none. After a refusal
of MAIL, a RCPT, DATA or the final dot the shell calls `reset()` (RSET) or,
on a connection it will not use again, `quit()` (S-807).

Any bytes from the MTA give a defined outcome: a reply the MTA may send
there, or `Lost` (a protocol violation is a lost connection at that stage,
S-808); nothing here raises for the MTA's faults, and every buffer is
bounded. A violation is a reply that answers nothing (one more after the
EHLO reply, a doubled 354), a reply of the wrong class for its command (RFC
5321 §4.2.1, §4.3.2: 3yz to anything but DATA, 2yz to DATA), a malformed
line or EHLO reply, or bytes while the MTA should wait (`check_silence`).

One batch of events may hold a go-ahead and then its end (`Ready` or
`SendBody`, then `Lost`): the shell reads the whole batch, and the terminal
event (Delivered, Rejected, Unavailable, Lost, Closed) decides.
"""

from __future__ import annotations

import re
from collections import deque
from dataclasses import dataclass
from enum import Enum

from . import replies as R
from .limits import MAX_CLIENT_COMMAND, MAX_MTA_REPLY_LINE, MAX_MTA_REPLY_LINES
from .replies import Reply

_CODE = re.compile(rb"[2-5][0-9][0-9]")
_ENHANCED = re.compile(r"([245])\.(\d{1,3})\.(\d{1,3})(?:\s|\Z)")
_XCHAR = frozenset(range(0x21, 0x7F)) - {ord("+"), ord("=")}
_PLAIN_XTEXT = re.compile(r"[!-*,-<>-~]*\Z")
_EHLO_KEYWORD = re.compile(r"[A-Za-z0-9][A-Za-z0-9-]*\Z")  # RFC 5321 §4.1.1.1, ASCII only
_SPACES = re.compile(r"[ \t]+")
_SIZE_VALUE = re.compile(r"[0-9]{1,20}\Z")  # RFC 1870 §4: size-value ::= 1*20DIGIT, ASCII digits


class ClientState(Enum):
    GREETING = "greeting"  #: connected, waiting for 220
    EHLO = "ehlo"  #: EHLO (or HELO) sent
    READY = "ready"  #: greeted, no transaction
    ENVELOPE = "envelope"  #: XFORWARD, MAIL, RCPT sent or being answered
    DATA = "data"  #: DATA sent, waiting for 354
    BODY = "body"  #: 354 received: the shell streams the message
    DOT = "dot"  #: the final "." sent, waiting for the MTA's verdict
    REFUSED = "refused"  #: a refusal inside a transaction: RSET or QUIT next
    RSET = "rset"  #: RSET sent
    QUIT = "quit"  #: QUIT sent
    CLOSED = "closed"  #: gone: closed, lost, or broken


@dataclass(frozen=True, slots=True)
class MtaReply:
    code: int
    lines: tuple[str, ...]  # texts after "DDD-" / "DDD "

    @property
    def enhanced(self) -> str:
        """The RFC 3463 code of the first line ("5.1.1"), or ""."""
        m = _ENHANCED.match(self.lines[0]) if self.lines else None
        return ".".join(m.groups()) if m and m.group(1) == str(self.code)[0] else ""

    def __str__(self) -> str:
        text = " ".join(line for line in self.lines if line)
        return f"{self.code} {text}" if text else str(self.code)


@dataclass(frozen=True, slots=True)
class Extensions:
    """What the MTA's EHLO reply offers (an empty set after HELO)."""

    pipelining: bool = False
    size: int | None = None  # SIZE's limit; 0 means "no fixed limit"
    eightbitmime: bool = False
    smtputf8: bool = False
    dsn: bool = False
    xforward: frozenset[str] = frozenset()  # attribute names, upper case

    @classmethod
    def parse(cls, lines: tuple[str, ...]) -> Extensions | str:
        """The extensions of an EHLO reply's lines, or why the reply cannot
        be used. Only ASCII keywords and parameters count (RFC 5321
        §4.1.1.1): str.upper() would make "pıpelınıng" PIPELINING."""
        found: dict[str, list[str]] = {}
        size_words: list[str] = []
        for line in lines[1:]:  # the first line is the MTA's name
            words = _SPACES.split(line.strip(" \t"))
            if _EHLO_KEYWORD.match(words[0]):
                found[words[0].upper()] = [w.upper() for w in words[1:] if w.isascii()]
                if words[0].upper() == "SIZE":
                    size_words = words[1:]
        size = None
        if "SIZE" in found:
            # RFC 1870 §4: no value, or 1 to 20 ASCII digits; none or 0 is
            # no fixed limit. int() also takes "²" and other Unicode digits.
            if not size_words:
                size = 0
            elif len(size_words) == 1 and _SIZE_VALUE.match(size_words[0]):
                size = int(size_words[0])
            else:
                return f"SIZE {' '.join(size_words)!a} in the EHLO reply is not a number (RFC 1870)"
        return cls(
            pipelining="PIPELINING" in found,
            size=size,
            eightbitmime="8BITMIME" in found,
            smtputf8="SMTPUTF8" in found,
            dsn="DSN" in found,
            xforward=frozenset(found.get("XFORWARD", ())),
        )


@dataclass(frozen=True, slots=True)
class Outgoing:
    """One message's envelope, as msa hands it on (S-806, S-809)."""

    sender: str  # without brackets; "" is the null sender
    recipients: tuple[str, ...]
    size: int  # octets of the fixed message as it will be sent, before stuffing
    eightbit: bool = False  # the client gave BODY=8BITMIME
    smtputf8: bool = False  # the client gave SMTPUTF8
    ret: str | None = None  # DSN RET=, checked by the server core
    envid: str | None = None  # DSN ENVID=, xtext as the client sent it
    rcpt_dsn: tuple[tuple[str | None, str | None], ...] = ()  # (NOTIFY, ORCPT) per recipient
    xforward: tuple[tuple[str, str], ...] = ()  # (attribute, value before xtext)


# -- events ------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class Ready:
    """Greeted (or reset): `start` may be called."""

    extensions: Extensions


@dataclass(frozen=True, slots=True)
class SendBody:
    """354: stream the message through `stuff()`, then call `end_body()`."""


@dataclass(frozen=True, slots=True)
class Delivered:
    reply: MtaReply  # the MTA's 250 to the final dot


@dataclass(frozen=True, slots=True)
class Rejected:
    """The MTA refused the message; nothing was delivered (S-807).
    `stage`: "SMTPUTF8" (refused by msa before MAIL), "MAIL", "RCPT",
    "DATA" or "DOT"."""

    stage: str
    reply: MtaReply | None


@dataclass(frozen=True, slots=True)
class Unavailable:
    """No usable greeting or EHLO: the MTA cannot take mail now (S-808)."""

    reply: MtaReply | None
    reason: str


@dataclass(frozen=True, slots=True)
class Lost:
    """The connection is gone or the MTA broke the protocol. `after_dot`:
    the final dot was sent, so the MTA may have the message (RFC 1047);
    `mail_answered`: the MAIL reply had arrived (a reused connection lost
    before that may be replaced, S-808)."""

    reason: str
    after_dot: bool
    mail_answered: bool


@dataclass(frozen=True, slots=True)
class Note:
    """Something for the log that changes nothing (a refused XFORWARD,
    DSN parameters the MTA cannot take)."""

    text: str


@dataclass(frozen=True, slots=True)
class Closed:
    """QUIT answered (or the MTA closed after it)."""


ClientEvent = Ready | SendBody | Delivered | Rejected | Unavailable | Lost | Note | Closed


def xtext(value: str, limit: int | None = None) -> str:
    """RFC 3461 §4 xtext: "+" and "=", controls, space and non-ASCII as +HH
    (of the UTF-8 octets); at most `limit` characters, never cutting a +HH."""
    if _PLAIN_XTEXT.match(value):  # the common case: nothing to encode
        return value if limit is None else value[:limit]
    out = []
    n = 0
    for b in value.encode("utf-8", "surrogateescape"):
        piece = chr(b) if b in _XCHAR else f"+{b:02X}"
        n += len(piece)
        if limit is not None and n > limit:
            break
        out.append(piece)
    return "".join(out)


class _Replies:
    """Reply lines in, whole replies out; bounded (RFC 5321 §4.2)."""

    __slots__ = ("_buf", "_code", "_lines")

    def __init__(self) -> None:
        self._buf = bytearray()
        self._code: bytes | None = None
        self._lines: list[str] = []

    def feed(self, data: bytes) -> tuple[list[MtaReply], str | None]:
        """The whole replies so far and, when the MTA broke the protocol
        after them, why."""
        self._buf += data
        out: list[MtaReply] = []
        while True:
            i = self._buf.find(b"\n")
            if i == -1:
                return out, "reply line too long" if len(self._buf) > MAX_MTA_REPLY_LINE else None
            line = bytes(self._buf[:i])
            del self._buf[: i + 1]
            if line.endswith(b"\r"):
                line = line[:-1]
            if len(line) > MAX_MTA_REPLY_LINE or not _CODE.match(line) or line[3:4] not in (b"", b" ", b"-"):
                return out, "malformed reply line"
            code = line[:3]
            if self._code is not None and code != self._code:
                return out, "reply lines with different codes"
            self._code = code
            self._lines.append(line[4:].decode("utf-8", "backslashreplace"))
            if len(self._lines) > MAX_MTA_REPLY_LINES:
                return out, "reply with too many lines"
            if line[3:4] != b"-":
                out.append(MtaReply(int(code), tuple(self._lines)))
                self._code = None
                self._lines = []

    @property
    def pending(self) -> bool:
        """Part of a reply is buffered: half a line, or lines of a reply
        whose last line has not come."""
        return bool(self._buf) or bool(self._lines)


#: The commands as the log names them: "in reply to DATA" (Postfix's words).
_COMMAND_NAME = {"GREETING": "the greeting", "EHLO": "EHLO", "HELO": "HELO", "XFORWARD": "XFORWARD",
                 "MAIL": "MAIL FROM", "RCPT": "RCPT TO", "DATA": "DATA", "DOT": "end of DATA", "RSET": "RSET",
                 "QUIT": "QUIT"}


class Client:
    """One SMTP connection to the MTA, from the greeting to QUIT; made
    once the TCP connection is up."""

    def __init__(self, hostname: str) -> None:
        self.hostname = hostname
        self.state = ClientState.GREETING
        self.extensions: Extensions | None = None
        self.messages = 0  # transactions started on this connection
        self._replies = _Replies()
        self._out = bytearray()
        self._expect: deque[str] = deque(["GREETING"])  # kinds of the replies awaited, in order
        self._queue: deque[tuple[str, bytes]] = deque()  # commands not yet sent (no PIPELINING)
        self._failure: tuple[str, MtaReply] | None = None
        self._mail_answered = False
        self._tail = b"\r\n"  # the last two octets of the message sent so far

    # -- the shell's side -----------------------------------------------------------
    def data_to_send(self) -> bytes:
        out = bytes(self._out)
        self._out.clear()
        return out

    @property
    def reusable(self) -> bool:
        """READY with nothing from the MTA buffered, so a next message may
        use this connection."""
        return self.state is ClientState.READY and not self._replies.pending

    def check_silence(self) -> list[ClientEvent]:
        """The shell is about to act on the MTA's silence (stream the
        message after 354; `start` asks too): bytes the MTA sent while no
        reply was awaited, even half a line, break the protocol (S-808), and
        nothing more is sent. [] when all is quiet or a reply is awaited."""
        if self.state is ClientState.CLOSED or self._expect or not self._replies.pending:
            return []
        return self._lost("protocol error: data while the MTA should wait")

    def lost(self, reason: str) -> Lost:
        """The shell lost the connection (a timeout, a reset): give it up,
        and say where the transaction stood (S-808)."""
        return self._lost(reason)[0]  # type: ignore[return-value]

    def receive(self, data: bytes) -> list[ClientEvent]:
        if self.state is ClientState.CLOSED:
            return []
        if not data:
            if self.state is ClientState.QUIT:
                return self._gone(Closed())
            return self._lost("connection closed by the MTA")
        replies, broken = self._replies.feed(data)
        events: list[ClientEvent] = []
        for reply in replies:
            if self.state is ClientState.CLOSED:
                return events
            if not self._expect:
                return events + self._lost(f"protocol error: a reply nobody asked for: {reply}")
            events += self._answer(self._expect.popleft(), reply)
        if broken is not None and self.state is not ClientState.CLOSED:
            events += self._lost(f"protocol error: {broken}")
        return events

    def start(self, out: Outgoing) -> list[ClientEvent]:
        """Begin a transaction (READY only). [Lost] without a word sent
        when the MTA said something meanwhile (`check_silence`)."""
        assert self.state is ClientState.READY and self.extensions is not None
        ext = self.extensions
        self._mail_answered = False  # this transaction's MAIL, not the last one's
        if broken := self.check_silence():
            return broken
        if out.smtputf8 and not ext.smtputf8:
            # RFC 6531 §3.2: nothing is sent beyond EHLO (S-807).
            return [Rejected("SMTPUTF8", None)]
        self.messages += 1
        self.state = ClientState.ENVELOPE
        self._failure = None
        self._tail = b"\r\n"
        events: list[ClientEvent] = []
        for line in self._xforward_lines(out.xforward):
            self._command("XFORWARD", line)
        dsn = bool(out.ret or out.envid or any(n or o for n, o in out.rcpt_dsn))
        if dsn and not ext.dsn:
            events.append(Note("the MTA does not offer DSN: RET, ENVID, NOTIFY and ORCPT were dropped"))
        mail = f"MAIL FROM:<{out.sender}>"
        if ext.size is not None:
            mail += f" SIZE={out.size}"
        if out.eightbit and ext.eightbitmime:
            mail += " BODY=8BITMIME"
        if out.smtputf8:
            mail += " SMTPUTF8"
        if ext.dsn:
            mail += f" RET={out.ret}" if out.ret else ""
            mail += f" ENVID={out.envid}" if out.envid else ""
        self._command("MAIL", mail)
        for i, rcpt in enumerate(out.recipients):
            line = f"RCPT TO:<{rcpt}>"
            notify, orcpt = out.rcpt_dsn[i] if i < len(out.rcpt_dsn) else (None, None)
            if ext.dsn:
                line += f" NOTIFY={notify}" if notify else ""
                line += f" ORCPT={orcpt}" if orcpt else ""
            self._command("RCPT", line)
        self._flush_queue()
        return events

    def stuff(self, data: bytes) -> bytes:
        """RFC 5321 §4.5.2 for the next piece of the message (BODY only): a
        "." starting a line gets another. C-speed; pieces split anywhere."""
        assert self.state is ClientState.BODY
        if not data:
            return b""
        out = data.replace(b"\r\n.", b"\r\n..") if data.find(b"\r\n.") != -1 else data
        tail = self._tail
        if tail == b"\r\n" and data[:1] == b".":
            out = b"." + out  # a line starting right after the previous piece
        elif tail[-1:] == b"\r" and data[:2] == b"\n.":
            out = b"\n." + out[1:]  # CRLF split between the pieces
        self._tail = (tail + data)[-2:] if len(data) < 2 else data[-2:]
        return out

    def end_body(self) -> None:
        """The final "." (after a CRLF the message would lack)."""
        assert self.state is ClientState.BODY
        self._out += (b"" if self._tail == b"\r\n" else b"\r\n") + b".\r\n"
        self._expect.append("DOT")
        self.state = ClientState.DOT

    def reset(self) -> None:
        """RSET after a refusal inside a transaction (S-807)."""
        assert self.state is ClientState.REFUSED
        self.state = ClientState.RSET
        self._command("RSET", "RSET")
        self._flush_queue()

    def quit(self) -> None:
        """QUIT; on a connection that will not be reused."""
        if self.state in (ClientState.CLOSED, ClientState.QUIT):
            return
        if self.state not in (ClientState.READY, ClientState.REFUSED):
            self.state = ClientState.CLOSED  # mid-exchange: just close
            return
        self.state = ClientState.QUIT
        self._command("QUIT", "QUIT")
        self._flush_queue()

    # -- replies ----------------------------------------------------------------------
    def _answer(self, kind: str, reply: MtaReply) -> list[ClientEvent]:
        if kind == "QUIT":
            return self._gone(Closed())  # whatever it says: msa is leaving
        # RFC 5321 §4.2.1: the first digit says what a reply means. 3yz
        # ("send more") answers only DATA, and DATA only 3yz or a refusal
        # (§4.3.2). Anything else means the MTA and msa disagree on where
        # they are: no refusal to log and go on after, but a broken
        # connection at this stage (S-808), never used again.
        positive = 3 if kind == "DATA" else 2
        if reply.code // 100 not in (positive, 4, 5):
            return self._lost(f"protocol error: {reply} in reply to {_COMMAND_NAME[kind]}")
        ok = reply.code // 100 == positive
        if kind == "GREETING":
            if not ok:
                return self._gone(Unavailable(reply, "greeting refused"))
            self.state = ClientState.EHLO
            self._command("EHLO", f"EHLO {self.hostname}")
            self._flush_queue()
            return []
        if kind in ("EHLO", "HELO"):
            if ok:
                ext = Extensions.parse(reply.lines) if kind == "EHLO" else Extensions()
                if isinstance(ext, str):  # a malformed EHLO reply (RFC 1870 SIZE)
                    return self._lost(f"protocol error: {ext}")
                self.extensions = ext
                self.state = ClientState.READY
                return [Ready(ext)]
            if kind == "EHLO" and reply.code != 421:
                self._command("HELO", f"HELO {self.hostname}")  # RFC 5321 §3.2
                self._flush_queue()
                return []
            return self._gone(Unavailable(reply, f"{kind} refused"))
        if reply.code == 421:
            # The MTA is closing: a refusal of this message (S-807), and no
            # further use of the connection.
            if kind == "DOT" or self.state in (ClientState.ENVELOPE, ClientState.DATA):
                return self._gone(Rejected(kind, reply))
            return self._lost(f"MTA closing: {reply}")
        if kind == "XFORWARD":
            events: list[ClientEvent] = [] if ok else [Note(f"XFORWARD refused: {reply}")]
            return events + self._after_envelope_reply()
        if kind in ("MAIL", "RCPT"):
            if kind == "MAIL":
                self._mail_answered = True
            if not ok and self._failure is None:
                self._failure = (kind, reply)
                self._queue.clear()  # no PIPELINING: the rest is never sent
            return self._after_envelope_reply()
        if kind == "DATA":
            if ok:  # 354
                self.state = ClientState.BODY
                return [SendBody()]
            self.state = ClientState.REFUSED
            return [Rejected("DATA", reply)]
        if kind == "DOT":
            if ok:
                self.state = ClientState.READY
                return [Delivered(reply)]
            self.state = ClientState.REFUSED  # S-807: RSET after a refused dot too
            return [Rejected("DOT", reply)]
        if kind == "RSET":
            if not ok:
                return self._lost(f"RSET refused: {reply}")
            self.state = ClientState.READY
            assert self.extensions is not None
            return [Ready(self.extensions)]
        return self._lost(f"reply to nothing sent: {reply}")  # pragma: no cover

    def _after_envelope_reply(self) -> list[ClientEvent]:
        if self._expect or self._queue:
            self._flush_queue()
            return []
        if self._failure is not None:  # every reply of the envelope is in
            stage, reply = self._failure
            # S-807: RSET (or QUIT) next, after a refused MAIL too: RFC 5321
            # leaves no transaction open then, but an MTA that took a
            # pipelined RCPT as one, or counts the refusal, starts clean.
            self.state = ClientState.REFUSED
            return [Rejected(stage, reply)]
        self.state = ClientState.DATA
        self._command("DATA", "DATA")
        self._flush_queue()
        return []

    # -- sending ------------------------------------------------------------------
    def _command(self, kind: str, line: str) -> None:
        data = line.encode("utf-8", "surrogateescape") + b"\r\n"
        self._queue.append((kind, data))

    def _flush_queue(self) -> None:
        """Send what may go now: everything with PIPELINING (RFC 2920),
        else one command per reply."""
        pipelining = self.extensions is not None and self.extensions.pipelining
        while self._queue and (pipelining or not self._expect):
            kind, data = self._queue.popleft()
            self._out += data
            self._expect.append(kind)

    def _xforward_lines(self, attributes: tuple[tuple[str, str], ...]) -> list[str]:
        """XFORWARD commands for the attributes the MTA offers, each value
        xtext and at most 255 characters, each line within 512 octets
        (Postfix's XFORWARD_README, notes 1 and 2)."""
        offered = self.extensions.xforward if self.extensions else frozenset()
        lines: list[str] = []
        line = "XFORWARD"
        for name, value in attributes:
            if name.upper() not in offered:
                continue
            word = f" {name.upper()}={xtext(value, 255)}"
            if len(line) + len(word) + 2 > MAX_CLIENT_COMMAND and line != "XFORWARD":
                lines.append(line)
                line = "XFORWARD"
            line += word
        if line != "XFORWARD":
            lines.append(line)
        return lines

    # -- endings ------------------------------------------------------------------
    def _lost(self, reason: str) -> list[ClientEvent]:
        after_dot = self.state is ClientState.DOT
        return self._gone(Lost(reason, after_dot, self._mail_answered))

    def _gone(self, event: ClientEvent) -> list[ClientEvent]:
        self.state = ClientState.CLOSED
        self._expect.clear()
        self._queue.clear()
        self._out.clear()  # a command queued earlier in the batch is never sent
        return [event]


#: S-807: the MTA's permanent refusals whose enhanced code msa passes on.
_PASSED_ON = ("5.1.", "5.6.", "5.7.")


def client_reply(outcome: Rejected | Unavailable | Lost | None) -> Reply:
    """What msa answers its own client's final dot for a hand-off that did
    not deliver (S-807, S-808); the MTA's text is logged, never sent."""
    if isinstance(outcome, Rejected):
        if outcome.stage == "SMTPUTF8":
            return R.SMTPUTF8_UNSUPPORTED  # RFC 6531 §3.2
        reply = outcome.reply
        if reply is not None and reply.code >= 500:
            enhanced = reply.enhanced
            return R.mta_rejected(enhanced if enhanced.startswith(_PASSED_ON) else "5.3.0")
        return R.HANDOFF_TEMPFAIL
    if isinstance(outcome, Lost) and outcome.after_dot:
        return R.MTA_LOST_AFTER_DOT  # the MTA may have it (RFC 1047)
    return R.MTA_UNAVAILABLE
