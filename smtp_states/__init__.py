"""smtp_states: the sans-IO SMTP server core of msa.

Bytes in, events and reply bytes out; no sockets, threads, files or
processes (DESIGN.md). Public names only.
"""

from .connection import Connection, Policy, Settings
from .events import (
    PAUSING,
    AuthCheck,
    Close,
    DataChunk,
    DataEnd,
    DataStart,
    Ehlo,
    Envelope,
    Event,
    MailFrom,
    RcptTo,
    Refused,
    Reset,
    StartTls,
)
from .replies import Reply

__all__ = [
    "PAUSING", "AuthCheck", "Close", "Connection", "DataChunk", "DataEnd", "DataStart",
    "Ehlo", "Envelope", "Event", "MailFrom", "Policy", "RcptTo", "Refused", "Reply",
    "Reset", "Settings", "StartTls",
]
