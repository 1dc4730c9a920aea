"""The users database, ``users.db`` (CONTRACT.md "The users database").

This module owns the file format (``NAME:HASH:CRAM:SENDERS[:SCRAM]`` lines,
``#`` comments; documented in users.db.example), its parsing with ``PATH:
LINE: why`` problems, what a valid CRAM-MD5 credential (S-508) is, the
sender policy ``may_send_as`` (the rules themselves are ``senders``'), and the text edits of
``msa.py user``, which keep every other line byte for byte. What a valid
user name is (S-509) lives in ``names``, an acceptable argon2id hash
(S-1013) in ``verify``, a SCRAM-SHA-256 credential (S-514) in ``scram``. It
opens no file: the shell reads the bytes and ``parse_bytes`` decodes and
parses them (a missing file, an empty database, is the shell's business
too). Imports: the standard library, and ``idna`` lazily for non-ASCII
domains (IDNA2008 with UTS #46, never Python's IDNA2003 codec, S-603).
"""

from __future__ import annotations

import string
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field

from . import limits
from .names import name_problem
from .scram import parse_credential
from .phc import argon2_problem, nondefault_params
from .senders import SenderRules, address_key, check_sender, split_senders  # noqa: F401  (sasl's API)

__all__ = [
    "User", "UserDB", "UserDBError", "add_user", "add_users", "check_sender", "delete_user", "hash_problem",
    "decode", "format_user", "name_problem", "nondefault_params", "parse", "parse_bytes", "replace_user",
]  # fmt: skip


@dataclass(frozen=True, slots=True)
class User:
    """One line of users.db; hashes are kept out of ``repr`` (S-903)."""

    name: str  # lower-case (S-509)
    argon2: str = field(repr=False)  # argon2id PHC string; "" only with ``scram`` (S-514)
    cram: str | None = field(repr=False)  # 64 hex digits (S-508), or None
    senders: tuple[str, ...]  # lower-cased, as written otherwise
    scram: str | None = field(default=None, repr=False)  # ITERATIONS,SALT,STOREDKEY,SERVERKEY (S-514)


