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
    THROTTLE_MAX_NAMES,
    THROTTLE_OTHER_NAMES,
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
    """Failure counts per client key and user name, keys ordered by their
    last failure.

    The delay for a client is set by all its recent failures, whatever
    names they were for; a success forgets only the failures of the name
    that succeeded (S-511), so an account holder cannot reset the delay
    between guesses at other accounts by logging in as himself. Names are
    whatever the caller uses to tell them apart (the shell passes the name
    as sent, lower-cased; "" when the exchange carried none).
    """

    __slots__ = ("_clock", "_entries", "_max_entries")

    def __init__(
        self,
        clock: Callable[[], float] = time.monotonic,
        max_entries: int = THROTTLE_MAX_ENTRIES,
    ) -> None:
        self._clock = clock
        self._max_entries = max_entries
        # key -> (name -> failures, time of the key's last failure);
        # oldest failure first.
        self._entries: OrderedDict[str, tuple[dict[str, int], float]] = OrderedDict()

    def __len__(self) -> int:
        return len(self._entries)

    def failures(self, key: str) -> int:
        """Recent failures from ``key``, all names together (bounded)."""
        self._expire(self._clock())
        entry = self._entries.get(key)
        if entry is None:
            return 0
        return min(sum(entry[0].values()), THROTTLE_MAX_COUNTED_FAILURES)

    def delay(self, key: str) -> float:
        """Seconds to wait before answering the next AUTH from ``key``."""
        failures = self.failures(key)
        if failures == 0:
            return 0.0
        return min(THROTTLE_FIRST_DELAY_SECONDS * 2 ** (failures - 1), THROTTLE_MAX_DELAY_SECONDS)

    def failed(self, key: str, name: str = "") -> None:
        """Count one failed AUTH from ``key`` for user ``name``."""
        now = self._clock()
        self._expire(now)
        names = self._entries.pop(key, ({}, now))[0]
        if name not in names and len(names) >= THROTTLE_MAX_NAMES:
            # Many names from one address: the oldest name's count moves to
            # a bucket no success can clear ("\0" is never a user name).
            oldest = next(iter(names))
            folded = names.get(THROTTLE_OTHER_NAMES, 0) + names.pop(oldest)
            names[THROTTLE_OTHER_NAMES] = min(folded, THROTTLE_MAX_COUNTED_FAILURES)
        names[name] = min(names.pop(name, 0) + 1, THROTTLE_MAX_COUNTED_FAILURES)
        self._entries[key] = (names, now)
        while len(self._entries) > self._max_entries:
            self._entries.popitem(last=False)

    def succeeded(self, key: str, name: str = "") -> None:
        """A success for ``name`` from ``key`` forgets that name's failures
        there, and only those."""
        entry = self._entries.get(key)
        if entry is None:
            return
        entry[0].pop(name, None)
        if not entry[0]:
            del self._entries[key]

    def _expire(self, now: float) -> None:
        """Drop keys whose last failure is 15 minutes old (front first)."""
        while self._entries:
            key, (_, last) = next(iter(self._entries.items()))
            if now - last < THROTTLE_FORGET_SECONDS:
                break
            del self._entries[key]
