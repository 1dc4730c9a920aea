"""users.db: parsing with PATH:LINE problems, sender policy, edits (CONTRACT.md)."""

from __future__ import annotations

import os

import pytest
from argon2 import PasswordHasher

from sasl import (
    User,
    UserDB,
    UserDBError,
    add_user,
    add_users,
    check_sender,
    delete_user,
    format_user,
    nondefault_params,
    parse,
    parse_bytes,
    replace_user,
)
from sasl.md5state import cram_md5_credential
from sasl.userdb import name_problem

FAST = PasswordHasher(time_cost=1, memory_cost=8, parallelism=1)
# A fixed salt: the hash is part of some test ids, which must be the same
# in every process that collects them (pytest-xdist workers).
HASH = FAST.hash("pw", salt=b"fixed salt for tests")
DEFAULT_HASH = "$argon2id$v=19$m=65536,t=3,p=4$c29tZXNhbHRzb21lc2FsdA$" + "A" * 43
CRAM = cram_md5_credential(b"pw")
ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def line(name="alice", phc=HASH, cram="", senders="alice@example.com"):
    return f"{name}:{phc}:{cram}:{senders}"


def problems_of(text: str, path: str = "users.db") -> list[str]:
    with pytest.raises(UserDBError) as caught:
        parse(text, path)
    return caught.value.problems


# --- parsing ------------------------------------------------------------------


def test_parse_reads_users_in_file_order():
    text = "\n".join([line("bob"), line("alice", cram=CRAM, senders="a@x.org, @y.org")]) + "\n"
    db = parse(text, "users.db")
    assert [u.name for u in db] == ["bob", "alice"]
    assert len(db) == 2
    alice = db.get("alice")
    assert alice is not None
    assert alice.cram == CRAM and alice.argon2 == HASH
    assert alice.senders == ("a@x.org", "@y.org")


def test_comments_blank_lines_crlf_and_spaces_are_accepted():
    text = "# users\n\n   # indented comment\n\t\n" + line().replace(":", " : ") + "\r\n"
    db = parse(text, "users.db")
    assert [u.name for u in db] == ["alice"]


def test_bom_at_start_is_ignored():
    assert [u.name for u in parse("\ufeff" + line(), "p")] == ["alice"]


def test_names_are_folded_and_looked_up_case_insensitively():  # S-509
    db = parse(line("Alice", senders="Alice@Example.COM"), "users.db")
    user = db.get("ALICE")
    assert user is not None and user.name == "alice"
    assert user.senders == ("alice@example.com",)


def test_user_repr_never_shows_hashes():  # S-903
    db = parse(line(cram=CRAM), "users.db")
    text = repr(list(db)) + repr(db)
    assert HASH not in text and CRAM not in text


def test_empty_senders_and_empty_text():
    assert parse(line(senders=""), "p").get("alice").senders == ()  # type: ignore[union-attr]
    assert len(parse("", "p")) == 0


