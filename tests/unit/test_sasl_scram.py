"""SCRAM-SHA-256 (RFC 5802, RFC 7677; SPEC.md S-514): the stored credential,
the sans-IO exchange, the proof check, against RFC 7677's example and
credentials made by Dovecot's ``doveadm pw``."""

from __future__ import annotations

import base64
import os
import shutil
import subprocess

import pytest
import scramtest

import sasl
from sasl import Challenge, Credentials, Failure
from sasl.scram import (
    ScramCredential,
    ScramMechanism,
    fake_credential,
    format_credential,
    make_credential,
    parse_credential,
    password_matches,
    verify_proof,
)

# RFC 7677 §3.
RFC_SALT = base64.b64decode("W22ZaJ0SNY7soEsUEjb6gQ==")
RFC_CLIENT_FIRST = b"n,,n=user,r=rOprNGfwEbeRWgbNEkqO"
RFC_SERVER_NONCE = b"%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0"
RFC_SERVER_FIRST = b"r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096"
RFC_CLIENT_FINAL = (
    b"c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,"
    b"p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ="
)
RFC_SERVER_FINAL = b"v=6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4="
RFC_CRED = make_credential(b"pencil", 4096, salt=RFC_SALT)

# Made by `doveadm pw -s SCRAM-SHA-256 -p pencil` (Dovecot 2.3).
DOVECOT_LINE = (
    "{SCRAM-SHA-256}4096,EvHUV4Gh2nPS3ja+MnLCRw==,N++2o919MIYx5CCJFzWH/mKnnTKBK0rItPWpQWxY4zY=,"
    "u9sQSDMHPUjHuo2hExrGGGwBceDREsgwcUGTBdREnl8="
)
DOVECOT_TEXT = DOVECOT_LINE.removeprefix("{SCRAM-SHA-256}")
SECRET = b"state-store secret for the tests!"


def fake(name: str) -> ScramCredential:
    return fake_credential(SECRET, name, 4096)


def mechanism(creds: dict[str, ScramCredential] | None = None, **kwargs) -> ScramMechanism:
    known = {"user": RFC_CRED} if creds is None else creds
    return ScramMechanism(lambda name: known.get(name.lower()), fake, **kwargs)


def rfc_mechanism() -> ScramMechanism:
    return mechanism(nonce=RFC_SERVER_NONCE)


def exchange(password: bytes, cred: ScramCredential, name: str = "alice") -> tuple[Credentials, bytes]:
    """A full exchange with the test client; the Credentials and the
    server-final message the client expects."""
    mech = mechanism({name.lower(): cred})
    first, bare = scramtest.client_first(name, b"clientnonce0123456789")
    server_first = mech.start(first)
    assert isinstance(server_first, Challenge)
    final, expected = scramtest.client_final(password, bare, server_first.data)
    creds = mech.step(final)
    assert isinstance(creds, Credentials)
    return creds, expected


def at_final(client_first: bytes = RFC_CLIENT_FIRST) -> ScramMechanism:
    """A mechanism that has sent RFC 7677's server-first."""
    mech = rfc_mechanism()
    assert isinstance(mech.start(client_first), Challenge)
    return mech


# --- RFC 7677 §3 ------------------------------------------------------------------


def test_rfc7677_example_exchange():  # S-514
    mech = rfc_mechanism()
    assert mech.name == "SCRAM-SHA-256"
    assert mech.start(RFC_CLIENT_FIRST) == Challenge(RFC_SERVER_FIRST)
    creds = mech.step(RFC_CLIENT_FINAL)
    assert isinstance(creds, Credentials)
    assert creds.mechanism == "SCRAM-SHA-256" and creds.username == "user"
    assert creds.auth_message == b"n=user,r=rOprNGfwEbeRWgbNEkqO," + RFC_SERVER_FIRST + b"," + (
        b"c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0"
    )
    assert creds.proof == base64.b64decode("dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ=")
    assert verify_proof(RFC_CRED, creds.auth_message, creds.proof) == RFC_SERVER_FINAL


