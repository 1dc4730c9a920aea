"""The SCRAM-SHA-256 mechanism (RFC 5802, RFC 7677; SPEC.md S-514).

This module owns the stored SCRAM credential (Dovecot's ``{SCRAM-SHA-256}``
form ``ITERATIONS,SALT,STOREDKEY,SERVERKEY``: parsing, writing, making one
from a password, and the fake one an unknown user gets), the exchange
(client-first, server-first, client-final; never ``-PLUS``, since msa has no
channel binding), and the proof check. Like the other mechanisms it does not
decide whether the password is right: a well-formed client-final becomes
``Credentials`` carrying the AuthMessage and the ClientProof, and ``verify``
checks them with ``verify_proof`` against the user's credential. It never
sees a password either; ``password_matches`` serves PLAIN and LOGIN against
a user who has only a SCRAM credential.

Standard library only; randomness comes in as a parameter. A client's fault
is a ``Failure``, never an exception, and its reason never echoes the
client's octets.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import os
import re
import string
from collections.abc import Callable
from dataclasses import dataclass, field

from . import Challenge, Credentials, Failure, Step
from .limits import (
    SCRAM_DEFAULT_ITERATIONS,
    SCRAM_KEY_OCTETS,
    SCRAM_MAX_ITERATIONS,
    SCRAM_MAX_SALT_OCTETS,
    SCRAM_MIN_ITERATIONS,
    SCRAM_MIN_SALT_OCTETS,
    SCRAM_SALT_OCTETS,
    SCRAM_SERVER_NONCE_OCTETS,
)
from .plain import decode_name

__all__ = [
    "MECHANISM", "ScramCredential", "ScramMechanism", "fake_credential", "format_credential",
    "make_credential", "parse_credential", "password_matches", "verify_proof",
]  # fmt: skip

MECHANISM = "SCRAM-SHA-256"


@dataclass(frozen=True, slots=True)
class ScramCredential:
    """What the server stores (RFC 5802 §3); the keys are kept out of ``repr``.

    The salt and the iteration count are sent to any client that asks, so
    they are not secret. StoredKey and ServerKey are: with them anyone can
    pose as the server, and StoredKey is a dictionary attack's target.
    """

    iterations: int
    salt: bytes
    stored_key: bytes = field(repr=False)
    server_key: bytes = field(repr=False)


# --- the stored credential ----------------------------------------------------

_ITERATIONS = re.compile(r"[1-9][0-9]{0,5}")


def _b64decode(text: str | bytes) -> bytes | None:
    """Standard base64 with padding, in its canonical form only, or None."""
    raw = text.encode("ascii", "replace") if isinstance(text, str) else text
    try:
        data = base64.b64decode(raw, validate=True)
    except (binascii.Error, ValueError):
        return None
    # Canonical: no non-zero bits in the padding, so one value has one text.
    return data if base64.b64encode(data) == raw else None


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def parse_credential(text: str) -> ScramCredential | str:
    """The credential in ``text`` (the part after ``{SCRAM-SHA-256}``), or why not.

    The reason never echoes the text.
    """
    if text.startswith("{"):
        return "remove the Dovecot scheme prefix {SCRAM-SHA-256} or use 'msa.py user import'"
    parts = text.split(",")
    if len(parts) != 4:
        return "expected ITERATIONS,SALT,STOREDKEY,SERVERKEY"
    if not _ITERATIONS.fullmatch(parts[0]):
        return "iteration count is not a positive decimal number"
    iterations = int(parts[0])
    if not SCRAM_MIN_ITERATIONS <= iterations <= SCRAM_MAX_ITERATIONS:
        return f"iteration count {iterations} exceeds {SCRAM_MAX_ITERATIONS}"
    salt = _b64decode(parts[1])
    if salt is None or not SCRAM_MIN_SALT_OCTETS <= len(salt) <= SCRAM_MAX_SALT_OCTETS:
        return f"salt is not base64 of {SCRAM_MIN_SALT_OCTETS} to {SCRAM_MAX_SALT_OCTETS} octets"
    stored_key, server_key = _b64decode(parts[2]), _b64decode(parts[3])
    if stored_key is None or len(stored_key) != SCRAM_KEY_OCTETS:
        return "stored key is not base64 of 32 octets"
    if server_key is None or len(server_key) != SCRAM_KEY_OCTETS:
        return "server key is not base64 of 32 octets"
    return ScramCredential(iterations, salt, stored_key, server_key)


def format_credential(cred: ScramCredential) -> str:
    """``ITERATIONS,SALT,STOREDKEY,SERVERKEY``, as Dovecot writes it."""
    return f"{cred.iterations},{_b64(cred.salt)},{_b64(cred.stored_key)},{_b64(cred.server_key)}"


def _hmac(key: bytes, message: bytes) -> bytes:
    return hmac.new(key, message, hashlib.sha256).digest()


def _keys(password: bytes, salt: bytes, iterations: int) -> tuple[bytes, bytes]:
    """``(StoredKey, ServerKey)`` of RFC 5802 §3."""
    salted = hashlib.pbkdf2_hmac("sha256", password, salt, iterations)  # Hi()
    stored_key = hashlib.sha256(_hmac(salted, b"Client Key")).digest()
    return stored_key, _hmac(salted, b"Server Key")


def _check_iterations(iterations: int) -> None:
    if not SCRAM_MIN_ITERATIONS <= iterations <= SCRAM_MAX_ITERATIONS:
        raise ValueError(f"SCRAM iteration count must be {SCRAM_MIN_ITERATIONS} to {SCRAM_MAX_ITERATIONS}")


def make_credential(
    password: bytes,
    iterations: int = SCRAM_DEFAULT_ITERATIONS,
    salt: bytes | None = None,
    urandom: Callable[[int], bytes] = os.urandom,
) -> ScramCredential:
    """A credential for ``password`` (its octets as given, S-509), with a
    random 16-octet salt unless ``salt`` is given.

    ValueError for an iteration count or salt outside the limits (the
    caller's mistake, not a client's).
    """
    _check_iterations(iterations)
    salt = urandom(SCRAM_SALT_OCTETS) if salt is None else salt
    if not SCRAM_MIN_SALT_OCTETS <= len(salt) <= SCRAM_MAX_SALT_OCTETS:
        raise ValueError(f"SCRAM salt must be {SCRAM_MIN_SALT_OCTETS} to {SCRAM_MAX_SALT_OCTETS} octets")
    return ScramCredential(iterations, salt, *_keys(password, salt, iterations))


def fake_credential(secret: bytes, name: str, iterations: int) -> ScramCredential:
    """The credential an unknown user (or one without SCRAM) seems to have (S-514).

    Everything is HMAC-SHA256 of ``secret`` (kept in the state store, so it
    is the same in every process and after restarts) over a label and the
    lower-cased name: asking twice gives the same salt, as for a real user,
    and nobody without the secret can tell it from a real one (S-510). No
    proof matches it, and ``verify`` refuses it even if one did.
    """
    _check_iterations(iterations)
    key = name.lower().encode("utf-8", "surrogatepass")
    # The labels are prefix-free, so no (label, name) pair collides with another.
    salt = _hmac(secret, b"salt" + key)[:SCRAM_SALT_OCTETS]
    return ScramCredential(
        iterations, salt, _hmac(secret, b"stored-key" + key), _hmac(secret, b"server-key" + key)
    )


def password_matches(cred: ScramCredential, password: bytes) -> bool:
    """Whether ``password`` is the one ``cred`` was made from (PLAIN and LOGIN
    against a SCRAM-only user, S-514); compared in constant time."""
    stored_key, _ = _keys(password, cred.salt, cred.iterations)
    return hmac.compare_digest(stored_key, cred.stored_key)


def verify_proof(cred: ScramCredential, auth_message: bytes, proof: bytes) -> bytes | None:
    """The server-final message ``v=SERVERSIGNATURE`` when ``proof`` is the
    ClientProof of ``auth_message`` for ``cred``, else None (RFC 5802 §3).

    ClientKey = ClientProof XOR HMAC(StoredKey, AuthMessage) must hash to
    StoredKey (compared in constant time, S-514). The same work is done
    whether it matches or not, the server signature included.
    """
    signature = _hmac(cred.stored_key, auth_message)
    padded = proof[:SCRAM_KEY_OCTETS].ljust(SCRAM_KEY_OCTETS, b"\0")
    client_key = (int.from_bytes(padded, "big") ^ int.from_bytes(signature, "big")).to_bytes(
        SCRAM_KEY_OCTETS, "big"
    )
    matches = hmac.compare_digest(hashlib.sha256(client_key).digest(), cred.stored_key)
    server_final = b"v=" + base64.b64encode(_hmac(cred.server_key, auth_message))
    return server_final if matches and len(proof) == SCRAM_KEY_OCTETS else None


# --- the exchange (RFC 5802 §5, §7) -------------------------------------------

#: printable = %x21-2B / %x2D-7E: printable ASCII except "," (the nonce).
_PRINTABLE = frozenset(range(0x21, 0x7F)) - {0x2C}
_ALPHA = frozenset(string.ascii_letters.encode("ascii"))


def _saslname(raw: bytes) -> bytes | None:
    """RFC 5802 §5.1: ``=2C`` is "," and ``=3D`` is "="; any other "=" (or
    nothing at all) makes the name invalid."""
    if not raw:
        return None
    head, *escaped = raw.split(b"=")
    out = [head]
    for part in escaped:
        code = part[:2]
        if code not in (b"2C", b"3D"):
            return None
        out += [b"," if code == b"2C" else b"=", part[2:]]
    return b"".join(out)


def _extensions_problem(parts: list[bytes]) -> str | None:
    """Why ``attr-val`` extensions are refused, or None (RFC 5802 §7):
    ``m=`` is mandatory-to-understand and msa knows no extension, so it
    fails; others are ignored as the RFC asks."""
    for part in parts:
        if len(part) < 3 or part[0] not in _ALPHA or part[1:2] != b"=":
            return "malformed extension attribute"
        if part[:2] == b"m=":
            return "mandatory extension not supported"
    return None


def _text_problem(message: bytes) -> str | None:
    if b"\0" in message:
        return "SCRAM message contains NUL"
    try:
        message.decode("utf-8")
    except UnicodeDecodeError:
        return "SCRAM message is not valid UTF-8"
    return None


class ScramMechanism:
    """One SCRAM-SHA-256 exchange: client-first, server-first, client-final.

    ``lookup(name)`` gives the user's credential, or None for an unknown user
    or one without SCRAM; then ``fake(name)`` gives the salt and iteration
    count to send (S-514). ``nonce`` replaces the random server nonce part,
    for RFC 7677's example only.
    """

    __slots__ = ("_bare", "_fake", "_gs2", "_lookup", "_nonce", "_phase", "_server_first", "_test_nonce",
                 "_urandom", "_username")  # fmt: skip

    name = MECHANISM

    def __init__(
        self,
        lookup: Callable[[str], ScramCredential | None],
        fake: Callable[[str], ScramCredential],
        *,
        urandom: Callable[[int], bytes] = os.urandom,
        nonce: bytes | None = None,
    ) -> None:
        self._lookup = lookup
        self._fake = fake
        self._urandom = urandom
        self._test_nonce = nonce
        self._phase = "new"  # new -> first (empty challenge sent) -> final -> done
        self._gs2 = self._bare = self._server_first = self._nonce = b""
        self._username = ""

    def start(self, initial: bytes | None) -> Step:
        if self._phase != "new":
            return self._finish(Failure("exchange already started"))
        if initial is None:
            # RFC 4954 §4: without an initial response the server sends an
            # empty challenge and the client-first comes as the response.
            self._phase = "first"
            return Challenge(b"")
        return self._client_first(initial)

    def step(self, response: bytes) -> Step:
        if self._phase == "first":
            return self._client_first(response)
        if self._phase == "final":
            return self._finish(self._client_final(response))
        return self._finish(Failure("no response expected"))

    def _client_first(self, message: bytes) -> Step:
        # client-first-message = gs2-header client-first-message-bare, where
        # gs2-header = gs2-cbind-flag "," [authzid] "," and the bare part is
        # [reserved-mext ","] username "," nonce ["," extensions].
        if why := _text_problem(message):
            return self._finish(Failure(why))
        parts = message.split(b",")
        if len(parts) < 4:
            return self._finish(Failure("malformed client-first message"))
        flag, authzid_field, name_field, nonce_field = parts[:4]
        if flag.startswith(b"p="):
            # S-514: never -PLUS; a client asking for channel binding gets 535.
            return self._finish(Failure("channel binding requested (no -PLUS mechanism)"))
        if flag not in (b"n", b"y"):
            # "y": the client could bind but thinks the server cannot, which
            # is true (RFC 5802 §6), so it is accepted like "n".
            return self._finish(Failure("malformed gs2 header"))
        if name_field.startswith(b"m="):
            return self._finish(Failure("mandatory extension not supported"))
        if not name_field.startswith(b"n="):
            return self._finish(Failure("client-first message without a user name"))
        raw_name = _saslname(name_field[2:])
        if raw_name is None:
            return self._finish(Failure("malformed user name"))
        username, why = decode_name(raw_name)
        if username is None:
            return self._finish(Failure(why or "invalid user name"))
        if authzid_field:
            # S-514, as S-505: an authorization identity must be the user.
            authzid = _saslname(authzid_field[2:]) if authzid_field.startswith(b"a=") else None
            if authzid is None:
                return self._finish(Failure("malformed authorization identity"))
            if authzid.decode("utf-8", "replace").lower() != username.lower():
                return self._finish(Failure("authorization identity differs from the user"))
        client_nonce = nonce_field[2:]
        if not nonce_field.startswith(b"r=") or not client_nonce or not set(client_nonce) <= _PRINTABLE:
            return self._finish(Failure("malformed client nonce"))
        if why := _extensions_problem(parts[4:]):
            return self._finish(Failure(why))
        cred = self._lookup(username) or self._fake(username)
        server_part = self._test_nonce or base64.b64encode(self._urandom(SCRAM_SERVER_NONCE_OCTETS))
        self._nonce = client_nonce + server_part
        self._server_first = b"r=%b,s=%b,i=%d" % (self._nonce, base64.b64encode(cred.salt), cred.iterations)
        self._gs2 = flag + b"," + authzid_field + b","
        self._bare = b",".join(parts[2:])
        self._username = username
        self._phase = "final"
        return Challenge(self._server_first)

    def _client_final(self, message: bytes) -> Step:
        # client-final-message = channel-binding "," nonce ["," extensions]
        # "," proof; the proof is last, and the rest is signed with it.
        if why := _text_problem(message):
            return Failure(why)
        parts = message.split(b",")
        if len(parts) < 3 or not parts[0].startswith(b"c="):
            return Failure("malformed client-final message")
        binding = _b64decode(parts[0][2:])
        if binding is not None and binding.startswith(b"p="):
            return Failure("channel binding data sent (no -PLUS mechanism)")
        if binding != self._gs2:
            return Failure("channel binding does not repeat the gs2 header")
        if not hmac.compare_digest(parts[1], b"r=" + self._nonce):
            return Failure("nonce does not match")
        if not parts[-1].startswith(b"p="):
            return Failure("client-final message without a proof last")
        proof = _b64decode(parts[-1][2:])
        if proof is None or len(proof) != SCRAM_KEY_OCTETS:
            return Failure("proof is not base64 of 32 octets")
        if why := _extensions_problem(parts[2:-1]):
            return Failure(why)
        # RFC 5802 §3: AuthMessage = client-first-message-bare + "," +
        # server-first-message + "," + client-final-message-without-proof.
        auth_message = b",".join([self._bare, self._server_first, *parts[:-1]])
        return Credentials(
            mechanism=MECHANISM, username=self._username, auth_message=auth_message, proof=proof
        )

    def _finish(self, result: Step) -> Step:
        self._phase = "done"
        self._gs2 = self._bare = self._server_first = self._nonce = b""
        return result
