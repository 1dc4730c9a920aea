"""Stored password hashes from other systems (SPEC.md S-1304, S-1013, S-510).

This module owns what a hash imported from an SQL directory (PostfixAdmin
and its kin) or ``user import`` may be, and checking a password against it:

- the argon2 family, ``$argon2id$`` and ``$argon2i$`` (argon2-cffi);
- bcrypt, ``$2y$``, ``$2b$``, ``$2a$`` (the ``bcrypt`` package);
- SHA-crypt, ``$6$`` and ``$5$`` (``passlib.hash`` from the ``libpass``
  package, the maintained passlib fork; Debian's python3-passlib also works);

each bare or behind Dovecot's scheme prefix (``{ARGON2ID}``, ``{ARGON2I}``,
``{ARGON2}``, ``{BLF-CRYPT}``, ``{SHA512-CRYPT}``, ``{SHA256-CRYPT}``, or
``{CRYPT}`` before any bare form). Every other scheme (``{MD5-CRYPT}``,
``$1$``, ``{PLAIN}``, ``{SHA1}``, ``{SSHA}``, yescrypt ...) never
authenticates: its result names the scheme, for one log line, never the hash.

Every check is bounded before anything is computed: argon2 as S-1013
(memory ≤ 256 MiB, time ≤ 10, lanes ≤ 8), bcrypt cost ≤ 16, SHA-crypt
rounds ≤ 1,000,000. ``dummy(scheme)`` gives a hash of a random password per
scheme, so that an unknown login costs what a known one costs (S-510).

Sans-IO: no file, socket, thread or process, and it must not import
``socket``, ``threading``, ``server`` or ``directory`` (the SQL directory
calls it, not the other way); nothing here raises for what a database or a
client sends. Its bounds live in ``limits``. bcrypt and passlib are imported only when a
hash needs them; a missing one is a ``Check`` whose ``problem`` names the
package, not an ImportError.
"""

from __future__ import annotations

import functools
import os
import re
from dataclasses import dataclass, field

from . import limits

__all__ = [
    "DEFAULT_SCHEME", "SCHEMES", "Check", "Stored", "describe", "dummy", "verify", "verify_dummy",
]  # fmt: skip

#: The schemes that can authenticate, by Dovecot's name, and the
#: ``default_scheme`` values the SQL file accepts (S-1304).
SCHEMES = ("ARGON2ID", "ARGON2I", "BLF-CRYPT", "SHA512-CRYPT", "SHA256-CRYPT")

#: ``default_scheme`` unless the SQL file says otherwise (S-1304).
DEFAULT_SCHEME = "ARGON2ID"

#: What each scheme needs beyond the standard library: (import name,
#: how to install it). argon2-cffi is a hard dependency of msa.
_PACKAGES = {
    "ARGON2ID": ("argon2", "argon2-cffi (Debian: python3-argon2)"),
    "ARGON2I": ("argon2", "argon2-cffi (Debian: python3-argon2)"),
    "BLF-CRYPT": ("bcrypt", "bcrypt (pip install bcrypt; Debian: python3-bcrypt)"),
    "SHA512-CRYPT": ("passlib", "libpass (pip install libpass; Debian: python3-passlib)"),
    "SHA256-CRYPT": ("passlib", "libpass (pip install libpass; Debian: python3-passlib)"),
}

#: Dovecot prefixes that name a supported scheme; ``ARGON2`` takes either
#: argon2 body, ``CRYPT`` any supported bare form (the body decides).
_PREFIXES = {
    "ARGON2ID": ("ARGON2ID",),
    "ARGON2I": ("ARGON2I",),
    "ARGON2": ("ARGON2ID", "ARGON2I"),
    "BLF-CRYPT": ("BLF-CRYPT",),
    "SHA512-CRYPT": ("SHA512-CRYPT",),
    "SHA256-CRYPT": ("SHA256-CRYPT",),
    "CRYPT": SCHEMES,
}

#: Bare crypt(3) identifiers of schemes msa does not check, by the name
#: Dovecot and the log use.
_UNSUPPORTED_IDS = {
    "1": "MD5-CRYPT",
    "y": "YESCRYPT",
    "gy": "GOST-YESCRYPT",
    "7": "SCRYPT",
    "sha1": "SHA1-CRYPT",
    "md5": "SUN-MD5-CRYPT",
    "argon2d": "ARGON2D",
}

