"""App passwords (SPEC.md S-515; CONTRACT.md "App passwords, keys and state").

This module owns the app passwords file (``USER:LABEL:ID:HASH:CREATED:SENDERS``
lines, ``#`` comments; see app-passwords.db.example) with ``PATH:LINE: why``
problems; a secret's shape (34 characters of lower-case base32: an
identifier in the clear that finds the line, then 130 random bits kept only
as SHA-256, as so many need no slow hash); labels; how an app password's
senders narrow its user's; the text edits of ``msa.py app`` and ``user del``,
keeping every other line byte for byte. The shell reads the file and finds
the user in users.db before ``find``. Imports: the standard library and
``userdb`` (sender syntax and S-603 comparison forms, reused, not repeated).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import re
import string
from collections.abc import Callable, Collection, Container, Iterable, Iterator
from dataclasses import dataclass, field
from datetime import datetime, timezone

from .limits import MAX_PASSWORD_OCTETS
from .names import name_problem
from .senders import address_key, check_sender, split_senders
from .userdb import User, UserDB

__all__ = [
    "AppPassword", "AppPasswordError", "AppPasswords", "add", "decode", "delete", "delete_user",
    "format_line", "generate", "label_problem", "may_send_as", "narrowing_problem", "normalise",
    "parse", "parse_bytes", "sender_problems", "unknown_users",
]  # fmt: skip

# --- bounds (STYLE.md "What msa takes" 5): this format's own design, so they
# live beside it rather than in limits.py ------------------------------------

#: Identifier characters opening a secret: 40 random bits, in the clear;
#: ``generate`` avoids taken ones, so it only needs to be short.
IDENT_CHARS = 8

#: Characters after it: 26 x 5 = 130 random bits, the shortest base32 that
#: reaches CONTRACT.md's "at least 128 random bits".
SECRET_CHARS = 26
APP_PASSWORD_CHARS = IDENT_CHARS + SECRET_CHARS

#: How ``generate`` shows a secret, joined by ``-`` (optional when typed),
#: e.g. ``4drwlr5m-xn3th-tyh6a-d6fgn-5nbwb-aftee5``.
SHOWN_GROUPS = (IDENT_CHARS, 5, 5, 5, 5, 6)

#: Characters of a label (``msa.py app list``, the log's ``app=LABEL``): a short name.
MAX_LABEL_CHARS = 64

#: Hex digits of a stored hash: one SHA-256 value (FIPS 180-4).
DIGEST_HEX_DIGITS = 64

#: Identifiers ``generate`` draws before blaming the random source (of 2**40).
GENERATE_ATTEMPTS = 16

#: RFC 4648 §6 base32, lower case: no 0, 1, 8 or 9 to mistake for o, l, b.
ALPHABET = frozenset(string.ascii_lowercase + "234567")

#: Domain separation from hashes made for other purposes; versioned.
HASH_PREFIX = b"msa-app-password-v1:"

#: Compared with when the identifier is unknown, so that the cost is the
#: same either way (S-510); no known secret hashes to all zeros.
_DUMMY_DIGEST = "0" * DIGEST_HEX_DIGITS

_LABEL = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*", re.ASCII)
_CREATED = re.compile(r"([0-9]{4})([0-9]{2})([0-9]{2})T([0-9]{2})([0-9]{2})([0-9]{2})Z", re.ASCII)
_HEX = frozenset(string.hexdigits)
_FIELDS = "USER:LABEL:ID:HASH:CREATED:SENDERS"


@dataclass(frozen=True, slots=True)
class AppPassword:
    """One line of the app passwords file; the hash is kept out of ``repr``."""

    user: str  # lower-case (S-509)
    label: str  # as written; unique per user, compared case-insensitively
    ident: str  # IDENT_CHARS of ALPHABET
    digest: str = field(repr=False)  # DIGEST_HEX_DIGITS lower-case hex
    created: datetime  # aware, UTC, whole seconds
    senders: tuple[str, ...] = ()  # lower-cased; empty: the user's own


class AppPasswordError(Exception):
    """A file that cannot be used, or an edit refused: ``PATH:LINE: why`` problems."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("\n".join(problems))
        self.problems = list(problems)


def normalise(password: bytes) -> str | None:
    """An app password as sent, canonical, or None without the shape (then it is not one):
    dashes and spaces dropped, letters lower-cased (groups are typed with or without them,
    phones capitalise the first letter), at most the PLAIN password bound (S-505)."""
    if len(password) > MAX_PASSWORD_OCTETS or not password.isascii():
        return None
    text = password.decode("ascii").replace("-", "").replace(" ", "").lower()
    return text if len(text) == APP_PASSWORD_CHARS and ALPHABET.issuperset(text) else None


