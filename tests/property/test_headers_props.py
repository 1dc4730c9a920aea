"""Properties of the headers package (DESIGN.md "Testing"): any bytes in any
chunking raise nothing and give the same block; fix() gives a well-formed
header and the body stays byte-identical; the address parser never raises."""

import re
from datetime import datetime, timedelta, timezone

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from headers import (
    FixContext,
    HeaderBlock,
    HeaderReader,
    HeaderTooLarge,
    SenderProblem,
    check_senders,
    fix,
    parse_addresses,
)

FIELD_LINE = re.compile(rb"[\x21-\x39\x3b-\x7e]+[ \t]*:")


def feed_in_pieces(data: bytes, cuts: list[int], **limits: int):
    reader = HeaderReader(**limits)
    points = sorted({c % (len(data) + 1) for c in cuts})
    start = 0
    for point in [*points, len(data)]:
        reader.feed(data[start:point])
        start = point
    return reader.finish()


def feed_whole(data: bytes, **limits: int):
    reader = HeaderReader(**limits)
    reader.feed(data)
    return reader.finish()


cuts = st.lists(st.integers(min_value=0, max_value=4096), max_size=12)

# -- messages as the SMTP layer hands them over: CRLF lines, no NUL/bare CR --

line_text = st.binary(max_size=40).map(
    lambda b: b.replace(b"\r", b"").replace(b"\n", b"").replace(b"\x00", b"")
)
names = st.sampled_from(
    [b"From", b"from", b"To", b"Subject", b"Bcc", b"BCC", b"Resent-Bcc", b"Return-Path",
     b"Message-ID", b"Date", b"Sender", b"X-Spam", b"Received", b"X-a:b", b"!#~"]
) | st.text(
    alphabet=st.characters(min_codepoint=0x21, max_codepoint=0x7E, blacklist_characters=":"),
    min_size=1,
    max_size=12,
).map(str.encode)
field_line = st.builds(
    lambda name, sp, value: name + sp + b":" + value,
    names,
    st.sampled_from([b"", b"", b" ", b"\t "]),
    line_text | st.sampled_from(
        [b" <a@b.example>", b" Alice <alice@example.com>", b" <x.y@host.example>", b"",
         b" Tue, 24 Nov 2026 10:00:00 -0500", b" Team:;"]
    ),
)
continuation = st.builds(lambda ws, text: ws + text, st.sampled_from([b" ", b"\t", b"  "]),
                         line_text)
junk_line = line_text.filter(lambda b: b[:1] not in (b" ", b"\t") and not FIELD_LINE.match(b))
header_lines = st.lists(
    st.one_of(field_line, field_line, field_line, continuation, junk_line), max_size=25
)
separator = st.sampled_from([b"\r\n", b""])
# What the SMTP layer stores (S-302, S-305, S-306): CRLF line endings, no
# bare CR, no NUL. With no separator the body's first lines continue the
# header, so they must be in that domain too: a NUL or a bare CR never
# reaches the header layer, since DATA holding one is refused whole.
bodies = st.binary(max_size=200).map(
    lambda b: b.replace(b"\x00", b"").replace(b"\r", b"").replace(b"\n", b"\r\n")
)


def message_from(lines: list[bytes], sep: bytes, body: bytes) -> bytes:
    return b"".join(line + b"\r\n" for line in lines) + sep + body


texts = st.text(max_size=80) | st.sampled_from(
    ["evil\r\nBcc: x@y.example", "a\nb", "\x00", "\u2028", "x" * 2000, "", "[192.0.2.1]",
     "host.example", "[IPv6:2001:db8::1]"]
)
contexts = st.builds(
    FixContext,
    hostname=st.sampled_from(["mail.example.net", "h"]) | texts,
    queue_id=st.sampled_from(["4F1C2A9B0D"]) | texts,
    helo=st.none() | texts,
    esmtp=st.booleans(),
    client_ip=st.sampled_from(["192.0.2.1", "2001:db8::1", "::ffff:192.0.2.1", "unknown"]) | texts,
    tls=st.none() | texts,
    authenticated=st.booleans(),
    smtputf8=st.booleans(),
    sender=st.sampled_from(["alice@example.com", "", '"a b"@example.org']) | texts,
    recipients=st.lists(st.sampled_from(["r@example.org"]) | texts, max_size=3).map(tuple),
    received_client=st.booleans(),
    now=st.builds(
        lambda dt, minutes: dt.replace(tzinfo=timezone(timedelta(minutes=minutes))),
        st.datetimes(min_value=datetime(1970, 1, 2), max_value=datetime(9999, 12, 30)),
        st.integers(min_value=-(24 * 60 - 1), max_value=24 * 60 - 1),
    ),
    random=st.binary(min_size=0, max_size=16),
)


def assert_well_formed(header: bytes) -> None:
    assert header.endswith(b"\r\n\r\n")
    lines = header[:-4].split(b"\r\n")
    assert FIELD_LINE.match(lines[0])
    for line in lines:
        assert b"\r" not in line and b"\n" not in line and b"\x00" not in line
        assert len(line) <= 998
        assert line[:1] in (b" ", b"\t") or FIELD_LINE.match(line), line


