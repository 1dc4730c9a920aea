"""Command-line parsing as pure functions: paths and ESMTP parameters (SPEC.md S-204..S-206)."""

from __future__ import annotations

import pytest

from smtp_states import replies as R
from smtp_states.commands import (
    MailParams,
    Path,
    RcptParams,
    has_bad_character,
    is_http,
    parse_mail_params,
    parse_path,
    parse_rcpt_params,
    split_line,
    split_path_and_params,
    verb_and_argument,
)

LABEL63 = "a" * 63


def mail(raw: bytes | str, *, utf8: bool = False, bare: bool = False) -> Path | str:
    b = raw.encode() if isinstance(raw, str) else raw
    return parse_path(b, null_ok=True, utf8_ok=utf8, bare_ok=bare)


def rcpt(raw: bytes | str, *, utf8: bool = False, bare: bool = False) -> Path | str:
    b = raw.encode() if isinstance(raw, str) else raw
    return parse_path(b, null_ok=False, utf8_ok=utf8, bare_ok=bare)


# =============================================================================
# Lines and verbs (S-101, S-103, S-107)
# =============================================================================


@pytest.mark.parametrize(
    ("line", "text"), [(b"NOOP\r\n", b"NOOP"), (b"NOOP\n", b"NOOP"), (b"NOOP\r\r\n", b"NOOP\r")]
)
def test_split_line_strips_one_ending(line, text):  # S-101
    assert split_line(line) == text


@pytest.mark.parametrize("text", [b"a\rb", b"a\x00", b"\x01", b"x\x1f", b"\x7f", b"a\nb"])
def test_controls_are_bad_characters(text):  # S-101
    assert has_bad_character(text)


@pytest.mark.parametrize("text", [b"MAIL FROM:<a@example.com> SIZE=10", b"", b"~!@#$%^&*()"])
def test_printable_ascii_is_not_bad(text):  # S-101
    assert not has_bad_character(text)


@pytest.mark.parametrize(
    ("text", "verb", "arg"),
    [
        (b"ehlo client.example", "EHLO", b"client.example"),
        (b"Mail FROM:<a@b.example>", "MAIL", b"FROM:<a@b.example>"),
        (b"NOOP", "NOOP", b""),
        (b"NOOP   x  ", "NOOP", b"x"),
        (b"", "", b""),
    ],
)
def test_verbs_are_upper_cased(text, verb, arg):  # S-103
    assert verb_and_argument(text) == (verb, arg)


def test_non_ascii_verb_is_never_a_known_verb():  # S-103
    verb, _ = verb_and_argument("MÄIL FROM:<a@b.example>".encode())
    assert verb not in ("MAIL", "MÄIL")


@pytest.mark.parametrize(
    "text", [b"GET / HTTP/1.1", b"post /x", b"PUT a", b"HEAD /", b"CONNECT h:443 HTTP/1.1", b"OPTIONS *"]
)
def test_http_methods_are_recognised(text):  # S-107
    assert is_http(text)


@pytest.mark.parametrize("text", [b"GETX", b"GET", b"EHLO GET", b"POSTMASTER", b"HELP"])
def test_other_lines_are_not_http(text):  # S-107
    assert not is_http(text)


# =============================================================================
# split_path_and_params (S-204, S-205)
# =============================================================================


@pytest.mark.parametrize(
    ("arg", "prefix", "expected"),
    [
        (b"FROM:<a@example.com>", b"FROM:", (b"<a@example.com>", [])),
        (b"from:<a@example.com>", b"FROM:", (b"<a@example.com>", [])),
        (b"FROM: <a@example.com>", b"FROM:", (b"<a@example.com>", [])),
        (
            b"FROM:   <a@example.com>  SIZE=1   BODY=7BIT ",
            b"FROM:",
            (b"<a@example.com>", [b"SIZE=1", b"BODY=7BIT"]),
        ),
        (b"FROM:<>", b"FROM:", (b"<>", [])),
        (b"FROM:<> SMTPUTF8", b"FROM:", (b"<>", [b"SMTPUTF8"])),
        (b"TO:<b@example.org>", b"TO:", (b"<b@example.org>", [])),
        (b"To:<postmaster>", b"TO:", (b"<postmaster>", [])),
        (b'FROM:<"a>b"@example.com>', b"FROM:", (b'<"a>b"@example.com>', [])),
        (b'FROM:<"a\\">b"@example.com> X', b"FROM:", (b'<"a\\">b"@example.com>', [b"X"])),
        (b"FROM:<@r.example:a@example.com>", b"FROM:", (b"<@r.example:a@example.com>", [])),
    ],
)
def test_path_and_params_are_split(arg, prefix, expected):  # S-204
    assert split_path_and_params(arg, prefix) == expected


