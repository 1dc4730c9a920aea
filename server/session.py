"""Session: one client connection, driving a smtp_states.Connection.

Reads with a timeout, feeds the core, writes its replies (one write per
read, S-105), and acts on the events: the spool on DATA, the TLS handshake
on StartTls, credential checks on AuthCheck, the hand-off on DataEnd. It
makes no protocol decision of its own.
"""

from __future__ import annotations

import datetime
import os
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

from . import maillog, tls
from .runtime import Server, client_ip
from .spool import SpoolFile
from .transport import Timeout, Woken

RECV_SIZE = 64 * 1024  # DESIGN.md: tuned by `make bench`


class _Policy:
    """smtp_states.Policy over the current users database (S-601), the
    senders of the app password the session logged in with (S-515) and the
    sending limits (S-1201): the reservations of the transaction in
    progress, kept when its message is accepted, given back otherwise."""

    def __init__(self, server: Server) -> None:
        self.server = server
        self.app: Any = None  # the sasl.apppass.AppPassword used, if any
        self.holds: list[Any] = []  # server.state.Hold of the transaction in progress

    def may_send_as(self, user: str, address: str) -> bool:
        users = self.server.runtime.users
        if users is None or not users.may_send_as(user, address):
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
    def __init__(self, server: Server, transport: Any, ip: str, port: int | None, implicit_tls: bool) -> None:
        self.server = server
        self.transport = transport
        self.ip = client_ip(ip)
        self.port = port
        self.implicit_tls = implicit_tls
        self.sid = server.random.new_id()
        self.client = maillog.client_name(self.ip, port)
        self.conn: Connection | None = None
        self.policy = _Policy(server)  # knows the app password the session logged in with
        self.spool: SpoolFile | None = None
        self.header: Any = None  # headers.HeaderReader, made at DATA
        self.digest: Any = None  # pipeline.BodyDigest while DKIM keys exist, made at DATA
        self.minter: Any = None  # stamps.Minter for Hashcash, started at the header's end
        self.signer: Any = None  # pgp.EarlySigner, started at the header's end
        self.envelope: Any = None  # the envelope of the message being received
        self.early: Any = None  # (FixContext, fixed header, body offset) made at the header's end
        self._header_ended = False
        self.extra_spools: list[Any] = []  # the pipeline's second spool files
        self._data_seen = 0  # octets of this message's DATA so far
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
            self._drop_spool()
            self.policy.give_back()  # a transaction cut short by a lost client or a bug
            server.unregister(self)
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
        if self.spool is not None:
            try:
                os.unlink(self.spool.path)
            except OSError:
                pass
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
                if self.spool is not None:
                    self.spool.write(ev.data)
                self.header.feed(ev.data)
                if self.digest is not None:
                    self._feed_digest(ev.data)
                if self.signer is not None:
                    self.signer.spooled(self.spool.size)
                elif not self._header_ended and self.header.body_offset is not None:
                    self._header_ended = True
                    self._at_header_end()
            elif isinstance(ev, DataStart):
                self.envelope = ev.envelope
                self._open_spool()
            elif isinstance(ev, MailFrom):
                self.sender = ev.sender
                self.qid = self.sid if self._messages == 0 else self.server.random.new_id()
                self._messages += 1
                if self.qid != self.sid or conn.user is None:  # else logged at AUTH
                    app = self.policy.app.label if self.policy.app is not None else None
                    maillog.client(self.qid, self.client, self.method, conn.user, app)
            elif isinstance(ev, Reset):
                self._drop_spool()
                self.policy.give_back()
            elif isinstance(ev, Refused):
                self._log_refusal(ev)
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
                reply = self._deliver(ev)
                if reply.code == 250:
                    self.policy.keep()  # S-1201: counted once the MTA accepted it
                else:
                    self.policy.give_back()
                if reply.code == 250 and self.transport.peer_closed():  # S-308: RFC 1047's duplicate
                    maillog.warning(f"{self.qid}: client {self.client} left after the final dot; "
                                    "the message was handed on and may be sent again")
                pending.extend(conn.delivery_done(reply))
            elif isinstance(ev, Close):
                self._drop_spool()
                self.policy.give_back()
                if ev.reply is not None and ev.reply.code == 421 and ev.reason not in ("timeout", "shutdown"):
                    maillog.reject(self.sid, "SESSION", self.client, str(ev.reply), None, None, conn.helo)
        self._flush()

    def _handshake(self, ctx: ssl.SSLContext, timeout: float) -> bool:
        try:
            sock = self.transport.start_tls(ctx, timeout)
        except (OSError, ssl.SSLError, ValueError) as e:
            maillog.tls_failed(self.sid, self.client, str(e) or type(e).__name__)
            return False
        self.tls_info = tls.describe(sock)
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
            maillog.reject(self.sid, ev.command, self.client, str(ev.reply), sender, rcpt, conn.helo if conn else None)

    # -- spool and hand-off -----------------------------------------------------------
    def _open_spool(self) -> None:
        import headers  # lazily: inetd mode greets sooner (DESIGN.md)

        self._drop_spool()
        self.header = headers.HeaderReader()
        self._data_seen = 0
        runtime = self.server.runtime
        if runtime.dkim is not None and runtime.dkim.by_domain:
            from . import pgp, pipeline

            user = self.conn.user if self.conn is not None else None
            if pgp.key_for(runtime.config, user) is None:  # a PGP wrap makes a body of its own
                self.digest = pipeline.BodyDigest(self.server.affinity)
        try:
            self.spool = SpoolFile(self.server.runtime.config.spool, self.qid or self.server.random.new_id())
        except OSError as e:
            maillog.error(f"{self.qid}: cannot create spool file: {e.strerror}")
            self.spool = None

    def _drop_spool(self) -> None:
        if self.signer is not None:  # first: it reads the spool file's descriptor
            self.signer.cancel()
            self.signer = None
        if self.minter is not None:
            self.minter.close()
            self.minter = None
        if self.spool is not None:
            self.spool.remove()
            self.spool = None
        if self.digest is not None:
            self.digest.close()
            self.digest = None
        for extra in self.extra_spools:
            extra.remove()
        self.extra_spools = []
        self.early = None
        self._header_ended = False

    def _at_header_end(self) -> None:
        """The header block has ended (the body follows): the steps that
        gain from starting before the final dot start now (S-1106: the
        Hashcash minter; S-1104: the PGP signer, fed the body as it is
        spooled). Both need the fixed header, so it is made here, once; a
        message whose header would be refused starts nothing (the refusal
        is made, and logged, at the dot as always)."""
        from . import pgp, pipeline, stamps

        cfg = self.server.runtime.config
        conn = self.conn
        spool = self.spool
        if conn is None or spool is None or spool.failed or self.envelope is None:
            return
        key = pgp.key_for(cfg, conn.user)
        if key is None and cfg.hashcash_bits <= 0:
            return
        ctx = self._fix_context(self.envelope)
        fixed, offset, problem = self._fixed_header(ctx)
        if problem is not None:
            return
        self.early = (ctx, fixed, offset)
        fields = pipeline._fields(fixed)
        qid = self.qid or self.sid
        try:
            self.minter = stamps.start(cfg, fields, self.envelope.recipients, self.server.affinity,
                                       self.server.minting)
        except OSError as e:
            maillog.warning(f"{qid}: hashcash: cannot start the minter: {e.strerror or e}")
        head = pgp.early_part_head(fields) if key is not None else None
        if head is not None:
            try:
                self.signer = pgp.EarlySigner(cfg, qid, key, head, spool.fd, offset, self.server.affinity,
                                              self.server.signing)
            except OSError:
                return  # signed at the dot, where the failure is reported (451)
            self.signer.spooled(spool.size)

    def _feed_digest(self, data: bytes) -> None:
        """The body octets of this chunk to the DKIM body hash (S-1103)."""
        start = self._data_seen
        self._data_seen += len(data)
        body = self.header.body_offset
        if body is not None and self._data_seen > body:
            self.digest.feed(data[max(0, body - start) :] if body > start else data)

    def _deliver(self, ev: DataEnd) -> R.Reply:
        from . import pipeline  # lazily, as headers
        from .handoff import FileRange, Outbound

        spool = self.spool
        qid = self.qid or self.sid
        env = ev.envelope
        try:
            if spool is None or spool.failed:  # S-307
                why = spool.reason if spool is not None else "cannot create spool file"
                maillog.warning(f"{qid}: spool: {why}")
                return R.NO_STORAGE
            cfg = self.server.runtime.config
            data_end = time.monotonic()
            if self.early is not None:
                ctx, header, offset = self.early
            else:
                ctx = self._fix_context(env)
                header, offset, refusal = self._prepare(ctx)
                if refusal is not None:
                    return refusal
            maillog.message_from(qid, env.sender, ev.size, len(env.recipients))
            body = FileRange(spool.fd, offset, spool.size - offset)
            pctx = pipeline.Context(qid, self.conn.user if self.conn else None, env.recipients, cfg,
                                    self.server.affinity, self.server.random.take, data_end, self.signer,
                                    self.minter, self.server.minting, self.server.signing)
            signed = pipeline.run(self.server.runtime, pctx, header, body, self.digest)  # S-1101
            self.extra_spools = signed.spools
            for note in signed.notes:
                maillog.info(f"{qid}: {note}")
            if signed.refused is not None:
                return signed.refused
            out = Outbound(qid, env, (signed.header, *signed.body), self._xforward(ctx))
            result = self.server.handoff.deliver(out, cfg.sendmail_timeout)
            maillog.sendmail_stderr(qid, result.stderr)
            for note in result.notes:
                maillog.info(f"{qid}: {note}")
            for rcpt in env.recipients:
                maillog.delivered(qid, rcpt, result.elapsed, result.status, result.detail, result.relay)
            if result.may_duplicate:  # S-808, RFC 1047
                maillog.warning(f"{qid}: the MTA may have the message although msa answered {result.reply}; "
                                "the client may send it again")
            if result.reply is None:
                return R.queued(qid)
            return result.reply
        finally:
            self._drop_spool()

    def _fix_context(self, env: Any) -> Any:
        """What headers.fix and the hand-off need to know of this transaction."""
        import headers

        conn = self.conn
        assert conn is not None
        cfg = self.server.runtime.config
        return headers.FixContext(
            hostname=cfg.hostname,
            queue_id=self.qid or self.sid,
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
            random=self.server.random.take(10),
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

    def _prepare(self, ctx: Any) -> tuple[bytes, int, R.Reply | None]:
        """Check and complete the header (SPEC.md §6-§7): the new header
        block, the body's offset in the spool file, or a refusal (logged)."""
        fixed, offset, problem = self._fixed_header(ctx)
        if problem is None:
            return fixed, offset, None
        if isinstance(problem, R.Reply):
            return b"", 0, problem
        return b"", 0, self._sender_refusal(problem, self.conn.user or "" if self.conn else "")

    def _fixed_header(self, ctx: Any) -> tuple[bytes, int, Any]:
        """The checked and completed header block and the body's offset, or
        the problem: a Reply (S-703) or a headers.SenderProblem (S-602)."""
        import headers

        conn = self.conn
        assert conn is not None
        block = self.header.finish()
        if isinstance(block, headers.HeaderTooLarge):
            return b"", 0, R.HEADER_TOO_LARGE  # S-703
        user = conn.user
        if user is not None:  # S-602: trusted clients are not checked
            problem = headers.check_senders(block, lambda address: self.policy.may_send_as(user, address))
            if problem is not None:
                return b"", 0, problem
        fixed = headers.fix(block, ctx)
        if isinstance(fixed, headers.SenderProblem):
            return b"", 0, fixed
        return fixed, block.body_offset, None

    def _sender_refusal(self, problem: Any, user: str) -> R.Reply:
        qid = self.qid or self.sid
        hint = None
        if problem.kind == "not_owned":
            reply = R.from_not_owned(problem.address or "", user)
            if self.sender == "":
                # A null sender with a From: the user does not own is what a
                # satellite MTA's bounce looks like (README "The users
                # database"): say what would let it through.
                hint = f"a bounce from an MTA relaying as {user}? add <{problem.address}> to {user}'s senders"
        elif problem.kind == "no_from":
            reply = R.NO_FROM_HEADER
        else:
            reply = R.CANNOT_VERIFY_FROM
        maillog.reject(qid, "END-OF-MESSAGE", self.client, str(reply), self.sender, None,
                       self.conn.helo if self.conn else None, hint)
        return reply
