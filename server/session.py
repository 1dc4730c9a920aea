"""Session: one client connection, driving a smtp_states.Connection.

Reads with a timeout, feeds the core, writes its replies (one write per
read, S-105), and acts on the events: the spool on DATA, the TLS handshake
on StartTls, credential checks on AuthCheck, the hand-off on DataEnd. It
makes no protocol decision of its own.
"""

from __future__ import annotations

import socket
import ssl
import time
from collections import deque
from typing import Any

from smtp_states import (
    AuthCheck,
    Close,
    Connection,
    DataChunk,
    DataEnd,
    DataStart,
    Event,
    MailFrom,
    Refused,
    Reset,
    StartTls,
)
from smtp_states import replies as R

from util.wait import Timeout, Woken

from . import maillog, tls
from .runtime import Server, client_ip

RECV_SIZE = 64 * 1024  # DESIGN.md: tuned by `make bench`


class _Policy:
    """smtp_states.Policy over the current users database (S-601), the
    senders of the app password the session logged in with (S-515) and the
    sending limits (S-1201): the reservations of the transaction in
    progress, kept when its message is accepted, given back otherwise."""

    def __init__(self, server: Server) -> None:
        self.server = server
        self.app: Any = None  # the sasl.apppass.AppPassword used, if any
        self.source = "users.db"  # where the user's senders come from (S-1305)
        self.rules: Any = None  # sasl.senders.SenderRules; None: users.db's, read at each check
        self.holds: list[Any] = []  # state.Hold of the transaction in progress

    def logged_in(self, app: Any, source: str, rules: Any) -> None:
        """AUTH succeeded: the app password used (S-515) and the senders (S-1305)."""
        self.app, self.source, self.rules = app, source, rules

    def may_send_as(self, user: str, address: str) -> bool:
        if self.rules is not None:
            allowed = self.rules.allows(address)
        else:
            users = self.server.runtime.users
            allowed = users is not None and users.may_send_as(user, address)
        if not allowed:
            return False
        if self.app is None:
            return True
        from sasl import apppass

        return apppass.may_send_as(self.app, address)

    def reserve_message(self, user: str) -> bool:
        return self._reserve(user, "messages")

    def reserve_recipient(self, user: str) -> bool:
        return self._reserve(user, "recipients")

    def _reserve(self, user: str, kind: str) -> bool:
        hold = self.server.limits.reserve(user, kind)
        if hold is None:
            return False
        if hold.counted:
            self.holds.append(hold)
        return True

    def keep(self) -> None:
        """The message was accepted: what it reserved stays counted."""
        self.holds = []

    def give_back(self) -> None:
        """The transaction ended without an accepted message (S-1201)."""
        if self.holds:
            holds, self.holds = self.holds, []
            self.server.limits.release(holds)


