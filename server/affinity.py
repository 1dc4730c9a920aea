"""CPU affinity of the daemon's threads (`make bench` cases 3, 9, 10).

Python runs one thread at a time (the GIL), so the daemon's Python work
never uses more than one core. Spread over several, it costs more: every
socket call releases the GIL, a thread woken on another core takes it, and
the first must wait for it back, so that with 8 busy sessions on 2 cores
msa spent about twice the CPU per small message it spends with one session
(measured: 1.6 against 0.7 ms), and sent half as many. So `serve` keeps its
threads on one core (`pin`), and widens a thread's set (`wide`) only around
the work that runs without the GIL for long and may use every core: argon2
verification (its lanes are threads that inherit the set) and the child
processes it starts (sendmail, which inherits it too).

Linux's sched_setaffinity(0, ...) sets the calling thread's set, and a new
thread inherits its creator's: `pin` is called in the main thread before
any other starts. Where affinity cannot be set (one core, a restricted
cpuset, another OS), nothing is pinned. With `workers` (S-1601) each worker
process pins its own threads to a core of its own, worker i to the i-th
core modulo their number; the master process is not pinned.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator


class CpuAffinity:
    """One per process (Server.affinity); does nothing until `pin`."""

    def __init__(self) -> None:
        self._all: set[int] | None = None  # every core the process may use, once pinned
        self._one: set[int] | None = None

    @property
    def pinned(self) -> bool:
        return self._one is not None

    @property
    def core(self) -> int | None:
        """The core the threads are pinned to, None when not pinned."""
        return min(self._one) if self._one else None

    def pin(self, index: int = 0) -> bool:
        """Keep the calling thread, and every thread it starts, on one core:
        the `index`-th (modulo their number) of those the process may use,
        so that serve's workers (S-1601), pinned with their numbers, spread
        over the cores instead of sharing the first."""
        try:
            cores = os.sched_getaffinity(0)
            if len(cores) < 2:
                return False
            one = {sorted(cores)[index % len(cores)]}
            os.sched_setaffinity(0, one)
        except (AttributeError, OSError):
            return False
        self._all, self._one = set(cores), one
        return True

    @contextlib.contextmanager
    def wide(self) -> Iterator[None]:
        """Every core for the calling thread (and what it starts) meanwhile."""
        if self._all is None or self._one is None:
            yield
            return
        try:
            os.sched_setaffinity(0, self._all)
        except OSError:
            yield
            return
        try:
            yield
        finally:
            try:
                os.sched_setaffinity(0, self._one)
            except OSError:
                pass
