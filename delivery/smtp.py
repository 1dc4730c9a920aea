"""The SMTP hand-off: msa as an SMTP client of the local MTA (SPEC.md S-806
to S-809, CONTRACT.md `handoff = smtp:HOST:PORT`).

The protocol is `smtp_states.client` (sans-IO); this module owns the socket,
the deadline and the pool of kept connections. Per message: XFORWARD, MAIL,
every RCPT, DATA, the message's parts dot-stuffed as they stream from the
spool, ".". `250` for the client only after the MTA's `250` to the dot
(S-808); every other outcome is mapped by `client_reply`. The whole exchange
is bounded by `sendmail_timeout`; memory is one chunk of the spool file.

Connections are kept for the next message (S-808): at most MAX_REUSE
messages each, closed when idle for MAX_IDLE seconds, RSET only after a
failed transaction (QUIT instead on a connection's last message, S-807); a
kept connection that fails before the MTA answered MAIL is replaced once by
a new one, since nothing can have been queued.

The MTA breaking the protocol is a lost connection at that stage (S-808):
the client core says so, and this shell reads each batch of its events
whole (a go-ahead followed by the end in one batch is not acted on) and,
before each write of the message, reads what the MTA sent meanwhile: it
must be silent between 354 and the dot, so a reply there ends the
transaction before the dot, and nothing is queued.
"""

from __future__ import annotations

import select
import socket
import threading
import time

from smtp_states.client import (
    Client,
    ClientEvent,
    ClientState,
    Closed,
    Delivered,
    Extensions,
    Lost,
    Note,
    Outgoing,
    Ready,
    Rejected,
    SendBody,
    Unavailable,
    client_reply,
)

from .handoff import HandOff, Outbound
from util.wait import Timeout, wait

#: S-808: a kept connection carries at most this many messages, and is not
#: used again after this many idle seconds (Postfix's smtpd waits 300 s,
#: 10 s under overload; 30 s stays well inside both).
MAX_REUSE = 100
MAX_IDLE = 30.0
#: Idle connections kept at most (the rest are closed with QUIT).
MAX_POOLED = 8
#: Messages up to this size are sent in one write: header, body and dot.
ONE_WRITE = 256 * 1024
#: How long a RSET (after a refusal) or a QUIT may take.
CLEANUP_WAIT = 5.0
#: How long a QUIT may wait for its 221 (the client waits meanwhile).
QUIT_WAIT = 1.0

_RECV = 65536
_DONE = (Delivered, Rejected, Unavailable, Lost, Closed)


class _Connection:
    """One TCP connection to the MTA and its protocol state."""

    __slots__ = ("sock", "client", "relay", "idle_since")

    def __init__(self, sock: socket.socket, client: Client, relay: str) -> None:
        self.sock = sock
        self.client = client
        self.relay = relay
        self.idle_since = time.monotonic()

    def send(self, data: bytes, deadline: float) -> None:
        view = memoryview(data)
        while view:
            try:
                view = view[self.sock.send(view) :]
            except BlockingIOError:
                wait(self.sock.fileno(), select.POLLOUT, deadline)

    def flush(self, deadline: float) -> None:
        data = self.client.data_to_send()
        if data:
            self.send(data, deadline)

    def pump(self, deadline: float, notes: list[str], until: tuple[type, ...] = _DONE) -> ClientEvent:
        """Send what the client queued and read replies until a batch of
        events ends the exchange or holds one in `until` (`_decisive`)."""
        while True:
            self.flush(deadline)
            wait(self.sock.fileno(), select.POLLIN, deadline)
            try:
                data = self.sock.recv(_RECV)
            except BlockingIOError:
                continue
            ev = _decisive(self.client.receive(data), notes, until)
            if ev is not None:
                return ev
            if not data:  # closed, and the client had already given up
                return Closed()

    def quiet(self, notes: list[str]) -> ClientEvent | None:
        """Before acting on the MTA's silence (streaming the message): read
        what already arrived, without waiting, and let the client judge it
        (`check_silence`). The event that ends the exchange, or None."""
        poller = select.poll()
        poller.register(self.sock.fileno(), select.POLLIN)
        while poller.poll(0):
            try:
                data = self.sock.recv(_RECV)
            except BlockingIOError:
                break
            ev = _decisive(self.client.receive(data), notes, ())
            if ev is not None or not data:
                return ev
        return _decisive(self.client.check_silence(), notes, ())

    def alive(self) -> bool:
        """Nothing arrived while idle: no 421, no close (a kept connection)."""
        poller = select.poll()
        poller.register(self.sock.fileno(), select.POLLIN | select.POLLHUP | select.POLLERR)
        return not poller.poll(0)

    def close(self, polite: bool) -> None:
        """Close; `polite`: with QUIT where one may go (idle, or after a
        refusal: S-807), not in the middle of an exchange."""
        if polite:
            self.client.quit()
        if self.client.state is ClientState.QUIT:
            try:
                deadline = time.monotonic() + QUIT_WAIT
                self.flush(deadline)
                self.pump(deadline, [])  # 221
            except OSError:
                pass
        try:
            self.sock.close()
        except OSError:
            pass


