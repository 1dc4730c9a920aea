"""The PGP/MIME step of the pipeline (SPEC.md S-1104): the user's key, the
decision, the SOP signer run over exactly the signed part, the frame.

The signed part's bytes are its header (made by signing/pgpmime.py) and
the body from the spool. For a large message most of the signer's time is
hashing, so the signer is started as soon as the header block has ended
(`EarlySigner`) and fed the body as it is spooled, on the guess that the
message will be signed as it is (no re-encoding, the usual case). At the
final dot the body walk (signing/mimewalk.py) decides; a right guess only
waits for the signer to finish, a wrong one (a part to re-encode, an
armor line) stops it and signs the usual way. Either way the signature is over the
same bytes, so the guess changes nothing but the time.
"""

from __future__ import annotations

import base64
import math
import os
import re
import threading
import time
from typing import Any

from smtp_states import replies as R

from . import child
from .handoff import FileRange

#: An armored detached signature is about 300 octets (Ed25519) to 1 KiB
#: (RSA 4096); a signer writing more is broken.
SIGNATURE_MAX = 64 * 1024
#: Pieces the body scan and the re-encoding read.
READ = 64 * 1024


def key_path(directory: str, user: str) -> str | None:
    """pgp_keys/USER.key (users.db names are lower case), or None for a
    name that cannot be a file name."""
    name = user.lower()
    if not name or "/" in name or name.startswith(".") or "\0" in name:
        return None
    return os.path.join(directory, name + ".key")


def key_for(config: Any, user: str | None) -> str | None:
    """pgp_keys/USER.key when there is one for this authenticated user
    (mail from trusted networks, with no user, is never signed)."""
    if config.pgp_keys is None or user is None:
        return None
    path = key_path(config.pgp_keys, user)
    return path if path is not None and os.path.isfile(path) else None


def _micalg_path(config: Any, qid: str) -> str:
    # Named like a spool file, so that a crash leaves nothing that the
    # start-up clean-up would not remove (S-1015).
    return os.path.join(config.spool, f"msa-{qid}0D.msg")


def _argv(config: Any, micalg_path: str, key: str) -> list[str]:
    return [*config.pgp_sop, "sign", f"--micalg-out={micalg_path}", key]


class NoSlot(OSError):
    """No signing slot of the host is free (S-1106)."""


