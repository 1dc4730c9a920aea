"""The verified-credential cache (SPEC.md S-512; CONTRACT.md ``auth_cache_ttl``).

This module owns the memory of recent successes, so a returning client (a
mail program that logs in for every message) skips the argon2 cost. Each
entry is a keyed BLAKE2b (RFC 7693) of the length-prefixed user name,
password and stored hash, under a random per-process key: the password is
never stored, a changed password or hash misses by construction, and the
table reveals nothing without the key. Failures are never cached. Pure
data: no locks (the shell holds one), the clock a parameter; bounded, the
oldest entry dropped beyond ``max_entries``. Standard library only.
"""

from __future__ import annotations

import hashlib
import os
import time
from collections import OrderedDict
from collections.abc import Callable

from .limits import CACHE_KEY_OCTETS, CACHE_MAX_ENTRIES

__all__ = ["CredentialCache"]


class CredentialCache:
    """Keyed digests of verified (user, password, stored hash) triples."""

    __slots__ = ("_clock", "_entries", "_key", "_max_entries", "_ttl")

    def __init__(
        self,
        ttl: float,
        clock: Callable[[], float] = time.monotonic,
        max_entries: int = CACHE_MAX_ENTRIES,
        key: bytes | None = None,
    ) -> None:
        self._ttl = ttl
        self._clock = clock
        self._max_entries = max_entries
        self._key = os.urandom(CACHE_KEY_OCTETS) if key is None else key
        # digest -> time remembered; oldest first.
        self._entries: OrderedDict[bytes, float] = OrderedDict()

    def __len__(self) -> int:
        return len(self._entries)

    def _digest(self, user: str, password: bytes, stored_hash: str) -> bytes:
        digest = hashlib.blake2b(key=self._key, digest_size=32)
        for part in (user.encode("utf-8", "surrogatepass"), password, stored_hash.encode("utf-8")):
            # Length prefixes keep ("ab", "c") and ("a", "bc") apart.
            digest.update(len(part).to_bytes(8, "big"))
            digest.update(part)
        return digest.digest()

    def hit(self, user: str, password: bytes, stored_hash: str) -> bool:
        """Whether these three were verified less than ``ttl`` seconds ago."""
        if self._ttl <= 0:
            return False
        now = self._clock()
        self._expire(now)
        return self._digest(user, password, stored_hash) in self._entries

    def remember(self, user: str, password: bytes, stored_hash: str) -> None:
        """Record a success (call only after argon2 said yes)."""
        if self._ttl <= 0:
            return
        now = self._clock()
        self._expire(now)
        digest = self._digest(user, password, stored_hash)
        self._entries.pop(digest, None)
        self._entries[digest] = now
        while len(self._entries) > self._max_entries:
            self._entries.popitem(last=False)

    def clear(self) -> None:
        """Forget everything (for instance after a reload)."""
        self._entries.clear()

    def _expire(self, now: float) -> None:
        while self._entries:
            digest, remembered = next(iter(self._entries.items()))
            if now - remembered < self._ttl:
                break
            del self._entries[digest]