class Session:
    def __init__(self, server: Server, transport: Any, ip: str, port: int | None, implicit_tls: bool,
                 greeted: bool = False) -> None:
        self.server = server
        self.transport = transport
        self.ip = client_ip(ip)
        self.port = port
        self.implicit_tls = implicit_tls
        #: inetd mode wrote the core's greeting before loading the session (server/inetd.py)
        self.greeted = greeted
        self.sid = server.random.new_id()
        self.client = maillog.client_name(self.ip, port)
        self.conn: Connection | None = None
        self.policy = _Policy(server)  # knows the app password the session logged in with
        self.message: Any = None  # delivery.message.Message, from DATA to the final reply
        self.local_ip, self.local_port = transport.local_address()
        self.directory: str | None = None  # the directory that knew the user (S-1301)
        self.qid: str | None = None
        self.sender: str | None = None
        self.method: str | None = None
        self.tls_info: tuple[str, str] | None = None
        self._messages = 0
        self._active = time.monotonic()  # the last reply, handshake or DATA chunk (S-108)

    # -- the loop -------------------------------------------------------------------
    def run(self) -> None:
        server = self.server
        server.register(self)
        server.metrics.session_started()
        maillog.connect(self.sid, self.client)
        try:
            self._run()
        except (OSError, ssl.SSLError):
            pass  # the client went away; nothing was acknowledged that is not handed over
        except Exception as e:  # a bug: log it, tell the client, keep the daemon up
            maillog.internal_error(self.sid, self.client, e)
            try:
                self.transport.send(R.INTERNAL_ERROR.to_bytes(), 5)
            except (OSError, ssl.SSLError):
                pass
        finally:
            self._drop_message()
            self.policy.give_back()  # a transaction cut short by a lost client or a bug
            server.unregister(self)
            server.metrics.session_ended()
            try:
                self.transport.close()
            except OSError:
                pass
            counts = self.conn.counts if self.conn is not None else {}
            maillog.disconnect(self.sid, self.client, counts)

    def _run(self) -> None:
        runtime = self.server.runtime
        cfg = runtime.config
        timeout = cfg.timeout
        if self.implicit_tls:  # S-403: handshake first, then the greeting
            if runtime.ssl_context is None or not self._handshake(runtime.ssl_context, timeout):
                return
        factory = self.server.auth.mechanism_factory(cfg.hostname) if self.server.auth else None
        conn = Connection(
            runtime.settings(factory, starttls=self.transport.can_starttls),
            self.policy,
            tls=self.implicit_tls,
            trusted=cfg.is_trusted(self.ip),
        )
        self.conn = conn
        if not self.greeted:
            conn.start()
            self._flush()
        while not conn.closed:
            if self.server.stopping.is_set() and not conn.in_transaction:
                self._handle(conn.abort(R.shutting_down(cfg.hostname), "shutdown"))  # S-110
                break
            # No read happens while the core is paused (S-105): each pausing
            # event is answered in _handle before the next read.
            wake = None if conn.in_transaction else self.server.stop_fd  # S-110
            # S-108: `timeout` is a deadline per command line, counted from
            # the last reply (or handshake), however the bytes trickle in;
            # in DATA, per chunk (S-308).
            remaining = self._active + timeout - time.monotonic()
            try:
                if remaining <= 0:
                    raise Timeout()
                data = self.transport.recv(RECV_SIZE, remaining, wake)
            except Timeout:
                self._handle(conn.abort(R.timeout(cfg.hostname), "timeout"))  # S-108
                break
            except Woken:
                self._handle(conn.abort(R.shutting_down(cfg.hostname), "shutdown"))
                break
            if conn.in_data:
                self._active = time.monotonic()
            self._handle(conn.receive(data))

    def force_close(self) -> None:
        """End of the drain: cut the connection; no delivery follows."""
        message = self.message
        if message is not None:
            message.abandon()
        self.transport.shutdown(socket.SHUT_RDWR)

    def _flush(self) -> None:
        assert self.conn is not None
        data = self.conn.data_to_send()
        if data:
            self.transport.send(data, self.server.runtime.config.timeout)
            self._active = time.monotonic()  # the next command's deadline starts now

    # -- events ---------------------------------------------------------------------
    def _handle(self, events: list[Event]) -> None:
        conn = self.conn
        assert conn is not None
        pending: deque[Event] = deque(events)
        while pending:
            ev = pending.popleft()
            if isinstance(ev, DataChunk):
                self.message.feed(ev.data)
            elif isinstance(ev, DataStart):
                self._start_message(ev.envelope)
            elif isinstance(ev, MailFrom):
                self.sender = ev.sender
                self.qid = self.sid if self._messages == 0 else self.server.random.new_id()
                self._messages += 1
                if self.qid != self.sid or conn.user is None:  # else logged at AUTH
                    app = self.policy.app.label if self.policy.app is not None else None
                    maillog.client(self.qid, self.client, self.method, conn.user, app, self.directory)
            elif isinstance(ev, Reset):
                self._drop_message()
                self.policy.give_back()
            elif isinstance(ev, Refused):
                self._log_refusal(ev)
                if ev.command != "AUTH":  # AUTH: msa_auth_attempts_total
                    self.server.metrics.refused(ev.command, ev.reply)
            elif isinstance(ev, StartTls):
                self._flush()
                maillog.starttls(self.sid, self.client, ev.discarded)
                ctx = self.server.runtime.ssl_context
                if ctx is None or not self._handshake(ctx, self.server.runtime.config.timeout):
                    conn.abort(R.BYE, "TLS handshake failed")  # S-402: close
                    conn.data_to_send()  # nothing can be sent on a failed handshake
                    return
                pending.extend(conn.tls_started())
            elif isinstance(ev, AuthCheck):
                self._flush()
                result = self.server.auth.check(self, ev)
                if result.ok:
                    self.method = ev.mechanism
                pending.extend(conn.auth_done(result))
            elif isinstance(ev, DataEnd):
                self._flush()
                reply = self._deliver(ev.size, len(ev.envelope.recipients))
                if reply.code == 250:
                    self.policy.keep()  # S-1201: counted once the MTA accepted it
                else:
                    self.policy.give_back()
                if reply.code == 250 and self.transport.peer_closed():  # S-308: RFC 1047's duplicate
                    maillog.warning(f"{self.qid}: client {self.client} left after the final dot; "
                                    "the message was handed on and may be sent again")
                pending.extend(conn.delivery_done(reply))
            elif isinstance(ev, Close):
                self._drop_message()
                self.policy.give_back()
                if ev.reason == "shutdown":
                    self.server.metrics.connection_refused("shutdown")
                if ev.reply is not None and ev.reply.code == 421 and ev.reason not in ("timeout", "shutdown"):
                    maillog.reject(self.sid, "SESSION", self.client, str(ev.reply), None, None, conn.helo)
        self._flush()

    def _handshake(self, ctx: ssl.SSLContext, timeout: float) -> bool:
        try:
            sock = self.transport.start_tls(ctx, timeout)
        except (OSError, ssl.SSLError, ValueError) as e:
            maillog.tls_failed(self.sid, self.client, str(e) or type(e).__name__)
            self.server.metrics.tls("failed")
            return False
        self.tls_info = tls.describe(sock)
        self.server.metrics.tls(self.tls_info[0])
        self._active = time.monotonic()
        maillog.tls_established(self.sid, self.client, *self.tls_info)
        return True

    def _log_refusal(self, ev: Refused) -> None:
        conn = self.conn
        if ev.reply in (R.RATE_LIMITED, R.RECIPIENT_LIMIT) and conn is not None and conn.user is not None:
            # S-1201: the first refusal of a window is logged, once.
            kind = "messages" if ev.reply is R.RATE_LIMITED else "recipients"
            limit = self.server.limits.first_refusal(conn.user, kind)
            if limit is not None:
                rcpt = ev.argument if ev.command == "RCPT" else None
                sender = ev.argument if ev.command == "MAIL" else ev.sender
                maillog.reject(self.sid, ev.command, self.client, str(ev.reply), sender, rcpt, conn.helo,
                               limit=limit, user=conn.user)
            return
        if ev.command in ("MAIL", "RCPT", "DATA") or ev.reply.code in (421, 530, 550):
            conn = self.conn
            rcpt = ev.argument if ev.command == "RCPT" else None
            sender = ev.argument if ev.command == "MAIL" else ev.sender
            hint = self._senders_hint() if ev.command == "MAIL" and ev.reply.enhanced == "5.7.1" else None
            maillog.reject(self.sid, ev.command, self.client, str(ev.reply), sender, rcpt, conn.helo if conn else None,
                           hint)

    def _senders_hint(self) -> str | None:
        """Where the user's senders come from (S-1305), for a sender refusal's
        log line, when more than users.db can say."""
        if not self.server.runtime.others:
            return None
        return f"senders from {self.policy.source}"

    # -- the message ---------------------------------------------------------------------
    def _start_message(self, envelope: Any) -> None:
        """DATA: the message in progress (delivery/message.py) takes over
        the spool, the header, the signing steps and the hand-off."""
        from delivery.message import Message, Submission

        self._drop_message()
        conn = self.conn
        assert conn is not None
        qid = self.qid or self.sid
        user = conn.user
        ctx = self._fix_context(envelope, qid)
        may_send_as = (lambda address: self.policy.may_send_as(user, address)) if user is not None else (lambda _: False)
        xforward = self._xforward(ctx) if self.server.runtime.config.handoff is not None else ()  # SMTP only
        submission = Submission(qid, self.client, user, conn.helo, envelope, ctx, xforward, may_send_as,
                                self._senders_hint() if user is not None else None)
        self.message = Message(self.server.services(), submission)

    def _drop_message(self) -> None:
        if self.message is not None:
            self.message.close()
            self.message = None

    def _deliver(self, size: int, recipients: int) -> R.Reply:
        message, self.message = self.message, None
        if message is None:  # DATA without a message object: cannot happen, but never a 250
            return R.HANDOFF_TEMPFAIL
        reply = message.deliver(size)  # closes it
        metrics = self.server.metrics
        if metrics.enabled:
            kind = "smtp" if self.server.runtime.config.handoff is not None else "sendmail"
            metrics.message(reply, size, recipients, message.handed, kind, message.notes)
        return reply

    def _fix_context(self, env: Any, qid: str) -> Any:
        """What headers.fix and the hand-off need to know of this transaction
        (the message stamps `now` and `random` when it fixes the header)."""
        import datetime

        import headers

        conn = self.conn
        assert conn is not None
        cfg = self.server.runtime.config
        return headers.FixContext(
            hostname=cfg.hostname,
            queue_id=qid,
            helo=conn.helo,
            esmtp=bool(conn.esmtp),
            client_ip=self.ip,
            tls=f"{self.tls_info[0]} with cipher {self.tls_info[1]}" if self.tls_info else None,
            authenticated=conn.user is not None,
            smtputf8=env.smtputf8,
            sender=env.sender,
            recipients=env.recipients,
            received_client=cfg.received_client,
            now=datetime.datetime.now().astimezone(),
            random=b"",
        )

    def _xforward(self, ctx: Any) -> tuple[tuple[str, str], ...]:
        """XFORWARD attributes (S-806): what the MTA logs as the real client.
        msa makes no DNS lookup, so NAME is unavailable; PROTO is the
        Received: line's `with`; the HELO name as Received: shows it (S-707)."""
        from headers.received import HELO_TABLE, helo_domain, restrict, with_protocol

        unavailable = "[UNAVAILABLE]"
        helo = ctx.helo
        shown = helo_domain(helo) or (restrict(helo, HELO_TABLE, 255) if helo else unavailable)
        return (
            ("NAME", unavailable),
            ("ADDR", self.ip if self.ip != "unknown" else unavailable),
            ("PORT", str(self.port) if self.port is not None else unavailable),
            ("PROTO", with_protocol(ctx)),
            ("HELO", shown),
            ("IDENT", ctx.queue_id),
            ("SOURCE", "REMOTE"),
        )