def test_rfc7677_example_without_initial_response():  # S-514, RFC 4954 §4: "334 " first
    mech = rfc_mechanism()
    assert mech.start(None) == Challenge(b"")
    assert mech.step(RFC_CLIENT_FIRST) == Challenge(RFC_SERVER_FIRST)
    creds = mech.step(RFC_CLIENT_FINAL)
    assert isinstance(creds, Credentials)
    assert verify_proof(RFC_CRED, creds.auth_message or b"", creds.proof or b"") == RFC_SERVER_FINAL


def test_rfc7677_example_through_verify():  # S-514: server_final only on success
    db = sasl.parse("user::::" + format_credential(RFC_CRED), "users.db")
    mech = rfc_mechanism()
    mech.start(RFC_CLIENT_FIRST)
    creds = mech.step(RFC_CLIENT_FINAL)
    assert isinstance(creds, Credentials)
    result = sasl.verify(db, creds, scram_fake=fake)
    assert result == sasl.AuthResult(ok=True, username="user", server_final=RFC_SERVER_FINAL)


def test_rfc7677_proof_fails_for_another_password():  # S-503
    wrong = make_credential(b"pencil2", 4096, salt=RFC_SALT)
    mech = at_final()
    creds = mech.step(RFC_CLIENT_FINAL)
    assert isinstance(creds, Credentials)
    assert verify_proof(wrong, creds.auth_message or b"", creds.proof or b"") is None


# --- Dovecot's credentials --------------------------------------------------------


def test_dovecot_credential_parses_and_round_trips():  # S-514, CONTRACT.md users database
    cred = parse_credential(DOVECOT_TEXT)
    assert isinstance(cred, ScramCredential)
    assert cred.iterations == 4096 and len(cred.salt) == 16
    assert format_credential(cred) == DOVECOT_TEXT
    assert make_credential(b"pencil", 4096, salt=cred.salt) == cred  # same derivation as Dovecot


def test_dovecot_credential_password_matches():  # S-514: PLAIN/LOGIN against SCRAM-only
    cred = parse_credential(DOVECOT_TEXT)
    assert isinstance(cred, ScramCredential)
    assert password_matches(cred, b"pencil")
    assert not password_matches(cred, b"Pencil")
    assert not password_matches(cred, b"pencil ")
    assert not password_matches(cred, b"")


def test_dovecot_credential_full_exchange():  # S-514
    cred = parse_credential(DOVECOT_TEXT)
    assert isinstance(cred, ScramCredential)
    creds, expected = exchange(b"pencil", cred)
    assert verify_proof(cred, creds.auth_message or b"", creds.proof or b"") == expected
    creds, _ = exchange(b"pencils", cred)
    assert verify_proof(cred, creds.auth_message or b"", creds.proof or b"") is None


@pytest.mark.skipif(shutil.which("doveadm") is None, reason="doveadm is not installed (Debian dovecot-core)")
def test_live_doveadm_credential_works():  # S-514: interoperates with what Dovecot makes
    password = base64.b64encode(os.urandom(12)).decode()
    out = subprocess.run(
        ["doveadm", "pw", "-s", "SCRAM-SHA-256", "-p", password],
        capture_output=True, text=True, timeout=60, check=True,
    )  # fmt: skip
    line = out.stdout.strip()
    assert line.startswith("{SCRAM-SHA-256}")
    cred = parse_credential(line.removeprefix("{SCRAM-SHA-256}"))
    assert isinstance(cred, ScramCredential)
    assert password_matches(cred, password.encode())
    assert not password_matches(cred, password.encode() + b"x")
    creds, expected = exchange(password.encode(), cred)
    assert verify_proof(cred, creds.auth_message or b"", creds.proof or b"") == expected


# --- the stored credential ---------------------------------------------------------

KEY = base64.b64encode(b"k" * 32).decode()
SALT = base64.b64encode(b"s" * 16).decode()


