"""Properties of sasl/apppass.py: any file text is parsed or refused with
AppPasswordError, never another exception; any password bytes are found or
not, never an exception; an edit reads back as made (SPEC.md S-515,
CONTRACT.md "App passwords, keys and state", STYLE.md 4).

Profiles ("ci", "fuzz") come from tests/conftest.py.
"""

from __future__ import annotations

from datetime import datetime, timezone

from hypothesis import given
from hypothesis import strategies as st

from sasl.apppass import (
    AppPassword,
    AppPasswordError,
    add,
    delete,
    delete_user,
    format_line,
    generate,
    parse,
    parse_bytes,
)

SEEDED = [generate(urandom=lambda n, s=seed: bytes((s + i) % 256 for i in range(n))) for seed in range(4)]
KNOWN = "\n".join(
    f"{user}:{label}:{ident}:{digest}:20261201T135419Z:{senders}"
    for (shown, ident, digest), user, label, senders in zip(
        SEEDED, ["alice", "alice", "bob", "jos\u00e9"], ["phone", "printer", "phone", "t"],
        ["", "alice@example.com", "@example.org", "x@b\u00fccher.example"], strict=True,
    )
) + "\n"  # fmt: skip
APPS = parse(KNOWN, "app-passwords.db")

USERS = st.one_of(
    st.from_regex(r"[a-z][a-z0-9._+-]{0,10}", fullmatch=True),
    st.sampled_from(["alice", "Alice", "jos\u00e9", "\u00fcml\u00e4ut", "a@b.example"]),
)
LABELS = st.from_regex(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}", fullmatch=True)
SENDERS = st.lists(
    st.sampled_from(["alice@example.com", "Alice+x@Example.COM", "@example.org", '"a b"@example.net',
                     "x@[IPv6:2001:db8::1]", "x@b\u00fccher.example", "@[192.0.2.1]"]),
    max_size=3,
)  # fmt: skip
CREATED = st.datetimes(
    min_value=datetime(1, 1, 1), max_value=datetime(9999, 12, 31, 23, 59, 59), timezones=st.just(timezone.utc)
).map(lambda when: when.replace(microsecond=0))


# Secrets from drawn octets, so that examples replay; small identifiers
# collide now and then, to exercise the "already in use" refusal.
def _generated(octets: tuple[bytes, bytes]) -> tuple[str, str, str]:
    draws = iter(octets)
    return generate(urandom=lambda n: next(draws))


SECRETS = st.tuples(
    st.sampled_from([b"\0" * 5, b"\1" * 5]) | st.binary(min_size=5, max_size=5),
    st.binary(min_size=17, max_size=17),
).map(_generated)
ENTRIES = st.builds(
    lambda user, label, secret, created, senders: AppPassword(user, label, secret[1], secret[2], created, tuple(senders)),
    USERS, LABELS, SECRETS, CREATED, SENDERS,
)  # fmt: skip

PIECES = st.one_of(
    st.text(max_size=12),
    st.sampled_from(["\n", "\r\n", "#", ":", ",", " ", "\ufeff", "alice", "phone", "@example.com", '"', "[", "]",
                     SEEDED[0][1], SEEDED[0][2], "20261201T135419Z", "2026-12-01T13:54:19Z", "99999999T999999Z"]),
)  # fmt: skip
TEXTS = st.one_of(st.lists(PIECES, max_size=30).map("".join), st.text(), st.just(KNOWN).map(lambda k: k[:-3]))


@given(TEXTS)
def test_any_text_is_parsed_or_refused_with_problems(text):
    try:
        apps = parse(text, "app-passwords.db")
    except AppPasswordError as error:
        assert error.problems and all(p.startswith("app-passwords.db:") for p in error.problems)
    else:
        assert len(apps) == len(list(apps))


@given(st.binary(max_size=300))
def test_any_bytes_are_parsed_or_refused_with_problems(data):
    try:
        parse_bytes(data, "p")
    except AppPasswordError as error:
        assert all(p.startswith("p:") for p in error.problems)


PASSWORDS = st.one_of(
    st.binary(max_size=80),
    st.sampled_from([shown for shown, _, _ in SEEDED]).flatmap(
        lambda shown: st.sampled_from([shown.encode(), shown.upper().encode(), shown.replace("-", "").encode(),
                                       shown.encode()[:-1], shown.encode() + b"x", shown.replace("-", " ").encode()])
    ),
    st.text(alphabet="abcdefghijklmnopqrstuvwxyz234567- ABC\u0430", max_size=50).map(str.encode),
)  # fmt: skip


@given(st.sampled_from(["alice", "ALICE", "bob", "jos\u00e9", "mallory", ""]), PASSWORDS)
def test_any_password_is_found_or_not_and_only_for_its_own_user(user, password):
    found = APPS.find(user, password)
    if found is not None:
        assert found.user == user.lower()
        (shown,) = [s for s, ident, _ in SEEDED if ident == found.ident]
        assert password.replace(b"-", b"").replace(b" ", b"").lower() == shown.replace("-", "").encode()


@given(st.integers(0, 3), st.integers(9, 38), st.sampled_from("abcdefghijklmnopqrstuvwxyz234567"))
def test_changing_one_character_of_the_secret_loses_it(which, position, replacement):
    shown = SEEDED[which][0]
    if shown[position] in "-" + replacement:
        return
    changed = shown[:position] + replacement + shown[position + 1 :]
    user = ["alice", "alice", "bob", "jos\u00e9"][which]
    assert APPS.find(user, shown.encode()) is not None
    assert APPS.find(user, changed.encode()) is None


@given(st.lists(ENTRIES, max_size=4), ENTRIES, st.sampled_from(["\n", "\r\n"]), st.booleans())
def test_add_then_parse_round_trips_and_keeps_the_rest(existing, new, newline, comment):
    text = "# apps" + newline if comment else ""
    kept: list[AppPassword] = []
    for entry in existing:
        try:
            text = add(text, entry)
        except AppPasswordError:
            continue  # a label or identifier already taken
        kept.append(entry)
    try:
        after = add(text, new)
    except AppPasswordError as error:
        taken = {(e.user.lower(), e.label.lower()) for e in kept}
        assert (new.user.lower(), new.label.lower()) in taken or new.ident in {e.ident for e in kept}, error
        return
    assert after.startswith(text)
    apps = parse(after, "app-passwords.db")
    read = list(apps)
    assert [format_line(e) for e in read[:-1]] == [format_line(_lower(e)) for e in kept]
    assert read[-1] == _lower(new)
    assert delete(after, new.user, new.label) == text
    assert all(e.user != new.user.lower() for e in parse(delete_user(after, new.user), "p"))


def _lower(entry: AppPassword) -> AppPassword:
    return AppPassword(entry.user.lower(), entry.label, entry.ident, entry.digest, entry.created,
                       tuple(s.lower() for s in entry.senders))  # fmt: skip
