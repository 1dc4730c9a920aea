"""The message in progress, from DATA to the MTA (DESIGN.md "DATA, spool and
hand-off", "The message pipeline and the hand-offs").

One `Message` per transaction: made at DATA, fed the decoded chunks as they
arrive (spooled, the header read, the DKIM body hash fed), asked at the end
of the header block (the steps that gain from an early start: the Hashcash
minter, the PGP signer) and at the final dot (`deliver`: the sender checks,
the fix, the pipeline of S-1101, the hand-off and their log lines), and
closed in one place whatever happens (`close`: every spool file removed,
every child stopped). The session only routes events to it.

What the message needs of the daemon comes in as `Services` (this package
never imports server/), what it needs of the session as a `Submission`.
"""

from __future__ import annotations

import dataclasses
import datetime
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from smtp_states import replies as R
from util import maillog

from .spool import SpoolFile

__all__ = ["Message", "Services", "Submission"]


@dataclass(frozen=True, slots=True)
class Services:
    """What a message needs of the daemon, the same for every message of a
    runtime: the configuration and DKIM keys, the CPU affinity children
    run with, the random pool (ids, boundaries), the host's slots for
    minters and signers, and the hand-off (made when first used)."""

    config: Any
    dkim: Any
    affinity: Any
    random: Any
    minting: Any
    signing: Any
    handoff: Callable[[], Any]


@dataclass(frozen=True, slots=True)
class Submission:
    """What the session knows of this transaction."""

    qid: str
    client: str  # the log's name of the client, unknown[IP]:PORT
    user: str | None  # the authenticated user; None: a trusted client
    helo: str | None
    envelope: Any  # smtp_states.Envelope
    fix: Any  # headers.FixContext; `now` and `random` are set when the header is fixed
    xforward: tuple[tuple[str, str], ...]  # S-806's attributes for the SMTP hand-off
    may_send_as: Callable[[str], bool]  # S-602, for an authenticated user
    senders_hint: str | None = None  # where the user's senders come from, for a refusal's log line (S-1305)


