"""users.db's fifth field, the SCRAM-SHA-256 credential (CONTRACT.md "The
users database"; SPEC.md S-514): parsing, writing, SCRAM-only users, and
senders with ':' of their own (quoted local parts, IPv6 literals)."""

from __future__ import annotations

import pytest
from argon2 import PasswordHasher

from sasl import (
    User,
    UserDB,
    UserDBError,
    add_user,
    format_credential,
    format_user,
    make_credential,
    nondefault_params,
    parse,
    parse_credential,
    replace_user,
)

FAST = PasswordHasher(time_cost=1, memory_cost=8, parallelism=1)
HASH = FAST.hash("pw", salt=b"fixed salt for tests")
SCRAM = format_credential(make_credential(b"pw", 4096, salt=b"fixed salt 16 oc"))
# Made by `doveadm pw -s SCRAM-SHA-256 -p pencil`.
DOVECOT = (
    "4096,EvHUV4Gh2nPS3ja+MnLCRw==,N++2o919MIYx5CCJFzWH/mKnnTKBK0rItPWpQWxY4zY=,"
    "u9sQSDMHPUjHuo2hExrGGGwBceDREsgwcUGTBdREnl8="
)


def line(name="alice", phc=HASH, cram="", senders="alice@example.com", scram: str | None = SCRAM) -> str:
    return f"{name}:{phc}:{cram}:{senders}" + ("" if scram is None else f":{scram}")


def only_user(text: str) -> User:
    users = list(parse(text, "users.db"))
    assert len(users) == 1
    return users[0]


def problems_of(text: str, path: str = "/etc/msa/users.db") -> list[str]:
    with pytest.raises(UserDBError) as caught:
        parse(text, path)
    return caught.value.problems


# --- parsing ---------------------------------------------------------------------------


def test_fifth_field_is_the_scram_credential():  # S-514, CONTRACT.md
    user = only_user(line())
    assert user.scram == SCRAM and user.argon2 == HASH
    assert user.senders == ("alice@example.com",)


def test_four_field_lines_stay_valid():  # CONTRACT.md: "Four-field lines stay valid"
    user = only_user(line(scram=None))
    assert user.scram is None and user.senders == ("alice@example.com",)


def test_empty_fifth_field_is_no_credential():  # like an empty CRAM field
    user = only_user(line(scram=""))
    assert user.scram is None and user.senders == ("alice@example.com",)


def test_dovecot_credential_in_the_fifth_field():  # S-514: user import takes {SCRAM-SHA-256}
    user = only_user(line(phc="", senders="", scram=DOVECOT))
    assert user.scram == DOVECOT and user.argon2 == "" and user.senders == ()
    assert isinstance(parse_credential(user.scram), type(make_credential(b"x", 1)))


def test_spaces_around_the_fifth_field_are_ignored():  # as around every field
    user = only_user(line(senders="alice@example.com ", scram=f" {SCRAM}\t") + "\r\n")
    assert user.scram == SCRAM and user.senders == ("alice@example.com",)


def test_empty_argon2_with_scram_is_accepted():  # CONTRACT.md: a user imported with SCRAM alone
    user = only_user(line(phc=""))
    assert user.argon2 == "" and user.scram == SCRAM


@pytest.mark.parametrize("bad", [line(phc="", scram=None), line(phc="", scram=""), "alice:::"])
def test_empty_argon2_without_scram_is_an_error_with_file_and_line(bad):  # CONTRACT.md, S-1305
    problems = problems_of("# users\n\n" + bad + "\n")
    assert problems == [
        "/etc/msa/users.db:3: empty argon2 hash (allowed only with a SCRAM-SHA-256 credential in the fifth field, "
        "or, with no credential at all, for a user whose password sql or auth_dovecot checks)"
    ]


def test_a_senders_only_line_is_a_user_when_another_directory_checks_passwords():  # S-1305
    from sasl import parse

    db = parse("alice:::alice@example.com,@example.org\n", "users.db", senders_only=True)
    user = db.get("alice")
    assert user is not None and not user.argon2 and not user.scram and user.cram is None
    assert db.may_send_as("alice", "x@example.org") and not db.may_send_as("alice", "x@example.net")
    with pytest.raises(UserDBError):  # a CRAM-MD5 credential alone is still no password
        parse("alice::" + "0" * 64 + ":alice@example.com\n", "users.db", senders_only=True)


@pytest.mark.parametrize(
    ("scram", "why"),
    [
        ("4096,abc", "expected ITERATIONS,SALT,STOREDKEY,SERVERKEY"),
        ("extra", "expected ITERATIONS,SALT,STOREDKEY,SERVERKEY"),
        ("{SCRAM-SHA-256}" + DOVECOT, "remove the Dovecot scheme prefix"),
        ("65537" + DOVECOT[4:], "iteration count 65537 exceeds 65536"),
        ("0" + DOVECOT[4:], "iteration count is not a positive decimal number"),
        (DOVECOT.replace("EvHUV4Gh2nPS3ja+MnLCRw==", "EvHUV4Gh"), "salt is not base64 of 8 to 64 octets"),
        (DOVECOT[:-2], "server key is not base64 of 32 octets"),
        (DOVECOT.replace("N++2o919", "N++2o91_"), "stored key is not base64 of 32 octets"),
    ],
)
def test_bad_scram_field_is_an_error_with_file_and_line(scram, why):  # S-514, CONTRACT.md
    problems = problems_of("# users\n" + line(scram=scram) + "\n")
    assert len(problems) == 1
    assert problems[0].startswith("/etc/msa/users.db:2: bad SCRAM-SHA-256 credential: "), problems[0]
    assert why in problems[0]
    assert DOVECOT[5:30] not in problems[0] and HASH not in problems[0]  # S-903: never echoed


