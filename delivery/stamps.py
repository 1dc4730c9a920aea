"""Hashcash stamps (SPEC.md S-1106): `X-Hashcash: 1:BITS:YYMMDD:RCPT::RAND:COUNTER`
for the To: and Cc: recipients that are envelope recipients.

Minting is a CPU-bound loop of SHA-1 attempts (about a million for 20
bits), so it runs in a child process (a thread would hold the GIL and slow
every session), started once the header block has ended and niced below
the sessions. It prints each stamp as it is found; after the final dot the
message waits for it at most `hashcash_time_budget` seconds, then the
stamps found so far are used and the child is killed. A stamp is checked
here before it is used; Hashcash never changes the reply (S-1106).
"""

from __future__ import annotations

import datetime
import hashlib
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from . import child

#: The minter, run as `python -I -S -c MINT BITS DATE RESOURCE...`: no
#: site, no environment, no import of msa (nor of anything but the
#: standard library's hashlib and base64).
MINT = r"""
import base64, hashlib, os, sys
try:
    os.nice(10)
except OSError:
    pass
bits, date = int(sys.argv[1]), sys.argv[2]
shift = 32 - bits
for resource in sys.argv[3:]:
    rand = base64.b64encode(os.urandom(12)).decode("ascii")
    prefix = f"1:{bits}:{date}:{resource}::{rand}:".encode("ascii")
    copy = hashlib.sha1(prefix).copy
    n = 0
    while True:
        h = copy()
        counter = b"%x" % n
        h.update(counter)
        if int.from_bytes(h.digest()[:4], "big") >> shift == 0:
            break
        n += 1
    sys.stdout.write((prefix + counter).decode("ascii") + "\n")
    sys.stdout.flush()
"""

#: The most octets of stamps read back: 100 stamps of a long address.
OUTPUT_MAX = 64 * 1024


@dataclass(frozen=True, slots=True)
class Wanted:
    """The stamp resources of a message, and the recipients that would have
    had one but cannot carry it (S-1106: the format is ASCII)."""

    resources: list[str]
    unstampable: list[str]

    def left_out(self) -> str:
        """For the log: how many were left out, and why."""
        n = len(self.unstampable)
        return f"{n} recipient{'s' if n != 1 else ''} left out: not ASCII" if n else ""


def resources(fields: Sequence[tuple[str, bytes]], recipients: Sequence[str], limit: int) -> Wanted:
    """The stamp resources: each address of To: then Cc: (in the order they
    appear) that is also an envelope recipient, as the envelope names it,
    once; never a Bcc-only one. At most `limit`. Addresses a stamp cannot
    carry (non-ASCII, or a colon or white space, which the format's
    separators forbid and S-206 keeps out of the envelope anyway) are
    counted apart, so the log can say that they were left out."""
    from headers import parse_addresses, unfolded

    envelope = {}
    for rcpt in recipients:
        envelope.setdefault(rcpt.lower(), rcpt)
    chosen: list[str] = []
    unstampable: list[str] = []
    for wanted in ("to", "cc"):
        for name, raw in fields:
            if name.lower() != wanted:
                continue
            for address in parse_addresses(unfolded(name, raw)) or ():
                rcpt = envelope.get(address.lower())
                if rcpt is None or rcpt in chosen or rcpt in unstampable:
                    continue
                if not _stampable(rcpt):
                    unstampable.append(rcpt)
                    continue
                if len(chosen) < limit:
                    chosen.append(rcpt)
    return Wanted(chosen, unstampable)


def _stampable(address: str) -> bool:
    return address.isascii() and ":" not in address and not any(c.isspace() or not c.isprintable() for c in address)


def valid(stamp: str, bits: int, resource: str) -> bool:
    """A version-1 stamp for this resource whose SHA-1 starts with `bits` zero bits."""
    parts = stamp.split(":")
    if len(parts) != 7 or parts[0] != "1" or parts[1] != str(bits) or parts[3] != resource:
        return False
    digest = hashlib.sha1(stamp.encode("ascii", "replace")).digest()
    return int.from_bytes(digest[:4], "big") >> (32 - bits) == 0


