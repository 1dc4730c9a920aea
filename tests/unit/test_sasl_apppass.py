"""App passwords: secrets, lookup, the file with PATH:LINE problems, edits,
sender narrowing (SPEC.md S-515, S-601..S-603; CONTRACT.md)."""

from __future__ import annotations

import hashlib
import os
import re
from datetime import datetime, timedelta, timezone

import pytest

import sasl
from sasl.apppass import (
    ALPHABET,
    APP_PASSWORD_CHARS,
    IDENT_CHARS,
    SECRET_CHARS,
    AppPassword,
    AppPasswordError,
    AppPasswords,
    add,
    delete,
    delete_user,
    format_line,
    generate,
    label_problem,
    may_send_as,
    narrowing_problem,
    normalise,
    parse,
    parse_bytes,
    sender_problems,
    unknown_users,
)

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
WHEN = datetime(2026, 12, 1, 13, 54, 19, tzinfo=timezone.utc)
DIGEST = "ab" * 32
# A fixed random source: the same secrets in every test process.
SHOWN, IDENT, HASH = generate(urandom=lambda n: bytes(range(7, 7 + n)))
SHOWN2, IDENT2, HASH2 = generate(urandom=lambda n: bytes(range(99, 99 + n)))


def line(
    user="alice", label="phone", ident="abcdefgh", digest=DIGEST, created="20261201T135419Z", senders=""
):
    return f"{user}:{label}:{ident}:{digest}:{created}:{senders}"


def entry(user="alice", label="phone", ident=IDENT, digest=HASH, created=WHEN, senders=()):
    return AppPassword(user, label, ident, digest, created, tuple(senders))


def problems_of(text: str, path: str = "app-passwords.db") -> list[str]:
    with pytest.raises(AppPasswordError) as caught:
        parse(text, path)
    return caught.value.problems


def two_apps() -> AppPasswords:
    text = format_line(entry()) + "\n" + format_line(entry("bob", "printer", IDENT2, HASH2)) + "\n"
    return parse(text, "app-passwords.db")


# --- secrets ----------------------------------------------------------------------


def test_generate_has_the_documented_shape():  # CONTRACT.md, S-515
    shown, ident, digest = generate()
    assert re.fullmatch(r"[a-z2-7]{8}-[a-z2-7]{5}-[a-z2-7]{5}-[a-z2-7]{5}-[a-z2-7]{5}-[a-z2-7]{6}", shown)
    assert shown.startswith(ident + "-") and len(ident) == IDENT_CHARS
    assert re.fullmatch(r"[0-9a-f]{64}", digest)
    assert digest == hashlib.sha256(b"msa-app-password-v1:" + shown.replace("-", "").encode()).hexdigest()


def test_the_secret_after_the_identifier_has_at_least_128_random_bits():  # CONTRACT.md
    assert SECRET_CHARS * 5 >= 128  # base32: 5 bits a character
    assert len(ALPHABET) == 32
    drawn: list[int] = []

    def counting(n: int) -> bytes:
        drawn.append(n)
        return os.urandom(n)

    generate(urandom=counting)
    assert sum(drawn) * 8 >= (IDENT_CHARS + SECRET_CHARS) * 5


def test_generated_secrets_differ_and_use_the_whole_alphabet():
    secrets = {generate()[0] for _ in range(200)}
    assert len(secrets) == 200
    assert set("".join(secrets).replace("-", "")) == ALPHABET


def test_generate_avoids_identifiers_in_use():
    draws = iter([b"\0" * 5, b"\0" * 5, b"\1" * 5, b"\2" * 17])
    shown, ident, _ = generate({"aaaaaaaa"}, urandom=lambda n: next(draws))
    assert ident != "aaaaaaaa" and shown.startswith(ident)


def test_generate_gives_up_on_a_random_source_that_repeats_itself():
    with pytest.raises(AppPasswordError, match="random source"):
        generate({"aaaaaaaa"}, urandom=lambda n: b"\0" * n)