@pytest.mark.parametrize(
    ("text", "why"),
    [
        (DOVECOT_LINE, "remove the Dovecot scheme prefix"),
        ("", "expected ITERATIONS,SALT,STOREDKEY,SERVERKEY"),
        (f"4096,{SALT},{KEY}", "expected ITERATIONS,SALT,STOREDKEY,SERVERKEY"),
        (f"4096,{SALT},{KEY},{KEY},", "expected ITERATIONS,SALT,STOREDKEY,SERVERKEY"),
        (f"0,{SALT},{KEY},{KEY}", "iteration count is not a positive decimal number"),
        (f"04096,{SALT},{KEY},{KEY}", "iteration count is not a positive decimal number"),
        (f"-1,{SALT},{KEY},{KEY}", "iteration count is not a positive decimal number"),
        (f"+4096,{SALT},{KEY},{KEY}", "iteration count is not a positive decimal number"),
        (f" 4096,{SALT},{KEY},{KEY}", "iteration count is not a positive decimal number"),
        (f"４０９６,{SALT},{KEY},{KEY}", "iteration count is not a positive decimal number"),
        (f"1234567,{SALT},{KEY},{KEY}", "iteration count is not a positive decimal number"),
        (f"65537,{SALT},{KEY},{KEY}", "iteration count 65537 exceeds 65536"),
        (f"4096,{base64.b64encode(b's' * 7).decode()},{KEY},{KEY}", "salt is not base64 of 8 to 64 octets"),
        (f"4096,{base64.b64encode(b's' * 65).decode()},{KEY},{KEY}", "salt is not base64 of 8 to 64"),
        (f"4096,{SALT.rstrip('=')},{KEY},{KEY}", "salt is not base64"),  # padding required
        (f"4096,c2FsdHNhbHRzYWx0c2FsdB==,{KEY},{KEY}", "salt is not base64"),  # non-zero pad bits
        (f"4096,{SALT},{KEY[:-4]},{KEY}", "stored key is not base64 of 32 octets"),
        (f"4096,{SALT},{KEY}AAAA,{KEY}", "stored key is not base64 of 32 octets"),
        (f"4096,{SALT},{KEY},{KEY[:-1]}!", "server key is not base64 of 32 octets"),
        (f"4096,{SALT},{KEY},{KEY[:10]}\n{KEY[10:]}", "server key is not base64"),
        (f"4096,{SALT},{KEY},é{KEY}", "server key is not base64"),
    ],
)
def test_bad_credentials_are_refused_without_echo(text, why):  # S-514, S-903
    result = parse_credential(text)
    assert isinstance(result, str)
    assert why in result
    assert KEY not in result and SALT not in result


def test_credential_bounds_are_inclusive():  # S-514: 1..65536 iterations; salt 8..64 octets
    for iterations, salt in ((1, b"s" * 8), (65536, b"s" * 64)):
        text = f"{iterations},{base64.b64encode(salt).decode()},{KEY},{KEY}"
        cred = parse_credential(text)
        assert isinstance(cred, ScramCredential) and format_credential(cred) == text


def test_credential_repr_hides_the_keys():  # S-903
    text = repr(RFC_CRED)
    assert "4096" in text
    for key in (RFC_CRED.stored_key, RFC_CRED.server_key):
        assert repr(key) not in text and base64.b64encode(key).decode() not in text


def test_make_credential_defaults():  # CONTRACT.md: 4096 iterations; 16 random octets of salt
    asked: list[int] = []
    cred = make_credential(b"pw", urandom=lambda n: asked.append(n) or b"\x01" * n)
    assert asked == [16] and cred.salt == b"\x01" * 16 and cred.iterations == 4096
    assert password_matches(cred, b"pw")
    assert make_credential(b"pw").salt != make_credential(b"pw").salt


@pytest.mark.parametrize(
    ("iterations", "salt"), [(0, None), (65537, None), (4096, b"short"), (4096, b"x" * 65)]
)
def test_make_credential_refuses_values_outside_the_limits(iterations, salt):  # S-514
    with pytest.raises(ValueError):
        make_credential(b"pw", iterations, salt=salt)


