"""SASL for msa: mechanisms, users database, verification (sans-IO).

This package owns what AUTH means once the SMTP layer has decoded the
client's base64 (RFC 4954): the step results a mechanism returns, the
``Mechanism`` protocol, the registry of mechanisms (PLAIN RFC 4616, LOGIN
draft-murchison-sasl-login, CRAM-MD5 RFC 2195, SCRAM-SHA-256 RFC 5802 and
RFC 7677), and it re-exports the users database, the verifier, the failure
throttle and the credential cache.

It never touches a socket, thread, file descriptor or process, and never
imports ``smtp_states`` or ``server``: it returns reasons, and the SMTP layer
turns them into replies (SPEC.md §5). Base64, the ``*`` cancel and line
lengths stay in the SMTP layer. A client's fault is a ``Failure`` result,
never an exception. Imports: the standard library; argon2-cffi (lazily, in
``verify`` and ``userdb``) and ``idna`` (lazily, in ``userdb``, S-603).

The step result types are defined here because every mechanism module
builds them; the other public names live in the submodules and are
imported from them when first used (``__getattr__`` below), so that what
only parses users.db does not load the rest.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Protocol


@dataclass(frozen=True, slots=True)
class Challenge:
    """Send ``data`` to the client (the SMTP layer base64-encodes it, S-502)."""

    data: bytes


@dataclass(frozen=True, slots=True)
class Credentials:
    """The exchange is complete: check these (``verify``), then reply.

    ``username`` is the authentication identity as sent (decoded UTF-8, valid
    per S-509, not yet lower-cased). PLAIN and LOGIN carry ``password``;
    CRAM-MD5 carries the exact ``challenge`` sent and the client's ``digest``
    (32 lower-case hex digits). SCRAM-SHA-256 carries the ``auth_message``
    (RFC 5802 §3) and the client's ``proof`` (32 octets). Secrets are kept
    out of ``repr``.
    """

    mechanism: str
    username: str
    password: bytes | None = field(default=None, repr=False)
    challenge: bytes | None = None
    digest: str | None = field(default=None, repr=False)
    auth_message: bytes | None = None
    proof: bytes | None = field(default=None, repr=False)


@dataclass(frozen=True, slots=True)
class Failure:
    """The exchange failed; ``reason`` is short, for logs, and holds no secret.

    The SMTP layer answers ``535 5.7.8`` (S-503), except when
    ``initial_response_refused`` is set: an initial response was sent to a
    mechanism where the server speaks first, ``501 5.7.0`` (S-501,
    RFC 4954 §4).
    """

    reason: str
    initial_response_refused: bool = False


Step = Challenge | Credentials | Failure


class Mechanism(Protocol):
    """One AUTH exchange; a fresh object per AUTH command.

    ``start`` takes the decoded initial response (``b""`` for ``=``), or None
    when the command had none; ``step`` takes each decoded response to a
    ``Challenge``. After a ``Credentials`` or ``Failure`` result every call
    returns a ``Failure``.
    """

    name: str

    def start(self, initial: bytes | None) -> Step: ...

    def step(self, response: bytes) -> Step: ...


#: The mechanisms msa implements, in the order EHLO advertises them (S-202).
MECHANISMS: tuple[str, ...] = ("PLAIN", "LOGIN", "CRAM-MD5", "SCRAM-SHA-256")


#: Where each re-exported name lives. A submodule is imported when one of
#: its names is first asked for (PEP 562 ``__getattr__``): parsing users.db
#: before an inetd greeting then loads the parser and the verifier, not the
#: mechanisms, the throttle (ipaddress) and the credential cache.
_EXPORTS = {
    "cache": ("CredentialCache",),
    "crammd5": ("CramMD5Mechanism",),
    "login": ("LoginMechanism",),
    "plain": ("PlainMechanism",),
    "scram": ("ScramCredential", "ScramMechanism", "fake_credential", "format_credential", "make_credential",
              "parse_credential", "password_matches", "verify_proof"),
    "throttle": ("Throttle", "client_key"),
    "userdb": ("User", "UserDB", "UserDBError", "add_user", "add_users", "check_sender", "decode", "delete_user",
               "format_user", "hash_problem", "name_problem", "parse", "parse_bytes", "replace_user"),
    "phc": ("hash_password", "nondefault_params"),
}
_MODULE_OF = {name: module for module, names in _EXPORTS.items() for name in names}

if TYPE_CHECKING:  # what __getattr__ gives, for type checkers and linters
    from .cache import CredentialCache
    from .crammd5 import CramMD5Mechanism
    from .login import LoginMechanism
    from .phc import hash_password, nondefault_params
    from .plain import PlainMechanism
    from .scram import (
        ScramCredential,
        ScramMechanism,
        fake_credential,
        format_credential,
        make_credential,
        parse_credential,
        password_matches,
        verify_proof,
    )
    from .throttle import Throttle, client_key
    from .userdb import (
        User,
        UserDB,
        UserDBError,
        add_user,
        add_users,
        check_sender,
        decode,
        delete_user,
        format_user,
        hash_problem,
        name_problem,
        parse,
        parse_bytes,
        replace_user,
    )


def __getattr__(name: str) -> object:
    module = _MODULE_OF.get(name)
    if module is None:  # a submodule not imported yet: `from sasl import hashes` imports it
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    # __import__, not importlib.import_module: -X importtime (make bench
    # PROFILE=case7) reports what the statement imports, not what importlib does.
    __import__(f"{__name__}.{module}")
    value = getattr(globals()[module], name)  # the submodule, set here by its import
    globals()[name] = value
    return value


# Imported now, not when asked for: the function `verify` shares its name
# with its module, and importing the module sasl.verify (from anywhere) sets
# that name on this package to the module; only an import here, after it,
# keeps the function there.
from .verify import AuthResult, verify, warm_up  # noqa: E402


def new_mechanism(
    name: str,
    *,
    hostname: str,
    urandom: Callable[[int], bytes] = os.urandom,
    clock: Callable[[], float] = time.time,
    scram_lookup: Callable[[str], ScramCredential | None] | None = None,
    scram_fake: Callable[[str], ScramCredential] | None = None,
) -> Mechanism | None:
    """A fresh exchange for mechanism ``name`` (any case), or None if unknown.

    ``hostname`` ends the CRAM-MD5 challenge; ``urandom`` and ``clock`` feed
    its random part and time stamp (S-507) and are parameters for tests;
    ``urandom`` also feeds the SCRAM server nonce. SCRAM-SHA-256 needs
    ``scram_lookup`` (a user's credential, None when unknown or without
    one) and ``scram_fake`` (the stable fake for those, S-514); without
    both it is None, like an unknown mechanism. Whether a mechanism is
    advertised (CRAM-MD5 and SCRAM-SHA-256 only while every user has a
    credential, S-202, S-514) is the caller's decision.
    """
    if not name.isascii():
        return None
    wanted = name.upper()
    if wanted == "PLAIN":
        from .plain import PlainMechanism

        return PlainMechanism()
    if wanted == "LOGIN":
        from .login import LoginMechanism

        return LoginMechanism()
    if wanted == "CRAM-MD5":
        from .crammd5 import CramMD5Mechanism

        return CramMD5Mechanism(hostname, urandom=urandom, clock=clock)
    if wanted == "SCRAM-SHA-256" and scram_lookup is not None and scram_fake is not None:
        from .scram import ScramMechanism

        return ScramMechanism(scram_lookup, scram_fake, urandom=urandom)
    return None


__all__ = [
    "MECHANISMS",
    "AuthResult",
    "Challenge",
    "CramMD5Mechanism",
    "CredentialCache",
    "Credentials",
    "Failure",
    "LoginMechanism",
    "Mechanism",
    "PlainMechanism",
    "ScramCredential",
    "ScramMechanism",
    "Step",
    "Throttle",
    "User",
    "UserDB",
    "UserDBError",
    "add_user",
    "add_users",
    "check_sender",
    "client_key",
    "decode",
    "delete_user",
    "fake_credential",
    "format_credential",
    "format_user",
    "hash_password",
    "make_credential",
    "name_problem",
    "new_mechanism",
    "nondefault_params",
    "parse",
    "hash_problem",
    "parse_bytes",
    "parse_credential",
    "password_matches",
    "replace_user",
    "verify",
    "verify_proof",
    "warm_up",
]