@pytest.mark.parametrize(
    "typed",
    [
        SHOWN,
        SHOWN.replace("-", ""),
        SHOWN.upper(),
        SHOWN.capitalize(),  # phones capitalise the first letter
        SHOWN.replace("-", " "),
        " " + SHOWN.replace("-", " - ") + " ",
        "-".join(SHOWN.replace("-", "")),  # a dash between every two characters
    ],
)
def test_a_secret_is_found_with_or_without_separators_in_any_case(typed):  # S-515
    apps = two_apps()
    found = apps.find("alice", typed.encode())
    assert found is not None and found.label == "phone" and found.user == "alice"
    assert normalise(typed.encode()) == SHOWN.replace("-", "")


def test_the_user_name_compares_case_insensitively():  # S-509
    assert two_apps().find("ALICE", SHOWN.encode()) is not None


@pytest.mark.parametrize(
    "user, password",
    [
        ("alice", SHOWN[:-1]),  # truncated
        ("alice", SHOWN + "a"),  # one too many
        ("alice", SHOWN[:-1] + ("a" if SHOWN[-1] != "a" else "b")),  # wrong secret, right identifier
        ("alice", "zzzzzzzz" + SHOWN[8:]),  # unknown identifier
        ("bob", SHOWN),  # another user's
        ("mallory", SHOWN),  # a user without app passwords
        ("alice", SHOWN.replace("-", "_")),  # not a separator
        ("alice", SHOWN.replace("a", "\u0430")),  # Cyrillic a
        ("alice", ""),
        ("alice", "correct horse battery"),  # a main password
        ("alice", SHOWN2),  # bob's
    ],
)
def test_anything_but_the_users_secret_is_not_found(user, password):  # S-515
    assert two_apps().find(user, password.encode()) is None


@pytest.mark.parametrize(
    "raw",
    [b"", b"\xff" * 34, SHOWN.encode() + b"\0", SHOWN.encode().replace(b"-", b"\t"), b" " * 300 + SHOWN.encode(),
     b"0" * 34, b"1" * 34, b"8" * 34, b"9" * 34, b"a" * 33, b"a" * 35, b"-" * 34],
)  # fmt: skip
def test_what_does_not_have_the_shape_is_not_an_app_password(raw):
    assert normalise(raw) is None
    assert two_apps().find("alice", raw) is None


def test_a_revoked_app_password_is_not_found():  # S-515
    text = format_line(entry()) + "\n"
    assert parse(text, "p").find("alice", SHOWN.encode()) is not None
    assert parse(delete(text, "alice", "phone"), "p").find("alice", SHOWN.encode()) is None


def test_repr_never_shows_the_hash():  # S-903
    apps = two_apps()
    shown = repr(list(apps)) + repr(apps) + repr(apps.find("alice", SHOWN.encode()))
    assert HASH not in shown and HASH2 not in shown and "label='phone'" in shown


def test_the_set_answers_for_users_and_identifiers():
    apps = two_apps()
    assert len(apps) == 2 and [e.label for e in apps] == ["phone", "printer"]
    assert [e.label for e in apps.for_user("BOB")] == ["printer"]
    assert apps.for_user("carol") == ()
    assert {app.ident for app in apps} == {IDENT, IDENT2}
    assert apps.line_of(apps.for_user("bob")[0]) == 2
    assert apps.line_of(entry(label="other")) is None
    empty = AppPasswords("app-passwords.db")
    assert len(empty) == 0 and empty.find("alice", SHOWN.encode()) is None


# --- parsing --------------------------------------------------------------------


def test_parse_reads_every_field():
    apps = parse(
        line("Alice", "Pixel-7.a_b", "ABCDEFGH", DIGEST.upper(), senders="A@Example.COM, @x.org") + "\n", "p"
    )
    (app,) = apps
    assert app == AppPassword("alice", "Pixel-7.a_b", "abcdefgh", DIGEST, WHEN, ("a@example.com", "@x.org"))


def test_comments_blank_lines_crlf_spaces_and_a_bom_are_accepted():
    text = "\ufeff# apps\r\n\r\n   # indented\n\t\n" + line().replace(":", " : ") + "\r\n"
    assert [app.label for app in parse(text, "p")] == ["phone"]


def test_an_ipv6_literal_sender_keeps_its_colons():
    (app,) = parse(line(senders="x@[IPv6:2001:db8::1], @example.org"), "p")
    assert app.senders == ("x@[ipv6:2001:db8::1]", "@example.org")