class EarlySigner:
    """The SOP signer started when the header block has ended, fed the
    signed part's header at once and the body as the session spools it;
    its poll loop runs in a thread of its own (delivery/child.py, Growing)."""

    def __init__(self, config: Any, qid: str, key: str, part_head: bytes, fd: int, body_offset: int,
                 affinity: Any, slots: Any = None) -> None:
        """OSError when the signer cannot be started, NoSlot when none of
        the host's signing slots is free now (S-1106's bound: the message
        is then signed at the dot, where a slot is waited for)."""
        from signing import pgpmime

        self.slot = slots.take(None) if slots is not None else None
        if slots is not None and self.slot is None:
            raise NoSlot()
        self.part_head = part_head
        self.body_offset = body_offset
        self.micalg_path = _micalg_path(config, qid)
        self.argv = _argv(config, self.micalg_path, key)
        self.growing = child.Growing(fd, body_offset)
        before = pgpmime.signed_part(part_head)
        try:
            self.child = child.Child(self.argv, (before, self.growing), stdout_limit=SIGNATURE_MAX,
                                     affinity=affinity)
        except OSError:
            self.growing.close()
            self._release()
            raise
        self.result: child.Finished | None = None
        self._thread: threading.Thread | None = threading.Thread(target=self._run, name="pgp-sign", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        self.result = self.child.run(math.inf)

    def spooled(self, size: int) -> None:
        """The spool file now holds `size` octets: all of them are signed
        (S-1104, amended: the body's last CRLF belongs to the signed part)."""
        self.growing.extend(size)

    def finish(self, end: int, tail: bytes, timeout: float) -> child.Finished:
        """The body ends at `end` in the spool file and the signed part with
        `tail` after it: feed the rest, wait for the signature within `timeout`."""
        self.child.deadline = time.monotonic() + timeout
        self.growing.end(end, tail)
        self._join(timeout + 10)
        self._release()
        assert self.result is not None
        return self.result

    def _release(self) -> None:
        if self.slot is not None:
            self.slot.release()
            self.slot = None

    def cancel(self) -> None:
        """Stop it (a wrong guess, a refused or abandoned message); idempotent."""
        self.growing.cancel()
        self._join(10)
        self._release()
        try:
            os.unlink(self.micalg_path)
        except OSError:
            pass

    def _join(self, timeout: float) -> None:
        if self._thread is not None:
            self._thread.join(timeout)
            if not self._thread.is_alive():
                self._thread = None
                self.growing.close()
        if self.result is None:  # the loop did not end in time: it is killed by the deadline
            self.result = child.Finished(None, b"", b"", 0.0)


def early_part_head(fields: list[tuple[str, bytes]]) -> bytes | None:
    """The signed part's header on the guess that the body needs no
    re-encoding, or None when the header alone says it is not signed."""
    from signing import pgpmime

    if pgpmime.plan(fields).action != "sign":
        return None
    return pgpmime.part_header(fields)


#: How the log names a change of the top-level entity's body.
_TOP_CHANGE = {"quoted-printable": "quoted-printable", "repair-qp": "quoted-printable", "base64": "base64",
               "repair-base64": "base64"}


def step(msg: Any, ctx: Any, key: str, fields: list[tuple[str, bytes]]) -> Any:
    """S-1104: wrap the message as multipart/signed around the body, signed
    by the SOP command with the user's key; left as it is when already
    protected or inline PGP; the 7-bit rule's re-encoding streamed into a
    second spool file; unsigned, with the reason logged, when the body is
    past the walker's bounds or cannot be made 7-bit; a failing signer is
    451 4.3.0, never unsigned mail instead. `ctx.signer`: an EarlySigner
    fed while spooling, used when its guess was right."""
    from signing import mimewalk, pgpmime

    from .spool import SpoolFile

    early: EarlySigner | None = ctx.signer
    plan = pgpmime.plan(fields)
    if plan.action != "sign":
        msg.notes.append(f"pgp={'left' if plan.action == 'leave' else 'skipped'} ({plan.why})")
        return msg
    [body] = msg.body
    assert isinstance(body, FileRange)
    ct, cte = pgpmime.header_values(fields)
    walk = mimewalk.Walker(ct, cte)  # the first pass only looks
    for chunk in body.chunks(READ):
        walk.feed(chunk)
    walk.finish()
    recoding = walk.result()
    if recoding.armor:
        msg.notes.append("pgp=left (an inline PGP armor line in the first text part)")
        return msg
    if recoding.problem is not None:
        msg.notes.append(f"pgp=skipped ({recoding.problem})")
        return msg
    how = ""
    if recoding.changes:  # RFC 3156 §3: re-encoded while streamed into a second spool (S-1102)
        try:
            second = SpoolFile(ctx.config.spool, ctx.qid + "0E")  # removed with the first one
        except OSError as e:
            msg.notes.append(f"pgp=failed (re-encoding: cannot create a spool file: {e.strerror or e})")
            msg.refused = R.NO_STORAGE
            return msg
        msg.spools.append(second)
        rewrite = mimewalk.Walker(ct, cte, recoding)
        for chunk in body.chunks(READ):
            second.write(rewrite.feed(chunk))
        second.write(rewrite.finish())
        if second.failed:
            msg.notes.append(f"pgp=failed (re-encoding: {second.reason})")
            msg.refused = R.NO_STORAGE
            return msg
        if rewrite.result().problem is not None:  # the two passes read the same bytes: a bug
            msg.notes.append(f"pgp=failed (re-encoding: {rewrite.result().problem})")
            msg.refused = R.HANDOFF_TEMPFAIL
            return msg
        body = FileRange(second.fd, 0, second.size)
        count = recoding.reencoded()
        top = _TOP_CHANGE.get(recoding.changes.get(0, ""))
        how = f", {top}" if top else f", {count} part{'s' if count != 1 else ''} re-encoded" if count else ""
    ends_crlf = _ends_crlf(body)
    head = pgpmime.part_header(fields, recoding.top_cte(), recoding.top_eight_bit)
    # RFC 1847 §2.1: exactly part one's octets; S-1104 (amended): the body
    # whole, and a line break of its own when it has none.
    before, after = pgpmime.signed_part(head), pgpmime.part_end(ends_crlf)
    if early is not None and early.part_head == head and early.growing.fd == body.fd \
            and early.body_offset == body.offset:
        micalg_path, argv = early.micalg_path, early.argv
        done: child.Finished | OSError = early.finish(body.offset + body.size(), after, ctx.config.sendmail_timeout)
    else:
        if early is not None:
            early.cancel()
        micalg_path = _micalg_path(ctx.config, ctx.qid)
        argv = _argv(ctx.config, micalg_path, key)
        timeout = ctx.config.sendmail_timeout
        start = time.monotonic()
        # S-1106: at most one signer per core on the host; the rest wait
        # within the signer's own time budget, then 451 (never unsigned).
        slot = ctx.signing.take(start + timeout) if ctx.signing is not None else None
        if ctx.signing is not None and slot is None:
            msg.notes.append(f"pgp=failed (no signing slot free within {timeout:g}s)")
            msg.refused = R.HANDOFF_TEMPFAIL
            return msg
        try:
            done = child.run(argv, (before, body, after), max(0.1, start + timeout - time.monotonic()),
                             stdout_limit=SIGNATURE_MAX, affinity=ctx.affinity)
        finally:
            if slot is not None:
                slot.release()
    micalg = _read_small(micalg_path)
    if isinstance(done, OSError) or done.status != 0 or done.stdout_overflow or not done.stdout:
        why = (f"cannot run {argv[0]}: {done.strerror or done}" if isinstance(done, OSError)
               else "timeout" if done.status is None
               else f"{argv[0]} exit {done.status}: {done.stderr[:200].decode('utf-8', 'replace').strip()}")
        msg.notes.append(f"pgp=failed ({why})")
        msg.refused = R.HANDOFF_TEMPFAIL  # S-1104: never unsigned instead
        return msg
    if not re.fullmatch(r"pgp-[a-z0-9-]{1,20}", micalg):  # RFC 3156 §5: it must name the hash used
        msg.notes.append(f"pgp=failed (no micalg from {argv[0]} --micalg-out: {micalg[:40]!r})")
        msg.refused = R.HANDOFF_TEMPFAIL
        return msg
    boundary = b"=_msa_" + base64.urlsafe_b64encode(ctx.random(24)).rstrip(b"=")
    msg.header = pgpmime.outer_header(fields, boundary, micalg)
    msg.body = (pgpmime.prefix(boundary, head), body, pgpmime.suffix(boundary, done.stdout, ends_crlf))
    msg.body_changed = True
    msg.notes.append(f"pgp=signed ({micalg}{how})")
    return msg


def _ends_crlf(body: FileRange) -> bool:
    size = body.size()
    return size >= 2 and os.pread(body.fd, 2, body.offset + size - 2) == b"\r\n"


def _read_small(path: str) -> str:
    try:
        with open(path, "rb") as f:
            return f.read(64).decode("ascii", "replace").strip()
    except OSError:
        return ""
    finally:
        try:
            os.unlink(path)
        except OSError:
            pass
