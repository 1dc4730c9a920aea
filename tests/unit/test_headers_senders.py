"""Address parsing (S-702) and the header-sender check (S-602, S-1010)."""

import pytest

from headers import HeaderBlock, HeaderReader, SenderProblem, check_senders, parse_addresses


def header(data: bytes) -> HeaderBlock:
    reader = HeaderReader()
    reader.feed(data + b"\r\n")
    result = reader.finish()
    assert isinstance(result, HeaderBlock)
    return result


def value_of(line: bytes) -> bytes:
    return header(line + b"\r\n").fields[0].value()


# S-702: these must come out as written.
@pytest.mark.parametrize(
    "line, addresses",
    [
        (b"From: Alice <alice@example.com>", ["alice@example.com"]),
        (b'From: "Bob, CEO" <alice@example.com>', ["alice@example.com"]),
        (b"From: =?utf-8?q?Al=C3=AFce?= <alice@example.com>", ["alice@example.com"]),
        (b"From: alice@example.com (Alice)", ["alice@example.com"]),
        (b'From: "alice@example.com" <ceo@bank.example>', ["ceo@bank.example"]),
        (b"From: alice@example.com, ceo@bank.example", ["alice@example.com", "ceo@bank.example"]),
        (b"From: Team: alice@example.com;", ["alice@example.com"]),
    ],
)
def test_s702_examples_parse(line, addresses):  # S-702
    assert parse_addresses(value_of(line)) == addresses


# S-702: these must not parse (S-602 then answers 554 5.6.0).
@pytest.mark.parametrize(
    "line",
    [
        b"From: alice@example.com)<ceo@bank.example>",
        b"From: ceo@bank.example <alice@example.com>",
        b"From: <alice@example.com>x",
    ],
)
def test_s702_examples_do_not_parse(line):  # S-702
    assert parse_addresses(value_of(line)) is None


@pytest.mark.parametrize(
    "value, addresses",
    [
        (b' "a b"@x.org', ['"a b"@x.org']),  # quoted local part kept as written
        (b' "a\\"b"@x.org', ['"a\\"b"@x.org']),
        (b" John Q. Public <jqp@example.com>", ["jqp@example.com"]),  # obs-phrase
        (b" Alice<alice@example.com>", ["alice@example.com"]),
        (b" <alice@example.com>", ["alice@example.com"]),
        (b" < alice@example.com >", ["alice@example.com"]),
        (b" alice (x) @ example . com", ["alice@example.com"]),  # obs CFWS in addr-spec
        (b" (a (nested (deep)) comment) alice@example.com (tail)", ["alice@example.com"]),
        (b" Alice (c\\) ) <alice@example.com>", ["alice@example.com"]),
        (b" a@[192.0.2.1]", ["a@[192.0.2.1]"]),
        (b" a@[IPv6:2001:db8::1]", ["a@[IPv6:2001:db8::1]"]),
        (b" , alice@example.com,,", ["alice@example.com"]),  # obs-addr-list
        (b" Team: a@example.com, B <b@example.com>; , c@example.com",
         ["a@example.com", "b@example.com", "c@example.com"]),
        (b" Undisclosed recipients:;", []),  # RFC 6854 empty group
        (b" Team: ;", []),
        (b" =?utf-8?b?QWxpY2U=?= =?utf-8?q?_x?= <alice@example.com>", ["alice@example.com"]),
        (b' "=?utf-8?q?x?=" <alice@example.com>', ["alice@example.com"]),
        (b" =?utf-8?q?J.Doe?= <alice@example.com>", ["alice@example.com"]),
    ],
)
def test_address_forms(value, addresses):  # S-702
    assert parse_addresses(value) == addresses


@pytest.mark.parametrize(
    "value",
    [
        b"",
        b"   ",
        b" , ,",
        b" alice",
        b" Alice Smith",
        b" <alice@example.com> <ceo@bank.example>",  # two angle-addrs
        b" Alice <alice@example.com> <ceo@bank.example>",
        b" alice@example.com <ceo@bank.example>",
        b" alice@example.com ceo@bank.example",
        b" alice@example.com;",
        b" a@b@example.com",
        b" <alice@example.com",
        b" alice@example.com>",
        b' "unterminated <alice@example.com>',
        b" (unbalanced <alice@example.com>",
        b" alice@example.com (a (b)",
        b" alice@example.com)",
        b" .alice@example.com",
        b" alice.@example.com",
        b" al..ice@example.com",
        b" alice@example..com",
        b" alice@.example.com",
        b" alice@",
        b" @example.com",
        b" <>",
        b" <@route.example:alice@example.com>",  # obs-route refused
        b" A: B: c@example.com;;",  # no group in a group
        b" Team: a@example.com",  # group not closed
        b" . Alice <alice@example.com>",
        b" =?utf-8?q?ceo?=@bank.example",  # RFC 2047 §5: none in an addr-spec
        b" alice@=?utf-8?q?x?=.example",
        b" =?utf-8?q?a@b?= <alice@example.com>",
        b" alice@[192.0.2.1 ]",
        b" alice@[x@y]",
        b" ali\x00ce@example.com",
        b" alice@example.com\r\nBcc: x@y.example",
        b" \xff <alice@example.com>",  # not UTF-8 (RFC 6532)
        b" \xc2\x85 <alice@example.com>",  # C1 control
    ],
)
def test_values_that_do_not_parse(value):  # S-702
    assert parse_addresses(value) is None