@pytest.mark.parametrize(
    "bad_line, why",
    [
        ("alice:phone:abcdefgh:" + DIGEST + ":20261201T135419Z", "expected 6 ':'-separated fields"),
        ("alice", "expected 6 ':'-separated fields"),
        (
            line(senders="a@example.com:x"),
            "too many ':'-separated fields (expected USER:LABEL:ID:HASH:CREATED:SENDERS)",
        ),
        (line(user=""), "bad user name: empty user name"),
        (line(user="al ice"), "bad user name: user name contains a space"),
        (line(user="al\u202eice"), "bad user name: user name contains an invisible formatting character"),
        (line(user="e\u0301"), "bad user name: user name is not in Unicode normalization form NFC"),
        (line(user="x" * 256), "bad user name: user name longer than 255 octets"),
        (line(label=""), "bad label: empty label"),
        (line(label="a" * 65), "bad label: label longer than 64 characters"),
        (line(label="-phone"), "bad label: label must be ASCII letters"),
        (line(label=".phone"), "bad label: label must be ASCII letters"),
        (line(label="my phone"), "bad label: label must be ASCII letters"),
        (line(label="t\u00e9l\u00e9phone"), "bad label: label must be ASCII letters"),
        (line(label="ph#one"), "bad label: label must be ASCII letters"),
        (line(label="ph\x1bone"), "bad label: label must be ASCII letters"),
        (line(ident=""), "bad identifier: expected 8 characters a-z, 2-7"),
        (line(ident="abcdefg"), "bad identifier"),
        (line(ident="abcdefghi"), "bad identifier"),
        (line(ident="abcdefg0"), "bad identifier"),
        (line(ident="abcdefg8"), "bad identifier"),
        (line(digest=""), "bad hash: expected 64 hex digits (SHA-256)"),
        (line(digest=DIGEST[:-1]), "bad hash"),
        (line(digest=DIGEST + "a"), "bad hash"),
        (line(digest=DIGEST[:-1] + "g"), "bad hash"),
        (line(created=""), "bad creation time: expected YYYYMMDDTHHMMSSZ"),
        (
            line(created="2026-12-01T13:54:19Z"),
            "bad creation time: expected YYYYMMDDTHHMMSSZ (ISO 8601 basic format, UTC, no '-' or ':')",
        ),
        (line(created="20261201T135419"), "bad creation time: expected YYYYMMDDTHHMMSSZ"),
        (line(created="20261201t135419z"), "bad creation time: expected YYYYMMDDTHHMMSSZ"),
        (line(created="20261201T13541Z"), "bad creation time: expected YYYYMMDDTHHMMSSZ"),
        (
            line(created="2026120\u0661T135419Z"),
            "bad creation time: expected YYYYMMDDTHHMMSSZ",
        ),  # Arabic-Indic 1
        (line(created="20261301T135419Z"), "bad creation time: no such date or time"),
        (line(created="20260230T135419Z"), "bad creation time: no such date or time"),
        (line(created="20261201T245419Z"), "bad creation time: no such date or time"),
        (line(created="20261201T135460Z"), "bad creation time: no such date or time"),
        (line(senders="nobody"), "bad sender 'nobody': expected local@domain or @domain"),
        (line(senders="a@example.com,,b@example.com"), "bad sender '': empty sender address"),
        (line(senders="a@-bad-.example"), "bad sender 'a@-bad-.example': malformed domain"),
        (line(senders='"unterminated@example.com'), "unterminated quoted local part in senders"),
    ],
)
def test_bad_lines_are_reported_with_path_and_line(bad_line, why):  # CONTRACT.md
    problems = problems_of("# comment\n\n" + bad_line + "\n", path="/etc/msa/app-passwords.db")
    assert len(problems) == 1
    assert problems[0].startswith("/etc/msa/app-passwords.db:3: " + why), problems


