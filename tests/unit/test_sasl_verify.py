"""verify(), hash_password(), the failure throttle and the credential cache (§5)."""

from __future__ import annotations

import hmac
import importlib

import pytest
from argon2 import PasswordHasher, extract_parameters

from sasl import (
    AuthResult,
    Challenge,
    CredentialCache,
    Credentials,
    Throttle,
    client_key,
    hash_password,
    new_mechanism,
    parse,
    verify,
)
from sasl.md5state import cram_md5_credential

# sasl.verify is the function once the package re-exports it; the module:
verify_module = importlib.import_module("sasl.verify")
FAST = PasswordHasher(time_cost=1, memory_cost=8, parallelism=1)
RFC2195_CHALLENGE = b"<1896.697170952@postoffice.reston.mci.net>"


@pytest.fixture(scope="module")
def users():
    text = "\n".join(
        [
            f"alice:{FAST.hash(b'right')}::alice@example.com",
            f"tim:{FAST.hash(b'tanstaaftanstaaf')}:{cram_md5_credential(b'tanstaaftanstaaf')}:",
            f"jürgen:{FAST.hash('pässword'.encode())}::",
        ]
    )
    return parse(text, "users.db")


def plain(name: str, password: bytes) -> Credentials:
    return Credentials(mechanism="PLAIN", username=name, password=password)


# --- PLAIN and LOGIN ----------------------------------------------------------------


def test_right_password():  # S-503
    db = parse(f"alice:{FAST.hash(b'right')}::", "p")
    assert verify(db, plain("alice", b"right")) == AuthResult(ok=True, username="alice")


def test_name_is_case_insensitive_and_result_is_lower_case(users):  # S-509
    assert verify(users, plain("ALICE", b"right")) == AuthResult(True, "alice")


def test_wrong_password_names_the_user(users):  # S-503, S-902
    assert verify(users, plain("alice", b"wrong")) == AuthResult(False, "alice")


def test_password_is_compared_as_octets(users):  # S-509: no normalisation
    assert verify(users, plain("jürgen", "pässword".encode())).ok
    assert not verify(users, plain("jürgen", "pa\u0308ssword".encode())).ok  # NFD form
    assert not verify(users, plain("alice", b"RIGHT")).ok


def test_unknown_user_same_shape_as_wrong_password(users):  # S-510, S-503
    wrong = verify(users, plain("alice", b"wrong"))
    unknown = verify(users, plain("mallory", b"right"))
    assert unknown == AuthResult(ok=False, username=None)
    assert type(unknown) is type(wrong) and unknown.ok == wrong.ok and not unknown.temporary


def test_unknown_user_costs_one_argon2_verify_with_default_parameters(users, monkeypatch):  # S-510
    seen: list[str] = []
    real = verify_module._password_matches
    monkeypatch.setattr(verify_module, "_password_matches", lambda phc, pw: seen.append(phc) or real(phc, pw))
    verify(users, plain("mallory", b"x"))
    verify(users, plain("nobody", b"y"))
    assert len(seen) == 2 and seen[0] == seen[1]  # one dummy hash, made once
    params = extract_parameters(seen[0])
    defaults = PasswordHasher()
    assert (params.time_cost, params.memory_cost, params.parallelism) == (
        defaults.time_cost,
        defaults.memory_cost,
        defaults.parallelism,
    )


def test_login_credentials_verify_like_plain(users):  # S-506
    login = new_mechanism("LOGIN", hostname="h")
    assert login is not None
    login.start(b"alice")
    creds = login.step(b"right")
    assert isinstance(creds, Credentials)
    assert verify(users, creds).ok


def test_argon2_errors_are_just_failures():
    # A hash argon2-cffi cannot use (built by hand, bypassing parse): no exception.
    db = sasl_db_with_hash("$argon2id$v=19$m=8,t=1,p=1$c2FsdHNhbHQ$!!!!")
    assert verify(db, plain("alice", b"x")) == AuthResult(False, "alice")
    db = sasl_db_with_hash("$argon2id$v=19$m=8,t=1,p=1$c2FsdHNhbHQ$aGFzaGhhc2g")
    assert verify(db, plain("alice", b"x")) == AuthResult(False, "alice")
    db = sasl_db_with_hash("$argon2id$v=19$m=8,t=1,p=1$c2FsdHNhbHQ$aGFzaGhhc2gé")
    assert verify(db, plain("alice", b"x")) == AuthResult(False, "alice")