# --- unknown users (S-510, S-514) -----------------------------------------------------


def server_first_of(mech: ScramMechanism, name: str) -> dict[bytes, bytes]:
    step = mech.start(scramtest.client_first(name, b"abc")[0])
    assert isinstance(step, Challenge)
    return dict(part.split(b"=", 1) for part in step.data.split(b","))


def test_unknown_user_gets_a_stable_fake_salt():  # S-514
    first = server_first_of(mechanism(), "mallory")
    again = server_first_of(mechanism(), "Mallory")  # names fold as in users.db (S-509)
    other = server_first_of(mechanism(), "trudy")
    assert first[b"s"] == again[b"s"] != other[b"s"]
    assert len(base64.b64decode(first[b"s"])) == 16
    assert first[b"i"] == b"4096"
    assert fake_credential(SECRET, "mallory", 4096) == fake_credential(SECRET, "MALLORY", 4096)
    assert (
        fake_credential(SECRET, "mallory", 4096).salt != fake_credential(b"other" * 7, "mallory", 4096).salt
    )
    assert fake_credential(SECRET, "mallory", 10000).iterations == 10000
    with pytest.raises(ValueError):
        fake_credential(SECRET, "mallory", 65537)


def test_unknown_user_server_first_has_the_shape_of_a_real_one():  # S-510
    real = server_first_of(mechanism({"alice": make_credential(b"pw")}), "alice")
    unknown = server_first_of(mechanism({"alice": make_credential(b"pw")}), "bob")
    assert list(real) == list(unknown) == [b"r", b"s", b"i"]
    assert len(real[b"s"]) == len(unknown[b"s"]) and len(real[b"r"]) == len(unknown[b"r"])


def test_unknown_user_fails():  # S-510, S-514
    db = sasl.parse("alice::::" + format_credential(make_credential(b"pw", 4096)), "users.db")
    mech = mechanism({})
    first, bare = scramtest.client_first("mallory", b"nonce")
    server_first = mech.start(first)
    assert isinstance(server_first, Challenge)
    final, _ = scramtest.client_final(b"pw", bare, server_first.data)
    creds = mech.step(final)
    assert isinstance(creds, Credentials)
    assert sasl.verify(db, creds, scram_fake=fake) == sasl.AuthResult(ok=False, username=None)


# --- the server's nonce -------------------------------------------------------------


def test_server_nonce_is_base64_of_18_random_octets():  # S-514
    asked: list[int] = []
    mech = mechanism(urandom=lambda n: asked.append(n) or b"\xfb" * n)
    fields = server_first_of(mech, "user")
    assert asked == [18]
    assert fields[b"r"] == b"abc" + base64.b64encode(b"\xfb" * 18)
    assert len(fields[b"r"]) - 3 == 24
    assert server_first_of(mechanism(), "user")[b"r"] != server_first_of(mechanism(), "user")[b"r"]


# --- client-first ---------------------------------------------------------------------


def names_seen(message: bytes) -> tuple[object, list[str]]:
    seen: list[str] = []
    mech = ScramMechanism(lambda name: seen.append(name) or None, fake)
    return mech.start(message), seen


def test_y_flag_is_accepted_and_must_be_repeated():  # S-514, RFC 5802 §6
    mech = mechanism(nonce=RFC_SERVER_NONCE)
    assert isinstance(mech.start(b"y" + RFC_CLIENT_FIRST[1:]), Challenge)
    final = RFC_CLIENT_FINAL.replace(b"c=biws", b"c=" + base64.b64encode(b"y,,"))
    assert isinstance(mech.step(final), Credentials)
    mech = mechanism(nonce=RFC_SERVER_NONCE)
    mech.start(b"y" + RFC_CLIENT_FIRST[1:])
    assert isinstance(mech.step(RFC_CLIENT_FINAL), Failure)  # c=biws is "n,,"