class Minter:
    """The minting child for one message. It runs only while it holds one
    of the host's minting slots (delivery/slots.py, S-1106): taken at once
    when one is free, else waited for within the time budget at `finish`."""

    def __init__(self, bits: int, wanted: list[str], affinity: Any, slots: Any = None,
                 now: datetime.datetime | None = None, left_out: str = "") -> None:
        """OSError when the child cannot be started."""
        self.bits = bits
        self.wanted = wanted
        self.left_out = left_out  # recipients that get no stamp, for the log
        self.affinity = affinity
        self.slots = slots
        self.slot: Any = None
        self.child: child.Child | None = None
        when = now or datetime.datetime.now(datetime.timezone.utc)
        self.date = when.astimezone(datetime.timezone.utc).strftime("%y%m%d")
        if wanted:
            self._start(None)

    def _start(self, deadline: float | None) -> bool:
        """Start the child once a slot is held (waiting until `deadline`;
        None: only if one is free now)."""
        if self.slots is not None:
            self.slot = self.slots.take(deadline)
            if self.slot is None:
                return False
        python = sys.executable or "python3"
        try:
            self.child = child.Child([python, "-I", "-S", "-c", MINT, str(self.bits), self.date, *self.wanted], (),
                                     stdout_limit=OUTPUT_MAX, affinity=self.affinity, env={})
        except OSError:
            self._release()
            raise
        return True

    def _release(self) -> None:
        if self.slot is not None:
            self.slot.release()
            self.slot = None

    def finish(self, deadline: float) -> tuple[list[str], str]:
        """The stamps found by `deadline` (time.monotonic()), in order, and
        a note for the log if some were left out or the minter failed."""
        if not self.wanted:
            return [], ""
        if self.child is None:
            try:
                started = self._start(deadline)
            except OSError as e:
                return [], f"cannot run the minter: {e.strerror or e}"
            if not started:
                return [], f"no minting slot free within the time budget, {len(self.wanted)} left out"
        assert self.child is not None
        try:
            done = self.child.run(deadline)
        finally:
            self.child = None
            self._release()
        lines = done.stdout.decode("ascii", "replace").split("\n")[: len(self.wanted)]
        stamps = []
        for stamp, resource in zip(lines, self.wanted, strict=False):
            if not valid(stamp, self.bits, resource):
                break  # an unfinished last line, or a broken minter: the rest is not trusted
            stamps.append(stamp)
        if len(stamps) == len(self.wanted):
            return stamps, ""
        if done.status is None:
            return stamps, f"time budget reached, {len(self.wanted) - len(stamps)} left out"
        err = done.stderr.decode("utf-8", "replace").strip().splitlines()
        return stamps, f"minter exit {done.status}: {err[-1][:200] if err else 'no output'}"

    def close(self) -> None:
        """Kill it if still running (the message was refused or abandoned)."""
        if self.child is not None:
            self.child.run(0.0)  # a deadline in the past: killed and reaped at once
            self.child = None
        self._release()


def start(cfg: Any, fields: Sequence[tuple[str, bytes]], recipients: Sequence[str], affinity: Any,
          slots: Any = None) -> Minter | None:
    """A minter for this message (one that mints nothing when every
    recipient named was left out, so that the log says so), or None when no
    recipient is named in To: or Cc:. `slots`: the host's minting slots."""
    if cfg.hashcash_bits <= 0 or cfg.hashcash_max_stamps <= 0:
        return None
    wanted = resources(fields, recipients, cfg.hashcash_max_stamps)
    if not wanted.resources and not wanted.unstampable:
        return None
    return Minter(cfg.hashcash_bits, wanted.resources, affinity, slots, left_out=wanted.left_out())


def step(msg: Any, ctx: Any, fields: Sequence[tuple[str, bytes]]) -> Any:
    """S-1106: the stamps below msa's Received: (and so below the DKIM
    signatures, which are added later right below Received:)."""
    cfg = ctx.config
    minter = ctx.minter
    if minter is None:  # no header end seen before the dot (a header-only message)
        try:
            minter = start(cfg, fields, ctx.recipients, ctx.affinity, ctx.minting)
        except OSError as e:
            msg.notes.append(f"hashcash=failed (cannot run the minter: {e.strerror or e})")
            return msg
        if minter is None:
            return msg
    try:
        stamps, why = minter.finish(ctx.data_end + cfg.hashcash_time_budget)
    finally:
        minter.close()
    if stamps:
        added = b"".join(b"X-Hashcash: " + s.encode("ascii") + b"\r\n" for s in stamps)
        received = len(fields[0][1]) if fields and fields[0][0].lower() == "received" else 0
        msg.header = msg.header[:received] + added + msg.header[received:]
    why = "; ".join(w for w in (why, minter.left_out) if w)
    msg.notes.append(f"hashcash={len(stamps)} stamp{'s' if len(stamps) != 1 else ''} ({cfg.hashcash_bits} bits"
                     + (f"; {why})" if why else ")"))
    return msg