def sasl_db_with_hash(phc: str):
    from sasl import User, UserDB

    return UserDB("p", [User("alice", phc, None, ())])


def test_hash_password_uses_argon2id_defaults():  # S-510
    phc = hash_password(b"secret")
    params = extract_parameters(phc)
    defaults = PasswordHasher()
    assert phc.startswith("$argon2id$v=19$")
    assert (params.time_cost, params.memory_cost, params.parallelism) == (
        defaults.time_cost,
        defaults.memory_cost,
        defaults.parallelism,
    )
    db = parse(f"alice:{phc}::", "p")
    assert verify(db, plain("alice", b"secret")).ok
    assert not verify(db, plain("alice", b"secreT")).ok


# --- CRAM-MD5 ----------------------------------------------------------------------


def cram(name: str, digest: str, challenge: bytes = RFC2195_CHALLENGE) -> Credentials:
    return Credentials(mechanism="CRAM-MD5", username=name, challenge=challenge, digest=digest)


def test_rfc2195_vector_end_to_end(users):  # S-507, S-508
    mechanism = new_mechanism(
        "CRAM-MD5", hostname="postoffice.reston.mci.net", urandom=lambda n: (1896).to_bytes(n, "big"),
        clock=lambda: 697170952.0,
    )  # fmt: skip
    assert mechanism is not None
    challenge = mechanism.start(None)
    assert challenge == Challenge(RFC2195_CHALLENGE)
    creds = mechanism.step(b"tim b913a602c7eda7a495b4e6e7334d3890")
    assert isinstance(creds, Credentials)
    assert verify(users, creds) == AuthResult(True, "tim")


def test_cram_digest_upper_case_hex_from_client_is_fine(users):  # S-507
    mechanism = new_mechanism("CRAM-MD5", hostname="h")
    assert mechanism is not None
    challenge = mechanism.start(None)
    assert isinstance(challenge, Challenge)
    digest = hmac.new(b"tanstaaftanstaaf", challenge.data, "md5").hexdigest().upper()
    creds = mechanism.step(b"TIM " + digest.encode())
    assert isinstance(creds, Credentials)
    assert verify(users, creds) == AuthResult(True, "tim")


def test_cram_wrong_digest_or_challenge(users):  # S-503
    assert verify(users, cram("tim", "0" * 32)) == AuthResult(False, "tim")
    other = b"<1.2@postoffice.reston.mci.net>"
    assert verify(users, cram("tim", "b913a602c7eda7a495b4e6e7334d3890", other)) == AuthResult(False, "tim")


def test_cram_user_without_credential_fails_like_wrong_digest(users, monkeypatch):  # S-503, S-510
    seen: list[str] = []
    real = verify_module._digest_matches
    monkeypatch.setattr(verify_module, "_digest_matches", lambda c, ch, d: seen.append(c) or real(c, ch, d))
    assert verify(users, cram("alice", "0" * 32)) == AuthResult(False, "alice")
    assert verify(users, cram("mallory", "0" * 32)) == AuthResult(False, None)
    assert len(seen) == 2 and seen[0] == seen[1] == verify_module._dummy_cram()


def test_cram_dummy_context_cannot_be_guessed_into_success(users):  # S-510
    # Even with the dummy's own digest, a user without a credential fails.
    dummy_digest = verify_module.cram_md5_digest(verify_module._dummy_cram(), RFC2195_CHALLENGE)
    assert verify(users, cram("alice", dummy_digest)) == AuthResult(False, "alice")
    assert verify(users, cram("mallory", dummy_digest)) == AuthResult(False, None)


def test_unknown_mechanism_credentials_fail(users):
    creds = Credentials(mechanism="XOAUTH2", username="alice", password=b"right")
    assert verify(users, creds) == AuthResult(False, "alice")