def _digest(secret: str) -> str:
    return hashlib.sha256(HASH_PREFIX + secret.encode("ascii")).hexdigest()


def generate(
    existing: Collection[str] = (), *, urandom: Callable[[int], bytes] = os.urandom
) -> tuple[str, str, str]:
    """A new app password ``(shown, ident, digest)``: the secret as the user
    gets it (printed once, never stored), its identifier (not in
    ``existing``: those of the file), and the hash to store."""
    for _ in range(GENERATE_ATTEMPTS):
        ident = base64.b32encode(urandom(5)).decode().lower()  # 5 octets: exactly 8 characters
        if ident not in existing:
            break
    else:
        raise AppPasswordError(["no unused app password identifier: is the random source broken?"])
    secret = ident + base64.b32encode(urandom(17)).decode().lower()[:SECRET_CHARS]  # 130 of 136 bits
    ends = [sum(SHOWN_GROUPS[: i + 1]) for i in range(len(SHOWN_GROUPS))]
    shown = "-".join(secret[end - size : end] for size, end in zip(SHOWN_GROUPS, ends, strict=True))
    return shown, ident, _digest(secret)


class AppPasswords:
    """An immutable set of app passwords, in file order, found by identifier."""

    __slots__ = ("_by_ident", "_entries", "_lines", "path")

    def __init__(
        self, path: str, entries: Iterable[AppPassword] = (), lines: dict[str, int] | None = None
    ) -> None:
        self.path = path
        self._entries = tuple(entries)
        self._by_ident = {entry.ident: entry for entry in self._entries}
        self._lines = dict(lines or {})  # identifier -> line, from parse (PATH:LINE problems)

    def find(self, user: str, password: bytes) -> AppPassword | None:
        """The app password of ``user`` that ``password`` is, or None (not the shape, unknown
        identifier, another user's, wrong secret). With the shape it costs one SHA-256 and one
        constant-time comparison, found or not (S-510, S-515). ``user`` exists: the caller's check."""
        secret = normalise(password)
        if secret is None:
            return None
        entry = self._by_ident.get(secret[:IDENT_CHARS])
        same = hmac.compare_digest(_digest(secret), entry.digest if entry else _DUMMY_DIGEST)
        return entry if entry is not None and same and entry.user == user.lower() else None

    def for_user(self, user: str) -> tuple[AppPassword, ...]:
        """The app passwords of ``user``, in file order."""
        return tuple(entry for entry in self._entries if entry.user == user.lower())

    def line_of(self, entry: AppPassword) -> int | None:
        """The line ``entry`` was read from, when it came from ``parse``."""
        return self._lines.get(entry.ident) if self._by_ident.get(entry.ident) == entry else None

    def __len__(self) -> int:
        return len(self._entries)

    def __iter__(self) -> Iterator[AppPassword]:
        return iter(self._entries)

    def __repr__(self) -> str:
        return f"AppPasswords({self.path!r}, {len(self._entries)} app passwords)"


# --- sender lists (S-515 narrows S-601..S-603) --------------------------------------


def _rules(senders: Iterable[str]) -> UserDB:
    """A database of one synthetic user ``u``: userdb's S-603 rules, reused."""
    return UserDB("", [User(name="u", argon2="", cram=None, senders=tuple(senders))])


def narrowing_problem(sender: str, user_senders: tuple[str, ...]) -> str | None:
    """Why ``sender`` (``app add --sender``) does not narrow a user with ``user_senders``, or
    None. By S-603 ``x@d`` is inside ``x@d`` and ``@d``, ``x+tag@d`` also inside ``x@d``,
    ``@d`` only inside ``@d``; case, quoting and IDNA compare as in users.db."""
    if why := check_sender(sender):
        return f"bad sender {sender!r}: {why}"
    if not user_senders:
        return "the user has no permitted senders to narrow"
    key = address_key(sender)
    if key is not None and key[0]:
        inside = _rules(user_senders).may_send_as("u", sender)
    else:
        inside = key is not None and any(address_key(allowed) == key for allowed in user_senders)
    return None if inside else f"sender {sender} is not one of the user's senders or inside one"


def may_send_as(entry: AppPassword, address: str) -> bool:
    """Whether ``entry``'s own list permits ``address`` (S-603; True when empty). It only
    narrows: the caller also requires ``UserDB.may_send_as(entry.user, address)`` (S-515)."""
    return not entry.senders or _rules(entry.senders).may_send_as("u", address)


