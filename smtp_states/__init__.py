"""smtp_states: the sans-IO SMTP server core of msa.

Bytes in, events and reply bytes out; no sockets, threads, files or
processes (DESIGN.md). Public names only.

The names are imported from their modules when first used (PEP 562
``__getattr__``): inetd mode writes the greeting (``replies``) before it
loads the rest of the core, the parser's regular expressions and the
events among it.
"""

from __future__ import annotations

#: Where each public name lives.
_EXPORTS = {
    "connection": ("Connection", "Policy", "Settings"),
    "events": ("PAUSING", "AuthCheck", "Close", "DataChunk", "DataEnd", "DataStart", "Ehlo", "Envelope", "Event",
               "MailFrom", "RcptTo", "Refused", "Reset", "StartTls"),
    "replies": ("Reply",),
}
_MODULE_OF = {name: module for module, names in _EXPORTS.items() for name in names}

# typing itself is not imported: inetd mode would pay for it before its greeting
# (TYPE_CHECKING as a plain False, the idiom of PEP 781; type checkers read it as True).
TYPE_CHECKING = False
if TYPE_CHECKING:  # what __getattr__ gives, for type checkers
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


def __getattr__(name: str) -> object:
    module = _MODULE_OF.get(name)
    if module is None:  # a submodule not imported yet: `from smtp_states import replies` imports it
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    # __import__, not importlib.import_module: -X importtime (make bench
    # PROFILE=case7) reports what the statement imports, not what importlib does.
    __import__(f"{__name__}.{module}")
    value = getattr(globals()[module], name)  # the submodule, set here by its import
    globals()[name] = value
    return value
