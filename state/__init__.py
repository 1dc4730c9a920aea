"""What outlives a session (SPEC.md §12, §14; DESIGN.md "Layout"): login
failures (S-511), sending reservations (S-1201), first-refusal notes and
the secret behind unknown users' SCRAM salts (S-514), behind one `Store`
interface. `sqlite` keeps them in `state_dir` (the default); `redis` in a
Redis server that several hosts share (§14), behind the same interface.

Every method of a store fails open: a store that cannot answer never
loses or refuses mail (S-1202). The package never imports server/,
delivery/ or directory/.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Protocol

__all__ = ["NOT_COUNTED", "Hold", "Store", "Usage"]


@dataclass(frozen=True, slots=True)
class Usage:
    """What a user sent (or holds reserved) in the current windows (S-1201)."""

    messages: int
    recipients: int


@dataclass(frozen=True, slots=True)
class Hold:
    """One reservation (S-1201): ``messages`` and ``recipients`` counted in
    the step starting at ``at``, given back unless the message is accepted.
    ``counted`` is False when nothing was written (the limit is off, or the
    store fails and the limits fail open): giving it back does nothing."""

    user: str
    at: float
    messages: int
    recipients: int
    counted: bool = True


#: A reservation that counted nothing.
NOT_COUNTED = Hold("", 0.0, 0, 0, counted=False)


class Store(Protocol):
    """The state store's interface; every implementation is thread-safe."""

    @property
    def failing(self) -> bool: ...

    # S-511: login failures per client address and (hashed) user name.
    def delay(self, client: str) -> float: ...

    def failed(self, client: str, name: str) -> None: ...

    def succeeded(self, client: str, name: str) -> None: ...

    # S-1201: reservations in sliding windows.
    def reserve(self, user: str, kind: str, limit: int, period: float, step: float = 1.0) -> Hold | None: ...

    def release(self, holds: Iterable[Hold]) -> None: ...

    def first_refusal(self, user: str, kind: str, period: float) -> bool: ...

    # `msa.py limits`: these raise instead of failing open.
    def counts(self, user: str | None, periods: tuple[float, float]) -> dict[str, Usage]: ...

    def reset(self, user: str) -> int: ...

    # S-514: the same secret in every process, whatever the store's health; OSError when none.
    def secret(self) -> bytes: ...

    def mark_failing(self, why: str) -> None: ...

    # Why the store cannot be used now, or None (serve's start-up check, `check`).
    def problem(self) -> str | None: ...

    def close(self) -> None: ...