@pytest.mark.parametrize(
    ("arg", "prefix"),
    [
        (b"FROM:a@example.com", b"FROM:"),  # no brackets
        (b"FROM:<a@example.com", b"FROM:"),  # unterminated
        (b'FROM:<"a@example.com>', b"FROM:"),  # quote never closed
        (b"FROM:<a@example.com>SIZE=1", b"FROM:"),  # no space before the parameters
        (b"FROM <a@example.com>", b"FROM:"),
        (b"FROM", b"FROM:"),
        (b"", b"FROM:"),
        (b"TO:<a@example.com>", b"FROM:"),
        (b"FROM:<a@example.com>", b"TO:"),
    ],
)
def test_unsplittable_arguments(arg, prefix):  # S-204
    assert split_path_and_params(arg, prefix) is None


# =============================================================================
# parse_path (S-206)
# =============================================================================


def test_null_path_at_mail():  # S-206
    assert mail("<>") == Path("", "", "", False, False)


def test_null_path_not_at_rcpt():  # S-206
    assert rcpt("<>") == "syntax"


@pytest.mark.parametrize(
    ("raw", "address", "local", "domain", "literal"),
    [
        ("<alice@example.com>", "alice@example.com", "alice", "example.com", False),
        ("<Alice@Example.COM>", "Alice@Example.COM", "Alice", "Example.COM", False),
        ("<@r1.example,@r2.example:alice@example.com>", "alice@example.com", "alice", "example.com", False),
        ("<@r1.example:alice@example.com>", "alice@example.com", "alice", "example.com", False),
        ("<alice@[192.0.2.1]>", "alice@[192.0.2.1]", "alice", "[192.0.2.1]", True),
        ("<alice@[IPv6:2001:db8::1]>", "alice@[IPv6:2001:db8::1]", "alice", "[IPv6:2001:db8::1]", True),
        ("<alice@[ipv6:::1]>", "alice@[ipv6:::1]", "alice", "[ipv6:::1]", True),
        ('<"john doe"@example.com>', '"john doe"@example.com', '"john doe"', "example.com", False),
        ('<"a\\"b"@example.com>', '"a\\"b"@example.com', '"a\\"b"', "example.com", False),
        ('<"a@b"@example.com>', '"a@b"@example.com', '"a@b"', "example.com", False),
        ('<""@example.com>', '""@example.com', '""', "example.com", False),
        ("<a.b-c_d+e@x-y.example>", "a.b-c_d+e@x-y.example", "a.b-c_d+e", "x-y.example", False),
        ("<a@localhost>", "a@localhost", "a", "localhost", False),
    ],
)
def test_valid_paths(raw, address, local, domain, literal):  # S-206
    path = mail(raw)
    assert isinstance(path, Path)
    assert (path.address, path.local, path.domain, path.literal, path.utf8) == (
        address,
        local,
        domain,
        literal,
        False,
    )


@pytest.mark.parametrize(
    ("raw", "qualified"),
    [
        ("<a@example.com>", True),
        ("<a@[192.0.2.1]>", True),
        ("<a@[IPv6:2001:db8::1]>", True),
        ("<a@localhost>", False),
        ("<a@example>", False),
    ],
)
def test_fully_qualified_domains(raw, qualified):  # S-206, RFC 6409 §4.2
    path = mail(raw)
    assert isinstance(path, Path) and path.qualified is qualified


