"""fix() and Received: (S-704 to S-707, S-1005)."""

import dataclasses
import os
import re
from datetime import datetime, timedelta, timezone
from email import policy
from email.headerregistry import HeaderRegistry
from email.parser import BytesParser
from email.utils import parsedate_to_datetime

import pytest

from headers import (
    FixContext,
    HeaderBlock,
    HeaderReader,
    SenderProblem,
    fix,
    received_field,
)

CET = timezone(timedelta(hours=1))
NOW = datetime(2026, 11, 25, 18, 48, 3, tzinfo=CET)
DATE = "Wed, 25 Nov 2026 18:48:03 +0100"
TLS = "TLSv1.3 with cipher TLS_AES_256_GCM_SHA384"

CTX = FixContext(
    hostname="mail.example.net",
    queue_id="4F1C2A9B0D",
    helo="laptop.example.org",
    esmtp=True,
    client_ip="192.0.2.1",
    tls=TLS,
    authenticated=True,
    smtputf8=False,
    sender="alice@example.com",
    recipients=("rcpt@example.org",),
    received_client=True,
    now=NOW,
    random=bytes(range(8)),
)


def ctx(**changes) -> FixContext:
    return dataclasses.replace(CTX, **changes)


def block(data: bytes) -> HeaderBlock:
    reader = HeaderReader()
    reader.feed(data)
    result = reader.finish()
    assert isinstance(result, HeaderBlock)
    return result


def fixed(data: bytes, context: FixContext = CTX) -> bytes:
    result = fix(block(data), context)
    assert isinstance(result, bytes)
    assert_well_formed(result)
    return result


FIELD_LINE = re.compile(rb"[\x21-\x39\x3b-\x7e]+[ \t]*:")


def assert_well_formed(header: bytes) -> None:
    """Every line a field or a continuation, CRLF only, an empty line last,
    no line over 998 octets (RFC 5322 §2.1.1, §2.2)."""
    assert header.endswith(b"\r\n\r\n")
    lines = header[:-4].split(b"\r\n")
    assert all(b"\r" not in line and b"\n" not in line for line in lines)
    assert b"\x00" not in header
    assert FIELD_LINE.match(lines[0])
    for line in lines:
        assert len(line) <= 998
        assert line[:1] in (b" ", b"\t") or FIELD_LINE.match(line), line


def field_names(header: bytes) -> list[str]:
    return [f.name for f in block(header).fields]


def parsed(header: bytes):
    return BytesParser(policy=policy.default).parsebytes(header)


# -- Received: ----------------------------------------------------------------

def test_received_esmtpsa_exact():  # S-706
    assert received_field(CTX) == (
        "Received: from laptop.example.org ([192.0.2.1])\r\n"
        f"\t(using {TLS})\r\n"
        "\tby mail.example.net (msa) with ESMTPSA id 4F1C2A9B0D\r\n"
        f"\tfor <rcpt@example.org>; {DATE}\r\n"
    ).encode()


@pytest.mark.parametrize(
    "changes, protocol",
    [
        ({}, "ESMTPSA"),
        ({"authenticated": False}, "ESMTPS"),
        ({"tls": None}, "ESMTPA"),
        ({"tls": None, "authenticated": False}, "ESMTP"),
        ({"tls": None, "authenticated": False, "esmtp": False}, "SMTP"),
        ({"smtputf8": True}, "UTF8SMTPSA"),
        ({"smtputf8": True, "authenticated": False}, "UTF8SMTPS"),
        ({"smtputf8": True, "tls": None}, "UTF8SMTPA"),
        ({"smtputf8": True, "tls": None, "authenticated": False}, "UTF8SMTP"),
    ],
)
def test_received_with_keyword(changes, protocol):  # S-706, RFC 3848, RFC 6531 §3.7.3
    text = received_field(ctx(**changes)).decode()
    assert f"\tby mail.example.net (msa) with {protocol} id 4F1C2A9B0D\r\n" in text
    assert ("(using " in text) == (ctx(**changes).tls is not None)


def test_received_esmtp_without_tls_exact():  # S-706
    assert received_field(ctx(tls=None, authenticated=False)) == (
        "Received: from laptop.example.org ([192.0.2.1])\r\n"
        "\tby mail.example.net (msa) with ESMTP id 4F1C2A9B0D\r\n"
        f"\tfor <rcpt@example.org>; {DATE}\r\n"
    ).encode()


def test_received_smtp_after_helo_exact():  # S-706
    assert received_field(ctx(tls=None, authenticated=False, esmtp=False)) == (
        "Received: from laptop.example.org ([192.0.2.1])\r\n"
        "\tby mail.example.net (msa) with SMTP id 4F1C2A9B0D\r\n"
        f"\tfor <rcpt@example.org>; {DATE}\r\n"
    ).encode()