@pytest.mark.parametrize(
    ("bad_line", "why"),
    [
        ("alice", "expected 4 ':'-separated fields"),
        (f"alice:{HASH}:", "expected 4 ':'-separated fields"),
        (line(name="al ice"), "bad user name: user name contains a space"),
        (line(name="a" * 256), "bad user name: user name longer than 255 octets"),
        (line(name=""), "bad user name: empty user name"),
        (line(name="a\x7fb"), "bad user name: user name contains a control character"),
        (line(phc="$2b$12$abcdefghijklmnopqrstuv"), "bad password hash: malformed BLF-CRYPT hash"),
        (line(phc="{MD5-CRYPT}$1$abc$def"), "bad password hash: unsupported scheme MD5-CRYPT"),
        (line(phc=HASH.replace("v=19", "v=16")), "bad argon2 hash: unsupported version"),
        (line(phc="$argon2id$m=8,t=1,p=1$c2FsdHNhbHQ$aGFzaA"), "bad argon2 hash: expected $argon2id"),
        (line(phc=HASH.replace("m=8,t=1,p=1", "t=1,m=8,p=1")), "bad argon2 hash: malformed parameters"),
        (line(phc=HASH.replace("m=8,", "m=08,")), "bad argon2 hash: malformed parameters"),
        (line(phc="plaintext"), "bad password hash: unrecognized hash format"),
        (line(phc=HASH.rsplit("$", 1)[0] + "$!!!"), "bad argon2 hash: hash is not base64"),
        (
            line(phc=HASH.replace("m=8,", "m=7,")),
            "bad argon2 hash: memory cost 7 KiB is below 8 KiB per lane",
        ),
        (
            line(phc=HASH.replace("t=1", "t=0")),
            "bad argon2 hash: time cost and parallelism must be at least 1",
        ),
        (line(cram="abc"), "bad CRAM-MD5 credential: expected 64 hex digits"),
        (line(cram="g" * 64), "bad CRAM-MD5 credential"),
        (line(senders="alice"), "bad sender 'alice': expected local@domain or @domain"),
        (line(senders="a@x.org,,b@x.org"), "bad sender '': empty sender address"),
        (line(senders="a@x.org,"), "bad sender '': empty sender address"),
        (line(senders="a..b@x.org"), "malformed local part"),
        (line(senders="a@-x.org"), "malformed domain"),
        (line(senders="a@x..org"), "malformed domain"),
        (line(senders="a@x.org:b@x.org"), "too many ':'-separated fields"),
        (line(senders="a@x.org:extra"), "bad SCRAM-SHA-256 credential"),  # S-514: the fifth field
        (line(senders='"unterminated@x.org'), "unterminated quoted local part"),
        (line(senders="a" * 65 + "@x.org"), "local part longer than 64 octets"),
    ],
)
def test_bad_lines_are_reported_with_path_and_line(bad_line, why):  # CONTRACT.md
    problems = problems_of("# header\n" + bad_line + "\n", "/etc/msa/users.db")
    assert len(problems) == 1
    assert problems[0].startswith("/etc/msa/users.db:2: "), problems[0]
    assert why in problems[0], problems[0]
    assert HASH not in problems[0]


# --- user names (S-509) ---------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "why"),
    [
        ("#x", "user name starts with '#' (it would be read as a comment)"),
        ("\ufeffbob", "user name contains an invisible formatting character (U+FEFF)"),
        ("bob\ufeff", "user name contains an invisible formatting character (U+FEFF)"),
        ("evil\u202egnp.exe", "user name contains an invisible formatting character (U+202E)"),
        ("al\u200bice", "user name contains an invisible formatting character (U+200B)"),
        ("al\u00adice", "user name contains an invisible formatting character (U+00AD)"),
        ("al\u2066ice", "user name contains an invisible formatting character (U+2066)"),
        ("al\u2028ice", "user name contains a line separator (U+2028)"),
        ("al\u2029ice", "user name contains a paragraph separator (U+2029)"),
        ("al\u00a0ice", "user name contains a space (U+00A0)"),
        ("al\u3000ice", "user name contains a space (U+3000)"),
        ("al ice", "user name contains a space (U+0020)"),
        ("al\tice", "user name contains a control character (U+0009)"),
        ("al\x00ice", "user name contains a control character (U+0000)"),
        ("al\x85ice", "user name contains a control character (U+0085)"),
        ("al\x1bice", "user name contains a control character (U+001B)"),
        ("al\ue000ice", "user name contains a private-use character (U+E000)"),
        ("al\U000f0000ice", "user name contains a private-use character (U+F0000)"),
        ("al\U000e0001ice", "user name contains an invisible formatting character (U+E0001)"),
        ("al\u0378ice", "user name contains an unassigned code point (U+0378)"),
        ("al\u034fice", "user name contains an invisible character (U+034F)"),
        ("al\u3164ice", "user name contains an invisible character (U+3164)"),
        ("al\ufe0fice", "user name contains an invisible character (U+FE0F)"),
        ("\u2800", "user name contains an invisible character (U+2800)"),
        ("al\udcffice", "user name is not valid UTF-8"),
        ("jose\u0301", "user name is not in Unicode normalization form NFC"),
        ("a:b", "user name contains ':'"),
        ("", "empty user name"),
        ("a" * 256, "user name longer than 255 octets"),
    ],
)
def test_names_that_cannot_round_trip_or_would_mislead_are_refused(name, why):  # S-509
    problem = name_problem(name)
    assert problem is not None and problem.startswith(why), problem
    # the message never echoes the name: a password may have been typed there
    for part in name.split("\x00"):
        if len(part) > 2:
            assert part not in problem