class UserDBError(Exception):
    """A users database that cannot be used; ``problems`` are ``PATH:LINE: why``."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("\n".join(problems))
        self.problems = list(problems)


def _cram_problem(cram: str) -> str | None:
    if len(cram) != limits.CRAM_CREDENTIAL_HEX_DIGITS or not all(c in string.hexdigits for c in cram):
        return "expected 64 hex digits (or nothing)"
    return None


# --- the database ------------------------------------------------------------


class UserDB:
    """An immutable set of users, in file order, looked up case-insensitively."""

    __slots__ = ("_by_name", "_rules", "_users", "path")

    def __init__(self, path: str, users: Iterable[User] = ()) -> None:
        self.path = path
        self._users = tuple(users)
        self._by_name = {user.name.lower(): user for user in self._users}
        self._rules = {user.name.lower(): SenderRules(user.senders) for user in self._users}

    def get(self, name: str) -> User | None:
        return self._by_name.get(name.lower())

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and name.lower() in self._by_name

    def __len__(self) -> int:
        return len(self._users)

    def __iter__(self) -> Iterator[User]:
        return iter(self._users)

    def __repr__(self) -> str:
        return f"UserDB({self.path!r}, {len(self._users)} users)"

    @property
    def all_have_cram(self) -> bool:
        """True when CRAM-MD5 may be advertised (S-202): users, all with one."""
        return bool(self._users) and all(user.cram for user in self._users)

    @property
    def all_have_scram(self) -> bool:
        """True when SCRAM-SHA-256 may be advertised (S-514): users, all with one."""
        return bool(self._users) and all(user.scram for user in self._users)

    def may_send_as(self, user: str, address: str) -> bool:
        """S-603: whether ``user`` may use ``address`` (not ``<>``: the caller's)."""
        rules = self._rules.get(user.lower())
        return rules is not None and rules.allows(address)


def hash_problem(stored: str) -> str | None:
    """Why ``stored`` cannot be a users.db HASH field, or None: an argon2id
    PHC string (S-1013), or another scheme of S-1304 (bcrypt, SHA-crypt,
    argon2i), bare or behind Dovecot's prefix."""
    if stored.startswith("$argon2id$"):
        why = argon2_problem(stored)
        return why and f"bad argon2 hash: {why}"
    from . import hashes

    described = hashes.describe(stored)
    if described.problem is None:
        return None
    if stored.startswith("{ARGON2ID}") or not stored.startswith(("{", "$")):
        return f"bad password hash: {described.problem} (an argon2id PHC string, $argon2id$v=19$...)"
    return f"bad password hash: {described.problem}"


def _parse_line(line: str, senders_only: bool = False) -> User | str:
    fields = line.split(":", 3)
    if len(fields) != 4:
        return f"expected 4 ':'-separated fields NAME:HASH:CRAM:SENDERS, found {len(fields)}"
    name, phc, cram, senders_text = (part.strip(" \t") for part in fields)
    if why := name_problem(name) or name_problem(name.lower()):
        return f"bad user name: {why}"
    if phc and (why := hash_problem(phc)):
        return why
    if cram and (why := _cram_problem(cram)):
        return f"bad CRAM-MD5 credential: {why}"
    # The fifth field is what follows the last ':' unless that ':' is a
    # sender's (in a quoted local part or a literal, "a:b"@x or @[IPv6:::1]:
    # a '"' or ']', and an '@', follow it). Base64 has none of '@"]'.
    head, colon, tail = senders_text.rpartition(":")
    scram = tail.strip(" \t") if colon and not set(tail) & set('@"]') else None
    senders = split_senders(senders_text if scram is None else head)
    if isinstance(senders, str):
        return senders
    if scram and isinstance(why := parse_credential(scram), str):
        return f"bad SCRAM-SHA-256 credential: {why}"
    if not phc and not scram and (cram or not senders_only):
        return ("empty argon2 hash (allowed only with a SCRAM-SHA-256 credential in the fifth field, or, "
                "with no credential at all, for a user whose password sql or auth_dovecot checks)")
    for sender in senders:
        if why := check_sender(sender):
            return f"bad sender {sender!r}: {why}"
    return User(name.lower(), phc, cram.lower() or None, tuple(s.lower() for s in senders), scram or None)


def _content(lines: list[str], index: int) -> str:
    """A line as parsed: without a leading BOM (first line), blanks and CR."""
    line = lines[index]
    if index == 0 and line.startswith("\ufeff"):
        line = line[1:]
    return line.strip(" \t\r")


def parse(text: str, path: str, *, senders_only: bool = False) -> UserDB:
    """The database in ``text``; UserDBError lists every problem found.
    ``senders_only``: a line without any credential (``NAME:::SENDERS``)
    is a user whose password another directory checks (S-1305)."""
    problems: list[str] = []
    users: list[User] = []
    first_line: dict[str, int] = {}
    lines = text.split("\n")
    for index in range(len(lines)):
        line = _content(lines, index)
        if not line or line.startswith("#"):
            continue
        result = _parse_line(line, senders_only)
        if isinstance(result, str):
            problems.append(f"{path}:{index + 1}: {result}")
        elif result.name in first_line:
            where = first_line[result.name]
            problems.append(f"{path}:{index + 1}: duplicate user {result.name} (first on line {where})")
        else:
            first_line[result.name] = index + 1
            users.append(result)
    if problems:
        raise UserDBError(problems)
    return UserDB(path, users)


def decode(data: bytes, path: str) -> str:
    """The text of a users file read by the shell; UserDBError names the line
    of the first octet that is not UTF-8."""
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as error:
        line = data.count(b"\n", 0, error.start) + 1
        raise UserDBError([f"{path}:{line}: not valid UTF-8"]) from None


def parse_bytes(data: bytes, path: str, *, senders_only: bool = False) -> UserDB:
    """The database in ``data``, the content of ``path`` as the shell read it
    (``util/files.py``, which bounds the read and refuses FIFOs and
    devices); UserDBError lists every problem as ``PATH:LINE: why``."""
    return parse(decode(data, path), path, senders_only=senders_only)


# --- edits for ``msa.py user`` (comments, blank lines and order kept) --------


def format_user(user: User) -> str:
    """The line for ``user``, without a line ending."""
    fifth = f":{user.scram}" if user.scram else ""  # four-field lines stay as they were
    return f"{user.name}:{user.argon2}:{user.cram or ''}:{','.join(user.senders)}{fifth}"


def _find(lines: list[str], name: str) -> int | None:
    for index in range(len(lines)):
        line = _content(lines, index)
        if line and not line.startswith("#") and line.split(":", 1)[0].strip(" \t").lower() == name:
            return index
    return None


def _checked(text: str, path: str) -> str:
    parse(text, path)  # an edit never produces a database the loader refuses
    return text


def add_user(text: str, user: User, *, path: str = "users.db") -> str:
    """``text`` with ``user`` appended; UserDBError if it exists or is invalid."""
    return add_users(text, [user], path=path)


def add_users(text: str, users: Iterable[User], *, path: str = "users.db") -> str:
    """``text`` with ``users`` appended in order (one parse, for imports)."""
    db = parse(text, path)
    lines = text.split("\n")
    problems = []
    users = list(users)
    for user in users:
        if why := name_problem(user.name) or name_problem(user.name.lower()):
            problems.append(f"bad user name: {why}")  # S-509: else it might read back as a comment
            continue
        existing = _find(lines, user.name.lower()) if db.get(user.name) else None
        if existing is not None:
            problems.append(f"{path}:{existing + 1}: user {user.name} already exists")
    if problems:
        raise UserDBError(problems)
    newline = "\r\n" if "\r\n" in text else "\n"
    if text and not text.endswith("\n"):
        text += newline
    new_text = text + "".join(format_user(user) + newline for user in users)
    added = parse(new_text, path)  # an edit never produces a database the loader refuses
    if lost := [user.name for user in users if user.name not in added]:  # never "added" but absent
        raise UserDBError([f"{path}: user {name} would not read back from the file" for name in lost])
    return new_text


def _locate(text: str, name: str, path: str) -> tuple[list[str], int]:
    parse(text, path)
    lines = text.split("\n")
    index = _find(lines, name.lower())
    if index is None:
        raise UserDBError([f"{path}: no user {name}"])
    return lines, index


def replace_user(text: str, user: User, *, path: str = "users.db") -> str:
    """``text`` with the line of ``user.name`` rewritten; the rest unchanged."""
    lines, index = _locate(text, user.name, path)
    old = lines[index]
    bom = "\ufeff" if index == 0 and old.startswith("\ufeff") else ""
    lines[index] = bom + format_user(user) + ("\r" if old.endswith("\r") else "")
    return _checked("\n".join(lines), path)


def delete_user(text: str, name: str, *, path: str = "users.db") -> str:
    """``text`` without the line of user ``name``; the rest unchanged."""
    lines, index = _locate(text, name, path)
    del lines[index]
    return _checked("\n".join(lines), path)
