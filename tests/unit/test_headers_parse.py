"""HeaderReader: where the header block ends, its fields, its limits."""

import time
import tracemalloc

import pytest

from headers import (
    MAX_HEADER_BYTES,
    MAX_HEADER_FIELDS,
    Field,
    HeaderBlock,
    HeaderReader,
    HeaderTooLarge,
)


def read(*chunks: bytes, **limits: int) -> HeaderBlock | HeaderTooLarge:
    reader = HeaderReader(**limits)
    for chunk in chunks:
        reader.feed(chunk)
    return reader.finish()


def block(data: bytes) -> HeaderBlock:
    result = read(data)
    assert isinstance(result, HeaderBlock)
    return result


MESSAGE = (
    b"From: Alice <alice@example.com>\r\n"
    b"To: bob@example.org,\r\n"
    b"\tcarol@example.org\r\n"
    b"Subject: =?utf-8?q?Gr=C3=BC=C3=9Fe?= und \xc3\xbc 8-bit\r\n"
    b"X-Odd : spaced name\r\n"
    b"\r\n"
    b"Body line\r\n"
    b"From: not a header\r\n"
)


def test_fields_kept_byte_exact_with_continuations():  # S-701, S-704
    b = block(MESSAGE)
    assert [f.name for f in b.fields] == ["From", "To", "Subject", "X-Odd"]
    assert b.fields[1].raw == b"To: bob@example.org,\r\n\tcarol@example.org\r\n"
    assert b"".join(f.raw for f in b.fields) + b"\r\n" == MESSAGE[: b.body_offset]
    assert b.separator is True
    assert MESSAGE[b.body_offset :] == b"Body line\r\nFrom: not a header\r\n"


def test_field_value_is_unfolded():  # RFC 5322 §2.2.3
    b = block(MESSAGE)
    assert b.fields[1].value() == b" bob@example.org,\tcarol@example.org"
    assert b.fields[1].lname == "to"
    assert b.fields[3].name == "X-Odd"  # spaces before the colon tolerated (S-701)
    assert b.fields[3].value() == b" spaced name"


def test_8bit_and_utf8_kept_byte_exact():  # S-703
    raw = b"Subject: \xff\xfe raw 8-bit \xc3\xa9\r\n"
    b = block(raw + b"\r\n")
    assert b.fields == (Field("Subject", raw),)


def test_chunking_at_every_offset_gives_the_same_block():  # S-701
    whole = read(MESSAGE)
    for cut in range(len(MESSAGE) + 1):
        assert read(MESSAGE[:cut], MESSAGE[cut:]) == whole, cut
    for cut in range(len(MESSAGE) - 1):
        assert read(MESSAGE[:cut], MESSAGE[cut : cut + 1], MESSAGE[cut + 1 :]) == whole
    assert read(*(MESSAGE[i : i + 1] for i in range(len(MESSAGE)))) == whole


def test_split_inside_crlf_of_the_empty_line():
    data = b"A: 1\r\n\r\nbody"
    assert read(b"A: 1\r\n\r", b"\nbody") == read(data)
    assert block(data).body_offset == 8


def test_non_field_line_ends_block_without_separator():  # S-701
    data = b"From: a@example.com\r\nthis is body text\r\nX: y\r\n"
    b = block(data)
    assert [f.name for f in b.fields] == ["From"]
    assert b.separator is False
    assert data[b.body_offset :] == b"this is body text\r\nX: y\r\n"


@pytest.mark.parametrize(
    "line",
    [b"no colon here", b"Two words: value", b":empty name", b"\x80bad: x", b"Na\x00me: x", b"\r"],
)
def test_lines_that_are_not_fields_end_the_block(line):  # S-701
    data = b"A: 1\r\n" + line + b"\r\nB: 2\r\n"
    b = block(data)
    assert [f.name for f in b.fields] == ["A"]
    assert b.body_offset == 6 and not b.separator


def test_first_line_starting_with_whitespace_is_body():  # S-701
    b = block(b" Subject: x\r\nFrom: a@b.example\r\n\r\n")
    assert b == HeaderBlock((), 0, False)


def test_empty_message_and_immediate_empty_line():  # S-701
    assert block(b"") == HeaderBlock((), 0, False)
    assert block(b"\r\nbody\r\n") == HeaderBlock((), 2, True)


def test_all_header_message():  # S-701: a message without a body is valid
    data = b"From: a@example.com\r\nSubject: x\r\n"
    b = block(data)
    assert len(b.fields) == 2 and b.body_offset == len(data) and not b.separator


def test_partial_last_field_kept_without_crlf():
    data = b"From: a@example.com\r\nSubject: no line end"
    b = block(data)
    assert b.fields[-1] == Field("Subject", b"Subject: no line end")
    assert b.fields[-1].value() == b" no line end"
    assert b.body_offset == len(data)