@pytest.mark.parametrize("name", ["alice", "Alice", "a.b-c_d+e@example.org", "jos\u00e9", "\u00fcml\u00e4ut",
                                  "\u5f20\u4f1f", "\u0627\u062d\u0645\u062f", "x" * 255, "a#b", "\U0001f600"])  # fmt: skip
def test_ordinary_names_are_accepted(name):  # S-509
    assert name_problem(name) is None
    assert [u.name for u in parse(line(name=name), "p")] == [name.lower()]


def test_the_loader_refuses_such_names_with_path_and_line():  # S-509
    problems = problems_of("# users\n" + line(name="ok\u202e") + "\n" + line(name="bob\u2028"))
    assert problems == [
        "users.db:2: bad user name: user name contains an invisible formatting character (U+202E)",
        "users.db:3: bad user name: user name contains a line separator (U+2028)",
    ]


def test_a_leading_bom_belongs_to_the_file_and_a_second_one_to_the_name():  # S-509
    assert [u.name for u in parse("\ufeff" + line(), "p")] == ["alice"]
    assert problems_of("\ufeff" + line(name="\ufeffbob")) == [
        "users.db:1: bad user name: user name contains an invisible formatting character (U+FEFF)"
    ]


def test_add_user_cannot_write_a_name_the_loader_reads_otherwise():  # S-509
    for bad in ("#x", "\ufeffbob"):
        with pytest.raises(UserDBError):
            add_user("", User(bad, HASH, None, ()))


@pytest.mark.parametrize(
    ("params", "why"),
    [
        ("m=262145,t=1,p=1", "memory cost 262145 KiB exceeds 262144"),
        ("m=1048576,t=3,p=4", "memory cost 1048576 KiB exceeds 262144"),
        ("m=65536,t=11,p=4", "time cost 11 exceeds 10"),
        ("m=65536,t=3,p=9", "parallelism 9 exceeds 8"),
    ],
)
def test_hash_parameters_over_bounds_are_refused(params, why):  # S-1013
    phc = HASH.replace("m=8,t=1,p=1", params)
    assert problems_of(line(phc=phc)) == [f"users.db:1: bad argon2 hash: {why}"]


def test_hash_parameters_at_bounds_are_accepted():  # S-1013: "exceeds" is strict
    phc = HASH.replace("m=8,t=1,p=1", "m=262144,t=10,p=8")
    assert len(parse(line(phc=phc), "p")) == 1


def test_all_problems_are_reported_and_duplicates_after_folding():
    text = "\n".join([line("alice"), "broken", line("ALICE"), line("bob", cram="x")])
    assert problems_of(text) == [
        "users.db:2: expected 4 ':'-separated fields NAME:HASH:CRAM:SENDERS, found 1",
        "users.db:3: duplicate user alice (first on line 1)",
        "users.db:4: bad CRAM-MD5 credential: expected 64 hex digits (or nothing)",
    ]


def test_real_argon2_cffi_hashes_are_accepted():
    for hasher in (FAST, PasswordHasher(time_cost=2, memory_cost=16, parallelism=2, salt_len=8, hash_len=64)):
        assert len(parse(line(phc=hasher.hash("x")), "p")) == 1


def test_parse_bytes_invalid_utf8_names_path_and_line():
    data = b"# ok\n" + line().encode() + b"\n\xff\xfe\n"
    with pytest.raises(UserDBError) as caught:
        parse_bytes(data, "/etc/msa/users.db")
    assert caught.value.problems == ["/etc/msa/users.db:3: not valid UTF-8"]


def test_parse_bytes_keeps_crlf_files_working():
    assert [u.name for u in parse_bytes(("# x\r\n" + line() + "\r\n").encode(), "p")] == ["alice"]


def test_example_file_parses_and_has_the_demo_user():  # CONTRACT.md
    path = os.path.join(ROOT, "users.db.example")
    with open(path, "rb") as example:
        db = parse_bytes(example.read(), path)
    assert [u.name for u in db] == ["demo"]
    assert db.all_have_cram
    assert nondefault_params(db) == []