@pytest.mark.parametrize(
    "raw",
    [
        "",
        "<",
        ">",
        "alice@example.com",
        "<alice@example.com",
        "<alice>",  # bare local part: not for everyone
        "<@example.com>",
        "<alice@>",
        "<alice@@example.com>",
        "<al ice@example.com>",
        "<.alice@example.com>",
        "<alice.@example.com>",
        "<al..ice@example.com>",
        "<al(ice@example.com>",
        "<alice@exa_mple.com>",
        "<alice@-example.com>",
        "<alice@example-.com>",
        "<alice@example..com>",
        "<alice@.example.com>",
        "<alice@example.com.>",
        "<alice@[192.0.2.256]>",
        "<alice@[192.0.2]>",
        "<alice@[IPv6:2001:db8::zz]>",
        "<alice@[IPv6:192.0.2.1]>",
        # S-206, S-1004: no zone ID, no General-address-literal: their text
        # may hold what an MTA's sendmail reads as more addresses.
        "<x@[IPv6:::1%x]>",
        "<x@[IPv6:::1%x],example.test!bob>",
        "<x@[IPv6:fe80::1%25eth0]>",
        "<x@[tag:text]>",
        "<x@[x-tag:a,b(c)!d]>",
        "<@[tag:x]:alice@example.com>",
        "<alice@[ IPv6:::1]>",
        "<alice@[192.0.2.1>",
        "<alice@192.0.2.1]>",
        "<@relay.example alice@example.com>",
        "<@relay.example:>",
        "<@:alice@example.com>",
        "<relay.example:alice@example.com>",
        "<@bad_relay:alice@example.com>",
        '<"a"b"@example.com>',
        '<"a\x01"@example.com>',
        "<a@" + "b" * 64 + ".example>",
    ],
)
def test_invalid_paths(raw):  # S-206
    assert mail(raw) == "syntax"


def test_local_part_length_limit():  # S-206: local part ≤ 64
    assert isinstance(mail("<" + "l" * 64 + "@example.com>"), Path)
    assert mail("<" + "l" * 65 + "@example.com>") == "syntax"


def test_path_length_limit():  # S-206: path ≤ 256 octets
    domain = ".".join([LABEL63, "b" * 63, "c" * 63, "d" * 59])  # 251 octets
    assert isinstance(mail("<ab@" + domain + ">"), Path)  # 256 with the brackets
    assert mail("<abc@" + domain + ">") == "syntax"  # 257


def test_domain_length_limit():  # S-206: domain ≤ 255 octets (the path limit is reached first)
    domain = ".".join([LABEL63] * 4)  # 255 octets
    assert len(domain) == 255
    assert mail("<a@" + domain + ">") == "syntax"
    assert mail("<a@" + domain + "x>") == "syntax"


def test_bare_local_part_when_allowed():  # S-206
    assert mail("<root>", bare=True) == Path("root", "root", "", False, False)
    assert rcpt("<root>", bare=True) == Path("root", "root", "", False, False)
    assert rcpt("<root>", bare=False) == "syntax"


@pytest.mark.parametrize("raw", ["<postmaster>", "<POSTMASTER>", "<PostMaster>"])
def test_postmaster_is_always_allowed(raw):  # S-205
    path = rcpt(raw, bare=False)
    assert isinstance(path, Path) and path.address == raw[1:-1] and path.domain == ""


@pytest.mark.parametrize(
    "raw",
    [
        "<-oQ@example.com>",
        "<-f@example.com>",
        '<"-x"@example.com>',
        "<@r.example:-x@example.com>",
    ],
)
def test_leading_dash_is_refused(raw):  # S-206, S-1004
    assert mail(raw) == "dash"
    assert rcpt(raw) == "dash"


def test_leading_dash_in_bare_local_part_is_refused():  # S-206
    assert mail("<-root>", bare=True) == "dash"


def test_dash_inside_is_fine():  # S-206
    assert isinstance(mail("<a-b@example.com>"), Path)


@pytest.mark.parametrize("raw", ["<jörg@example.com>", "<a@bücher.example>", '<"jö rg"@example.com>'])
def test_utf8_needs_smtputf8(raw):  # S-206, RFC 6531 §3.5
    assert mail(raw) == "utf8"
    path = mail(raw, utf8=True)
    assert isinstance(path, Path) and path.utf8


def test_invalid_utf8_is_refused():  # S-206: UTF-8 "must be valid"
    assert mail(b"<j\xc3rg@example.com>", utf8=True) == "syntax"
    assert mail(b"<j\xffrg@example.com>", utf8=False) in ("utf8", "syntax")


def test_utf8_length_counts_octets():  # S-206: limits are in octets
    assert isinstance(mail("<" + "é" * 32 + "@example.com>", utf8=True), Path)  # 64 octets
    assert mail("<" + "é" * 32 + "x@example.com>", utf8=True) == "syntax"  # 65 octets


# =============================================================================
# parse_mail_params (S-204, S-202)
# =============================================================================

MAX = 1000


def params(*items: bytes, esmtp: bool = True) -> MailParams | R.Reply:
    return parse_mail_params(list(items), MAX, esmtp)


