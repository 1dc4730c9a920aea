"""The SASL mechanisms as sans-IO objects: decoded bytes in, steps out (SPEC.md §5)."""

from __future__ import annotations

import re

import pytest

import sasl
from sasl import MECHANISMS, Challenge, Credentials, Failure, new_mechanism


def mech(name: str, **kwargs: object) -> sasl.Mechanism:
    made = new_mechanism(name, hostname="mx.example.org", **kwargs)  # type: ignore[arg-type]
    assert made is not None
    return made


def fixed_random(n: int) -> bytes:
    return bytes(range(1, n + 1))


# --- registry -----------------------------------------------------------------


def test_mechanisms_are_advertised_in_order():  # S-202, S-514
    assert MECHANISMS == ("PLAIN", "LOGIN", "CRAM-MD5", "SCRAM-SHA-256")


def test_scram_needs_its_lookups_else_none():  # S-514: the shell decides whether SCRAM is offered
    assert new_mechanism("SCRAM-SHA-256", hostname="h") is None
    fake = sasl.fake_credential(b"k" * 32, "x", 4096)
    assert new_mechanism("SCRAM-SHA-256", hostname="h", scram_lookup=lambda name: None) is None
    assert new_mechanism("SCRAM-SHA-256", hostname="h", scram_fake=lambda name: fake) is None
    for name in ("SCRAM-SHA-256", "scram-sha-256"):
        made = new_mechanism(name, hostname="h", scram_lookup=lambda n: None, scram_fake=lambda n: fake)
        assert isinstance(made, sasl.ScramMechanism) and made.name == "SCRAM-SHA-256"
    assert new_mechanism("SCRAM-SHA-256-PLUS", hostname="h", scram_lookup=lambda n: None,
                         scram_fake=lambda n: fake) is None  # fmt: skip


@pytest.mark.parametrize("name", ["plain", "Plain", "PLAIN", "login", "cram-md5", "CRAM-md5"])
def test_mechanism_names_are_case_insensitive(name):  # S-103
    made = new_mechanism(name, hostname="h")
    assert made is not None and made.name == name.upper()


@pytest.mark.parametrize("name", ["", "DIGEST-MD5", "XOAUTH2", "PLAIN ", "ＰＬＡＩＮ", "pla\u0131n"])
def test_unknown_mechanism_is_none(name):  # S-501: 504 5.5.4 is the caller's reply
    assert new_mechanism(name, hostname="h") is None


def test_each_call_gives_a_fresh_exchange():
    first, second = mech("PLAIN"), mech("PLAIN")
    assert first is not second
    assert isinstance(first.start(b"\0a\0b"), Credentials)
    assert isinstance(second.start(b"\0a\0b"), Credentials)


# --- PLAIN (RFC 4616) -----------------------------------------------------------


def test_plain_initial_response():  # S-505
    step = mech("PLAIN").start(b"\0alice\0s3cret")
    assert step == Credentials(mechanism="PLAIN", username="alice", password=b"s3cret")


def test_plain_without_initial_response_gets_empty_challenge():  # S-505
    plain = mech("PLAIN")
    assert plain.start(None) == Challenge(b"")
    step = plain.step(b"\0alice\0s3cret")
    assert isinstance(step, Credentials) and step.password == b"s3cret"


def test_plain_empty_initial_response_is_a_failure():  # S-502: "=" is empty
    assert isinstance(mech("PLAIN").start(b""), Failure)


def test_plain_keeps_case_and_utf8_of_the_name():  # S-509: folding is verify's job
    step = mech("PLAIN").start("\0Jürgen\0pässword".encode())
    assert isinstance(step, Credentials)
    assert step.username == "Jürgen" and step.password == "pässword".encode()


@pytest.mark.parametrize("authzid", [b"alice", b"ALICE", b"Alice"])
def test_plain_authzid_equal_to_authcid_is_accepted(authzid):  # S-505
    assert isinstance(mech("PLAIN").start(authzid + b"\0alice\0pw"), Credentials)


def test_plain_authzid_of_another_user_fails():  # S-505, S-503
    step = mech("PLAIN").start(b"bob\0alice\0pw")
    assert isinstance(step, Failure)
    assert "authorization" in step.reason