def test_all_have_cram():  # S-202
    assert not UserDB("p").all_have_cram
    assert parse(line(cram=CRAM), "p").all_have_cram
    assert not parse(line(cram=CRAM) + "\n" + line("bob"), "p").all_have_cram


def test_nondefault_params_names_odd_users():  # S-510
    text = line("fast") + "\n" + line("default", phc=DEFAULT_HASH)
    assert nondefault_params(parse(text, "p")) == ["fast"]


# --- may_send_as (S-603) ------------------------------------------------------------


def db_with(*senders: str) -> UserDB:
    return parse(line(senders=", ".join(senders)), "users.db")


@pytest.mark.parametrize(
    ("entry", "address", "allowed"),
    [
        ("alice@example.com", "alice@example.com", True),
        ("alice@example.com", "ALICE@EXAMPLE.COM", True),
        ("Alice@Example.com", "alice@example.com", True),
        ("alice@example.com", "alice+lists@example.com", True),
        ("alice@example.com", "alice+@example.com", True),
        ("alice@example.com", "alice-lists@example.com", False),
        ("alice@example.com", "alicex@example.com", False),
        ("alice@example.com", "bob@example.com", False),
        ("alice@example.com", "alice@example.org", False),
        ("alice@example.com", "alice@sub.example.com", False),
        ("alice@example.com", "alice@example.com.evil", False),
        ("@example.com", "anyone@example.com", True),
        ("@example.com", "Anyone+tag@EXAMPLE.com", True),
        ("@example.com", "anyone@sub.example.com", False),
        ("@example.com", "@example.com", False),
        ("@example.com", "example.com", False),
        ("alice@example.com", "", False),  # the null sender is the caller's business
        ('"alice smith"@example.com', '"Alice Smith"@example.com', True),
        ('"alice"@example.com', "alice@example.com", True),
        ("alice@example.com", '"alice"@example.com', True),
        ("alice@example.com", '"al\\ice"@example.com', True),
        ("alice@example.com", '"alice+x"@example.com', True),
        ("alice@example.com", '"alice@example.com', False),
        ("alice@[192.0.2.1]", "alice@[192.0.2.1]", True),
        ("alice@[IPv6:2001:DB8::1]", "alice@[ipv6:2001:db8:0::1]", True),
        ("jürgen@example.com", "JÜRGEN@example.com", True),
    ],
)
def test_may_send_as(entry, address, allowed):  # S-603
    assert db_with(entry).may_send_as("alice", address) is allowed


def test_may_send_as_user_is_case_insensitive_and_unknown_is_false():  # S-603
    db = db_with("@example.com")
    assert db.may_send_as("ALICE", "x@example.com")
    assert not db.may_send_as("bob", "x@example.com")


def test_idna2008_not_idna2003():  # S-603: straße.de is not strasse.de
    db = db_with("@straße.de")
    assert db.may_send_as("alice", "x@straße.de")
    assert db.may_send_as("alice", "x@STRASSE.de") is False
    assert db.may_send_as("alice", "x@strasse.de") is False
    assert db.may_send_as("alice", "x@xn--strae-oqa.de")
    assert db.may_send_as("alice", "x@Straße.DE")


def test_a_label_entry_matches_u_label_address():  # S-603
    db = db_with("user@xn--strae-oqa.de")
    assert db.may_send_as("alice", "user+tag@straße.de")
    assert not db_with("@strasse.de").may_send_as("alice", "x@straße.de")


def test_invalid_idn_address_is_false_not_an_error():  # client faults are results
    db = db_with("@example.com")
    assert db.may_send_as("alice", "x@\u0000.de") is False
    assert db.may_send_as("alice", "x@a\u200db.de") is False


def test_check_sender():
    assert check_sender("a@example.com") is None
    assert check_sender("@example.com") is None
    assert check_sender('"a,b:c"@example.com') is None
    assert check_sender("a@straße.de") is None
    assert check_sender("a@") == "malformed domain"
    assert check_sender("") == "empty sender address"