# --- the file ------------------------------------------------------------------------


def label_problem(label: str) -> str | None:
    """Why ``label`` cannot name an app password, or None (never echoing it): 1 to 64 ASCII
    letters, digits, ``.``, ``_``, ``-``, first a letter or digit (not an option of app del)."""
    if not label:
        return "empty label"
    if len(label) > MAX_LABEL_CHARS:
        return f"label longer than {MAX_LABEL_CHARS} characters"
    if not _LABEL.fullmatch(label):
        return "label must be ASCII letters, digits, '.', '_' and '-', starting with a letter or digit"
    return None


def _created(text: str) -> datetime | str:
    if not (match := _CREATED.fullmatch(text)):
        return "bad creation time: expected YYYYMMDDTHHMMSSZ (ISO 8601 basic format, UTC, no '-' or ':')"
    try:
        return datetime(*map(int, match.groups()), tzinfo=timezone.utc)
    except ValueError:
        return "bad creation time: no such date or time"


def _senders(text: str) -> list[str] | str:
    """SENDERS split as users.db splits them, or why not (a ':' is a field too many).
    ``split_senders`` gives the list, or ``(list, text after a ':' or None)``, or why not."""
    split = split_senders(text)
    items = split[0] if isinstance(split, tuple) and split[1] is None else split
    if isinstance(items, tuple) or (isinstance(items, str) and "':'" in items):
        return f"too many ':'-separated fields (expected {_FIELDS})"
    return items


def _entry(user: str, label: str, ident: str, digest: str, created: str, senders: str) -> AppPassword | str:
    """The entry these fields make, or why not (line parser and ``add``)."""
    if why := name_problem(user) or name_problem(user.lower()):
        return f"bad user name: {why}"
    if why := label_problem(label):
        return f"bad label: {why}"
    if len(ident) != IDENT_CHARS or not ALPHABET.issuperset(ident.lower()):
        return f"bad identifier: expected {IDENT_CHARS} characters a-z, 2-7"
    if len(digest) != DIGEST_HEX_DIGITS or not _HEX.issuperset(digest):
        return f"bad hash: expected {DIGEST_HEX_DIGITS} hex digits (SHA-256)"
    if isinstance(when := _created(created), str):
        return when
    if isinstance(items := _senders(senders), str):
        return items
    for sender in items:
        if why := check_sender(sender):
            return f"bad sender {sender!r}: {why}"
    lowered = tuple(sender.lower() for sender in items)
    return AppPassword(user.lower(), label, ident.lower(), digest.lower(), when, lowered)


def _entries(text: str, path: str) -> list[tuple[int, AppPassword]]:
    """``(index, entry)`` for each line; AppPasswordError lists every problem."""
    problems: list[str] = []
    found: list[tuple[int, AppPassword]] = []
    ident_line: dict[str, int] = {}
    label_line: dict[tuple[str, str], int] = {}
    for index, raw in enumerate(text.split("\n")):
        line = (raw[1:] if index == 0 and raw.startswith("\ufeff") else raw).strip(" \t\r")
        if not line or line.startswith("#"):
            continue
        fields = [part.strip(" \t") for part in line.split(":", 5)]
        entry = _entry(*fields) if len(fields) == 6 else f"expected 6 ':'-separated fields {_FIELDS}"
        where = f"{path}:{index + 1}"
        if isinstance(entry, str):
            problems.append(f"{where}: {entry}")
            continue
        key = (entry.user, entry.label.lower())
        if entry.ident in ident_line:
            first = ident_line[entry.ident]
            problems.append(f"{where}: duplicate identifier {entry.ident} (first on line {first})")
        elif key in label_line:
            first = label_line[key]
            problems.append(
                f"{where}: duplicate label {entry.label} for user {entry.user} (first on line {first})"
            )
        else:
            ident_line[entry.ident] = label_line[key] = index + 1
            found.append((index, entry))
    if problems:
        raise AppPasswordError(problems)
    return found


def parse(text: str, path: str) -> AppPasswords:
    """The app passwords in ``text``; AppPasswordError lists every problem."""
    found = _entries(text, path)
    return AppPasswords(
        path, [entry for _, entry in found], {entry.ident: index + 1 for index, entry in found}
    )


def decode(data: bytes, path: str) -> str:
    """The text of the file as the shell read it; AppPasswordError names the
    line of the first octet that is not UTF-8."""
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as error:
        line = data.count(b"\n", 0, error.start) + 1
        raise AppPasswordError([f"{path}:{line}: not valid UTF-8"]) from None


