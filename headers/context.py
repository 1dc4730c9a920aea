"""FixContext: what the header fix (`fix`) and the Received: field
(`received`) need to know of the transaction; a module of its own so that
neither of the two imports the other for it. Standard library only."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

__all__ = ["FixContext"]


@dataclass(frozen=True, slots=True)
class FixContext:
    """What fix() needs to know about the transaction."""

    hostname: str  # msa's host name (config)
    queue_id: str
    helo: str | None  # as the client sent it; anything, or None
    esmtp: bool  # EHLO (True) or HELO (False)
    client_ip: str  # "192.0.2.1", "2001:db8::1", "::ffff:192.0.2.1" or "unknown"
    tls: str | None  # e.g. "TLSv1.3 with cipher TLS_AES_256_GCM_SHA384"
    authenticated: bool
    smtputf8: bool
    sender: str  # envelope sender without brackets, "" for the null sender
    recipients: tuple[str, ...]
    received_client: bool
    now: datetime  # timezone-aware, local time
    random: bytes  # ≥ 8 random octets for the Message-ID
