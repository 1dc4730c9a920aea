"""The CRAM-MD5 mechanism (RFC 2195; SPEC.md S-501, S-507).

This module owns the challenge ``<RANDOM.UNIXTIME@HOST>`` and the parsing
of the response ``username SP digest``. The digest is checked by ``verify``
against the stored credential (S-508). The server speaks first, so an
initial response is refused (RFC 4954 §4: ``501 5.7.0``). Standard library
only; randomness and time come in as parameters.
"""

from __future__ import annotations

from collections.abc import Callable

from . import Challenge, Credentials, Failure, Step
from .limits import CRAM_CHALLENGE_RANDOM_OCTETS, CRAM_DIGEST_HEX_DIGITS
from .plain import decode_name

__all__ = ["CramMD5Mechanism", "make_challenge"]

_HEX_DIGITS = frozenset(b"0123456789abcdefABCDEF")


def make_challenge(hostname: str, urandom: Callable[[int], bytes], clock: Callable[[], float]) -> bytes:
    """``<RANDOM.UNIXTIME@HOST>`` (RFC 2195 §2, msg-id form of RFC 822).

    RANDOM is 64 random bits in decimal (S-507), so a challenge never
    repeats and a captured response is useless later.
    """
    random_part = int.from_bytes(urandom(CRAM_CHALLENGE_RANDOM_OCTETS), "big")
    return f"<{random_part}.{int(clock())}@{hostname}>".encode("utf-8", "replace")


class CramMD5Mechanism:
    """One CRAM-MD5 exchange: a challenge, then ``username SP 32HEXDIG``."""

    __slots__ = ("_challenge", "_clock", "_hostname", "_phase", "_urandom")

    name = "CRAM-MD5"

    def __init__(
        self,
        hostname: str,
        *,
        urandom: Callable[[int], bytes],
        clock: Callable[[], float],
    ) -> None:
        self._hostname = hostname
        self._urandom = urandom
        self._clock = clock
        self._phase = "new"  # new -> waiting -> done
        self._challenge = b""

    def start(self, initial: bytes | None) -> Step:
        if self._phase != "new":
            return self._finish(Failure("exchange already started"))
        if initial is not None:
            # S-501, RFC 4954 §4: the server must speak first.
            return self._finish(Failure("initial response not allowed", initial_response_refused=True))
        self._challenge = make_challenge(self._hostname, self._urandom, self._clock)
        self._phase = "waiting"
        return Challenge(self._challenge)

    def step(self, response: bytes) -> Step:
        if self._phase != "waiting":
            return self._finish(Failure("no response expected"))
        # S-507: split at the LAST space, so the digest is always the tail;
        # a name containing a space then fails the S-509 name check.
        name_raw, space, digest_raw = response.rpartition(b" ")
        if not space:
            return self._finish(Failure("CRAM-MD5 response without a space"))
        if len(digest_raw) != CRAM_DIGEST_HEX_DIGITS or not all(octet in _HEX_DIGITS for octet in digest_raw):
            return self._finish(Failure("CRAM-MD5 digest is not 32 hex digits"))
        username, why = decode_name(name_raw)
        if username is None:
            return self._finish(Failure(why or "invalid user name"))
        return self._finish(
            Credentials(
                mechanism="CRAM-MD5",
                username=username,
                challenge=self._challenge,
                digest=digest_raw.decode("ascii").lower(),
            )
        )

    def _finish(self, result: Step) -> Step:
        self._phase = "done"
        return result