@pytest.mark.parametrize(
    "bad",
    [
        line(senders="a@x.org:b@x.org", scram=None),  # ':' typed for ','
        line(senders="a@x.org:b@x.org"),
        line(scram=SCRAM + ":" + SCRAM),
        line(senders="a@x.org:", scram="b@x.org"),
    ],
)
def test_more_than_five_fields_is_an_error(bad):  # CONTRACT.md
    problems = problems_of(bad)
    assert len(problems) == 1 and "/etc/msa/users.db:1: " in problems[0]
    assert "too many ':'-separated fields (expected NAME:HASH:CRAM:SENDERS[:SCRAM])" in problems[0]


# --- senders with ':' of their own --------------------------------------------------------


@pytest.mark.parametrize(
    ("senders", "expected"),
    [
        ("@[IPv6:::1]", ("@[ipv6:::1]",)),
        ("a@[IPv6:::1]", ("a@[ipv6:::1]",)),
        ("@[IPv6:2001:db8::1], b@x.org", ("@[ipv6:2001:db8::1]", "b@x.org")),
        ("b@x.org, @[IPv6:::1]", ("b@x.org", "@[ipv6:::1]")),
        ('"a:b"@x.org', ('"a:b"@x.org',)),
        ('"a:b"@[IPv6:::1]', ('"a:b"@[ipv6:::1]',)),
        ('"a:1"@x.org', ('"a:1"@x.org',)),
        ("", ()),
    ],
)
@pytest.mark.parametrize("scram", [None, SCRAM, ""])
def test_senders_with_colons_with_and_without_a_fifth_field(senders, expected, scram):  # S-514, S-603
    user = only_user(line(senders=senders, scram=scram))
    assert user.senders == expected
    assert user.scram == (scram or None)


def test_ipv6_sender_still_allows_sending_with_a_fifth_field():  # S-603
    db = parse(line(senders="@[IPv6:::1]"), "users.db")
    assert db.may_send_as("alice", "bob@[IPv6:0:0::1]")
    assert not db.may_send_as("alice", "bob@[IPv6:::2]")


def test_broken_ipv6_sender_is_still_an_error():  # S-603: never silently a SCRAM field
    assert problems_of(line(senders="@[IPv6:::1", scram=None))
    assert problems_of(line(senders="@[IPv6:::1"))
    assert problems_of(line(senders='"a:b@x.org', scram=None))


# --- writing --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "user",
    [
        User("carol", HASH, None, ("carol@x.org", "@[ipv6:::1]"), SCRAM),
        User("carol", "", None, ('"a:b"@x.org',), DOVECOT),
        User("carol", HASH, "a" * 64, (), SCRAM),
        User("carol", "", None, (), SCRAM),
    ],
)
def test_format_user_round_trips_the_fifth_field(user):  # S-514
    text = format_user(user)
    assert text.count(":") >= 4 and text.endswith(":" + user.scram)
    assert parse(text, "p").get("carol") == user


def test_format_user_without_scram_writes_four_fields():  # CONTRACT.md
    user = User("carol", HASH, None, ("carol@x.org",))
    assert user.scram is None
    assert format_user(user) == f"carol:{HASH}::carol@x.org"


def test_edits_keep_and_add_the_fifth_field():  # msa.py user
    text = "# users\n" + line("alice", scram=None) + "\n"
    text = add_user(text, User("bob", "", None, ("bob@x.org",), SCRAM))
    assert text.endswith(f"bob:::bob@x.org:{SCRAM}\n")
    text = replace_user(text, User("alice", HASH, None, ("alice@example.com",), DOVECOT))
    db = parse(text, "p")
    assert db.get("alice").scram == DOVECOT and db.get("bob").scram == SCRAM  # type: ignore[union-attr]


def test_user_repr_never_shows_the_scram_credential():  # S-903
    db = parse(line(), "users.db")
    assert SCRAM not in repr(list(db)) and SCRAM.split(",")[2] not in repr(list(db))


# --- the database -----------------------------------------------------------------------------


def test_all_have_scram():  # S-514: advertised only while every user has one
    assert not UserDB("p").all_have_scram
    assert parse(line(), "p").all_have_scram
    assert not parse(line() + "\n" + line("bob", scram=None), "p").all_have_scram
    assert not parse(line(scram=None), "p").all_have_scram


def test_nondefault_params_skips_users_without_argon2():  # S-510, S-514
    text = line("scramonly", phc="") + "\n" + line("fast")
    assert nondefault_params(parse(text, "p")) == ["fast"]