@pytest.mark.parametrize(
    "message",
    [
        b"alice\0pw",  # one NUL
        b"\0alice\0pw\0",  # three NULs
        b"\0\0pw",  # empty authcid
        b"\0alice\0",  # empty password
        b"\0" + b"a" * 256 + b"\0pw",  # authcid over 255 octets
        b"\0alice\0" + b"p" * 256,  # password over 255 octets
        b"\0al\xffice\0pw",  # authcid not UTF-8
        b"\0alice\0p\xc3",  # password not UTF-8
        b"\xff\0alice\0pw",  # authzid not UTF-8
        b"a" * 256 + b"\0alice\0pw",  # authzid over 255 octets
        b"\0al ice\0pw",  # space in the name, S-509
        b"\0al:ice\0pw",  # colon
        b"\0al\x01ice\0pw",  # control
        b"\0alice\x7f\0pw",  # DEL is a control
        b"\0al\xc2\x85ice\0pw",  # U+0085 NEL, a C1 control
        "\0al\u2028ice\0pw".encode(),  # line separator counts as a space
    ],
)
def test_plain_malformed_messages_fail(message):  # S-505, S-509
    step = mech("PLAIN").start(message)
    assert isinstance(step, Failure)
    assert not step.initial_response_refused


def test_plain_limits_are_inclusive():  # S-505: each ≤ 255 octets
    step = mech("PLAIN").start(b"\0" + b"a" * 255 + b"\0" + b"p" * 255)
    assert isinstance(step, Credentials)


def test_plain_failure_reason_never_holds_the_secret():  # S-903
    step = mech("PLAIN").start(b"bob\0alice\0hunter2")
    assert isinstance(step, Failure) and "hunter2" not in step.reason


def test_plain_credentials_repr_hides_password():  # S-903
    step = mech("PLAIN").start(b"\0alice\0hunter2")
    assert "hunter2" not in repr(step)


def test_plain_step_after_completion_fails():
    plain = mech("PLAIN")
    plain.start(b"\0alice\0pw")
    assert isinstance(plain.step(b"\0alice\0pw"), Failure)
    assert isinstance(plain.start(None), Failure)


def test_plain_step_after_failure_fails():
    plain = mech("PLAIN")
    plain.start(None)
    assert isinstance(plain.step(b"junk"), Failure)
    assert isinstance(plain.step(b"\0alice\0pw"), Failure)


def test_plain_step_before_start_fails():
    assert isinstance(mech("PLAIN").step(b"\0alice\0pw"), Failure)


# --- LOGIN (draft-murchison-sasl-login) -------------------------------------------


def test_login_two_challenges():  # S-506
    login = mech("LOGIN")
    assert login.start(None) == Challenge(b"Username:")
    assert login.step(b"alice") == Challenge(b"Password:")
    step = login.step(b"s3cret")
    assert step == Credentials(mechanism="LOGIN", username="alice", password=b"s3cret")


def test_login_initial_response_is_the_user_name():  # S-506
    login = mech("LOGIN")
    assert login.start(b"Alice") == Challenge(b"Password:")
    step = login.step(b"pw")
    assert isinstance(step, Credentials) and step.username == "Alice"


def test_login_empty_initial_response_fails():  # S-502 "=", S-509 empty name
    assert isinstance(mech("LOGIN").start(b""), Failure)


@pytest.mark.parametrize("name", [b"", b"a b", b"a:b", b"a\0b", b"a\r\nb", b"\xff", b"x" * 256])
def test_login_bad_user_name_fails_at_once(name):  # S-509
    login = mech("LOGIN")
    login.start(None)
    assert isinstance(login.step(name), Failure)
    assert isinstance(login.step(b"pw"), Failure)  # and the exchange is over


@pytest.mark.parametrize("password", [b"", b"p" * 256, b"\xc3"])
def test_login_bad_password_fails(password):  # S-505 bounds apply to LOGIN too
    login = mech("LOGIN")
    login.start(b"alice")
    assert isinstance(login.step(password), Failure)


def test_login_password_may_hold_any_utf8():  # S-509: octets as sent
    login = mech("LOGIN")
    login.start(b"alice")
    step = login.step("p a:s\0s ü".encode())
    assert isinstance(step, Credentials) and step.password == "p a:s\0s ü".encode()


def test_login_step_after_completion_fails():
    login = mech("LOGIN")
    login.start(b"alice")
    login.step(b"pw")
    assert isinstance(login.step(b"pw"), Failure)