# --- throttle (S-511) ------------------------------------------------------------------


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_throttle_delays_double_and_cap_at_30():  # S-511
    clock = Clock()
    throttle = Throttle(clock=clock)
    assert throttle.delay("192.0.2.1") == 0
    delays = []
    for _ in range(8):
        throttle.failed("192.0.2.1")
        delays.append(throttle.delay("192.0.2.1"))
    assert delays == [1, 2, 4, 8, 16, 30, 30, 30]
    assert throttle.delay("192.0.2.2") == 0


def test_throttle_many_failures_stay_bounded():  # S-511
    throttle = Throttle(clock=Clock())
    for _ in range(10_000):
        throttle.failed("k")
    assert throttle.delay("k") == 30


def test_throttle_forgets_after_15_minutes_without_failure():  # S-511
    clock = Clock()
    throttle = Throttle(clock=clock)
    throttle.failed("k")
    throttle.failed("k")
    clock.now += 899
    assert throttle.delay("k") == 2
    throttle.failed("k")  # a new failure restarts the 15 minutes
    clock.now += 899
    assert throttle.delay("k") == 4
    clock.now += 1
    assert throttle.delay("k") == 0
    throttle.failed("k")
    assert throttle.delay("k") == 1  # counting starts again
    assert len(throttle) == 1


def test_throttle_success_forgets():  # S-511
    throttle = Throttle(clock=Clock())
    throttle.failed("k")
    throttle.succeeded("k")
    throttle.succeeded("never-seen")
    assert throttle.delay("k") == 0 and len(throttle) == 0


def test_throttle_success_forgets_only_that_names_failures():  # S-511
    # The attack of issue 11: guess at bob, log in as oneself, guess again.
    throttle = Throttle(clock=Clock())
    throttle.failed("192.0.2.1", "bob")
    throttle.succeeded("192.0.2.1", "mallory")
    assert throttle.delay("192.0.2.1") == 1
    throttle.failed("192.0.2.1", "bob")
    throttle.failed("192.0.2.1", "carol")
    throttle.succeeded("192.0.2.1", "mallory")
    assert throttle.delay("192.0.2.1") == 4
    throttle.succeeded("192.0.2.1", "bob")  # bob's own success forgets bob's
    assert throttle.delay("192.0.2.1") == 1
    throttle.succeeded("192.0.2.1", "carol")
    assert throttle.delay("192.0.2.1") == 0 and len(throttle) == 0


def test_throttle_many_names_from_one_address_stay_counted():  # S-511
    throttle = Throttle(clock=Clock())
    for i in range(1000):
        throttle.failed("k", f"user{i}")
    assert throttle.delay("k") == 30
    for i in range(1000):
        throttle.succeeded("k", f"user{i}")
    assert throttle.delay("k") == 30  # folded failures are never forgotten by a success
    assert len(throttle._entries["k"][0]) <= 33


def test_throttle_is_bounded_dropping_the_oldest():  # DESIGN.md: 10 000 entries
    clock = Clock()
    throttle = Throttle(clock=clock, max_entries=3)
    for key in ("a", "b", "c"):
        throttle.failed(key)
        clock.now += 1
    throttle.failed("a")  # a is now the newest
    throttle.failed("d")
    assert len(throttle) == 3
    assert throttle.delay("b") == 0
    assert throttle.delay("a") == 2 and throttle.delay("c") == 1 and throttle.delay("d") == 1


def test_throttle_default_bound():
    assert Throttle()._max_entries == 10_000


@pytest.mark.parametrize(
    ("ip", "key"),
    [
        ("192.0.2.7", "192.0.2.7"),
        ("::ffff:192.0.2.7", "192.0.2.7"),
        ("2001:db8:1:2:3:4:5:6", "2001:db8:1:2::/64"),
        ("2001:db8:1:2::9", "2001:db8:1:2::/64"),
        ("2001:DB8:1:3::9", "2001:db8:1:3::/64"),
        ("fe80::1%eth0", "fe80::/64"),
        ("unknown", "unknown"),
    ],
)
def test_client_key(ip, key):  # S-109, S-511
    assert client_key(ip) == key


# --- credential cache (S-512) ----------------------------------------------------------


