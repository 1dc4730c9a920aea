"""Sending limits per authenticated user (SPEC.md S-1201) over the state store.

This module owns how the two sliding windows of ``limit_messages`` and
``limit_recipients`` become reservations: one message reserved at MAIL, one
recipient at each RCPT, each checked and counted in one step of the store,
so that concurrent sessions of one user (threads, inetd processes, workers)
never pass a limit together; what is given back when a message is not
accepted; and which refusal is the first of its window (logged once, so a
hijacked account shows in the log without flooding it). When the store
fails the limits fail open (S-1202).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from . import NOT_COUNTED, Hold, Store

__all__ = ["SendingLimits"]

#: Steps per (shorter) window: a message leaves its window at most 1/120 of
#: the period early, and a window sums at most 120 rows (the longer one
#: period_long / step rows).
STEPS_PER_PERIOD = 120


class SendingLimits:
    """`messages` and `recipients`: the configured limits (server.config.Limit:
    `count`, `seconds`, and the text shown), None when off."""

    def __init__(self, store: Store, messages: Any, recipients: Any) -> None:
        self.store = store
        self.messages = messages
        self.recipients = recipients

    @property
    def on(self) -> bool:
        return self.messages is not None or self.recipients is not None

    @property
    def step(self) -> float:
        """The step the counts are kept in: 1/120 of the shorter period
        (30 s of an hour), so a window is a bounded sum."""
        periods = [limit.seconds for limit in (self.messages, self.recipients) if limit is not None]
        return max(min(periods) / STEPS_PER_PERIOD, 1.0) if periods else 1.0

    def reserve(self, user: str, kind: str) -> Hold | None:
        """Reserve one message (``kind`` "messages") or one recipient
        ("recipients") for ``user``; None when the limit is reached, a hold
        that counts nothing when that limit is off or the store fails."""
        limit = self.messages if kind == "messages" else self.recipients
        if limit is None:
            return NOT_COUNTED
        return self.store.reserve(user, kind, limit.count, limit.seconds, self.step)

    def release(self, holds: Iterable[Hold]) -> None:
        """Give back what a message that was not accepted had reserved."""
        self.store.release(holds)

    def first_refusal(self, user: str, kind: str) -> str | None:
        """``messages 200/1h`` for the first refusal of its window, else None."""
        limit = self.messages if kind == "messages" else self.recipients
        if limit is None or not self.store.first_refusal(user, kind, limit.seconds):
            return None
        return f"{kind} {limit}"