def assert_block_invariants(data: bytes, result) -> None:
    if isinstance(result, HeaderTooLarge):
        return
    assert isinstance(result, HeaderBlock)
    header = b"".join(f.raw for f in result.fields)
    assert data.startswith(header)  # fields are contiguous and byte-exact
    assert len(header) <= result.body_offset <= len(data)
    if result.separator:
        assert data[len(header) : result.body_offset] in (b"\r\n", b"\n")
    else:
        assert result.body_offset == len(header)
    for f in result.fields:
        assert FIELD_LINE.match(f.raw) and f.raw[: len(f.name)].decode("ascii") == f.name
        f.value()


# -- properties ---------------------------------------------------------------

@given(st.binary(max_size=600), cuts)
def test_any_bytes_any_chunking_same_block(data, points):  # S-701, S-703
    whole = feed_whole(data)
    assert feed_in_pieces(data, points) == whole
    assert_block_invariants(data, whole)


@given(st.binary(max_size=600), cuts, st.integers(0, 200), st.integers(0, 8))
def test_limits_hold_in_any_chunking(data, points, max_bytes, max_fields):  # S-703
    whole = feed_whole(data, max_bytes=max_bytes, max_fields=max_fields)
    assert feed_in_pieces(data, points, max_bytes=max_bytes, max_fields=max_fields) == whole
    if isinstance(whole, HeaderBlock):
        assert len(whole.fields) <= max_fields
        assert sum(len(f.raw) for f in whole.fields) <= max_bytes


@settings(suppress_health_check=[HealthCheck.too_slow])
@given(header_lines, separator, bodies, cuts, contexts)
def test_fix_gives_well_formed_header_and_keeps_the_body(lines, sep, body, points, ctx):
    # S-701, S-704, S-705, S-706, S-708, S-1005
    message = message_from(lines, sep, body)
    block = feed_in_pieces(message, points)
    assert block == feed_whole(message)
    assert isinstance(block, HeaderBlock)
    assert_block_invariants(message, block)
    out = fix(block, ctx)
    if isinstance(out, SenderProblem):
        assert out.kind in ("no_from", "unverifiable") and not block.named("from")
        return
    assert_well_formed(out)
    # The body follows the new empty line untouched.
    rest = message[block.body_offset :]
    assert (out + rest).split(b"\r\n\r\n", 1)[1] == rest
    # The new header reads back as exactly that header.
    again = feed_whole(out + rest)
    assert isinstance(again, HeaderBlock) and again.separator
    assert again.body_offset == len(out)
    got = [f.lname for f in again.fields]
    assert got[0] == "received"
    assert not {"bcc", "resent-bcc", "return-path"} & set(got)
    assert {"date", "message-id", "from"} <= set(got)
    kept = [f.raw for f in block.fields if f.lname not in ("bcc", "resent-bcc", "return-path",
                                                           "message-id")]
    assert [r.rstrip(b"\r\n") for r in kept] == [
        f.raw.rstrip(b"\r\n") for f in again.fields[1:] if f.lname != "message-id"
    ][: len(kept)]


address_pieces = st.sampled_from(
    [b"a", b"Bob", b"@", b"<", b">", b"(", b")", b'"', b",", b";", b":", b".", b" ", b"\t",
     b"\\", b"[", b"]", b"=?utf-8?q?x?=", b"example", b"com", b"\xc3\xa9", b"\xff", b"1.2.3.4",
     b"IPv6:", b"\r\n", b"\x00"]
)
address_like = st.lists(address_pieces, max_size=30).map(b"".join)


@given(st.binary(max_size=300) | address_like)
def test_parse_addresses_never_raises(value):  # S-702
    result = parse_addresses(value)
    assert result is None or all(isinstance(a, str) and "@" in a for a in result)


@given(address_like)
def test_parsed_addresses_read_back_the_same(value):  # S-702
    result = parse_addresses(value)
    if result:
        for address in result:
            encoded = address.encode("utf-8")
            assert parse_addresses(encoded) == [address]
            assert parse_addresses(b"X <" + encoded + b">") == [address]


@given(st.lists(st.sampled_from([b"From:", b"Sender:", b"Resent-From:", b"Resent-Sender:",
                                 b"Subject:"]).flatmap(
    lambda name: address_like.map(lambda v: name + v)), max_size=5), st.booleans())
def test_check_senders_never_raises(lines, verdict):  # S-602
    block = feed_whole(b"".join(line.replace(b"\r\n", b" ") + b"\r\n" for line in lines) + b"\r\n")
    assert isinstance(block, HeaderBlock)
    result = check_senders(block, lambda address: verdict)
    assert result is None or result.kind in ("not_owned", "unverifiable")
    if result is not None and result.kind == "not_owned":
        assert not verdict and result.address