def test_no_parameters():  # S-204
    assert params() == MailParams()
    assert params(esmtp=False) == MailParams()


@pytest.mark.parametrize(
    ("items", "expected"),
    [
        ((b"SIZE=0",), MailParams(size=0)),
        ((b"SIZE=1000",), MailParams(size=1000)),
        ((b"size=12",), MailParams(size=12)),
        ((b"BODY=7BIT",), MailParams(body="7BIT")),
        ((b"body=8bitmime",), MailParams(body="8BITMIME")),
        ((b"SMTPUTF8",), MailParams(smtputf8=True)),
        ((b"smtputf8",), MailParams(smtputf8=True)),
        ((b"AUTH=<>",), MailParams()),
        ((b"AUTH=alice+40example.com",), MailParams()),
        ((b"SIZE=5", b"BODY=8BITMIME", b"SMTPUTF8", b"AUTH=<>"), MailParams(5, "8BITMIME", True)),
    ],
)
def test_supported_parameters(items, expected):  # S-204, S-103
    assert params(*items) == expected


def test_size_over_the_limit():  # S-204
    assert params(b"SIZE=1001") == R.SIZE_EXCEEDED
    assert params(b"SIZE=" + b"9" * 20) == R.SIZE_EXCEEDED


@pytest.mark.parametrize(
    "items",
    [
        (b"SIZE=1", b"SIZE=1"),
        (b"SIZE=1", b"size=2"),
        (b"BODY=7BIT", b"body=7bit"),
        (b"SMTPUTF8", b"SMTPUTF8"),
        (b"AUTH=<>", b"AUTH=<>"),
        (b"SIZE",),
        (b"SIZE=",),
        (b"SIZE=x",),
        (b"SIZE=-1",),
        (b"SIZE=+1",),
        (b"SIZE=1.5",),
        (b"SIZE=" + b"9" * 21,),
        (b"BODY",),
        (b"BODY=",),
        (b"BODY=BINARYMIME",),
        (b"SMTPUTF8=1",),
        (b"AUTH",),
        (b"AUTH=",),
        (b"AUTH=a+zz",),  # xtext: "+" and two upper-case hex digits
        (b"=1",),
        (b"-X=1",),
        (b"S\xc3\x8dZE=1",),
    ],
)
def test_repeated_or_malformed_parameters(items):  # S-204
    reply = params(*items)
    assert isinstance(reply, R.Reply) and (reply.code, reply.enhanced) == (501, "5.5.4")


@pytest.mark.parametrize(
    "item",
    [
        b"RET=FULL",
        b"RET=HDRS",
        b"ENVID=QQ314159",
        b"NOTIFY=NEVER",
        b"ORCPT=rfc822;a@example.com",
        b"XVERP",
        b"MT-PRIORITY=1",
    ],
)
def test_unsupported_parameters(item):  # S-202, S-204
    assert params(item) == R.UNSUPPORTED_PARAMETER
    assert str(R.UNSUPPORTED_PARAMETER) == "555 5.5.4 Unsupported parameter"


@pytest.mark.parametrize("item", [b"SIZE=10", b"BODY=8BITMIME", b"SMTPUTF8", b"AUTH=<>"])
def test_no_parameters_after_helo(item):  # S-202
    assert params(item, esmtp=False) == R.UNSUPPORTED_PARAMETER


# =============================================================================
# DSN parameters (S-809), only while DSN is offered
# =============================================================================


@pytest.mark.parametrize(
    ("items", "ret", "envid"),
    [
        ((b"RET=FULL",), "FULL", None),
        ((b"ret=hdrs", b"ENVID=<id.1@example.org>"), "HDRS", "<id.1@example.org>"),
        ((b"ENVID=a+2Bb",), None, "a+2Bb"),
        ((b"ENVID=" + b"x" * 100,), None, "x" * 100),
    ],
)
def test_dsn_mail_parameters(items, ret, envid):  # S-809
    got = parse_mail_params(list(items), MAX, True, dsn=True)
    assert isinstance(got, MailParams) and (got.ret, got.envid) == (ret, envid)


@pytest.mark.parametrize(
    "items",
    [(b"RET=ALL",), (b"RET",), (b"RET=FULL", b"RET=HDRS"), (b"ENVID=",), (b"ENVID=" + b"x" * 101,),
     (b"ENVID=a b",), (b"ENVID=a+zz",), (b"ENVID=a=b",)],
)
def test_bad_dsn_mail_parameters(items):  # S-809: 501 5.5.4
    assert parse_mail_params(list(items), MAX, True, dsn=True) == R.BAD_PARAMETER


