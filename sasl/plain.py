"""The PLAIN mechanism (RFC 4616; SPEC.md S-505).

This module owns the parsing of the PLAIN message
``[authzid] NUL authcid NUL passwd`` and the checks of client-sent user
names and passwords that LOGIN and CRAM-MD5 share. It checks form only; whether the password is right is ``verify``'s
business. Standard library only.
"""

from __future__ import annotations

from . import Challenge, Credentials, Failure, Step
from .limits import MAX_PASSWORD_OCTETS, MAX_USERNAME_OCTETS
from .names import name_problem

__all__ = ["PlainMechanism", "decode_name", "parse_plain", "password_problem"]


def decode_name(raw: bytes) -> tuple[str | None, str | None]:
    """``(name, None)`` for a valid user name sent by a client, else ``(None, why)``.

    S-509: at most 255 octets of valid UTF-8 that ``names.name_problem``
    accepts (no spaces, controls, invisible characters or ``:``, NFC); the
    reason never echoes the octets (they may be a password).
    """
    if len(raw) > MAX_USERNAME_OCTETS:
        return None, "user name longer than 255 octets"
    try:
        name = raw.decode("utf-8")
    except UnicodeDecodeError:
        return None, "user name is not valid UTF-8"
    why = name_problem(name)
    return (None, why) if why else (name, None)


def password_problem(raw: bytes) -> str | None:
    """Why ``raw`` cannot be a password (S-505, S-509), or None.

    Non-empty, at most 255 octets, valid UTF-8 (RFC 4616 §2). The octets are
    compared as sent, without normalisation, so nothing else is checked.
    """
    if not raw:
        return "empty password"
    if len(raw) > MAX_PASSWORD_OCTETS:
        return "password longer than 255 octets"
    try:
        raw.decode("utf-8")
    except UnicodeDecodeError:
        return "password is not valid UTF-8"
    return None


def parse_plain(message: bytes) -> Step:
    """Credentials from one PLAIN message, or the Failure saying why not."""
    parts = message.split(b"\x00")
    # RFC 4616 §2: message = [authzid] UTF8NUL authcid UTF8NUL passwd; the
    # fields themselves cannot hold NUL, so there are exactly two.
    if len(parts) != 3:
        return Failure("PLAIN message without exactly two NULs")
    authzid_raw, authcid_raw, password = parts
    authcid, why = decode_name(authcid_raw)
    if authcid is None:
        return Failure(why or "invalid user name")
    why = password_problem(password)
    if why is not None:
        return Failure(why)
    if authzid_raw:
        # S-505: an authorization identity must name the user itself; msa
        # does not let one user act for another (RFC 4616 §2 leaves the
        # policy to the server, and ignoring the field would be silent).
        if len(authzid_raw) > MAX_USERNAME_OCTETS:
            return Failure("authorization identity longer than 255 octets")
        try:
            authzid = authzid_raw.decode("utf-8")
        except UnicodeDecodeError:
            return Failure("authorization identity is not valid UTF-8")
        if authzid.lower() != authcid.lower():
            return Failure("authorization identity differs from the user")
    return Credentials(mechanism="PLAIN", username=authcid, password=password)


class PlainMechanism:
    """One PLAIN exchange: an initial response, or ``334`` then one response."""

    __slots__ = ("_phase",)

    name = "PLAIN"

    def __init__(self) -> None:
        self._phase = "new"  # new -> waiting (challenge sent) -> done

    def start(self, initial: bytes | None) -> Step:
        if self._phase != "new":
            return self._finish(Failure("exchange already started"))
        if initial is None:
            # S-505: AUTH PLAIN without an initial response gets "334 ".
            self._phase = "waiting"
            return Challenge(b"")
        return self._finish(parse_plain(initial))

    def step(self, response: bytes) -> Step:
        if self._phase != "waiting":
            return self._finish(Failure("no response expected"))
        return self._finish(parse_plain(response))

    def _finish(self, result: Step) -> Step:
        self._phase = "done"
        return result