_SCHEME_NAME = re.compile(r"[A-Z0-9][A-Z0-9._-]{0,31}")
_ARGON2 = re.compile(
    r"\$(argon2id|argon2i)\$v=19\$m=([0-9]{1,10}),t=([0-9]{1,10}),p=([0-9]{1,10})\$([A-Za-z0-9+/]+)\$([A-Za-z0-9+/]+)"
)
_BCRYPT = re.compile(r"\$(2[aby])\$([0-9]{2})\$[./A-Za-z0-9]{53}")
_SHA_CRYPT = re.compile(r"\$([56])\$(?:rounds=([0-9]{1,10})\$)?([^$:\n]{0,16})\$([./A-Za-z0-9]+)")
_SHA_CRYPT_TAG_CHARS = {"5": 43, "6": 86}
_CRYPT_ID = re.compile(r"\$([a-z0-9]{1,10})\$")


@dataclass(frozen=True, slots=True)
class Stored:
    """What a stored hash is, without the secret part (for ``check`` and logs).

    ``scheme``: Dovecot's name (``ARGON2ID``, ``BLF-CRYPT``, ``MD5-CRYPT``,
    ``PLAIN`` ...), or ``unrecognized``; ``cost``: its parameters in words
    (``m=65536,t=3,p=4``, ``cost 5``, ``rounds 5000``); ``problem``: why it
    can never authenticate, or None. ``body`` (the hash without its prefix)
    is kept out of ``repr``."""

    scheme: str
    cost: str = ""
    problem: str | None = None
    body: str = field(default="", repr=False)

    @property
    def supported(self) -> bool:
        return self.problem is None


@dataclass(frozen=True, slots=True)
class Check:
    """The outcome of one password check: ``ok``, or ``problem`` saying why
    the hash itself cannot be used (for the log, one line per user; never
    the hash). A wrong password is ``ok=False`` with no problem."""

    ok: bool
    problem: str | None = None


def _unsupported(name: str) -> Stored:
    return Stored(scheme=name, problem=f"unsupported scheme {name}")