def test_commas_and_colons_inside_quotes_are_kept():
    db = parse(line(senders='"a,b:c"@example.com, @[IPv6:2001:db8::1]'), "p")
    user = db.get("alice")
    assert user is not None and user.senders == ('"a,b:c"@example.com', "@[ipv6:2001:db8::1]")
    assert db.may_send_as("alice", '"A,B:C"@example.com')


# --- edits keep everything else byte for byte ----------------------------------------

TEXT = (
    "# msa users\r\n"
    "\n"
    + line("alice", cram=CRAM)
    + "\n"
    + "   # about bob\n"
    + line("bob", senders="bob@x.org , @y.org")
    + "\n"
    + "# trailing comment"
)


def test_format_user_round_trips():
    user = User("carol", HASH, CRAM, ("carol@x.org", "@y.org"))
    assert parse(format_user(user), "p").get("carol") == user


def test_add_user_appends_and_keeps_the_rest():
    user = User("carol", HASH, None, ("carol@x.org",))
    new = add_user(TEXT, user)
    assert new.startswith(TEXT + "\r\n")  # CRLF file: the new line uses CRLF too
    assert new == TEXT + "\r\n" + format_user(user) + "\r\n"
    assert [u.name for u in parse(new, "p")] == ["alice", "bob", "carol"]


def test_add_user_to_empty_text():
    user = User("carol", HASH, None, ())
    assert add_user("", user) == format_user(user) + "\n"


def test_add_existing_user_is_an_error_with_line():
    with pytest.raises(UserDBError) as caught:
        add_user(TEXT, User("bob", HASH, None, ()), path="/x/users.db")
    assert caught.value.problems == ["/x/users.db:5: user bob already exists"]


def test_add_invalid_user_is_an_error():
    with pytest.raises(UserDBError):
        add_user(TEXT, User("carol", "$argon2id$broken", None, ()))
    with pytest.raises(UserDBError):
        add_user(TEXT, User("carol", HASH, None, ("not-an-address",)))


def test_add_users_in_one_go():
    users = [User(f"u{i}", HASH, None, ()) for i in range(3)]
    assert [u.name for u in parse(add_users(TEXT, users), "p")][-3:] == ["u0", "u1", "u2"]


def test_replace_user_changes_only_that_line():
    user = User("bob", HASH, CRAM, ("bob@z.org",))
    new = replace_user(TEXT, user)
    old_lines, new_lines = TEXT.split("\n"), new.split("\n")
    assert [i for i, (a, b) in enumerate(zip(old_lines, new_lines, strict=True)) if a != b] == [4]
    assert new_lines[4] == format_user(user)
    assert parse(new, "p").get("bob") == user


def test_replace_keeps_crlf_of_the_line():
    text = line("alice") + "\r\n" + line("bob") + "\r\n"
    new = replace_user(text, User("alice", HASH, None, ("x@y.org",)))
    assert new == format_user(User("alice", HASH, None, ("x@y.org",))) + "\r\n" + line("bob") + "\r\n"


def test_replace_matches_name_case_insensitively():
    text = line("Alice")
    assert replace_user(text, User("alice", HASH, None, ())) == format_user(User("alice", HASH, None, ()))


def test_delete_user_removes_only_that_line():
    new = delete_user(TEXT, "ALICE")
    assert new == TEXT.replace(line("alice", cram=CRAM) + "\n", "")
    assert [u.name for u in parse(new, "p")] == ["bob"]


def test_edits_of_unknown_users_fail():
    with pytest.raises(UserDBError) as caught:
        delete_user(TEXT, "carol", path="db")
    assert caught.value.problems == ["db: no user carol"]
    with pytest.raises(UserDBError):
        replace_user(TEXT, User("carol", HASH, None, ()))


def test_edits_refuse_a_broken_database():
    broken = TEXT + "\nbroken line\n"
    with pytest.raises(UserDBError) as caught:
        delete_user(broken, "bob", path="users.db")
    assert caught.value.problems == [
        "users.db:7: expected 4 ':'-separated fields NAME:HASH:CRAM:SENDERS, found 1"
    ]


def test_comment_lookalikes_are_not_users():
    text = "# bob:" + HASH + "::\n" + line("bob")
    assert delete_user(text, "bob") == "# bob:" + HASH + "::"