@pytest.mark.parametrize("form", ["list", "pair"])
def test_senders_split_as_users_db_splits_them_in_either_form(monkeypatch, form):
    """userdb.split_senders gives the list, or (list, text after a ':'),
    or a reason; either way a ':' outside quotes and literals is refused."""
    from sasl import apppass

    real = apppass.split_senders

    def pair(text):
        head, colon, tail = text.partition(":") if "[" not in text and '"' not in text else (text, "", "")
        split = real(head)
        return split if isinstance(split, str) else (split, tail if colon else None)

    def as_list(text):
        split = real(text)
        if isinstance(split, tuple):
            return split[0] if split[1] is None else "too many ':'-separated fields"
        return split

    monkeypatch.setattr(apppass, "split_senders", pair if form == "pair" else as_list)
    (app,) = parse(line(senders="a@example.com, @x.org"), "p")
    assert app.senders == ("a@example.com", "@x.org")
    assert problems_of(line(senders="a@example.com:b@x.org")) == [
        "app-passwords.db:1: too many ':'-separated fields (expected USER:LABEL:ID:HASH:CREATED:SENDERS)"
    ]


def test_every_bad_line_is_reported():
    problems = problems_of("\n".join([line(label=""), line(ident="abcdefgi"), line(ident="x")]))
    assert [p.split(": ", 1)[0] for p in problems] == ["app-passwords.db:1", "app-passwords.db:3"]


def test_problems_never_echo_a_label_that_may_be_a_pasted_secret():
    problems = problems_of(line(label=SHOWN.replace("-", " ")))
    assert SHOWN[9:14] not in problems[0]


def test_a_duplicate_identifier_names_the_first_line():
    problems = problems_of("\n".join([line(), "#", line("bob", "printer")]))
    assert problems == ["app-passwords.db:3: duplicate identifier abcdefgh (first on line 1)"]


def test_a_duplicate_label_names_the_first_line_and_ignores_case():
    problems = problems_of("\n".join([line("alice", "phone"), line("ALICE", "Phone", ident="bbbbbbbb")]))
    assert problems == ["app-passwords.db:2: duplicate label Phone for user alice (first on line 1)"]


def test_the_same_label_for_two_users_is_fine():
    apps = parse("\n".join([line("alice", "phone"), line("bob", "phone", ident="bbbbbbbb")]), "p")
    assert len(apps) == 2


def test_a_user_missing_from_users_db_is_not_a_parse_error_but_is_reported():  # CONTRACT.md
    apps = parse("\n".join(["# c", line("alice"), line("carol", ident="bbbbbbbb")]), "apps.db")
    users = sasl.parse(f"alice:{_argon2()}::alice@example.com\n", "users.db")
    assert unknown_users(apps, users) == ["apps.db:3: user carol is not in the users database"]


def test_parse_bytes_decodes_utf8_and_names_the_line_of_a_bad_octet():
    assert len(parse_bytes(line("jos\u00e9").encode(), "p")) == 1
    with pytest.raises(AppPasswordError) as caught:
        parse_bytes(b"# ok\n" + line().encode() + b"\n# \xff\n", "p")
    assert caught.value.problems == ["p:3: not valid UTF-8"]


def test_labels():
    assert label_problem("phone") is None and label_problem("Pixel-7.work_2") is None
    assert label_problem("7") is None and label_problem("a" * 64) is None
    assert label_problem("-x") and label_problem("a:b") and label_problem("") and label_problem("a" * 65)


# --- edits ----------------------------------------------------------------------


def test_format_line_writes_the_documented_form():
    app = entry(senders=("alice@example.com", "@x.org"))
    assert format_line(app) == f"alice:phone:{IDENT}:{HASH}:20261201T135419Z:alice@example.com,@x.org"
    assert format_line(entry(created=WHEN.astimezone(timezone(timedelta(hours=2))))).endswith(
        ":20261201T135419Z:"
    )


def test_format_line_refuses_a_naive_time():
    with pytest.raises(ValueError):
        format_line(entry(created=datetime(2026, 12, 1)))


def test_add_appends_and_keeps_comments_and_crlf_byte_for_byte():
    text = "\ufeff# apps\r\n\r\n" + format_line(entry("bob", "printer", IDENT2, HASH2)) + "\r\n# end\r\n"
    new = add(text, entry())
    assert new == text + format_line(entry()) + "\r\n"
    assert parse(new, "p").find("alice", SHOWN.encode()) is not None