def test_received_utf8smtpsa_exact():  # S-706, RFC 6531 §3.7.3
    assert received_field(ctx(smtputf8=True, recipients=("jörg@bücher.example",))) == (
        "Received: from laptop.example.org ([192.0.2.1])\r\n"
        f"\t(using {TLS})\r\n"
        "\tby mail.example.net (msa) with UTF8SMTPSA id 4F1C2A9B0D\r\n"
        f"\tfor <jörg@bücher.example>; {DATE}\r\n"
    ).encode()


def test_received_without_client_exact():  # S-706: received_client = no
    assert received_field(ctx(received_client=False)) == (
        "Received: by mail.example.net (msa) with ESMTPSA id 4F1C2A9B0D\r\n"
        f"\t(using {TLS})\r\n"
        f"\tfor <rcpt@example.org>; {DATE}\r\n"
    ).encode()
    assert received_field(ctx(received_client=False, tls=None, recipients=())) == (
        "Received: by mail.example.net (msa) with ESMTPA id 4F1C2A9B0D;\r\n"
        f"\t{DATE}\r\n"
    ).encode()
    assert b"192.0.2.1" not in received_field(ctx(received_client=False))
    assert b"laptop" not in received_field(ctx(received_client=False))


@pytest.mark.parametrize("recipients", [(), ("a@example.org", "b@example.org")])
def test_for_only_with_one_recipient(recipients):  # S-706
    assert received_field(ctx(recipients=recipients)) == (
        "Received: from laptop.example.org ([192.0.2.1])\r\n"
        f"\t(using {TLS})\r\n"
        "\tby mail.example.net (msa) with ESMTPSA id 4F1C2A9B0D;\r\n"
        f"\t{DATE}\r\n"
    ).encode()


@pytest.mark.parametrize(
    "client_ip, shown",
    [
        ("2001:db8::1", "[IPv6:2001:db8::1]"),
        ("2001:0db8:0000:0000:0000:0000:0000:0001", "[IPv6:2001:db8::1]"),
        ("::ffff:192.0.2.1", "[192.0.2.1]"),  # S-109
        ("fe80::1%eth0", "[IPv6:fe80::1]"),
        ("unknown", "unknown"),
        ("1.2.3.4\r\nBcc: x", "unknown"),
    ],
)
def test_received_client_address(client_ip, shown):  # S-706
    first = received_field(ctx(client_ip=client_ip)).split(b"\r\n")[0].decode()
    assert first == f"Received: from laptop.example.org ({shown})"


@pytest.mark.parametrize(
    "helo, clause",
    [
        ("laptop.example.org", "from laptop.example.org ([192.0.2.1])"),
        ("localhost", "from localhost ([192.0.2.1])"),
        ("[192.0.2.1]", "from [192.0.2.1] ([192.0.2.1])"),
        ("[IPv6:2001:db8::1]", "from [IPv6:2001:db8::1] ([192.0.2.1])"),
        ("192.0.2.1", "from [192.0.2.1] (helo=192.0.2.1)"),
        ("[300.1.1.1]", "from [192.0.2.1] (helo=?300.1.1.1?)"),
        ("[IPv6:fe80::1%25eth0]", "from [192.0.2.1] (helo=?IPv6:fe80::1?25eth0?)"),
        ("under_score.example", "from [192.0.2.1] (helo=under?score.example)"),
        ("-bad.example", "from [192.0.2.1] (helo=-bad.example)"),
        ("trailing.dot.", "from [192.0.2.1] (helo=trailing.dot.)"),
        ("", "from [192.0.2.1] (helo=)"),
        ("bücher.example", "from [192.0.2.1] (helo=b??cher.example)"),
        ("a" * 64 + ".example", "from [192.0.2.1] (helo=" + "a" * 64 + ")"),
        (".".join(["a" * 63] * 4), "from " + ".".join(["a" * 63] * 4) + " ([192.0.2.1])"),
        (".".join(["a" * 63] * 5), "from [192.0.2.1] (helo=" + "a" * 63 + ".)"),  # > 255
        (None, "from [192.0.2.1]"),
    ],
)
def test_received_helo(helo, clause):  # S-707
    first = received_field(ctx(helo=helo)).split(b"\r\n")[0].decode()
    assert first == f"Received: {clause}"