class SmtpHandoff:
    """`handoff = smtp:HOST:PORT`, shared by every session of the daemon."""

    def __init__(self, host: str, port: int, hostname: str) -> None:
        self.host = host
        self.port = port
        self.hostname = hostname
        self.relay = f"{host}[{host}]:{port}" if _is_ip(host) else f"{host}:{port}"
        self._idle: list[_Connection] = []
        self._lock = threading.Lock()

    # -- the pool ----------------------------------------------------------------------
    def _take(self) -> _Connection | None:
        while True:
            with self._lock:
                if not self._idle:
                    return None
                conn = self._idle.pop()
            if time.monotonic() - conn.idle_since < MAX_IDLE and conn.alive():
                return conn
            conn.close(polite=False)

    def _give_back(self, conn: _Connection) -> None:
        if not conn.client.reusable or conn.client.messages >= MAX_REUSE:
            conn.close(polite=True)
            return
        conn.idle_since = time.monotonic()
        with self._lock:
            if len(self._idle) < MAX_POOLED:
                self._idle.append(conn)
                return
        conn.close(polite=True)

    def close(self) -> None:
        with self._lock:
            idle, self._idle = self._idle, []
        for conn in idle:
            conn.close(polite=True)

    def _connect(self, deadline: float) -> _Connection | HandOff:
        start = time.monotonic()
        try:
            sock = socket.create_connection((self.host, self.port), timeout=max(0.1, deadline - start))
        except OSError as e:
            detail = f"connect to {self.relay}: {e.strerror or e}"
            return HandOff(client_reply(None), "deferred", detail, relay=self.relay)
        sock.setblocking(False)
        try:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)  # small commands, answered at once
            peer = sock.getpeername()[0]
        except OSError:
            peer = self.host
        relay = f"{self.host}[{peer}]:{self.port}"
        conn = _Connection(sock, Client(self.hostname), relay)
        notes: list[str] = []
        try:
            ev = conn.pump(deadline, notes, until=(Ready,))
        except OSError as e:
            ev = Lost(f"{e.strerror or 'timeout'} while waiting for the greeting", False, False)
        if isinstance(ev, Ready):
            return conn
        conn.close(polite=False)
        return HandOff(client_reply(None), "deferred", _describe(ev, relay), relay=relay, notes=tuple(notes))

    def probe(self, timeout: float) -> Extensions | str:
        """What the MTA offers, or why it cannot be used (`check`, S-810):
        greeting and EHLO, then QUIT; no mail is sent."""
        made = self._connect(time.monotonic() + timeout)
        if isinstance(made, HandOff):
            return made.detail
        assert made.client.extensions is not None
        ext = made.client.extensions
        made.close(polite=True)
        return ext

    # -- one message -------------------------------------------------------------------
    def deliver(self, out: Outbound, timeout: float) -> HandOff:
        start = time.monotonic()
        deadline = start + timeout
        outgoing = _outgoing(out)
        conn = self._take()
        if conn is not None:
            result = self._attempt(conn, out, outgoing, deadline)
            if not isinstance(result, _Retry):
                return _timed(result, start)
        made = self._connect(deadline)
        if isinstance(made, HandOff):
            return _timed(made, start)
        result = self._attempt(made, out, outgoing, deadline)
        if isinstance(result, _Retry):  # a new connection lost before MAIL's reply
            result = result.handoff
        return _timed(result, start)

    def _attempt(self, conn: _Connection, out: Outbound, outgoing: Outgoing,
                 deadline: float) -> HandOff | _Retry:
        reused = conn.client.messages > 0
        notes: list[str] = []
        client = conn.client
        try:
            # Terminal at once: SMTPUTF8 refused without a word to the MTA,
            # or the MTA spoke while idle (Lost).
            ev = _decisive(client.start(outgoing), notes, ())
            if ev is None:
                ev = conn.pump(deadline, notes, until=(SendBody,))
                if isinstance(ev, SendBody):
                    ev = self._send_message(conn, out, deadline, notes)
                    if ev is None:  # the dot is sent: its reply
                        ev = conn.pump(deadline, notes)
        except OSError as e:  # Timeout too: the deadline of the whole exchange
            ev = client.lost("timeout" if isinstance(e, Timeout) else (e.strerror or str(e)))
        result = self._result(ev, conn, notes)
        if isinstance(ev, Lost) and reused and not ev.mail_answered and not ev.after_dot:
            conn.close(polite=False)
            return _Retry(result)
        if client.state is ClientState.REFUSED and client.messages < MAX_REUSE:
            client.reset()  # S-807: RSET after a failed transaction
            try:
                conn.pump(min(deadline, time.monotonic() + CLEANUP_WAIT), [], until=(Ready,))
            except OSError:
                client.quit()
        # Otherwise the connection's last message: QUIT instead (S-807), in close().
        if client.reusable:
            self._give_back(conn)
        else:
            conn.close(polite=True)
        return result

    def _send_message(self, conn: _Connection, out: Outbound, deadline: float,
                      notes: list[str]) -> ClientEvent | None:
        """The parts, dot-stuffed as they stream, then the final dot; small
        messages in one write. Before each write, what the MTA sent since
        its 354 is read (`quiet`): a reply there, even half of one, breaks
        the protocol, and the transaction ends before the dot (S-808)."""
        client = conn.client
        pending: list[bytes] = []
        held = 0
        for part in out.parts:
            pieces = (part,) if isinstance(part, bytes) else part.chunks()
            for piece in pieces:
                data = client.stuff(piece)
                pending.append(data)
                held += len(data)
                if held >= ONE_WRITE:
                    if (ev := conn.quiet(notes)) is not None:
                        return ev
                    conn.send(b"".join(pending), deadline)
                    pending, held = [], 0
        if (ev := conn.quiet(notes)) is not None:
            return ev
        client.end_body()
        pending.append(client.data_to_send())
        conn.send(b"".join(pending), deadline)
        return None

    def _result(self, ev: ClientEvent | None, conn: _Connection, notes: list[str]) -> HandOff:
        relay = conn.relay
        if isinstance(ev, Delivered):
            return HandOff(None, "sent", str(ev.reply), relay=relay, notes=tuple(notes))
        if not isinstance(ev, (Rejected, Unavailable, Lost)):  # Closed mid-transaction
            ev = Lost("connection closed by the MTA", False, False)
        reply = client_reply(ev)
        status = "bounced" if reply.code >= 500 else "deferred"
        may_duplicate = isinstance(ev, Lost) and ev.after_dot
        return HandOff(reply, status, _describe(ev, relay), relay=relay, notes=tuple(notes),
                       may_duplicate=may_duplicate)


