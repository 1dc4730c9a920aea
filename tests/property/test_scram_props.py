"""Properties of SCRAM-SHA-256 (SPEC.md S-514, STYLE.md 4): any client bytes
at any step give a result, never an exception; a client following RFC 5802
succeeds exactly when its password is the stored one.

Profiles ("ci", "fuzz") come from tests/conftest.py.
"""

from __future__ import annotations

import base64

import scramtest
from hypothesis import given
from hypothesis import strategies as st

from sasl import (
    AuthResult,
    Challenge,
    Credentials,
    Failure,
    ScramMechanism,
    User,
    UserDB,
    fake_credential,
    format_credential,
    make_credential,
    name_problem,
    parse_credential,
    verify,
)

SECRET = b"property-test state-store secret"
STORED = make_credential(b"pencil", 8, salt=b"saltsalt")
KNOWN = {"user": STORED, "we,ird=name": STORED}
NONCE = b"srv"


def fake(name: str):
    return fake_credential(SECRET, name, 8)


def mechanism() -> ScramMechanism:
    return ScramMechanism(lambda name: KNOWN.get(name.lower()), fake, nonce=NONCE)


#: Pieces that reach every branch: headers, attributes, escapes, the nonce
#: and proof the exchange expects, and octets that are never valid.
PIECES = st.one_of(
    st.sampled_from(
        [b"n,,", b"y,,", b"p=tls-unique,,", b"n,a=user,", b"n=", b"user", b"USER", b"=2C", b"=3D", b"=",
         b"r=", b"abc", b"abcsrv", b",", b"c=", b"biws", b"eSws", b"p=", b"m=", b"x=1",
         base64.b64encode(b"\0" * 32), b"\0", b"\xff", "é".encode(), b" ", b"we=2Cird=3Dname"]
    ),
    st.text(max_size=6).map(str.encode),
    st.binary(max_size=6),
)  # fmt: skip
MESSAGES = st.lists(PIECES, max_size=8).map(b"".join)
TAILS = st.just(b"") | MESSAGES
PROOF = base64.b64encode(b"\0" * 32)
FIRSTS = st.one_of(
    MESSAGES,
    st.tuples(st.sampled_from([b"n,,", b"y,,", b"n,a=user,"]), st.sampled_from([b"user", b"we=2Cird=3Dname"]),
              TAILS).map(lambda t: t[0] + b"n=" + t[1] + b",r=abc" + t[2]),
)  # fmt: skip
FINALS = st.one_of(
    MESSAGES,
    st.tuples(st.sampled_from([b"biws", b"eSws", b"bixhPXVzZXIs"]), TAILS, st.just(PROOF) | MESSAGES).map(
        lambda t: b"c=" + t[0] + b",r=abcsrv" + t[1] + b",p=" + t[2]
    ),
)


@given(initial=st.none() | FIRSTS, responses=st.lists(st.one_of(FINALS, FIRSTS), max_size=4))
def test_any_bytes_at_any_step_give_a_step(initial, responses):  # S-503, S-514
    mech = mechanism()
    step = mech.start(initial)
    for response in responses:
        assert isinstance(step, (Challenge, Credentials, Failure))
        if isinstance(step, Challenge):
            step = mech.step(response)
        else:
            assert isinstance(mech.step(response), Failure)  # after a final result
            assert isinstance(mech.start(response), Failure)
    assert isinstance(step, (Challenge, Credentials, Failure))
    if isinstance(step, Failure):
        assert not step.initial_response_refused  # the client speaks first (RFC 5802 §5)
    if isinstance(step, Credentials):
        assert name_problem(step.username) is None  # S-509
        assert step.proof is not None and len(step.proof) == 32
        db = UserDB("users.db", [User(name, "", None, (), format_credential(STORED)) for name in ("user",)])
        result = verify(db, step, scram_fake=fake)
        assert isinstance(result, AuthResult) and not result.temporary


NAMES = st.text(min_size=1, max_size=30).filter(
    lambda s: name_problem(s) is None and name_problem(s.lower()) is None
)


@given(
    name=NAMES,
    stored=st.binary(max_size=40),
    sent=st.binary(max_size=40),
    same=st.booleans(),
    iterations=st.integers(1, 32),
    gs2=st.sampled_from([b"n,,", b"y,,", None]),
    nonce=st.text(st.characters(min_codepoint=0x21, max_codepoint=0x7E).filter(lambda c: c != ","), min_size=1,
                  max_size=40).map(str.encode),
    initial=st.booleans(),
)  # fmt: skip
def test_a_protocol_client_succeeds_iff_the_password_is_right(
    name, stored, sent, same, iterations, gs2, nonce, initial
):  # S-514
    password = stored if same else sent
    cred = make_credential(stored, iterations, salt=b"0123456789abcdef")
    assert parse_credential(format_credential(cred)) == cred
    db = UserDB("users.db", [User(name.lower(), "", None, (), format_credential(cred))])
    header = gs2 if gs2 is not None else b"n,a=" + scramtest.saslname(name.upper()) + b","
    if gs2 is None and name.upper().lower() != name.lower():
        header = b"n,,"  # upper() does not always fold back (S-509 folds with lower())
    mech = ScramMechanism(lambda wanted: db.get(wanted) and cred, fake)
    first, bare = scramtest.client_first(name, nonce, header)
    if initial:
        server_first = mech.start(first)
    else:
        assert mech.start(None) == Challenge(b"")
        server_first = mech.step(first)
    assert isinstance(server_first, Challenge)
    assert server_first.data.startswith(b"r=" + nonce) and server_first.data.endswith(b",i=%d" % iterations)
    final, expected = scramtest.client_final(password, bare, server_first.data, header)
    creds = mech.step(final)
    assert isinstance(creds, Credentials) and creds.username == name
    result = verify(db, creds, scram_fake=fake)
    # RFC 2104 pads an HMAC key with zeros, so passwords that differ only in
    # trailing NULs (at most 64 octets, as here) are the same key: SCRAM
    # itself cannot tell them apart, and PLAIN never carries a NUL (S-505).
    right = password.rstrip(b"\0") == stored.rstrip(b"\0")
    assert result == AuthResult(ok=right, username=name.lower(), server_final=expected if right else None)
    assert isinstance(mech.step(b""), Failure)


@given(name=NAMES, password=st.binary(max_size=20))
def test_unknown_users_never_succeed_and_get_a_stable_salt(name, password):  # S-510, S-514
    db = UserDB("users.db", [])
    salts = set()
    for _ in range(2):
        mech = ScramMechanism(lambda wanted: None, fake)
        first, bare = scramtest.client_first(name, b"abc")
        server_first = mech.start(first)
        assert isinstance(server_first, Challenge)
        salts.add(server_first.data.split(b",s=")[1].split(b",")[0])
        final, _ = scramtest.client_final(password, bare, server_first.data)
        creds = mech.step(final)
        assert isinstance(creds, Credentials)
        assert verify(db, creds, scram_fake=fake) == AuthResult(ok=False, username=None)
    assert salts == {base64.b64encode(fake(name).salt)}
