"""users.db and the app passwords file as a directory (CONTRACT.md "The
users database", SPEC.md S-503, S-510, S-515, S-1301).

This module owns loading the two files (bounded reads, a missing file is an
empty one), noticing that they changed (`Watch`), and answering the
directory interface from them: `authenticate` checks a PLAIN or LOGIN
password against the user's argon2id hash (or the PBKDF2 of a SCRAM-only
user) through `sasl.verify`, an unknown name against the dummy hash so it
costs what a known one costs (S-510); `senders` gives the user's line.
Parsing stays in `sasl/` (userdb, apppass); waiting for an argon2 slot and
the credential cache stay with the daemon's AUTH shell.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from typing import Any

import sasl
from util import files

from . import UNKNOWN, Client, Verdict

__all__ = ["UsersFile", "Watch", "load_apps", "load_users"]


def load_users(path: str, where: str, warn: Callable[[str], None], senders_only: bool = False) -> sasl.UserDB:
    """The users database; a missing file is an empty one, with a warning
    (CONTRACT.md). UserDBError lists the problems, ready for the user;
    ``where`` names the configuration line (``FILE:LINE``) for a file that
    cannot be read at all; ``senders_only``: lines without a credential are
    users whose passwords another directory checks (S-1305)."""
    try:
        data = files.read_regular(path, files.USERS_MAX_OCTETS)
    except files.FileMissing:
        warn(f"{path}: users database does not exist; no user can authenticate")
        return sasl.UserDB(path)
    except files.FileProblem as e:
        raise sasl.UserDBError([f"{where}: users: {e}"]) from None
    return sasl.parse_bytes(data, path, senders_only=senders_only)


def load_apps(path: str, where: str) -> Any:
    """The app passwords (S-515); a missing file (or none configured, "")
    is none. AppPasswordError lists the problems as PATH:LINE: why."""
    from sasl import apppass

    if not path:
        return apppass.AppPasswords("")
    try:
        data = files.read_regular(path, files.USERS_MAX_OCTETS)
    except files.FileMissing:
        return apppass.AppPasswords(path)
    except files.FileProblem as e:
        raise apppass.AppPasswordError([f"{where}: app_passwords: {e}"]) from None
    return apppass.parse_bytes(data, path)


class Watch:
    """Whether any of some files changed since the last look (their inode,
    size and modification time): a changed users.db or app passwords file
    is reloaded as SIGHUP would (CONTRACT.md)."""

    def __init__(self, paths: Sequence[str]) -> None:
        self.paths = [p for p in paths if p]
        self._seen = self._stamps()

    def _stamps(self) -> list[tuple[int, int, int] | None]:
        out: list[tuple[int, int, int] | None] = []
        for path in self.paths:
            try:
                st = os.stat(path)
            except OSError:
                out.append(None)
            else:
                out.append((st.st_mtime_ns, st.st_size, st.st_ino))
        return out

    def changed(self) -> bool:
        now = self._stamps()
        if now == self._seen:
            return False
        self._seen = now
        return True


class UsersFile:
    """users.db as a directory (the first one asked, S-1301)."""

    name = "users.db"
    failing = False  # held in memory: it answers whenever msa runs

    def __init__(self, users: sasl.UserDB) -> None:
        self.users = users

    def knows(self, name: str) -> bool:
        """Whether `name` has a password credential here (S-1301's "when N
        has a credential there"); a senders-only line has none."""
        user = self.users.get(name)
        return user is not None and bool(user.argon2 or user.scram)

    def stored(self, name: str) -> str:
        """The password credential kept for `name` ("" when none): what the
        credential cache keys on, so a changed one misses (S-512)."""
        user = self.users.get(name)
        return (user.argon2 or user.scram or "") if user is not None else ""

    def authenticate(self, name: str, password: bytes, client: Client) -> Verdict:
        """PLAIN/LOGIN against the stored hash; the same cost for an unknown
        name (S-510). The argon2 slot is the caller's to hold."""
        result = sasl.verify(self.users, sasl.Credentials("PLAIN", name, password))
        if result.username is None:
            return UNKNOWN
        return Verdict(known=True, ok=result.ok, user=result.username)

    def senders(self, user: str) -> tuple[str, ...] | None:
        found = self.users.get(user)
        return tuple(found.senders) if found is not None else None

    def close(self) -> None:
        pass
