"""The AUTH exchange of a Connection (RFC 4954, SPEC.md §5).

A mixin of `Connection`, kept apart so that each file stays readable: the
AUTH command, the 334 challenge/response loop around a sans-IO `sasl`
mechanism, and the answer to the shell's credential check. Base64, the `*`
cancel and the line bounds live here; what the decoded bytes mean lives in
`sasl`.
"""

from __future__ import annotations

import base64
import binascii
from typing import Any

from sasl import Challenge, Failure

from . import commands as C
from . import replies as R
from .events import AuthCheck, Event
from .replies import Reply
from .states import State


class AuthExchange:
    """Mixed into Connection, whose state it shares."""

    settings: Any
    state: State
    tls: bool
    esmtp: bool | None
    user: str | None
    _paused: type | None
    _mech: Any
    _mech_name: str
    _auth_failures: int

    # provided by Connection
    def _send(self, reply: Reply) -> None: ...
    def _reply(self, reply: Reply, events: list[Event], verb: str, arg: str | bytes = "") -> None: ...
    def _close(self, reply: Reply, reason: str) -> list[Event]: ...
    def _run(self, direct: bytes | None) -> list[Event]: ...

    def _auth_offered(self) -> bool:
        s = self.settings
        return bool(s.auth_mechanisms) and s.new_mechanism is not None and (
            self.tls or not s.require_tls_for_auth
        )

    def auth_done(self, result: Any) -> list[Event]:
        """Answer an AuthCheck with a verify.AuthResult (ok, username,
        temporary, server_final). A SCRAM success first sends the server's
        final message as a challenge; the client's empty answer completes
        the exchange (RFC 5802 §5, RFC 4954 §4; S-514)."""
        self._paused = None
        events: list[Event] = []
        if result.ok and getattr(result, "server_final", None):
            self._mech = _ScramFinal(result.username)
            self.state = State.AUTH
            self._send(R.Reply(334, "", base64.b64encode(result.server_final).decode("ascii")))
            return events + self._run(None)
        if result.ok:
            self.user = result.username
            self._send(R.AUTH_OK)
        elif result.temporary:
            self._send(R.AUTH_TEMPFAIL)
        else:
            self._auth_failures += 1
            self._send(R.AUTH_INVALID)
            if self._auth_failures >= self.settings.auth_failures:  # S-511
                return self._close(R.too_many_auth_failures(self.settings.hostname), "auth failures")
        return events + self._run(None)

    def _auth(self, arg: bytes, events: list[Event]) -> None:
        s = self.settings
        if self.esmtp is False:
            self._reply(R.SEND_EHLO_FIRST, events, "AUTH")
            return
        if self.user is not None:
            self._reply(R.AUTH_ALREADY, events, "AUTH")
            return
        if not arg:
            self._reply(R.SYNTAX_AUTH, events, "AUTH")
            return
        if not self.tls and s.require_tls_for_auth:
            self._reply(R.AUTH_NEEDS_TLS, events, "AUTH")  # S-501: nothing decoded
            return
        name_b, _, initial = arg.partition(b" ")
        name = name_b.decode("ascii").upper()
        if not self._auth_offered() or name not in s.auth_mechanisms:
            self._reply(R.AUTH_UNKNOWN_MECHANISM, events, "AUTH")
            return
        assert s.new_mechanism is not None
        mech = s.new_mechanism(name)
        if mech is None:
            self._reply(R.AUTH_UNKNOWN_MECHANISM, events, "AUTH")
            return
        initial = initial.strip(b" ")
        decoded: bytes | None
        if not initial:
            decoded = None
        elif initial == b"=":
            decoded = b""  # S-502
        elif initial == b"*":
            self._reply(R.AUTH_CANCELLED, events, "AUTH")
            return
        else:
            decoded = _b64decode(initial)
            if decoded is None:
                self._reply(R.AUTH_BAD_BASE64, events, "AUTH")
                return
        self._mech_name = name
        self._auth_step(mech, mech.start(decoded), events)

    def _auth_response(self, line: bytes, events: list[Event]) -> None:
        text = C.split_line(line)
        if text == b"*":
            self._end_auth()
            self._reply(R.AUTH_CANCELLED, events, "AUTH")  # S-502
            return
        decoded = _b64decode(text)
        if decoded is None:
            self._end_auth()
            self._reply(R.AUTH_BAD_BASE64, events, "AUTH")
            return
        if isinstance(self._mech, _ScramFinal):
            user = self._mech.username
            self._end_auth()
            if decoded:  # RFC 5802 §5: the client's last message is empty
                self._auth_failures += 1
                self._reply(R.AUTH_INVALID, events, "AUTH")
                return
            self.user = user
            self._send(R.AUTH_OK)
            return
        self._auth_step(self._mech, self._mech.step(decoded), events)

    def _auth_step(self, mech: Any, step: Any, events: list[Event]) -> None:
        if isinstance(step, Challenge):
            self._mech = mech
            self.state = State.AUTH
            self._send(R.Reply(334, "", base64.b64encode(step.data).decode("ascii")))
            return
        self._end_auth()
        if isinstance(step, Failure) and step.initial_response_refused:
            self._reply(R.AUTH_NO_INITIAL, events, "AUTH")  # S-501, RFC 4954 §4
            return
        # Credentials, or a Failure: both go to the shell, which verifies the
        # one, and logs and throttles the other, before answering (S-511).
        self._paused = AuthCheck
        events.append(AuthCheck(self._mech_name, step))

    def _end_auth(self) -> None:
        self._mech = None
        if self.state is State.AUTH:
            self.state = State.GREETED



class _ScramFinal:
    """The step after a verified SCRAM proof: the server's signature was
    sent; the user is authenticated once the client answers empty."""

    __slots__ = ("username",)

    def __init__(self, username: str) -> None:
        self.username = username


def _b64decode(text: bytes) -> bytes | None:
    try:
        return base64.b64decode(text, validate=True)  # S-502: strict
    except (binascii.Error, ValueError):
        return None