def test_cache_hit_after_remember_until_ttl():  # S-512
    clock = Clock()
    cache = CredentialCache(300, clock=clock)
    assert not cache.hit("alice", b"pw", "$h1")
    cache.remember("alice", b"pw", "$h1")
    assert cache.hit("alice", b"pw", "$h1")
    clock.now += 299.9
    assert cache.hit("alice", b"pw", "$h1")
    clock.now += 0.1
    assert not cache.hit("alice", b"pw", "$h1")
    assert len(cache) == 0


def test_cache_misses_on_any_change():  # S-512: changed password or hash misses
    cache = CredentialCache(300, clock=Clock())
    cache.remember("alice", b"pw", "$h1")
    assert not cache.hit("alice", b"pw2", "$h1")
    assert not cache.hit("alice", b"pw", "$h2")
    assert not cache.hit("bob", b"pw", "$h1")
    # Length prefixes: moving bytes between fields is a different entry.
    cache.remember("ab", b"c", "$h")
    assert not cache.hit("a", b"bc", "$h")


def test_cache_never_stores_the_password():  # S-512
    cache = CredentialCache(300, clock=Clock(), key=b"k" * 32)
    cache.remember("alice", b"hunter2-secret", "$h1")
    stored = b"".join(cache._entries)
    assert b"hunter2" not in stored and len(stored) == 32


def test_cache_key_is_per_instance():  # S-512: per-process random key
    first, second = CredentialCache(300), CredentialCache(300)
    assert first._key != second._key and len(first._key) == 32
    same_key = CredentialCache(300, key=first._key)
    assert first._digest("a", b"p", "h") == same_key._digest("a", b"p", "h")
    assert first._digest("a", b"p", "h") != second._digest("a", b"p", "h")


def test_cache_ttl_zero_disables():  # CONTRACT.md auth_cache_ttl = 0
    cache = CredentialCache(0, clock=Clock())
    cache.remember("alice", b"pw", "$h1")
    assert not cache.hit("alice", b"pw", "$h1") and len(cache) == 0


def test_cache_is_bounded_dropping_the_oldest():  # DESIGN.md: 10 000 entries
    clock = Clock()
    cache = CredentialCache(300, clock=clock, max_entries=2)
    for name in ("a", "b", "c"):
        cache.remember(name, b"pw", "$h")
        clock.now += 1
    assert not cache.hit("a", b"pw", "$h")
    assert cache.hit("b", b"pw", "$h") and cache.hit("c", b"pw", "$h")
    assert CredentialCache(1)._max_entries == 10_000


def test_cache_and_verify_together(users):  # S-512 as the shell uses it
    user = users.get("alice")
    cache = CredentialCache(300, clock=Clock())
    creds = plain("alice", b"right")
    assert not cache.hit(user.name, creds.password, user.argon2)
    if verify(users, creds).ok:
        cache.remember(user.name, creds.password, user.argon2)
    assert cache.hit(user.name, b"right", user.argon2)
    assert not cache.hit(user.name, b"wrong", user.argon2)


def test_warm_up_makes_the_dummies_once():  # S-510: no extra cost for the first unknown user
    from sasl import warm_up

    warm_up()
    first = (verify_module._dummy_hash(), verify_module._dummy_cram())
    warm_up()
    assert (verify_module._dummy_hash(), verify_module._dummy_cram()) == first
    assert verify_module._dummy_hash.cache_info().currsize == 1


# --- SCRAM-SHA-256 (S-514) --------------------------------------------------------------

SCRAM_SECRET = b"k" * 32


@pytest.fixture(scope="module")
def scram_users():
    from sasl import format_credential, make_credential

    pencil = format_credential(make_credential(b"pencil", 64))
    text = "\n".join(
        [
            f"carol:{FAST.hash(b'argon')}:::{pencil}",  # both; PLAIN uses argon2
            f"dave::::{pencil}",  # SCRAM only (imported from Dovecot)
            f"erin:{FAST.hash(b'pencil')}::",  # no SCRAM credential
        ]
    )
    return parse(text, "users.db")


def scram_fake(name: str):
    from sasl import fake_credential

    return fake_credential(SCRAM_SECRET, name, 64)