@pytest.mark.parametrize(
    "changes",
    [
        {"helo": "evil\r\nBcc: victim@example.org"},
        {"helo": "evil\nX-Injected: 1\x00\r"},
        {"helo": "a\u2028b\u0085c\x7f"},
        {"helo": "\udcff\udc0d\udc0aX: y"},
        {"tls": "TLSv1.3\r\nX-Injected: 1"},
        {"tls": "x) (y\\"},
        {"hostname": "host\r\nX-Injected: 1"},
        {"queue_id": "Q\r\nX-Injected: 1"},
        {"recipients": ("v@example.org>\r\nX-Injected: 1",)},
        {"recipients": ("v\u2028@example.org",), "smtputf8": True},
    ],
)
def test_hostile_strings_never_make_a_header_line(changes):  # S-1005, S-707
    out = fixed(b"Subject: hi\r\n\r\n", ctx(**changes))
    assert field_names(out) == ["Received", "Subject", "Date", "Message-ID", "From"]
    assert b"\r\nX-Injected" not in out and b"\r\nBcc" not in out
    text = out.decode("utf-8")
    assert "\u2028" not in text and "\x85" not in text and "\x7f" not in text


@pytest.mark.parametrize(
    "sender",
    ["x@example.org>\r\nX-Injected: 1", "x\r\n@example.org", "x@exa\x00mple.org", "a@b@c.example",
     "\udcff@example.org", "x" * 990 + "@example.org"],
)
def test_envelope_sender_that_cannot_be_written_as_from(sender):  # S-1005, S-705
    assert fix(block(b"Subject: hi\r\n\r\n"), ctx(sender=sender)) == SenderProblem(
        "unverifiable", field="From"
    )


def test_from_from_envelope_keeps_quoted_local_part():  # S-705
    out = fixed(b"Subject: hi\r\n\r\n", ctx(sender='"a b"@example.org'))
    assert b'From: <"a b"@example.org>\r\n' in out
    assert parsed(out)["From"].addresses[0].addr_spec == '"a b"@example.org'


def test_long_values_fold_within_998():  # S-707, RFC 5322 §2.1.1
    long_rcpt = "r" * 960 + "@example.org"
    out = fixed(b"Subject: x\r\n\r\n", ctx(recipients=(long_rcpt,), helo="h" * 10_000,
                                             tls="T" * 10_000, hostname="h" * 10_000))
    assert f"\tfor <{long_rcpt}>;\r\n\t{DATE}\r\n".encode() in out
    huge = "r" * 2000 + "@example.org"
    out = fixed(b"Subject: x\r\n\r\n", ctx(recipients=(huge,)))
    assert huge.encode() not in out


# -- fix() --------------------------------------------------------------------

def test_missing_fields_added_and_parse_back():  # S-705
    out = fixed(b"Subject: hi\r\n\r\n")
    assert field_names(out) == ["Received", "Subject", "Date", "Message-ID", "From"]
    msg = parsed(out + b"body\r\n")
    assert parsedate_to_datetime(msg["Date"]) == NOW
    assert f"Date: {DATE}\r\n".encode() in out
    assert msg["From"].addresses[0].addr_spec == "alice@example.com"
    registry = HeaderRegistry()
    mid = registry("Message-ID", str(msg["Message-ID"]))
    assert not mid.defects
    assert re.fullmatch(
        r"<20261125174803\.4F1C2A9B0D\.0001020304050607@mail\.example\.net>", str(mid)
    )
    for name in ("Date", "From", "Received"):
        assert not msg[name].defects, name


def test_existing_fields_kept_byte_exact_in_order():  # S-704
    header = (
        b"Date: Tue, 24 Nov 2026 10:00:00 -0500\r\n"
        b"From: Alice\r\n <alice@example.com>\r\n"
        b"Message-ID: <abc.def@client.example>\r\n"
        b"Subject: =?utf-8?q?h=C3=A9?= \xc3\xa9\r\n"
        b"X-Odd  :  spaced\r\n"
    )
    out = fixed(header + b"\r\n")
    assert out == received_field(CTX) + header + b"\r\n"


@pytest.mark.parametrize(
    "removed",
    [
        b"Bcc: secret@example.org\r\n",
        b"BCC: secret@example.org\r\n",
        b"Bcc: one@example.org,\r\n two@example.org,\r\n\tthree@example.org\r\n",
        b"Bcc:\r\n",
        b"Resent-Bcc: secret@example.org\r\n",
        b"Return-Path: <bounce@example.org>\r\n",
        b"return-path : <bounce@example.org>\r\n",
    ],
)
def test_bcc_resent_bcc_return_path_removed(removed):  # S-704
    keep = b"From: alice@example.com\r\nSubject: x\r\n"
    out = fixed(keep + removed + b"To: b@example.org\r\n\r\n")
    message_id = re.search(rb"Message-ID: <[^>]+>\r\n", out).group()
    assert out == (
        received_field(CTX) + keep + b"To: b@example.org\r\n"
        + f"Date: {DATE}\r\n".encode() + message_id + b"\r\n"
    )
    assert b"secret" not in out and b"bounce" not in out and b"two@" not in out


