"""The session states and which command is allowed in which (SPEC.md §2).

Rule 1 (after h11): everything that decides whether a command may run now
lives in this file. `refusal()` answers "may VERB run in STATE?" with None
or the reply to send; `connection.py` never repeats these checks.
"""

from __future__ import annotations

from enum import Enum

from . import replies as R
from .replies import Reply


class State(Enum):
    FRESH = "fresh"  #: greeting sent, or TLS just started (RFC 3207 §4.2)
    GREETED = "greeted"  #: after EHLO/HELO
    MAIL = "mail"  #: MAIL accepted
    RCPT = "rcpt"  #: at least one RCPT accepted
    DATA = "data"  #: receiving the message (S-207)
    AUTH = "auth"  #: inside an AUTH exchange (RFC 4954 §4)
    CLOSED = "closed"  #: QUIT answered, or 421 sent


#: Commands allowed in any state (S-203), answered without a state change.
ANY_STATE = frozenset({"NOOP", "HELP", "VRFY", "QUIT", "RSET", "EHLO", "HELO"})

#: Commands msa knows and refuses with 502 (S-203); BDAT first has its
#: chunk dropped (connection.py).
NOT_IMPLEMENTED = frozenset({"EXPN", "TURN", "ETRN", "BDAT"})

#: Junk commands: beyond MAX_JUNK_COMMANDS each also counts as an error
#: (S-106, Postfix's smtpd_junk_command_limit).
JUNK = frozenset({"NOOP", "RSET", "VRFY", "HELP"})

_TABLE: dict[str, dict[State, Reply | None]] = {
    "STARTTLS": {
        State.FRESH: None,
        State.GREETED: None,
        State.MAIL: R.BAD_SEQUENCE,
        State.RCPT: R.BAD_SEQUENCE,
    },
    "AUTH": {
        State.FRESH: R.BAD_SEQUENCE,
        State.GREETED: None,
        State.MAIL: R.BAD_SEQUENCE,
        State.RCPT: R.BAD_SEQUENCE,
    },
    "MAIL": {
        State.FRESH: R.BAD_SEQUENCE,
        State.GREETED: None,
        State.MAIL: R.NESTED_MAIL,
        State.RCPT: R.NESTED_MAIL,
    },
    "RCPT": {
        State.FRESH: R.NEED_MAIL,
        State.GREETED: R.NEED_MAIL,
        State.MAIL: None,
        State.RCPT: None,
    },
    "DATA": {
        State.FRESH: R.BAD_SEQUENCE,
        State.GREETED: R.NEED_MAIL,
        State.MAIL: R.NO_VALID_RECIPIENTS,
        State.RCPT: None,
    },
}


def refusal(verb: str, state: State) -> Reply | None:
    """None if `verb` may run in `state` (command-state table of §2)."""
    row = _TABLE.get(verb)
    if row is None:
        return None
    return row.get(state, R.BAD_SEQUENCE)


def in_transaction(state: State) -> bool:
    return state in (State.MAIL, State.RCPT)