def parse_bytes(data: bytes, path: str) -> AppPasswords:
    """The app passwords in ``data``, read by the shell like users.db."""
    return parse(decode(data, path), path)


def unknown_users(apps: AppPasswords, users: Container[str]) -> list[str]:
    """``PATH:LINE: why`` for each app password whose user is not in
    ``users`` (a UserDB): it authenticates no one, and ``check`` says so."""
    return [
        f"{apps.path}:{apps.line_of(entry)}: user {entry.user} is not in the users database"
        for entry in apps
        if entry.user not in users
    ]


def sender_problems(apps: AppPasswords, users: UserDB) -> list[str]:
    """``PATH:LINE: why`` for each app password sender outside its user's
    (a hand edit; ``user senders``): harmless, as both must permit, but misleading."""
    return [
        f"{apps.path}:{apps.line_of(entry)}: app password {entry.label}: {why}"
        for entry in apps
        if (user := users.get(entry.user)) is not None
        for sender in entry.senders
        if (why := narrowing_problem(sender, user.senders))
    ]


# --- edits for ``msa.py app`` and ``msa.py user del`` (the rest kept) -----------------


def _timestamp(created: datetime) -> str:
    if created.tzinfo is None:
        raise ValueError("AppPassword.created must be timezone-aware")
    c = created.astimezone(timezone.utc)  # not strftime: %Y may drop a year's leading zeros
    return f"{c.year:04d}{c.month:02d}{c.day:02d}T{c.hour:02d}{c.minute:02d}{c.second:02d}Z"


def format_line(entry: AppPassword) -> str:
    """The line for ``entry``, without a line ending. ValueError when
    ``entry.created`` is naive (the caller's bug: the file holds UTC)."""
    fields = (entry.user, entry.label, entry.ident, entry.digest, _timestamp(entry.created))
    return ":".join(fields) + ":" + ",".join(entry.senders)


def add(text: str, entry: AppPassword, *, path: str = "app-passwords.db") -> str:
    """``text`` with ``entry`` appended; AppPasswordError if it is invalid or its label or
    identifier is taken. The command checks first that the user exists and senders narrow."""
    found = _entries(text, path)
    senders = ",".join(entry.senders)
    new = _entry(entry.user, entry.label, entry.ident, entry.digest, _timestamp(entry.created), senders)
    if not isinstance(new, str) and len(new.senders) != len(entry.senders):
        new = "the senders would not read back as given (a ',' outside quotes, or an empty one)"
    if isinstance(new, str):
        raise AppPasswordError([f"{path}: cannot add app password: {new}"])
    for index, old in found:
        if old.ident == new.ident:
            raise AppPasswordError([f"{path}:{index + 1}: identifier {new.ident} already in use"])
        if (old.user, old.label.lower()) == (new.user, new.label.lower()):
            raise AppPasswordError(
                [f"{path}:{index + 1}: user {new.user} already has an app password {old.label}"]
            )
    newline = "\r\n" if "\r\n" in text else "\n"
    if text and not text.endswith("\n"):
        text += newline
    new_text = text + format_line(entry) + newline
    read_back = [e for _, e in _entries(new_text, path) if e.ident == new.ident]
    if read_back != [new]:  # never "added" but read back as something else
        raise AppPasswordError([f"{path}: app password {entry.label} would not read back from the file"])
    return new_text


def _without(text: str, indexes: Collection[int], path: str) -> str:
    new_text = "\n".join(line for index, line in enumerate(text.split("\n")) if index not in indexes)
    _entries(new_text, path)  # an edit never produces a file the loader refuses
    return new_text


def delete(text: str, user: str, label: str, *, path: str = "app-passwords.db") -> str:
    """``text`` without ``user``'s app password ``label`` (both compared
    case-insensitively); AppPasswordError if there is none."""
    wanted = (user.lower(), label.lower())
    indexes = [index for index, e in _entries(text, path) if (e.user, e.label.lower()) == wanted]
    if not indexes:
        raise AppPasswordError([f"{path}: no app password {label} for user {user}"])
    return _without(text, indexes, path)


def delete_user(text: str, user: str, *, path: str = "app-passwords.db") -> str:
    """``text`` without any app password of ``user`` (``msa.py user del``);
    unchanged when the user has none."""
    indexes = {index for index, e in _entries(text, path) if e.user == user.lower()}
    return _without(text, indexes, path) if indexes else text