@pytest.mark.parametrize(
    "header", [b"p=tls-unique,,", b"p=tls-exporter,,", b"p=tls-server-end-point,a=user,"]
)
def test_channel_binding_is_refused(header):  # S-514: never -PLUS, 535
    step = rfc_mechanism().start(header + b"n=user,r=abc")
    assert isinstance(step, Failure) and "channel binding" in step.reason
    assert not step.initial_response_refused


@pytest.mark.parametrize("authzid", [b"user", b"USER", b"User"])
def test_authzid_equal_to_the_user_is_accepted(authzid):  # S-514
    mech = rfc_mechanism()
    gs2 = b"n,a=" + authzid + b","
    assert isinstance(mech.start(gs2 + b"n=user,r=rOprNGfwEbeRWgbNEkqO"), Challenge)
    final = RFC_CLIENT_FINAL.replace(b"c=biws", b"c=" + base64.b64encode(gs2))
    assert isinstance(mech.step(final), Credentials)


@pytest.mark.parametrize(
    "message",
    [
        b"n,a=bob,n=user,r=abc",  # another user (S-514, S-503)
        b"n,a=,n=user,r=abc",  # empty saslname
        b"n,a=us=2Cer,n=user,r=abc",  # decodes to "us,er"
        b"n,x=user,n=user,r=abc",  # not a=
        b"n,a=u=41ser,n=user,r=abc",  # bad escape in the authzid
    ],
)
def test_bad_authzid_is_refused(message):  # S-514
    assert isinstance(rfc_mechanism().start(message), Failure)


def test_saslname_escapes_are_decoded():  # S-514, RFC 5802 §5.1
    step, seen = names_seen(b"n,,n=a=2Cb=3Dc=3D2C,r=abc")
    assert isinstance(step, Challenge)
    assert seen == ["a,b=c=2C"]
    step, seen = names_seen(b"n,a=A=2CB=3Dc=3D2C,n=a=2Cb=3Dc=3D2C,r=abc")
    assert isinstance(step, Challenge) and seen == ["a,b=c=2C"]


def test_escaped_name_reaches_credentials_decoded():  # S-514
    cred = make_credential(b"pw", 16)
    creds, expected = exchange(b"pw", cred, name="we,ird=name")
    assert creds.username == "we,ird=name"
    assert verify_proof(cred, creds.auth_message or b"", creds.proof or b"") == expected


@pytest.mark.parametrize(
    "name", [b"a=2cb", b"a=3db", b"a=41b", b"a=b", b"ab=", b"ab=2", b"=", b"=3", b"a==2Cb", b""]
)
def test_bad_escapes_and_empty_names_are_refused(name):  # S-514, RFC 5802 §5.1
    step, seen = names_seen(b"n,,n=" + name + b",r=abc")
    assert isinstance(step, Failure) and seen == []


@pytest.mark.parametrize(
    "name", [b"al ice", b"al:ice", b"al\x01ice", b"a" * 256, b"al\xffice", "jose\u0301".encode(), b"#x"]
)
def test_names_follow_s509(name):  # S-509
    step, seen = names_seen(b"n,,n=" + name + b",r=abc")
    assert isinstance(step, Failure) and seen == []


def test_name_of_255_octets_is_accepted():  # S-509: inclusive
    step, seen = names_seen(b"n,,n=" + b"a" * 255 + b",r=abc")
    assert isinstance(step, Challenge) and seen == ["a" * 255]


@pytest.mark.parametrize(
    "message",
    [
        b"",  # "=" as initial response
        b"n,,",
        b"n,,n=user",
        b"n,,n=user,",
        b"n,,n=user,r=",  # empty nonce
        b"n,,n=user,r=a b",  # space is not printable here
        b"n,,n=user,r=a\x7fb",
        "n,,n=user,r=aé".encode(),
        b"n,,n=user,x=abc",  # no r=
        b"n,,r=abc,n=user",  # wrong order
        b"n,,user,r=abc",
        b"x,,n=user,r=abc",  # gs2-cbind-flag
        b"N,,n=user,r=abc",
        b"nn,,n=user,r=abc",
        b"n,n=user,r=abc",  # no authzid field
        b"n,,n=user,r=abc,1=x",  # extension name not ALPHA
        b"n,,n=user,r=abc,x",  # not attr=value
        b"n,,n=user,r=abc,x=",  # empty value
        b"n,,n=us\x00er,r=abc",  # NUL
        b"n,,n=user,r=abc\xff",  # not UTF-8
    ],
)
def test_malformed_client_first_is_a_failure(message):  # S-503, S-514
    step = rfc_mechanism().start(message)
    assert isinstance(step, Failure) and not step.initial_response_refused


