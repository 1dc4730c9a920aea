"""Slots for the CPU-heavy children of a host (SPEC.md S-1106): at most as
many Hashcash minters, and as many PGP signers, run at once on a host as it
has cores, whatever starts them (the daemon's sessions, its workers, every
inetd process).

A slot is a lock file in the spool directory (private, and writable by
every msa process of the host), held with flock(2) while its child runs.
The kernel drops a process's locks when it dies, so a crash never leaks a
slot. Each take opens its own file description, so two threads of one
process exclude each other as two processes do. Waiting is polling at a
short interval, bounded by the caller's deadline (the child's time budget):
those that find no slot in time go without (a stamp left out, or the
message signed at the dot and 451 when even that finds none).
"""

from __future__ import annotations

import fcntl
import os
import time

__all__ = ["HostSlots", "Slot"]

#: How often a waiting holder tries the slots again (seconds).
POLL = 0.02


class Slot:
    """One held slot; `release` (idempotent) frees it."""

    __slots__ = ("_fd",)

    def __init__(self, fd: int) -> None:
        self._fd = fd

    def release(self) -> None:
        if self._fd >= 0:
            try:
                os.close(self._fd)  # closing the description drops its lock
            except OSError:
                pass
            self._fd = -1


class HostSlots:
    """`count` slots of one kind ("hashcash", "pgp") in `directory`."""

    def __init__(self, directory: str, kind: str, count: int) -> None:
        self.paths = [os.path.join(directory, f"slot-{kind}-{i}") for i in range(max(count, 1))]

    def take(self, deadline: float | None = None) -> Slot | None:
        """A free slot; None when none freed by `deadline` (time.monotonic();
        None: try once). A slot that cannot be opened at all (the spool is
        unusable) is not waited for: the caller then runs without one, as
        the spool's own failure is reported where the message is."""
        while True:
            usable = False
            for path in self.paths:
                try:
                    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
                except OSError:
                    continue
                usable = True
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except OSError:
                    os.close(fd)
                    continue
                return Slot(fd)
            if not usable:
                return Slot(-1)  # nothing to count with: do not stop the work for it
            if deadline is None or time.monotonic() >= deadline:
                return None
            time.sleep(min(POLL, max(0.0, deadline - time.monotonic())))


def cores() -> int:
    """The cores this process may run on (S-1106: the bound of each kind)."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1
