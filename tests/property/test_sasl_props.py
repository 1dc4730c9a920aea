"""Properties of sasl/: any client bytes give a result, never an exception, and
Credentials verify only with the right secret (SPEC.md §5, STYLE.md 4).

Profiles ("ci", "fuzz") come from tests/conftest.py.
"""

from __future__ import annotations

import hmac
import importlib

import pytest
from argon2 import PasswordHasher
from hypothesis import given
from hypothesis import strategies as st

from sasl import (
    MECHANISMS,
    Challenge,
    Credentials,
    Failure,
    UserDBError,
    name_problem,
    new_mechanism,
    parse,
    verify,
)
from sasl.md5state import cram_md5_credential
from sasl.scram import fake_credential

FAST = PasswordHasher(time_cost=1, memory_cost=8, parallelism=1)
SECRETS = {"alice": b"right", "bob": "pässwörd".encode()}
USERS = parse(
    f"alice:{FAST.hash(SECRETS['alice'])}:{cram_md5_credential(SECRETS['alice'])}:alice@example.com\n"
    f"bob:{FAST.hash(SECRETS['bob'])}::@example.org\n",
    "users.db",
)
CHALLENGE_RANDOM = b"\x07" * 8
CLOCK = 1_000_000_000.0
CHALLENGE = f"<{int.from_bytes(CHALLENGE_RANDOM, 'big')}.{int(CLOCK)}@mx.example>".encode()
RIGHT_DIGEST = hmac.new(SECRETS["alice"], CHALLENGE, "md5").hexdigest().encode()
SCRAM_FAKE = lambda name: fake_credential(b"k" * 32, name, 4096)  # noqa: E731  (no user has SCRAM here)


@pytest.fixture(autouse=True, scope="module")
def cheap_dummy_hash():
    """The S-510 dummy uses default parameters (tested in the unit tests);
    here a cheap one keeps thousands of examples fast."""
    module = importlib.import_module("sasl.verify")
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(module, "_dummy_hash", lambda: FAST.hash(b"dummy-never-matches"))
        yield


PIECES = st.one_of(
    st.binary(max_size=24),
    st.sampled_from(
        [b"alice", b"ALICE", b"Alice", b"bob", b"BoB", b"mallory", b"\0", b" ", b"right", b"wrong",
         SECRETS["bob"], RIGHT_DIGEST, RIGHT_DIGEST.upper(), b"\xff", b":", b"\r\n"]
    ),
)  # fmt: skip
MESSAGES = st.lists(PIECES, max_size=6).map(b"".join)


def expected_ok(creds: Credentials) -> bool:
    name = creds.username.lower()
    if creds.mechanism == "CRAM-MD5":
        return name == "alice" and creds.digest == RIGHT_DIGEST.decode()
    if creds.mechanism == "SCRAM-SHA-256":
        return False  # tests/property/test_scram_props.py covers SCRAM with credentials
    return name in SECRETS and creds.password == SECRETS[name]


@given(
    name=st.sampled_from(MECHANISMS),
    initial=st.none() | MESSAGES,
    responses=st.lists(MESSAGES, max_size=4),
)
def test_any_exchange_gives_results_and_verifies_only_the_right_secret(
    name, initial, responses
):  # S-503..S-510
    mechanism = new_mechanism(
        name, hostname="mx.example", urandom=lambda n: CHALLENGE_RANDOM, clock=lambda: CLOCK,
        scram_lookup=lambda name: None, scram_fake=SCRAM_FAKE,
    )  # fmt: skip
    assert mechanism is not None
    step = mechanism.start(initial)
    for response in responses:
        if isinstance(step, Challenge):
            step = mechanism.step(response)
        else:
            assert isinstance(mechanism.step(response), Failure)  # after a final result
    assert isinstance(step, (Challenge, Credentials, Failure))
    if isinstance(step, Failure):
        assert step.initial_response_refused == (name == "CRAM-MD5" and initial is not None)
    if isinstance(step, Credentials):
        assert name_problem(step.username) is None  # S-509
        result = verify(USERS, step)
        assert result.ok == expected_ok(step)
        assert not result.temporary
        lowered = step.username.lower()
        assert result.username == (lowered if lowered in SECRETS else None)


@given(
    authzid=st.sampled_from(["", "same"]),
    authcid=st.text(min_size=1, max_size=40).filter(lambda s: name_problem(s) is None),
    password=st.text(min_size=1, max_size=60).filter(lambda s: "\0" not in s),
)
def test_plain_round_trip(authzid, authcid, password):  # S-505
    message = (
        (authcid.upper() if authzid else "").encode() + b"\0" + authcid.encode() + b"\0" + password.encode()
    )
    mechanism = new_mechanism("PLAIN", hostname="h")
    assert mechanism is not None
    step = mechanism.start(message)
    upper = authcid.upper()
    if len(password.encode()) > 255 or (
        authzid and (upper.lower() != authcid.lower() or len(upper.encode()) > 255)
    ):
        assert isinstance(step, Failure)
    else:
        assert step == Credentials(mechanism="PLAIN", username=authcid, password=password.encode())


@given(text=st.text(max_size=400))
def test_users_db_parse_only_raises_userdb_error(text):  # CONTRACT.md: PATH:LINE problems
    try:
        db = parse(text, "users.db")
    except UserDBError as error:
        assert error.problems and all(p.startswith("users.db:") for p in error.problems)
    else:
        assert all(name_problem(user.name) is None for user in db)


ADDRESS_PIECES = st.one_of(
    st.text(max_size=12),
    st.sampled_from(["alice", "+", "@", ".", '"', "\\", "example.com", "straße.de", "xn--", "[", "]", "IPv6:", "::1",
                     "\u200d", "\u0000", "ß", "-"]),
)  # fmt: skip


@given(address=st.lists(ADDRESS_PIECES, max_size=6).map("".join))
def test_may_send_as_never_raises(address):  # S-603: a client's address is only ever a yes or no
    allowed = USERS.may_send_as("alice", address)
    assert isinstance(allowed, bool)
    if allowed:
        assert "@" in address
    assert USERS.may_send_as("nobody", address) is False