def _argon2(body: str, allowed: tuple[str, ...]) -> Stored:
    match = _ARGON2.fullmatch(body)
    variant = body.split("$")[1] if body.count("$") >= 2 else ""
    scheme = {"argon2id": "ARGON2ID", "argon2i": "ARGON2I"}.get(variant, "ARGON2ID")
    if scheme not in allowed:
        return Stored(scheme=scheme, problem=f"an ${variant}$ hash behind a prefix of another scheme")
    if match is None:
        return Stored(scheme=scheme, problem=f"malformed {scheme} hash (expected ${variant}$v=19$m=..,t=..,p=..$SALT$HASH)")
    memory, time_cost, lanes = (int(g) for g in match.group(2, 3, 4))
    cost = f"m={memory},t={time_cost},p={lanes}"
    problem = None
    if memory > limits.ARGON2_MAX_MEMORY_KIB:
        problem = f"{scheme} memory cost {memory} KiB exceeds {limits.ARGON2_MAX_MEMORY_KIB}"
    elif time_cost > limits.ARGON2_MAX_TIME_COST:
        problem = f"{scheme} time cost {time_cost} exceeds {limits.ARGON2_MAX_TIME_COST}"
    elif lanes > limits.ARGON2_MAX_PARALLELISM:
        problem = f"{scheme} parallelism {lanes} exceeds {limits.ARGON2_MAX_PARALLELISM}"
    elif time_cost < 1 or lanes < 1 or memory < limits.ARGON2_MIN_MEMORY_KIB_PER_LANE * lanes:
        problem = f"malformed {scheme} hash (parameters below RFC 9106's minimums)"
    else:
        salt, tag = (len(g) * 3 // 4 for g in match.group(5, 6))
        if not limits.ARGON2_MIN_SALT_OCTETS <= salt <= limits.ARGON2_MAX_SALT_OCTETS:
            problem = f"malformed {scheme} hash (salt of {salt} octets)"
        elif not limits.ARGON2_MIN_HASH_OCTETS <= tag <= limits.ARGON2_MAX_HASH_OCTETS:
            problem = f"malformed {scheme} hash (tag of {tag} octets)"
    return Stored(scheme=scheme, cost=cost, problem=problem, body=body)


def _bcrypt(body: str, allowed: tuple[str, ...]) -> Stored:
    scheme = "BLF-CRYPT"
    if scheme not in allowed:
        return Stored(scheme=scheme, problem="a bcrypt hash behind a prefix of another scheme")
    match = _BCRYPT.fullmatch(body)
    if match is None:
        return Stored(scheme=scheme, problem="malformed BLF-CRYPT hash (expected $2y$NN$ and 53 characters)")
    cost = int(match.group(2))
    problem = None
    if cost > limits.BCRYPT_MAX_COST:
        problem = f"BLF-CRYPT cost {cost} exceeds {limits.BCRYPT_MAX_COST}"
    elif cost < limits.BCRYPT_MIN_COST:
        problem = f"malformed BLF-CRYPT hash (cost {cost} is below {limits.BCRYPT_MIN_COST})"
    return Stored(scheme=scheme, cost=f"cost {cost}", problem=problem, body=body)


def _sha_crypt(body: str, allowed: tuple[str, ...]) -> Stored:
    ident = body[1]
    scheme = "SHA512-CRYPT" if ident == "6" else "SHA256-CRYPT"
    if scheme not in allowed:
        return Stored(scheme=scheme, problem=f"a ${ident}$ hash behind a prefix of another scheme")
    match = _SHA_CRYPT.fullmatch(body)
    if match is None or len(match.group(4)) != _SHA_CRYPT_TAG_CHARS[ident]:
        return Stored(scheme=scheme, problem=f"malformed {scheme} hash")
    explicit = match.group(2)
    rounds = int(explicit) if explicit is not None else limits.SHA_CRYPT_IMPLICIT_ROUNDS
    problem = None
    if rounds > limits.SHA_CRYPT_MAX_ROUNDS:
        problem = f"{scheme} rounds {rounds} exceed {limits.SHA_CRYPT_MAX_ROUNDS}"
    elif rounds < limits.SHA_CRYPT_MIN_ROUNDS:
        problem = f"malformed {scheme} hash (rounds {rounds} below {limits.SHA_CRYPT_MIN_ROUNDS})"
    return Stored(scheme=scheme, cost=f"rounds {rounds}", problem=problem, body=body)


def _bare(body: str, allowed: tuple[str, ...], prefix: str | None) -> Stored:
    """A hash without its Dovecot prefix; ``allowed``: the schemes the
    prefix permits (every supported one when there was none)."""
    if body.startswith(("$argon2id$", "$argon2i$")):
        return _argon2(body, allowed)
    if body.startswith(("$2y$", "$2b$", "$2a$")):
        return _bcrypt(body, allowed)
    if body.startswith(("$6$", "$5$")):
        return _sha_crypt(body, allowed)
    match = _CRYPT_ID.match(body)
    if match is not None:
        name = _UNSUPPORTED_IDS.get(match.group(1), f"CRYPT ${match.group(1)}$")
        return _unsupported(name)
    if prefix not in (None, "CRYPT"):
        return Stored(scheme=prefix, problem=f"malformed {prefix} hash")
    if len(body) == 13 and re.fullmatch(r"[./A-Za-z0-9]{13}", body):
        return _unsupported("DES-CRYPT")
    return Stored(scheme="unrecognized", problem="unrecognized hash format (no {SCHEME} prefix nor $id$)")


def describe(stored: str) -> Stored:
    """What ``stored`` is: its scheme, cost, and why it cannot be used.

    Never raises; the result never holds more of the hash than ``body``.
    """
    if not isinstance(stored, str) or not stored:
        return Stored(scheme="empty", problem="empty password hash")
    if len(stored) > limits.MAX_STORED_HASH_CHARS:
        return Stored(scheme="unrecognized", problem=f"hash longer than {limits.MAX_STORED_HASH_CHARS} characters")
    if not stored.isascii() or not stored.isprintable():
        return Stored(scheme="unrecognized", problem="hash has characters that no supported scheme uses")
    prefix = None
    body = stored
    if stored.startswith("{"):
        end = stored.find("}")
        name = stored[1:end].upper() if end > 0 else ""
        if not _SCHEME_NAME.fullmatch(name):
            return Stored(scheme="unrecognized", problem="unrecognized hash format (malformed {SCHEME} prefix)")
        if name not in _PREFIXES:
            return _unsupported(name)
        prefix, body = name, stored[end + 1 :]
        if prefix == "CRYPT" and body.startswith("{"):
            return Stored(scheme="CRYPT", problem="malformed CRYPT hash (a second {SCHEME} prefix)")
    return _bare(body, _PREFIXES.get(prefix or "CRYPT", SCHEMES), prefix)


# --- checking --------------------------------------------------------------------


class _Missing(Exception):
    """An optional package a scheme needs is not installed."""


def _import(scheme: str):  # noqa: ANN202 - a module
    module, _ = _PACKAGES[scheme]
    try:
        if module == "argon2":
            import argon2

            return argon2
        if module == "bcrypt":
            import bcrypt

            return bcrypt
        from passlib import hash as passlib_hash

        return passlib_hash
    except ImportError:
        raise _Missing(scheme) from None


def missing_package(scheme: str) -> str | None:
    """Why ``scheme`` cannot be checked on this host (a package to install),
    or None; for ``check`` and for the log."""
    try:
        _import(scheme)
    except _Missing:
        return f"{scheme} hashes need the Python package {_PACKAGES[scheme][1]}"
    return None


@functools.lru_cache(maxsize=1)
def _argon2_hasher():  # noqa: ANN202
    from argon2 import PasswordHasher

    return PasswordHasher()  # argon2-cffi's defaults (S-510)


def _matches(stored: Stored, password: bytes) -> bool:
    """The library's constant-time check of a hash that passed ``describe``."""
    module = _import(stored.scheme)
    if stored.scheme in ("ARGON2ID", "ARGON2I"):
        try:
            return _argon2_hasher().verify(stored.body, password)
        except (module.exceptions.Argon2Error, ValueError):
            return False  # a mismatch, or a hash argon2 itself refuses
    if stored.scheme == "BLF-CRYPT":
        try:
            return module.checkpw(password[:limits.BCRYPT_PASSWORD_OCTETS], stored.body.encode("ascii"))
        except ValueError:
            return False
    handler = module.sha512_crypt if stored.scheme == "SHA512-CRYPT" else module.sha256_crypt
    try:
        return bool(handler.verify(password, stored.body))
    except (ValueError, TypeError):
        return False  # passlib refuses a NUL in the password: it cannot match


def verify(stored: str | Stored, password: bytes) -> Check:
    """Check ``password`` against ``stored`` (a hash as the database holds it,
    or what ``describe`` made of it). Bounds are checked before anything is
    computed; an unusable hash is ``Check(ok=False, problem=...)``."""
    described = stored if isinstance(stored, Stored) else describe(stored)
    if described.problem is not None:
        return Check(ok=False, problem=described.problem)
    try:
        return Check(ok=_matches(described, password))
    except _Missing:
        return Check(ok=False, problem=missing_package(described.scheme))


# --- dummies (S-510) ---------------------------------------------------------------


@functools.lru_cache(maxsize=len(SCHEMES))
def dummy(scheme: str = DEFAULT_SCHEME) -> Stored:
    """A hash of ``scheme`` (one of SCHEMES) of a random password, made once
    per process: an unknown login is checked against it (S-510, S-1304).
    Raises ValueError for another scheme and, like ``verify``'s problem, a
    LookupError naming the package when the scheme's is missing."""
    if scheme not in SCHEMES:
        raise ValueError(f"default_scheme must be one of {', '.join(SCHEMES)}")
    try:
        module = _import(scheme)
    except _Missing:
        raise LookupError(missing_package(scheme)) from None
    secret = os.urandom(32).hex().encode("ascii")
    if scheme == "ARGON2ID":
        body = _argon2_hasher().hash(secret)
    elif scheme == "ARGON2I":
        hasher = _argon2_hasher()
        body = module.PasswordHasher(
            hasher.time_cost, hasher.memory_cost, hasher.parallelism, type=module.Type.I
        ).hash(secret)
    elif scheme == "BLF-CRYPT":
        body = module.hashpw(secret, module.gensalt(limits.DUMMY_BCRYPT_COST, prefix=b"2b")).decode("ascii")
    else:
        handler = module.sha512_crypt if scheme == "SHA512-CRYPT" else module.sha256_crypt
        body = handler.using(rounds=limits.DUMMY_SHA_CRYPT_ROUNDS).hash(secret)
    made = describe(body)
    assert made.problem is None, made.problem  # noqa: S101 - our own output
    return made


def verify_dummy(password: bytes, scheme: str = DEFAULT_SCHEME) -> None:
    """Spend what checking ``password`` against a ``scheme`` hash costs,
    for a login that has none (S-510). The result is always a failure."""
    _matches(dummy(scheme), password)