def test_add_to_an_empty_file_and_one_without_a_final_newline():
    assert add("", entry()) == format_line(entry()) + "\n"
    assert add("# c", entry()) == "# c\n" + format_line(entry()) + "\n"


def test_add_reads_back_what_it_was_given():
    app = entry("Alice", senders=("Alice@Example.COM",), created=WHEN.replace(microsecond=5))
    (read,) = parse(add("", app), "p")
    assert read == entry("alice", senders=("alice@example.com",))


def test_add_refuses_a_taken_label_or_identifier_naming_its_line():
    text = "# c\n" + format_line(entry()) + "\n"
    with pytest.raises(AppPasswordError) as caught:
        add(text, entry(label="PHONE", ident=IDENT2, digest=HASH2))
    assert caught.value.problems == ["app-passwords.db:2: user alice already has an app password phone"]
    with pytest.raises(AppPasswordError) as caught:
        add(text, entry("bob", "printer"), path="apps")
    assert caught.value.problems == [f"apps:2: identifier {IDENT} already in use"]


@pytest.mark.parametrize(
    "bad, why",
    [
        (entry(label="my phone"), "bad label"),
        (entry(label="a:b"), "bad label"),
        (entry(user="#alice"), "bad user name"),
        (entry(user="a:b"), "bad user name: user name contains ':'"),
        (entry(ident="short"), "bad identifier"),
        (entry(digest="x"), "bad hash"),
        (entry(senders=("nobody",)), "bad sender"),
        (entry(senders=("a@example.com\nbob:x",)), "too many ':'"),
        (entry(senders=("a@exam\nple.com",)), "bad sender"),
        (entry(senders=("a@b.example,c@d.example",)), "would not read back"),
        (entry(senders=("",)), "would not read back"),
    ],
)
def test_add_refuses_an_entry_the_loader_would_refuse_or_misread(bad, why):
    with pytest.raises(AppPasswordError, match=why):
        add("", bad)


def test_add_refuses_to_edit_a_broken_file():
    with pytest.raises(AppPasswordError) as caught:
        add("# c\nbroken\n", entry())
    assert caught.value.problems[0].startswith("app-passwords.db:2: expected 6")


def test_delete_removes_only_that_line():
    text = "# head\r\n" + format_line(entry()) + "\r\n# mid\r\n" + line("bob", "printer") + "\r\n"
    assert delete(text, "ALICE", "Phone") == "# head\r\n# mid\r\n" + line("bob", "printer") + "\r\n"


def test_delete_of_an_absent_app_password_is_an_error():
    with pytest.raises(AppPasswordError) as caught:
        delete(line() + "\n", "alice", "tablet", path="apps")
    assert caught.value.problems == ["apps: no app password tablet for user alice"]
    with pytest.raises(AppPasswordError):
        delete(line() + "\n", "bob", "phone")


def test_delete_user_removes_all_of_a_users_lines_and_nothing_else():  # CONTRACT.md: user del revokes
    text = "\n".join(
        ["# a", line("alice"), line("bob", ident="bbbbbbbb"), "# b", line("Alice", "x", "cccccccc"), ""]
    )
    assert delete_user(text, "alice") == "\n".join(["# a", line("bob", ident="bbbbbbbb"), "# b", ""])
    assert delete_user(text, "carol") == text


def test_delete_user_refuses_a_broken_file():  # its lines could not be found for sure
    with pytest.raises(AppPasswordError):
        delete_user(line() + "\nbroken\n", "alice")


# --- senders (S-515 narrows S-601..S-603) -----------------------------------------

USER_SENDERS = ("alice@example.com", "@example.org", "x@stra\u00dfe.de", '"a b"@example.net')


@pytest.mark.parametrize(
    "sender",
    [
        "alice@example.com",
        "ALICE@Example.COM",
        "alice+phone@example.com",  # S-603 sub-address
        "bob@example.org",
        "@example.org",
        "@EXAMPLE.ORG",
        "x@stra\u00dfe.de",
        "x@xn--strae-oqa.de",  # the same domain as its A-label
        "x+tag@STRA\u00dfE.de",
        '"A B"@example.net',
    ],
)
def test_narrowing_to_a_sender_of_the_user_or_inside_one_is_allowed(sender):
    assert narrowing_problem(sender, USER_SENDERS) is None