def test_every_bcc_removed():  # S-704
    out = fixed(b"Bcc: a@x.example\r\nTo: t@x.example\r\nBcc: b@x.example\r\n\r\n")
    assert b"Bcc" not in out and b"To: t@x.example\r\n" in out


def test_invalid_message_id_replaced_in_place():  # S-705, RFC 6409 §8.3
    out = fixed(b"A: 1\r\nMessage-ID: not valid\r\nB: 2\r\n\r\n")
    names = field_names(out)
    assert names[:4] == ["Received", "A", "Message-ID", "B"] and names.count("Message-ID") == 1
    assert b"not valid" not in out


@pytest.mark.parametrize(
    "value",
    [b"<a@b>", b" <a.b.c@d.e>  ", b"<x@[192.0.2.1]>", b"<\xc3\xa9@d.example>"],
)
def test_valid_message_id_kept(value):  # S-705
    raw = b"Message-ID:" + value + b"\r\n"
    out = fixed(raw + b"\r\n")
    assert raw in out and field_names(out).count("Message-ID") == 1


@pytest.mark.parametrize(
    "value",
    [b"", b" abc", b" <a@b", b" <a@b> x", b" <a..b@c>", b" <@b>", b" <a@b>, <c@d>", b" <a b@c>"],
)
def test_invalid_message_ids(value):  # S-705
    out = fixed(b"Message-ID:" + value + b"\r\n\r\n")
    assert b"Message-ID:" + value + b"\r\n" not in out
    assert field_names(out).count("Message-ID") == 1


def test_no_from_with_null_sender():  # S-705
    assert fix(block(b"Subject: x\r\n\r\n"), ctx(sender="")) == SenderProblem(
        "no_from", field="From"
    )
    assert isinstance(fix(block(b"From: a@example.com\r\n\r\n"), ctx(sender="")), bytes)


def test_from_added_from_envelope_only_when_missing():  # S-705
    assert b"From: <alice@example.com>\r\n" in fixed(b"Subject: x\r\n\r\n")
    out = fixed(b"from: Bob <bob@example.com>\r\n\r\n")
    assert b"<alice@example.com>" not in out


def test_partial_last_field_gets_crlf():
    out = fixed(b"From: a@example.com\r\nSubject: cut")
    assert b"Subject: cut\r\nDate: " in out


def test_no_separator_body_follows_new_empty_line():  # S-701
    message = b"From: a@example.com\r\nthis is body\r\nX: y\r\n"
    b = block(message)
    out = fix(b, CTX)
    assert isinstance(out, bytes)
    assert (out + message[b.body_offset :]).split(b"\r\n\r\n", 1)[1] == message[21:]


def test_header_with_no_fields():  # S-701
    out = fixed(b" starts with space\r\n")
    assert field_names(out) == ["Received", "Date", "Message-ID", "From"]


def test_message_ids_unique_across_calls():  # S-705
    ids = set()
    for _ in range(1000):
        out = fixed(b"Subject: x\r\n\r\n", ctx(random=os.urandom(8)))
        ids.add(re.search(rb"Message-ID: (<[^>]+>)", out).group(1))
    assert len(ids) == 1000


def test_short_random_still_gives_64_bits():  # S-705
    a = fixed(b"Subject: x\r\n\r\n", ctx(random=b""))
    b = fixed(b"Subject: x\r\n\r\n", ctx(random=b""))
    assert re.search(rb"Message-ID: <\d{14}\.4F1C2A9B0D\.[0-9a-f]{16}@mail\.example\.net>", a)
    assert a != b


def test_date_zone_is_numeric():  # S-705, RFC 5322 §3.3
    out = fixed(b"Subject: x\r\n\r\n", ctx(now=datetime(2026, 1, 5, 3, 4, 5,
                                                         tzinfo=timezone(-timedelta(hours=9,
                                                                                    minutes=30)))))
    assert b"Date: Mon, 05 Jan 2026 03:04:05 -0930\r\n" in out
    out = fixed(b"Subject: x\r\n\r\n", ctx(now=datetime(2026, 1, 5, 3, 4, 5, tzinfo=timezone.utc)))
    assert b"Date: Mon, 05 Jan 2026 03:04:05 +0000\r\n" in out