class Message:
    def __init__(self, services: Services, submission: Submission) -> None:
        import headers  # lazily: inetd mode greets sooner (DESIGN.md)

        from . import pgp, pipeline

        self.services = services
        self.submission = submission
        self.header = headers.HeaderReader()
        self.spool: SpoolFile | None = None
        self.digest: Any = None  # pipeline.BodyDigest while DKIM keys exist
        self.minter: Any = None  # stamps.Minter, started at the header's end
        self.signer: Any = None  # pgp.EarlySigner, started at the header's end
        self.early: tuple[Any, bytes, int] | None = None  # (FixContext, fixed header, body offset)
        self.extra_spools: list[SpoolFile] = []  # the pipeline's second spool files
        self.notes: tuple[str, ...] = ()  # the signing steps' log notes, once run
        self.handed: Any = None  # handoff.HandOff, once the MTA was asked
        self._header_ended = False
        self._seen = 0  # octets of DATA so far
        cfg = services.config
        if services.dkim is not None and services.dkim.by_domain and pgp.key_for(cfg, submission.user) is None:
            self.digest = pipeline.BodyDigest(services.affinity)  # a PGP wrap hashes a body of its own
        try:
            self.spool = SpoolFile(cfg.spool, submission.qid)
        except OSError as e:
            maillog.error(f"{submission.qid}: cannot create spool file: {e.strerror}")

    # -- while the data arrives -----------------------------------------------------
    def feed(self, data: bytes) -> None:
        """One decoded chunk of DATA."""
        spool = self.spool
        if spool is not None:
            spool.write(data)
        self.header.feed(data)
        if self.digest is not None:
            self._feed_digest(data)
        else:
            self._seen += len(data)
        if self.signer is not None:
            self.signer.spooled(spool.size if spool is not None else 0)
        elif not self._header_ended and self.header.body_offset is not None:
            self._header_ended = True
            self._at_header_end()

    def _feed_digest(self, data: bytes) -> None:
        """The body octets of this chunk to the DKIM body hash (S-1103)."""
        start = self._seen
        self._seen += len(data)
        body = self.header.body_offset
        if body is not None and self._seen > body:
            self.digest.feed(data[max(0, body - start) :] if body > start else data)

    def _at_header_end(self) -> None:
        """The header block has ended (the body follows): the steps that
        gain from starting before the final dot start now (S-1106: the
        Hashcash minter; S-1104: the PGP signer, fed the body as it is
        spooled). Both need the fixed header, so it is made here, once; a
        message whose header would be refused starts nothing (the refusal
        is made, and logged, at the dot as always)."""
        import headers

        from . import pgp, stamps

        services, sub, spool = self.services, self.submission, self.spool
        cfg = services.config
        if spool is None or spool.failed:
            return
        key = pgp.key_for(cfg, sub.user)
        if key is None and cfg.hashcash_bits <= 0:
            return
        ctx = self._fix_context()
        fixed, offset, problem = self._fixed_header(ctx)
        if problem is not None:
            return
        self.early = (ctx, fixed, offset)
        fields = headers.fields_of(fixed)
        try:
            self.minter = stamps.start(cfg, fields, sub.envelope.recipients, services.affinity, services.minting)
        except OSError as e:
            maillog.warning(f"{sub.qid}: hashcash: cannot start the minter: {e.strerror or e}")
        head = pgp.early_part_head(fields) if key is not None else None
        if head is not None:
            try:
                self.signer = pgp.EarlySigner(cfg, sub.qid, key, head, spool.fd, offset, services.affinity,
                                              services.signing)
            except OSError:
                return  # signed at the dot, where a failure is reported (451)
            self.signer.spooled(spool.size)

    # -- at the final dot -----------------------------------------------------------
    def deliver(self, size: int) -> R.Reply:
        """Check, fix, sign and hand on the whole message (`size`: its
        octets as counted by the decoder, for the log); the client's final
        reply. Everything the message held is released before it returns."""
        from . import pipeline
        from .handoff import FileRange, Outbound

        services, sub = self.services, self.submission
        spool, qid, env = self.spool, sub.qid, sub.envelope
        try:
            if spool is None or spool.failed:  # S-307
                why = spool.reason if spool is not None else "cannot create spool file"
                maillog.warning(f"{qid}: spool: {why}")
                return R.NO_STORAGE
            cfg = services.config
            data_end = time.monotonic()
            if self.early is not None:
                _, header, offset = self.early
            else:
                header, offset, refusal = self._prepare(self._fix_context())
                if refusal is not None:
                    return refusal
            maillog.message_from(qid, env.sender, size, len(env.recipients))
            body = FileRange(spool.fd, offset, spool.size - offset)
            pctx = pipeline.Context(qid, sub.user, env.recipients, cfg, services.affinity, services.random.take,
                                    data_end, self.signer, self.minter, services.minting, services.signing)
            signed = pipeline.run(services.dkim, pctx, header, body, self.digest)  # S-1101
            self.extra_spools = signed.spools
            self.notes = tuple(signed.notes)
            for note in signed.notes:
                maillog.info(f"{qid}: {note}")
            if signed.refused is not None:
                return signed.refused
            out = Outbound(qid, env, (signed.header, *signed.body), sub.xforward)
            result = services.handoff().deliver(out, cfg.sendmail_timeout)
            self.handed = result
            maillog.sendmail_stderr(qid, result.stderr)
            for note in result.notes:
                maillog.info(f"{qid}: {note}")
            for rcpt in env.recipients:
                maillog.delivered(qid, rcpt, result.elapsed, result.status, result.detail, result.relay)
            if result.may_duplicate:  # S-808, RFC 1047
                maillog.warning(f"{qid}: the MTA may have the message although msa answered {result.reply}; "
                                "the client may send it again")
            return R.queued(qid) if result.reply is None else result.reply
        finally:
            self.close()

    def _fix_context(self) -> Any:
        """The session's context, stamped with the time the header is fixed."""
        return dataclasses.replace(self.submission.fix, now=datetime.datetime.now().astimezone(),
                                   random=self.services.random.take(10))

    def _prepare(self, ctx: Any) -> tuple[bytes, int, R.Reply | None]:
        """Check and complete the header (SPEC.md §6-§7): the new header
        block, the body's offset in the spool file, or a refusal (logged)."""
        fixed, offset, problem = self._fixed_header(ctx)
        if problem is None:
            return fixed, offset, None
        if isinstance(problem, R.Reply):
            return b"", 0, problem
        return b"", 0, self._sender_refusal(problem)

    def _fixed_header(self, ctx: Any) -> tuple[bytes, int, Any]:
        """The checked and completed header block and the body's offset, or
        the problem: a Reply (S-703) or a headers.SenderProblem (S-602)."""
        import headers

        block = self.header.finish()
        if isinstance(block, headers.HeaderTooLarge):
            return b"", 0, R.HEADER_TOO_LARGE  # S-703
        if self.submission.user is not None:  # S-602: trusted clients are not checked
            problem = headers.check_senders(block, self.submission.may_send_as)
            if problem is not None:
                return b"", 0, problem
        fixed = headers.fix(block, ctx)
        if isinstance(fixed, headers.SenderProblem):
            return b"", 0, fixed
        return fixed, block.body_offset, None

    def _sender_refusal(self, problem: Any) -> R.Reply:
        sub = self.submission
        user = sub.user or ""
        hint = None
        if problem.kind == "not_owned":
            reply = R.from_not_owned(problem.address or "", user)
            if sub.envelope.sender == "":
                # A null sender with a From: the user does not own is what a
                # satellite MTA's bounce looks like (README "The users
                # database"): say what would let it through.
                hint = f"a bounce from an MTA relaying as {user}? add <{problem.address}> to {user}'s senders"
            else:
                hint = sub.senders_hint
        elif problem.kind == "no_from":
            reply = R.NO_FROM_HEADER
        else:
            reply = R.CANNOT_VERIFY_FROM
        maillog.reject(sub.qid, "END-OF-MESSAGE", sub.client, str(reply), sub.envelope.sender, None, sub.helo, hint)
        return reply

    # -- the end, whatever it was ---------------------------------------------------
    def close(self) -> None:
        """Stop every child and remove every spool file; idempotent."""
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

    def abandon(self) -> None:
        """From another thread (the end of the drain): the spool file goes,
        so that nothing is left whatever the session thread does next."""
        spool = self.spool
        if spool is not None:
            spool.unlink()