@pytest.mark.parametrize("message", [b"n,,m=ext,n=user,r=abc", b"n,,n=user,r=abc,m=ext"])
def test_mandatory_extension_is_refused(message):  # RFC 5802 §5.1: m= must fail
    step = rfc_mechanism().start(message)
    assert isinstance(step, Failure) and "mandatory extension" in step.reason


def test_other_extensions_are_ignored():  # RFC 5802 §5.1
    mech = rfc_mechanism()
    assert isinstance(mech.start(RFC_CLIENT_FIRST + ",x=whatever=é".encode()), Challenge)
    final = RFC_CLIENT_FINAL.replace(b",p=", b",y=1,p=")
    creds = mech.step(final)
    assert isinstance(creds, Credentials)
    # Extensions are in the AuthMessage, so the RFC's proof no longer matches.
    assert verify_proof(RFC_CRED, creds.auth_message or b"", creds.proof or b"") is None


# --- client-final ---------------------------------------------------------------------

NONCE = b"r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0"
PROOF = b"p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ="


@pytest.mark.parametrize(
    ("final", "why"),
    [
        (b"c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k1," + PROOF, "nonce"),
        (b"c=biws,r=rOprNGfwEbeRWgbNEkqO," + PROOF, "nonce"),
        (b"c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0x," + PROOF, "nonce"),
        (b"c=biws," + PROOF, "malformed"),
        (b"c=eSws," + NONCE + b"," + PROOF, "channel binding"),  # "y,,", not "n,,"
        (b"c=" + base64.b64encode(b"n,a=user,") + b"," + NONCE + b"," + PROOF, "channel binding"),
        (b"c=" + base64.b64encode(b"p=tls-unique,,xxxx") + b"," + NONCE + b"," + PROOF, "-PLUS"),
        (b"c=biws=," + NONCE + b"," + PROOF, "channel binding"),  # not base64
        (b"c=biw," + NONCE + b"," + PROOF, "channel binding"),
        (b"c=," + NONCE + b"," + PROOF, "channel binding"),
        (b"c=biws," + NONCE, "malformed"),  # missing proof
        (b"c=biws," + NONCE + b",x=1", "proof"),
        (b"c=biws," + PROOF + b"," + NONCE, "nonce"),  # proof not last
        (b"c=biws," + NONCE + b"," + PROOF + b",x=1", "proof"),
        (b"c=biws," + NONCE + b",p=", "proof"),
        (b"c=biws," + NONCE + b",p=" + base64.b64encode(b"\0" * 31), "proof"),  # wrong length
        (b"c=biws," + NONCE + b",p=" + base64.b64encode(b"\0" * 33), "proof"),
        (b"c=biws," + NONCE + b",p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ", "proof"),  # unpadded
        (b"c=biws," + NONCE + b",p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ=!", "proof"),
        (b"c=biws," + NONCE + b",p=dHzbZapWIk4jUhN-Ute9ytag9zjfMHgsqmmiz7AndVQ=", "proof"),  # url-safe
        (b"c=biws," + NONCE + b",m=x," + PROOF, "mandatory extension"),
        (b"c=biws," + NONCE + b",=x," + PROOF, "extension"),
        (b"r=abc,c=biws," + PROOF, "malformed"),
        (NONCE + b"," + PROOF, "malformed"),
        (b"", "malformed"),
        (b"c=biws,\0" + NONCE[1:] + b"," + PROOF, "NUL"),
        (b"c=biws," + NONCE + b"\xff," + PROOF, "UTF-8"),
    ],
)
def test_malformed_client_final_is_a_failure(final, why):  # S-503, S-514
    step = at_final().step(final)
    assert isinstance(step, Failure), step
    assert why in step.reason