def test_login_credentials_repr_hides_password():  # S-903
    login = mech("LOGIN")
    login.start(b"alice")
    assert "hunter2" not in repr(login.step(b"hunter2"))


# --- CRAM-MD5 (RFC 2195) ----------------------------------------------------------


def test_cram_challenge_format():  # S-507
    cram = mech("CRAM-MD5", urandom=fixed_random, clock=lambda: 1700000000.75)
    step = cram.start(None)
    assert isinstance(step, Challenge)
    expected_random = int.from_bytes(fixed_random(8), "big")
    assert step.data == f"<{expected_random}.1700000000@mx.example.org>".encode()


def test_cram_challenge_has_64_random_bits():  # S-507
    asked: list[int] = []

    def urandom(n: int) -> bytes:
        asked.append(n)
        return b"\xff" * n

    step = mech("CRAM-MD5", urandom=urandom, clock=lambda: 0).start(None)
    assert sum(asked) * 8 >= 64
    assert isinstance(step, Challenge)
    assert step.data.startswith(f"<{2**64 - 1}.0@".encode())


def test_cram_challenges_differ_between_exchanges():  # S-507
    challenges = set()
    for _ in range(50):
        step = mech("CRAM-MD5").start(None)
        assert isinstance(step, Challenge)
        assert re.fullmatch(rb"<\d+\.\d+@mx\.example\.org>", step.data)
        challenges.add(step.data)
    assert len(challenges) == 50


def test_cram_initial_response_is_refused_distinctly():  # S-501: 501 5.7.0
    for initial in (b"", b"tim b913a602c7eda7a495b4e6e7334d3890"):
        step = mech("CRAM-MD5").start(initial)
        assert isinstance(step, Failure)
        assert step.initial_response_refused
        assert step.reason == "initial response not allowed"


def test_cram_response_gives_credentials_with_the_challenge():  # S-507
    cram = mech("CRAM-MD5")
    challenge = cram.start(None)
    assert isinstance(challenge, Challenge)
    step = cram.step(b"Tim B913A602C7EDA7A495B4E6E7334D3890")
    assert step == Credentials(
        mechanism="CRAM-MD5",
        username="Tim",
        challenge=challenge.data,
        digest="b913a602c7eda7a495b4e6e7334d3890",
    )


def test_cram_splits_at_the_last_space():  # S-507
    cram = mech("CRAM-MD5")
    cram.start(None)
    # The name part then holds a space, which S-509 refuses.
    assert isinstance(cram.step(b"tim smith " + b"0" * 32), Failure)


@pytest.mark.parametrize(
    "response",
    [
        b"",
        b"tim",
        b"tim" + b"0" * 32,  # no space
        b" " + b"0" * 32,  # empty name
        b"tim " + b"0" * 31,  # short digest
        b"tim " + b"0" * 33,  # long digest
        b"tim " + b"g" * 32,  # not hex
        b"tim " + b"0" * 31 + b" ",  # trailing space
        b"t\x00m " + b"0" * 32,  # control in the name
        b"t:m " + b"0" * 32,
        b"\xff " + b"0" * 32,
        b"x" * 256 + b" " + b"0" * 32,
    ],
)
def test_cram_malformed_responses_fail(response):  # S-507, S-509, S-503
    cram = mech("CRAM-MD5")
    cram.start(None)
    step = cram.step(response)
    assert isinstance(step, Failure) and not step.initial_response_refused


def test_cram_step_after_completion_fails():
    cram = mech("CRAM-MD5")
    cram.start(None)
    cram.step(b"tim " + b"a" * 32)
    assert isinstance(cram.step(b"tim " + b"a" * 32), Failure)
    assert isinstance(cram.start(None), Failure)


def test_cram_step_before_start_fails():
    assert isinstance(mech("CRAM-MD5").step(b"tim " + b"a" * 32), Failure)


def test_cram_credentials_repr_hides_digest():  # S-903
    cram = mech("CRAM-MD5")
    cram.start(None)
    assert "b913a602" not in repr(cram.step(b"tim b913a602c7eda7a495b4e6e7334d3890"))


def test_step_results_are_frozen():
    step = Failure("x")
    with pytest.raises(AttributeError):
        step.reason = "y"  # type: ignore[misc]
