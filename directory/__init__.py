"""Directories: who users are, what their passwords are, and what they may
send as (SPEC.md §13; DESIGN.md "Layout").

Each kind of directory is a module behind one interface: users.db and the
app passwords file (`usersfile`), Dovecot's authentication service
(`dovecot`) and an SQL database (`sql`). The daemon asks them in the
order of S-1301 and never branches on their kind. A directory never
imports `server/`, `delivery/` or `state/`; what it needs (a place to log)
is passed in.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

__all__ = ["UNKNOWN", "Client", "Directory", "Unavailable", "Verdict", "Warn"]

#: Where a directory writes its log lines (one warning per outage, S-1302).
Warn = Callable[[str], None]


@dataclass(frozen=True, slots=True)
class Client:
    """What a directory may pass on about the SMTP client (Dovecot's
    `lip`, `rip`, `lport`, `rport`, `secured`, `session`)."""

    session: str = ""
    local_ip: str | None = None
    local_port: int | None = None
    remote_ip: str | None = None
    remote_port: int | None = None
    tls: bool = False


@dataclass(frozen=True, slots=True)
class Verdict:
    """The outcome of one password check.

    ``known``: the directory holds the name (else the next one is asked,
    S-1301); ``ok``: the password is right; ``user``: the canonical name
    that authenticated (Dovecot's ``user=``); ``temporary``: the directory
    could not answer (454 4.7.0, S-1302, S-1303); ``reason``: for the log
    only, never for the client."""

    known: bool
    ok: bool = False
    user: str | None = None
    temporary: bool = False
    reason: str = ""


UNKNOWN = Verdict(known=False)


class Unavailable(Exception):
    """The directory cannot be reached or answered with an error; str() says why."""


class Directory(Protocol):
    #: "users.db", "sql" or "dovecot": the `directory=` of the log (S-1301).
    name: str

    def authenticate(self, name: str, password: bytes, client: Client) -> Verdict: ...

    def senders(self, user: str) -> tuple[str, ...] | None:
        """The user's permitted senders in users.db's syntax, or None when
        this directory does not say (S-1305). Unavailable when it cannot
        answer now."""
        ...

    @property
    def failing(self) -> bool:
        """Within an outage: the last queries could not be answered (S-1501)."""
        ...

    def close(self) -> None: ...