def test_utf8_addresses():  # RFC 6532
    value = " Jörg <jörg@bücher.example>, δοκιμή@παράδειγμα.δοκιμή".encode()
    assert parse_addresses(value) == ["jörg@bücher.example", "δοκιμή@παράδειγμα.δοκιμή"]
    assert parse_addresses(' "Zoë" <zoe@xn--bcher-kva.example>'.encode()) == [
        "zoe@xn--bcher-kva.example"
    ]


def test_folded_from_field():  # RFC 5322 §2.2.3
    b = header(b"From: Alice\r\n <alice@example.com>,\r\n\tbob@example.com\r\n")
    assert parse_addresses(b.fields[0].value()) == ["alice@example.com", "bob@example.com"]


def test_deep_comment_nesting_is_fine():
    value = b" " + b"(" * 100_000 + b")" * 100_000 + b" alice@example.com"
    assert parse_addresses(value) == ["alice@example.com"]
    assert parse_addresses(b" " + b"(" * 100_000 + b" alice@example.com") is None


# -- check_senders ------------------------------------------------------------

OWNED = {"alice@example.com", "a@[192.0.2.1]", "jörg@bücher.example"}


def allowed(address: str) -> bool:
    return address in OWNED


def check(data: bytes) -> SenderProblem | None:
    return check_senders(header(data), allowed)


def test_owned_from_passes():  # S-602
    assert check(b"From: Alice <alice@example.com>\r\nSubject: x\r\n") is None
    assert check(b"fROM: alice@example.com\r\n") is None  # names case-insensitive
    assert check("From: Jörg <jörg@bücher.example>\r\n".encode()) is None
    assert check(b"From: a@[192.0.2.1]\r\n") is None  # address literal qualifies


def test_no_from_is_left_to_fix():  # S-705
    assert check(b"Subject: x\r\n") is None


@pytest.mark.parametrize(
    "data, address, field",
    [
        (b"From: ceo@bank.example\r\n", "ceo@bank.example", "From"),
        (b'From: "alice@example.com" <ceo@bank.example>\r\n', "ceo@bank.example", "From"),
        (b"From: alice@example.com, ceo@bank.example\r\n", "ceo@bank.example", "From"),
        (b"From: Team: alice@example.com, ceo@bank.example;\r\n", "ceo@bank.example", "From"),
        (b"From: alice@example.com\r\nSender: ceo@bank.example\r\n", "ceo@bank.example", "Sender"),
        (b"From: alice@example.com\r\nResent-From: x@bank.example\r\n", "x@bank.example",
         "Resent-From"),
        (b"Resent-Sender: y@bank.example\r\n", "y@bank.example", "Resent-Sender"),
        (b"From: ALICE@example.com\r\n", "ALICE@example.com", "From"),  # allowed() decides case
    ],
)
def test_not_owned(data, address, field):  # S-602, S-1010
    assert check(data) == SenderProblem("not_owned", address=address, field=field)


@pytest.mark.parametrize(
    "data, field",
    [
        (b"From: alice@example.com\r\nFrom: alice@example.com\r\n", "From"),  # duplicate From
        (b"From: alice@example.com\r\nfrom: ceo@bank.example\r\n", "From"),
        (b"Sender: alice@example.com\r\nSender: alice@example.com\r\n", "Sender"),
        (b"From: Undisclosed:;\r\n", "From"),  # From: without a mailbox
        (b"From:\r\n", "From"),
        (b"From: alice@localhost\r\n", "From"),  # not fully qualified
        (b"From: ceo@bank.example <alice@example.com>\r\n", "From"),  # S-702
        (b"From: alice@example.com)<ceo@bank.example>\r\n", "From"),
        (b"From: <alice@example.com>x\r\n", "From"),
        (b"From: alice@example.com\r\nSender: alice@example.com, alice@example.com\r\n",
         "Sender"),
        (b"From: alice@example.com\r\nSender: G:;\r\n", "Sender"),
        (b"From: alice@example.com\r\nResent-From: bad <\r\n", "Resent-From"),
        (b"From: alice@example.com\r\nResent-Sender: x\r\n", "Resent-Sender"),
        (b"From: \xff <alice@example.com>\r\n", "From"),
    ],
)
def test_unverifiable(data, field):  # S-602
    assert check(data) == SenderProblem("unverifiable", field=field)


def test_unverifiable_wins_over_not_owned_whatever_the_order():  # S-602
    assert check(b"From: ceo@bank.example\r\nSender: <broken\r\n") == SenderProblem(
        "unverifiable", field="Sender"
    )


def test_resent_fields_may_repeat():  # RFC 5322 §3.6.6
    data = b"From: alice@example.com\r\nResent-From: alice@example.com\r\n" * 1
    data += b"Resent-From: alice@example.com\r\n"
    assert check(data) is None


def test_allowed_sees_every_mailbox_in_order():  # S-602
    seen: list[str] = []

    def record(address: str) -> bool:
        seen.append(address)
        return True

    data = (
        b"From: Alice <alice@example.com>, Team: b@example.com, c@example.com;\r\n"
        b"Sender: s@example.com\r\nResent-From: r@example.com\r\n"
    )
    assert check_senders(header(data), record) is None
    assert seen == ["alice@example.com", "b@example.com", "c@example.com", "s@example.com",
                    "r@example.com"]
