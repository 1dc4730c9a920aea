"""The LOGIN mechanism (draft-murchison-sasl-login; SPEC.md S-506).

This module owns the two-question exchange: ``Username:`` then
``Password:``, or only ``Password:`` when the AUTH command carried the user
name as its initial response. LOGIN has no RFC; the draft's challenge texts
are what every client expects. Standard library only.
"""

from __future__ import annotations

from . import Challenge, Credentials, Failure, Step
from .plain import decode_name, password_problem

__all__ = ["LoginMechanism"]

#: draft-murchison-sasl-login §2: the server's two challenges.
USERNAME_CHALLENGE = b"Username:"
PASSWORD_CHALLENGE = b"Password:"


class LoginMechanism:
    """One LOGIN exchange."""

    __slots__ = ("_phase", "_username")

    name = "LOGIN"

    def __init__(self) -> None:
        self._phase = "new"  # new -> user -> password -> done
        self._username: str | None = None

    def start(self, initial: bytes | None) -> Step:
        if self._phase != "new":
            return self._finish(Failure("exchange already started"))
        if initial is None:
            self._phase = "user"
            return Challenge(USERNAME_CHALLENGE)
        # S-506: the initial response is the user name ("=" makes it empty,
        # which is not a valid name).
        return self._take_username(initial)

    def step(self, response: bytes) -> Step:
        if self._phase == "user":
            return self._take_username(response)
        if self._phase == "password" and self._username is not None:
            why = password_problem(response)
            if why is not None:
                return self._finish(Failure(why))
            return self._finish(Credentials(mechanism="LOGIN", username=self._username, password=response))
        return self._finish(Failure("no response expected"))

    def _take_username(self, raw: bytes) -> Step:
        username, why = decode_name(raw)
        if username is None:
            return self._finish(Failure(why or "invalid user name"))
        self._username = username
        self._phase = "password"
        return Challenge(PASSWORD_CHALLENGE)

    def _finish(self, result: Step) -> Step:
        self._phase = "done"
        self._username = None
        return result