@pytest.mark.parametrize(
    ("items", "notify", "orcpt"),
    [
        ((b"NOTIFY=NEVER",), "NEVER", None),
        ((b"notify=success,failure,delay",), "SUCCESS,FAILURE,DELAY", None),
        ((b"NOTIFY=DELAY",), "DELAY", None),
        ((b"ORCPT=rfc822;bob@example.org",), None, "rfc822;bob@example.org"),
        ((b"ORCPT=RFC822;b+2Bx@example.org", b"NOTIFY=FAILURE"), "FAILURE", "rfc822;b+2Bx@example.org"),
    ],
)
def test_dsn_rcpt_parameters(items, notify, orcpt):  # S-809
    assert parse_rcpt_params(list(items), dsn=True) == RcptParams(notify, orcpt)


@pytest.mark.parametrize(
    "items",
    [(b"NOTIFY=",), (b"NOTIFY=NEVER,SUCCESS",), (b"NOTIFY=SUCCESS,SUCCESS",), (b"NOTIFY=ALWAYS",),
     (b"NOTIFY=NEVER", b"NOTIFY=NEVER"), (b"ORCPT=bob@example.org",), (b"ORCPT=x400;bob",),
     (b"ORCPT=rfc822;",), (b"ORCPT=rfc822;a b",), (b"ORCPT=rfc822;" + b"x" * 500,)],
)
def test_bad_dsn_rcpt_parameters(items):  # S-809: 501 5.5.4
    assert parse_rcpt_params(list(items), dsn=True) == R.BAD_PARAMETER


# S-809 (amended): the decoded xtext of ENVID and ORCPT is printable US-ASCII
# only, RFC 3461 §4.4 and §4.2; "+" is always followed by two upper-case hex
# digits (RFC 3461 §4). Postfix's smtpd refuses the rest with 501 5.5.4 at MAIL
# or RCPT; accepting them here meant the MTA refused the whole message later.
NOT_PRINTABLE_XTEXT = [b"a+00b", b"a+01b", b"a+09b", b"a+0Ab", b"a+0D+0Ab", b"a+1Fb", b"a+7Fb", b"a+80b",
                       b"caf+C3+A9", b"+FF"]
MALFORMED_XTEXT = [b"a+", b"a+4", b"a+2b", b"a+g0", b"a+ 20", b"a+2B+"]


@pytest.mark.parametrize("xtext", NOT_PRINTABLE_XTEXT + MALFORMED_XTEXT)
def test_envid_must_decode_to_printable_ascii(xtext):  # S-809 amended, RFC 3461 §4.4
    assert parse_mail_params([b"ENVID=" + xtext], MAX, True, dsn=True) == R.BAD_PARAMETER
    assert str(R.BAD_PARAMETER).startswith("501 5.5.4 ")


@pytest.mark.parametrize("xtext", NOT_PRINTABLE_XTEXT + MALFORMED_XTEXT)
def test_orcpt_must_decode_to_printable_ascii(xtext):  # S-809 amended, RFC 3461 §4.2
    assert parse_rcpt_params([b"ORCPT=rfc822;bob" + xtext + b"@example.org"], dsn=True) == R.BAD_PARAMETER


@pytest.mark.parametrize("xtext", [b"a+20b", b"+2B+3D", b"+7E", b"+21x", b"a+41"])
def test_printable_hexchars_pass_unchanged(xtext):  # S-809, RFC 3461 §4: space and "~" are printable
    got = parse_mail_params([b"ENVID=" + xtext], MAX, True, dsn=True)
    assert isinstance(got, MailParams) and got.envid == xtext.decode()
    orcpt = b"rfc822;b" + xtext + b"@example.org"
    assert parse_rcpt_params([b"ORCPT=" + orcpt], dsn=True) == RcptParams(None, orcpt.decode())


@pytest.mark.parametrize("items", [(b"NOTIFY=NEVER",), (b"ORCPT=rfc822;b@x.example",), (b"FOO=1",)])
def test_rcpt_parameters_without_dsn_are_unsupported(items):  # S-202, S-205
    assert parse_rcpt_params(list(items), dsn=False) == R.UNSUPPORTED_PARAMETER
    assert parse_mail_params([b"RET=FULL"], MAX, True, dsn=False) == R.UNSUPPORTED_PARAMETER