def scram_login(users, name: str, password: bytes, fake=scram_fake) -> AuthResult:
    import scramtest

    def lookup(wanted: str):
        from sasl import parse_credential

        user = users.get(wanted)
        return parse_credential(user.scram) if user is not None and user.scram else None

    mechanism = new_mechanism("SCRAM-SHA-256", hostname="h", scram_lookup=lookup, scram_fake=fake)
    assert mechanism is not None
    first, bare = scramtest.client_first(name, b"fyko+d2lbbFgONRv9qkxdawL")
    server_first = mechanism.start(first)
    assert isinstance(server_first, Challenge)
    final, expected = scramtest.client_final(password, bare, server_first.data)
    creds = mechanism.step(final)
    assert isinstance(creds, Credentials)
    result = verify(users, creds, scram_fake=fake)
    assert result.server_final == (expected if result.ok else None)
    return result


@pytest.mark.parametrize("name", ["carol", "dave", "DAVE"])
def test_scram_right_password(scram_users, name):  # S-514: 334 v=... from server_final
    result = scram_login(scram_users, name, b"pencil")
    assert result.ok and result.username == name.lower()
    assert result.server_final is not None and result.server_final.startswith(b"v=")


def test_scram_wrong_password(scram_users):  # S-503
    assert scram_login(scram_users, "dave", b"pencil!") == AuthResult(False, "dave")


def test_scram_unknown_user_and_user_without_scram_fail_alike(scram_users):  # S-510, S-514
    assert scram_login(scram_users, "mallory", b"pencil") == AuthResult(False, None)
    assert scram_login(scram_users, "erin", b"pencil") == AuthResult(False, "erin")


def test_scram_fake_credential_cannot_be_guessed_into_success(scram_users):  # S-510
    # Even a client that knows the fake's password (were it one) fails for
    # an unknown user or one without SCRAM.
    from sasl import make_credential

    known = make_credential(b"guessed", 64)
    for name, username in (("mallory", None), ("erin", "erin")):
        result = scram_login(scram_users, name, b"guessed", fake=lambda name: known)
        assert result == AuthResult(False, username)


def test_scram_without_the_shells_fake_uses_a_per_process_one(scram_users):  # S-514
    creds = Credentials(mechanism="SCRAM-SHA-256", username="mallory", auth_message=b"a", proof=b"\0" * 32)
    assert verify(scram_users, creds) == AuthResult(False, None)
    first = verify_module._dummy_scram("mallory")
    assert verify_module._dummy_scram("MALLORY") == first and first.iterations == 4096


def test_scram_credentials_without_fields_fail(scram_users):  # nothing raises
    creds = Credentials(mechanism="SCRAM-SHA-256", username="dave")
    assert verify(scram_users, creds) == AuthResult(False, "dave")


def test_plain_against_a_scram_only_user(scram_users):  # S-514
    assert verify(scram_users, plain("dave", b"pencil")) == AuthResult(True, "dave")
    assert verify(scram_users, plain("DAVE", b"pencil")) == AuthResult(True, "dave")
    assert verify(scram_users, plain("dave", b"pencil ")) == AuthResult(False, "dave")
    assert verify(scram_users, plain("dave", b"")) == AuthResult(False, "dave")


def test_plain_uses_argon2_when_the_user_has_both(scram_users):  # S-514: SCRAM only without argon2
    assert verify(scram_users, plain("carol", b"argon")).ok
    assert not verify(scram_users, plain("carol", b"pencil")).ok


def test_plain_against_a_scram_only_user_also_costs_the_dummy_argon2(scram_users, monkeypatch):  # S-510
    seen: list[str] = []
    real = verify_module._password_matches
    monkeypatch.setattr(verify_module, "_password_matches", lambda phc, pw: seen.append(phc) or real(phc, pw))
    verify(scram_users, plain("dave", b"pencil"))
    verify(scram_users, plain("mallory", b"pencil"))
    assert seen == [verify_module._dummy_hash()] * 2


def test_plain_against_a_scram_only_user_built_by_hand_with_a_broken_credential():  # nothing raises
    from sasl import User, UserDB

    db = UserDB("p", [User("dave", "", None, (), "4096,junk")])
    assert verify(db, plain("dave", b"pencil")) == AuthResult(False, "dave")
    creds = Credentials(mechanism="SCRAM-SHA-256", username="dave", auth_message=b"a", proof=b"\0" * 32)
    assert verify(db, creds) == AuthResult(False, "dave")