def test_partial_last_continuation_kept():
    data = b"Subject: a\r\n b"
    b = block(data)
    assert b.fields == (Field("Subject", data),)
    assert b.fields[0].value() == b" a b"


def test_partial_last_line_that_is_not_a_field_is_body():
    data = b"From: a@example.com\r\njust text"
    b = block(data)
    assert len(b.fields) == 1 and b.body_offset == 21 and data[21:] == b"just text"


def test_bare_cr_and_nul_do_not_crash():  # input contract says refused upstream
    for data in (b"A: x\ry\r\n\r\n", b"A\r: x\r\n", b"A: \x00\r\n\r\n", b"\r", b"A: 1\r\n\r"):
        result = read(data)
        assert isinstance(result, HeaderBlock)
        assert result.body_offset <= len(data)


def test_bare_lf_ends_lines():
    # The SMTP layer normalises bare LF; were one left, lines still end at
    # LF as every downstream reader splits them.
    b = block(b"A: 1\nBcc: x@y.example\n\nbody")
    assert [f.name for f in b.fields] == ["A", "Bcc"] and b.separator and b.body_offset == 23


def test_long_name_without_colon_is_not_a_field():
    data = b"A: 1\r\n" + b"x" * 5000 + b": late colon\r\n"
    b = block(data)
    assert [f.name for f in b.fields] == ["A"] and b.body_offset == 6


def test_finish_is_idempotent_and_later_feed_ignored():
    reader = HeaderReader()
    reader.feed(b"A: 1\r\n\r\n")
    first = reader.finish()
    reader.feed(b"B: 2\r\n")
    assert reader.finish() == first


def test_over_max_bytes_is_too_large():  # S-703
    field = b"X-Filler: " + b"a" * 1000 + b"\r\n"
    data = field * (MAX_HEADER_BYTES // len(field) + 1) + b"\r\nbody"
    assert isinstance(read(data), HeaderTooLarge)
    under = field * (MAX_HEADER_BYTES // len(field) - 1) + b"\r\nbody"
    assert isinstance(read(under), HeaderBlock)


def test_too_large_when_block_ends_in_the_same_chunk():  # S-703
    data = b"X: " + b"a" * 200 + b"\r\n\r\nbody"
    assert isinstance(read(data, max_bytes=100), HeaderTooLarge)
    assert isinstance(read(data, max_bytes=300), HeaderBlock)


def test_field_count_limit():  # S-703
    fields = b"".join(b"X-%d: v\r\n" % i for i in range(MAX_HEADER_FIELDS))
    ok = read(fields + b"\r\n")
    assert isinstance(ok, HeaderBlock) and len(ok.fields) == MAX_HEADER_FIELDS
    assert isinstance(read(fields + b"X-last: v\r\n\r\n"), HeaderTooLarge)
    assert isinstance(read(fields + b"X-last: partial"), HeaderTooLarge)


def test_hundred_thousand_fields_refused():  # S-1008
    data = b"X: v\r\n" * 100_000
    result = read(*(data[i : i + 65536] for i in range(0, len(data), 65536)))
    assert isinstance(result, HeaderTooLarge)


def _peak_while(feed_all) -> int:
    tracemalloc.start()
    try:
        feed_all()
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def test_64_mib_header_line_bounded_and_fast():  # S-703, S-1008
    chunk = b"a" * 65536
    reader = HeaderReader()
    reader.feed(b"Subject: ")
    started = time.monotonic()

    def feed_all():
        for _ in range(1024):  # 64 MiB, no newline
            reader.feed(chunk)

    peak = _peak_while(feed_all)
    assert time.monotonic() - started < 5
    assert peak < 3 * MAX_HEADER_BYTES
    assert isinstance(reader.finish(), HeaderTooLarge)


def test_64_mib_body_line_without_newline_is_not_kept():  # S-708, S-1008
    chunk = b"a" * 65536
    reader = HeaderReader()
    reader.feed(b"From: a@example.com\r\n")
    peak = _peak_while(lambda: [reader.feed(chunk) for _ in range(1024)])
    assert peak < 3 * MAX_HEADER_BYTES
    b = reader.finish()
    assert isinstance(b, HeaderBlock) and b.body_offset == 21 and not b.separator


def test_body_after_separator_is_not_kept():  # S-708
    reader = HeaderReader()
    reader.feed(b"From: a@example.com\r\n\r\n")
    chunk = b"line\r\n" * 10000
    peak = _peak_while(lambda: [reader.feed(chunk) for _ in range(1000)])
    assert peak < MAX_HEADER_BYTES
    assert reader.finish() == block(b"From: a@example.com\r\n\r\n")