def _decisive(events: list[ClientEvent], notes: list[str], until: tuple[type, ...]) -> ClientEvent | None:
    """The event of one batch the shell acts on: its first terminal one
    (`_DONE`), else its first in `until`, else None; Notes go to `notes`.
    A go-ahead that a terminal event follows in the same batch (Ready or
    SendBody, then Lost: the MTA broke the protocol in the same breath) is
    never acted on (S-808)."""
    done: ClientEvent | None = None
    go: ClientEvent | None = None
    for ev in events:
        if isinstance(ev, Note):
            notes.append(ev.text)
        elif isinstance(ev, _DONE):
            if done is None:
                done = ev
            elif isinstance(ev, Lost):  # after Delivered or Rejected: the connection is not kept
                notes.append(f"then the connection to the MTA was dropped ({ev.reason})")
        elif go is None and isinstance(ev, until):
            go = ev
    return done if done is not None else go


class _Retry:
    """A kept connection failed before MAIL was answered: try a new one."""

    __slots__ = ("handoff",)

    def __init__(self, handoff: HandOff) -> None:
        self.handoff = handoff


_IN_REPLY_TO = {"MAIL": "MAIL FROM", "RCPT": "RCPT TO", "DATA": "DATA", "DOT": "end of DATA",
                "XFORWARD": "XFORWARD"}


def _describe(ev: ClientEvent, relay: str) -> str:
    """The log's status detail, in Postfix's words."""
    if isinstance(ev, Rejected):
        if ev.reply is None:
            return f"{relay} does not offer SMTPUTF8; nothing was sent"
        return f"host {relay} said: {ev.reply} (in reply to {_IN_REPLY_TO.get(ev.stage, ev.stage)} command)"
    if isinstance(ev, Unavailable):
        return f"host {relay} refused to talk: {ev.reply}" if ev.reply else f"{relay}: {ev.reason}"
    if isinstance(ev, Lost):
        if ev.after_dot:
            return f"lost connection with {relay} after the final dot ({ev.reason}): the MTA may have the message"
        return f"lost connection with {relay} ({ev.reason})"
    return f"{relay}: unexpected {ev}"


def _timed(result: HandOff, start: float) -> HandOff:
    return HandOff(result.reply, result.status, result.detail, result.stderr, time.monotonic() - start,
                   result.relay, result.notes, result.may_duplicate)


def _outgoing(out: Outbound) -> Outgoing:
    env = out.envelope
    return Outgoing(
        sender=env.sender,
        recipients=env.recipients,
        size=out.size(),
        eightbit=env.body == "8BITMIME",
        smtputf8=env.smtputf8,
        ret=env.ret,
        envid=env.envid,
        rcpt_dsn=env.rcpt_dsn,
        xforward=out.xforward,
    )


def _is_ip(host: str) -> bool:
    import ipaddress

    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True