def test_reasons_never_echo_client_octets():  # S-903
    marker = b"ZZsecretZZ"
    steps = [
        rfc_mechanism().start(b"n,,n=" + marker + b"=41,r=abc"),
        rfc_mechanism().start(b"n,a=" + marker + b",n=user,r=abc"),
        rfc_mechanism().start(b"n,,n=user,r=" + marker + b" x"),
        at_final().step(b"c=biws,r=" + marker + b"," + PROOF),
        at_final().step(b"c=biws," + NONCE + b",p=" + marker),
    ]
    for step in steps:
        assert isinstance(step, Failure) and "ZZsecretZZ" not in step.reason.replace(" ", "")


def test_credentials_repr_hides_the_proof():  # S-903
    creds = at_final().step(RFC_CLIENT_FINAL)
    assert isinstance(creds, Credentials)
    assert "proof" not in repr(creds) and repr(creds.proof) not in repr(creds)


# --- after the result ----------------------------------------------------------------


def test_every_call_after_credentials_is_a_failure():
    mech = at_final()
    assert isinstance(mech.step(RFC_CLIENT_FINAL), Credentials)
    for call in (lambda: mech.step(b""), lambda: mech.step(RFC_CLIENT_FINAL), lambda: mech.start(None),
                 lambda: mech.start(RFC_CLIENT_FIRST), lambda: mech.step(RFC_CLIENT_FIRST)):  # fmt: skip
        assert isinstance(call(), Failure)


@pytest.mark.parametrize("when", ["first", "final"])
def test_every_call_after_a_failure_is_a_failure(when):
    mech = rfc_mechanism()
    if when == "first":
        assert isinstance(mech.start(b"junk"), Failure)
    else:
        mech.start(RFC_CLIENT_FIRST)
        assert isinstance(mech.step(b"junk"), Failure)
    for message in (RFC_CLIENT_FIRST, RFC_CLIENT_FINAL, b""):
        assert isinstance(mech.step(message), Failure)
    assert isinstance(mech.start(RFC_CLIENT_FIRST), Failure)


def test_step_before_start_and_start_twice_fail():
    assert isinstance(rfc_mechanism().step(RFC_CLIENT_FIRST), Failure)
    mech = rfc_mechanism()
    mech.start(None)
    assert isinstance(mech.start(RFC_CLIENT_FIRST), Failure)
    assert isinstance(mech.step(RFC_CLIENT_FIRST), Failure)


# --- verify_proof ---------------------------------------------------------------------


def test_verify_proof_does_the_same_work_whether_it_matches(monkeypatch):  # S-514: constant time
    calls: list[int] = []
    module = sasl.scram
    real = module._hmac
    monkeypatch.setattr(module, "_hmac", lambda key, message: calls.append(1) or real(key, message))
    creds = at_final().step(RFC_CLIENT_FINAL)
    assert isinstance(creds, Credentials)
    auth = creds.auth_message or b""
    counts = []
    for proof in (creds.proof or b"", b"\0" * 32, b"\0" * 5, b""):
        calls.clear()
        verify_proof(RFC_CRED, auth, proof)
        counts.append(len(calls))
    assert counts == [2, 2, 2, 2]


def test_verify_proof_refuses_wrong_lengths_even_if_a_prefix_matches():
    creds = at_final().step(RFC_CLIENT_FINAL)
    assert isinstance(creds, Credentials) and creds.proof
    assert verify_proof(RFC_CRED, creds.auth_message or b"", creds.proof) == RFC_SERVER_FINAL
    assert verify_proof(RFC_CRED, creds.auth_message or b"", creds.proof + b"\0") is None
    assert verify_proof(RFC_CRED, creds.auth_message or b"", creds.proof[:31]) is None
    assert verify_proof(RFC_CRED, (creds.auth_message or b"") + b"x", creds.proof) is None
