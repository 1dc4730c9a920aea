"""argon2id PHC strings (RFC 9106 §3.1, S-1013): what an acceptable stored
hash is, its parameters, and making one with argon2-cffi's defaults (RFC
9106 §4's second profile). Shared by the users.db parser (`userdb`), the
checks (`verify`) and the stored-hash schemes of the directories.

Imports: the standard library, and argon2-cffi lazily (importing `sasl`
does not need it).
"""

from __future__ import annotations

import base64
import functools
import re
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from . import limits

if TYPE_CHECKING:
    from argon2 import PasswordHasher

__all__ = ["argon2_params", "argon2_problem", "default_params", "hash_password", "hasher", "nondefault_params"]


@functools.lru_cache(maxsize=1)
def hasher() -> PasswordHasher:
    from argon2 import PasswordHasher

    return PasswordHasher()  # argon2-cffi defaults: RFC 9106 §4 second profile


def default_params() -> tuple[int, int, int]:
    """``(memory KiB, time cost, parallelism)`` of the hashes msa makes."""
    h = hasher()
    return h.memory_cost, h.time_cost, h.parallelism


def hash_password(password: bytes) -> str:
    """An argon2id PHC string with argon2-cffi's default parameters."""
    return hasher().hash(password)


_PARAMS = re.compile(r"m=(0|[1-9][0-9]{0,9}),t=(0|[1-9][0-9]{0,9}),p=(0|[1-9][0-9]{0,9})")
_B64 = re.compile(r"[A-Za-z0-9+/]+")


def _b64_octets(text: str) -> int | None:
    """Decoded length of unpadded standard base64 (as PHC strings use), or None."""
    if not _B64.fullmatch(text) or len(text) % 4 == 1:
        return None
    return len(base64.b64decode(text + "=" * (-len(text) % 4)))


def argon2_problem(phc: str) -> str | None:
    """Why ``phc`` is not an acceptable argon2id hash, or None."""
    if phc.startswith("{"):
        return "remove the Dovecot scheme prefix (such as {ARGON2ID}) or use 'msa.py user import'"
    parts = phc.split("$")
    if len(parts) < 2 or parts[0] != "":
        return "not a PHC string ($argon2id$v=19$m=...,t=...,p=...$SALT$HASH)"
    if parts[1] != "argon2id":
        return f"scheme {parts[1][:20]!r} is not argon2id"
    if len(parts) != 6:
        return "expected $argon2id$v=19$m=...,t=...,p=...$SALT$HASH"
    if parts[2] != "v=19":
        return "unsupported version (expected v=19)"
    match = _PARAMS.fullmatch(parts[3])
    if match is None:
        return "malformed parameters (expected m=KIB,t=N,p=N)"
    memory, time_cost, lanes = (int(group) for group in match.groups())
    if memory > limits.ARGON2_MAX_MEMORY_KIB:
        return f"memory cost {memory} KiB exceeds {limits.ARGON2_MAX_MEMORY_KIB}"
    if time_cost > limits.ARGON2_MAX_TIME_COST:
        return f"time cost {time_cost} exceeds {limits.ARGON2_MAX_TIME_COST}"
    if lanes > limits.ARGON2_MAX_PARALLELISM:
        return f"parallelism {lanes} exceeds {limits.ARGON2_MAX_PARALLELISM}"
    if time_cost < 1 or lanes < 1:
        return "time cost and parallelism must be at least 1"
    if memory < limits.ARGON2_MIN_MEMORY_KIB_PER_LANE * lanes:
        return f"memory cost {memory} KiB is below 8 KiB per lane"
    salt = _b64_octets(parts[4])
    if salt is None or not limits.ARGON2_MIN_SALT_OCTETS <= salt <= limits.ARGON2_MAX_SALT_OCTETS:
        return "salt is not base64 of 8 to 1024 octets"
    tag = _b64_octets(parts[5])
    if tag is None or not limits.ARGON2_MIN_HASH_OCTETS <= tag <= limits.ARGON2_MAX_HASH_OCTETS:
        return "hash is not base64 of 4 to 1024 octets"
    return None


def argon2_params(phc: str) -> tuple[int, int, int]:
    """``(memory KiB, time cost, parallelism)`` of a hash that passed the check."""
    parts = phc.split("$")
    match = _PARAMS.fullmatch(parts[3]) if len(parts) == 6 else None
    if match is None:
        raise ValueError("not an argon2id PHC string")
    memory, time_cost, lanes = (int(group) for group in match.groups())
    return memory, time_cost, lanes


def nondefault_params(users: Iterable[Any]) -> list[str]:
    """The names of users (sasl.User) whose hash is not an argon2id one with
    argon2-cffi's defaults (another scheme of S-1304, or other parameters):
    their timing differs until they are rehashed (S-510). A user without a
    hash (SCRAM only, S-514) is not listed."""
    defaults = default_params()
    return [user.name for user in users
            if user.argon2 and (not user.argon2.startswith("$argon2id$") or argon2_params(user.argon2) != defaults)]
