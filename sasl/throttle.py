"""Per-client delays after failed AUTH attempts (SPEC.md S-511).

This module owns the failure table: after 1, 2, 3 … failures from one client
address the next AUTH reply waits 1, 2, 4 … seconds, at most 30, and an
address is forgotten 15 minutes after its last failure. It is pure data: no
locks, no sleeping (the shell holds a lock around calls and waits outside
any argon2 slot), the clock a parameter. The table is bounded: beyond
``max_entries`` the entry with the oldest failure is dropped (DESIGN.md).
Standard library only.
"""

from __future__ import annotations

import ipaddress
import time
from collections import OrderedDict
from collections.abc import Callable

from .limits import (
    IPV6_CLIENT_PREFIX,
    THROTTLE_FIRST_DELAY_SECONDS,
    THROTTLE_FORGET_SECONDS,
    THROTTLE_MAX_COUNTED_FAILURES,
    THROTTLE_MAX_DELAY_SECONDS,
    THROTTLE_MAX_ENTRIES,
)

__all__ = ["Throttle", "client_key"]


def client_key(ip: str) -> str:
    """The throttle key of a client address (S-109, S-511).

    IPv4 as is (``::ffff:a.b.c.d`` is a.b.c.d); IPv6 as its /64 network,
    since one subscriber usually holds a whole /64. Anything that is not an
    address (``unknown`` in inetd mode on a pipe) is its own key.
    """
    try:
        address = ipaddress.ip_address(ip.split("%", 1)[0])
    except ValueError:
        return ip
    if isinstance(address, ipaddress.IPv6Address):
        if address.ipv4_mapped is not None:
            return str(address.ipv4_mapped)
        network = ipaddress.IPv6Network((int(address), IPV6_CLIENT_PREFIX), strict=False)
        return str(network)
    return str(address)


class Throttle:
    """Failure counts per client key, ordered by last failure."""

    __slots__ = ("_clock", "_entries", "_max_entries")

    def __init__(
        self,
        clock: Callable[[], float] = time.monotonic,
        max_entries: int = THROTTLE_MAX_ENTRIES,
    ) -> None:
        self._clock = clock
        self._max_entries = max_entries
        # key -> (failures, time of the last failure); oldest failure first.
        self._entries: OrderedDict[str, tuple[int, float]] = OrderedDict()

    def __len__(self) -> int:
        return len(self._entries)

    def delay(self, key: str) -> float:
        """Seconds to wait before answering the next AUTH from ``key``."""
        now = self._clock()
        self._expire(now)
        entry = self._entries.get(key)
        if entry is None:
            return 0.0
        failures = entry[0]
        return min(THROTTLE_FIRST_DELAY_SECONDS * 2 ** (failures - 1), THROTTLE_MAX_DELAY_SECONDS)

    def failed(self, key: str) -> None:
        """Count one failed AUTH from ``key``."""
        now = self._clock()
        self._expire(now)
        failures = self._entries.pop(key, (0, now))[0]
        self._entries[key] = (min(failures + 1, THROTTLE_MAX_COUNTED_FAILURES), now)
        while len(self._entries) > self._max_entries:
            self._entries.popitem(last=False)

    def succeeded(self, key: str) -> None:
        """Forget ``key``: a success ends its delays."""
        self._entries.pop(key, None)

    def _expire(self, now: float) -> None:
        """Drop entries whose last failure is 15 minutes old (front first)."""
        while self._entries:
            key, (_, last) = next(iter(self._entries.items()))
            if now - last < THROTTLE_FORGET_SECONDS:
                break
            del self._entries[key]
