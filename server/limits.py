"""Sending limits per authenticated user (SPEC.md S-1201) over the state store.

This module owns how the two sliding windows of ``limit_messages`` and
``limit_recipients`` become the ``smtp_states.Quota`` asked at MAIL, what
is counted after the MTA accepted a message, and which refusal is the
first of its window (logged once, so a hijacked account shows in the log
without flooding it). The counts live in ``server.state.Store``; when the
store fails the limits fail open (S-1202).
"""

from __future__ import annotations

from smtp_states import Quota

from .config import Config, Limit
from .state import Store

__all__ = ["SendingLimits"]

_NO_LIMIT = Quota()

#: Steps per (shorter) window: a message leaves its window at most 1/120 of
#: the period early, and a window sums at most 120 rows (the longer one
#: period_long / step rows).
STEPS_PER_PERIOD = 120


class SendingLimits:
    def __init__(self, store: Store, config: Config) -> None:
        self.store = store
        self.messages: Limit | None = config.limit_messages
        self.recipients: Limit | None = config.limit_recipients

    @property
    def on(self) -> bool:
        return self.messages is not None or self.recipients is not None

    def _periods(self) -> tuple[float, float]:
        return (
            self.messages.seconds if self.messages else 0.0,
            self.recipients.seconds if self.recipients else 0.0,
        )

    def quota(self, user: str) -> Quota:
        """What ``user`` may still send now; no limit when the store fails."""
        if not self.on:
            return _NO_LIMIT
        usage = self.store.usage(user, *self._periods())
        if usage is None:
            return _NO_LIMIT  # S-1202: fail open
        message_ok = self.messages is None or usage.messages < self.messages.count
        left = None if self.recipients is None else max(self.recipients.count - usage.recipients, 0)
        return Quota(message_ok, left)

    @property
    def step(self) -> float:
        """The step the counts are kept in: 1/120 of the shorter period
        (30 s of an hour), so a window is a bounded sum."""
        periods = [limit.seconds for limit in (self.messages, self.recipients) if limit is not None]
        return max(min(periods) / STEPS_PER_PERIOD, 1.0) if periods else 1.0

    def record(self, user: str, recipients: int) -> None:
        """A message the MTA accepted (a refused one costs nothing)."""
        if self.on:
            self.store.record(user, recipients, self.step)

    def first_refusal(self, user: str, kind: str) -> str | None:
        """``messages 200/1h`` for the first refusal of its window, else None."""
        limit = self.messages if kind == "messages" else self.recipients
        if limit is None or not self.store.first_refusal(user, kind, limit.seconds):
            return None
        return f"{kind} {limit}"
