"""Waiting on a socket or a pipe with a deadline: one poll(2), no FD_SETSIZE
limit, a wake descriptor for shutdown. Shared by the session's transports
(server/) and the SMTP hand-off's client socket (delivery/)."""

from __future__ import annotations

import select
import time

__all__ = ["READABLE", "Timeout", "Woken", "wait"]


class Timeout(OSError):
    """No bytes within the session timeout (an OSError: a send or a
    handshake that times out ends the session like a broken socket)."""


class Woken(Exception):
    """The wake descriptor became readable (shutdown, S-110)."""


READABLE = select.POLLIN | select.POLLPRI


def wait(fd: int, events: int, deadline: float, wake_fd: int | None = None) -> None:
    """Wait for `events` on `fd` until `deadline` (time.monotonic()); raise
    Woken if only `wake_fd` became readable. poll(), not select(): no
    FD_SETSIZE limit with a thousand sessions."""
    poller = select.poll()
    poller.register(fd, events)
    if wake_fd is not None:
        poller.register(wake_fd, select.POLLIN)
    remaining = deadline - time.monotonic()
    ready = poller.poll(remaining * 1000) if remaining > 0 else []
    if not ready:
        raise Timeout()
    if wake_fd is not None and all(f == wake_fd for f, _ in ready):
        raise Woken()
