"""Checking credentials against the users database (SPEC.md S-503, S-507, S-510, S-514).

This module owns the argon2id verification of PLAIN and LOGIN passwords
(and their PBKDF2 check against a user who has only a SCRAM credential),
what an acceptable stored argon2id hash is (PHC form, the S-1013 bounds),
the CRAM-MD5 digest check against the stored contexts (S-508), the
SCRAM-SHA-256 proof check (``scram.verify_proof``), and the dummy hash,
dummy context and fake SCRAM credential that make an unknown user cost
what a known one costs, per mechanism, so that timing tells nothing
(S-510, S-1006).
It does not wait, count failures or cache: the shell does that around it
(``throttle``, ``cache``, argon2 slots; DESIGN.md). Every failure of any kind
is ``AuthResult(ok=False)``; nothing here raises for a client's input.

Imports: the standard library and argon2-cffi (lazily, so that importing
``sasl`` does not need it; DESIGN.md "TLS and inetd mode").
"""

from __future__ import annotations

import functools
import hmac
import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from . import limits
from .md5state import cram_md5_credential, cram_md5_digest
from .phc import argon2_params, argon2_problem, hash_password, hasher  # noqa: F401  (argon2_problem: sasl's API)
from .scram import ScramCredential, fake_credential, parse_credential, password_matches, verify_proof

if TYPE_CHECKING:
    from . import Credentials
    from .userdb import User, UserDB

__all__ = ["AuthResult", "verify", "warm_up"]


@dataclass(frozen=True, slots=True)
class AuthResult:
    """Outcome of one check.

    ``username`` is the lower-cased name when the user exists (right password
    or not), None for an unknown user, so logs can print ``(unknown)`` and
    never a password typed into the user field (S-902). ``temporary`` means
    ``454 4.7.0`` (S-503); ``verify`` never sets it, the shell does.
    ``server_final`` is set on a SCRAM-SHA-256 success only: the
    ``v=SIGNATURE`` message the client is sent as ``334`` before ``235``
    (S-514).
    """

    ok: bool
    username: str | None
    temporary: bool = False
    server_final: bytes | None = None


@functools.lru_cache(maxsize=1)
def _dummy_hash() -> str:
    """An argon2id hash with the default parameters, of a random password.

    An unknown user's PLAIN or LOGIN check verifies against it (S-510).
    The stored one (of a random password, thrown away) saves inetd mode an
    argon2 hash per session; it is used while its parameters are the
    library's defaults, otherwise one is made once.
    """
    h = hasher()
    if argon2_params(_STORED_DUMMY) == (h.memory_cost, h.time_cost, h.parallelism):
        return _STORED_DUMMY
    return h.hash(os.urandom(32))


_STORED_DUMMY = "$argon2id$v=19$m=65536,t=3,p=4$GZiwBTOHFuLVxssW0IFyxA$mbxHaXTOj1oivAXD93eNXTkUTIYhgq67O0W99p/dl40"


@functools.lru_cache(maxsize=1)
def _dummy_cram() -> str:
    """A CRAM-MD5 credential of a random password, for S-510."""
    return cram_md5_credential(os.urandom(32))


@functools.lru_cache(maxsize=1)
def _dummy_scram_secret() -> bytes:
    """The per-process secret of the fake SCRAM credentials used when the
    shell passes none (S-514 wants the state store's, stable across
    processes; this one only keeps ``verify`` usable on its own)."""
    return os.urandom(32)


def _dummy_scram(name: str) -> ScramCredential:
    return fake_credential(_dummy_scram_secret(), name, limits.SCRAM_DEFAULT_ITERATIONS)


def warm_up() -> None:
    """Make the dummies now (at start), so that the first unknown user does
    not cost one argon2 hash more than a known one (S-510)."""
    _dummy_hash()
    _dummy_cram()
    _dummy_scram_secret()


# --- checks --------------------------------------------------------------------


def _password_matches(phc: str, password: bytes) -> bool:
    from argon2.exceptions import Argon2Error

    try:
        return hasher().verify(phc, password)
    except (Argon2Error, ValueError):
        # VerifyMismatchError and VerificationError (Argon2Error), InvalidHash
        # (a ValueError, as is a hash that is not ASCII): all just a "no".
        return False


def _digest_matches(credential: str, challenge: bytes, digest: str) -> bool:
    expected = cram_md5_digest(credential, challenge).encode("ascii")
    # S-507: constant-time comparison; the mechanism lower-cased the digest.
    return hmac.compare_digest(expected, digest.lower().encode("utf-8", "replace"))


def _scram_of(user: User | None) -> ScramCredential | None:
    """The user's SCRAM credential, or None (none, or one built by hand
    that does not parse: the loader refuses those)."""
    cred = parse_credential(user.scram) if user is not None and user.scram else None
    return cred if isinstance(cred, ScramCredential) else None


def verify(
    users: UserDB,
    creds: Credentials,
    *,
    scram_fake: Callable[[str], ScramCredential] | None = None,
) -> AuthResult:
    """Check ``creds`` against ``users``; the cost does not depend on the user.

    PLAIN and LOGIN: argon2 verify of the password against the user's hash,
    or against the dummy hash for an unknown user; a user with no argon2id
    hash but a SCRAM credential (imported, S-514) is checked with PBKDF2
    against that, after the dummy argon2 verify, so that such a user costs
    no less than the others (a few milliseconds more). CRAM-MD5: the
    expected digest from the user's stored contexts, or from the dummy
    context for an unknown user or one without a CRAM-MD5 credential.
    SCRAM-SHA-256: the proof against the
    user's credential, or against ``scram_fake(name)`` (the shell's, from
    the state store's secret; a per-process one when None) for an unknown
    user or one without SCRAM; ``server_final`` is set on success only.
    """
    user = users.get(creds.username)
    username = user.name if user is not None else None
    if creds.mechanism in ("PLAIN", "LOGIN"):
        password = creds.password or b""
        if user is not None and user.argon2.startswith("$argon2id$"):
            matches = _password_matches(user.argon2, password)
        elif user is not None and user.argon2:  # bcrypt, SHA-crypt, argon2i (S-1304)
            from . import hashes

            matches = hashes.verify(user.argon2, password).ok
        else:
            # S-510: an unknown user costs one argon2 verify of the dummy;
            # so does a SCRAM-only user (S-514), plus the PBKDF2 of its salt.
            _password_matches(_dummy_hash(), password)
            scram = _scram_of(user)
            matches = scram is not None and password_matches(scram, password)
        return AuthResult(ok=matches, username=username)
    if creds.mechanism == "CRAM-MD5":
        has_cram = user is not None and user.cram is not None
        credential = user.cram if user is not None and user.cram else _dummy_cram()
        matches = _digest_matches(credential, creds.challenge or b"", creds.digest or "")
        return AuthResult(ok=matches and has_cram, username=username)
    if creds.mechanism == "SCRAM-SHA-256":
        scram = _scram_of(user)
        cred = scram if scram is not None else (scram_fake or _dummy_scram)(creds.username)
        server_final = verify_proof(cred, creds.auth_message or b"", creds.proof or b"")
        ok = scram is not None and server_final is not None
        return AuthResult(ok=ok, username=username, server_final=server_final if ok else None)
    return AuthResult(ok=False, username=username)