@pytest.mark.parametrize(
    "sender, why",
    [
        ("bob@example.com", "not one of the user's senders"),
        ("@example.com", "not one of the user's senders"),  # wider than alice@example.com
        ("alice@sub.example.org", "not one of the user's senders"),  # @d does not cover subdomains
        ("x@strasse.de", "not one of the user's senders"),  # IDNA2008: another domain
        ("aliceb@example.com", "not one of the user's senders"),
        ("a@example.net", "not one of the user's senders"),
        ("nobody", "bad sender 'nobody'"),
        ("", "bad sender ''"),
    ],
)
def test_narrowing_outside_the_users_senders_is_refused(sender, why):  # CONTRACT.md app add
    assert why in (narrowing_problem(sender, USER_SENDERS) or "")


def test_nothing_narrows_a_user_without_senders():
    assert narrowing_problem("a@example.com", ()) == "the user has no permitted senders to narrow"


def test_an_app_password_without_senders_may_use_every_address():  # the user's check decides
    assert may_send_as(entry(), "anything@anywhere.example")


@pytest.mark.parametrize(
    "address, allowed",
    [
        ("alice@example.com", True),
        ("Alice@EXAMPLE.com", True),
        ("alice+list@example.com", True),
        ("alice2@example.com", False),
        ("bob@example.com", False),
        ("printer@print.example", True),
        ("PRINTER@PRINT.example", True),
        ("x@b\u00fccher.example", True),
        ("x@xn--bcher-kva.example", True),
        ("", False),
        ("@print.example", False),
        ("nobody", False),
    ],
)
def test_may_send_as_follows_s603_over_the_entrys_own_list(address, allowed):
    app = entry(senders=("alice@example.com", "@print.example", "@b\u00fccher.example"))
    assert may_send_as(app, address) is allowed


def test_sender_problems_report_lists_wider_than_the_users():
    apps = parse("\n".join([line(senders="alice@example.com"), line(label="x", ident="bbbbbbbb", senders="@example.com"),
                            line("carol", ident="cccccccc", senders="@any.example")]), "apps")  # fmt: skip
    users = sasl.parse(f"alice:{_argon2()}::alice@example.com\n", "users.db")
    assert sender_problems(apps, users) == [
        "apps:2: app password x: sender @example.com is not one of the user's senders or inside one"
    ]


# --- the example file (CONTRACT.md: documented, with a demonstration) ---------------


def _example(name: str) -> str:
    with open(os.path.join(ROOT, name), encoding="utf-8") as f:
        return f.read()


def test_the_example_file_parses_and_its_documented_secret_is_found():
    text = _example("app-passwords.db.example")
    apps = parse(text, "app-passwords.db.example")
    secret = re.search(r"has the secret\s+#?\s*`([a-z2-7-]+)`", text)
    assert secret is not None
    found = apps.find("demo", secret.group(1).encode())
    assert found is not None and found.label == "phone"
    assert (
        normalise(secret.group(1).encode()) is not None
        and len(normalise(secret.group(1).encode())) == APP_PASSWORD_CHARS
    )
    users = sasl.parse(_example("users.db.example"), "users.db.example")
    assert unknown_users(apps, users) == [] and sender_problems(apps, users) == []
    assert users.may_send_as("demo", "demo@example.com") and may_send_as(found, "demo@example.com")
    assert users.may_send_as("demo", "x@demo.example") and not may_send_as(found, "x@demo.example")


def test_the_example_files_hash_recipe_is_right():
    text = _example("app-passwords.db.example")
    recipe = re.search(r"printf 'msa-app-password-v1:%s' ([a-z2-7]+) \| sha256sum", text)
    assert recipe is not None
    (app,) = parse(text, "p")
    assert hashlib.sha256(b"msa-app-password-v1:" + recipe.group(1).encode()).hexdigest() == app.digest


def _argon2() -> str:
    return "$argon2id$v=19$m=65536,t=3,p=4$c29tZXNhbHRzb21lc2FsdA$" + "A" * 43
