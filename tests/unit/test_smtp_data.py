"""The DATA phase: `DataDecoder` alone, then DATA through `Connection` (SPEC.md §3, S-1001)."""

from __future__ import annotations

import itertools
import sys
from collections import deque

import pytest

from smtp_states import (
    Close,
    Connection,
    DataChunk,
    DataEnd,
    DataStart,
    Event,
    RcptTo,
    Reset,
    Settings,
)
from smtp_states import replies as R
from datatest import decode, reference

from smtp_states.data import DataDecoder, DataError

HOST = "msa.test"
END = b"\r\n.\r\n"


# =============================================================================
# A line-by-line reference for SPEC.md S-301..S-306
# =============================================================================


def splits(data: bytes, n: int) -> list[list[bytes]]:
    """Every way to cut `data` into n + 1 pieces (empty pieces included)."""
    result = []
    for cuts in itertools.combinations_with_replacement(range(len(data) + 1), n):
        bounds = (0, *cuts, len(data))
        result.append([data[a:b] for a, b in itertools.pairwise(bounds)])
    return result


# =============================================================================
# DataDecoder (S-301..S-306)
# =============================================================================


def test_dot_as_first_line_ends_an_empty_message():  # S-301
    assert decode([b".\r\n"]) == (b"", 3, None, 0)


def test_crlf_dot_crlf_ends_the_message():  # S-301
    stream = b"Subject: x\r\n\r\nhello\r\n.\r\n"
    stored = b"Subject: x\r\n\r\nhello\r\n"
    assert decode([stream]) == (stored, len(stream), None, len(stored))


@pytest.mark.parametrize(
    "ending",
    [b"\n.\n", b"\r\n.\n", b"\n.\r\n", b"\r.\r\n", b"\r\n.\r", b"\r.\r", b"\r.\n", b"\n.\r", b"\n\r.\r\n"],
)
def test_nothing_but_crlf_dot_crlf_ends_the_message(ending):  # S-301
    out, consumed, _, _ = decode([b"hello" + ending + b"more"])
    assert consumed is None


def test_dot_line_after_bare_lf_is_unstuffed_not_an_end():  # S-301, S-302
    stream = b"a\n.\r\nb" + END
    assert decode([stream]) == (b"a\r\n\r\nb\r\n", len(stream), None, 8)


@pytest.mark.parametrize(
    ("raw", "stored"),
    [
        (b"..\r\n", b".\r\n"),
        (b"..hidden\r\n", b".hidden\r\n"),
        (b"a\r\n..b\r\n", b"a\r\n.b\r\n"),
        (b"a\n..b\r\n", b"a\r\n.b\r\n"),  # after a bare LF too
        (b"...\r\n", b"..\r\n"),
        (b".x\r\n", b"x\r\n"),  # a single leading dot also goes (as smtplib never sends it)
        (b"a.b\r\n.c.\r\n", b"a.b\r\nc.\r\n"),
        (b"a\r\n. \r\n", b"a\r\n \r\n"),
    ],
)
def test_leading_dot_is_removed(raw, stored):  # S-302
    out, consumed, error, size = decode([raw + b".\r\n"])
    assert (out, consumed, error, size) == (stored, len(raw) + 3, None, len(stored))


@pytest.mark.parametrize(
    ("raw", "stored"),
    [
        (b"a\nb\n", b"a\r\nb\r\n"),
        (b"\n\n", b"\r\n\r\n"),
        (b"a\r\nb\nc\r\n", b"a\r\nb\r\nc\r\n"),
        (b"Subject: x\n\nbody\n", b"Subject: x\r\n\r\nbody\r\n"),
    ],
)
def test_bare_lf_is_stored_as_crlf(raw, stored):  # S-302
    stream = raw + (b"\r\n.\r\n" if not raw.endswith(b"\r\n") else b".\r\n")
    out, consumed, error, _ = decode([stream])
    expected, ref_consumed, _ = reference(stream)
    assert out == expected and consumed == ref_consumed == len(stream) and error is None
    assert out.startswith(stored)


def test_size_counts_octets_after_unstuffing():  # S-304
    assert decode([b"..abc\r\n.\r\n"])[3] == 6
    assert decode([b"abc\n\r\n.\r\n"])[3] == 7  # "abc\r\n" (bare LF stored as CRLF) then "\r\n"


def test_size_at_the_limit_is_accepted():  # S-304
    out, consumed, error, size = decode([b"12345678\r\n.\r\n"], max_size=10)
    assert (error, size, consumed) == (None, 10, 13)


def test_size_over_the_limit_reads_to_the_end():  # S-304
    body = b"x" * 100 + b"\r\n" + b"y" * 5000 + b"\r\n"
    out, consumed, error, _ = decode([body[:50], body[50:3000], body[3000:] + b".\r\nNOOP\r\n"], max_size=10)
    assert error is DataError.TOO_BIG
    assert consumed == len(body) + 3
    assert out == b""  # nothing stored past the limit


def test_output_stops_at_the_limit():  # S-304: past max_message_size nothing more is stored
    d = DataDecoder(10)
    first, _ = d.feed(b"12345\r\n")
    second, _ = d.feed(b"67890\r\n" * 100)
    assert first.startswith(b"12345") and len(first) <= 7
    assert second == b"" and d.error is DataError.TOO_BIG


@pytest.mark.parametrize(
    "body",
    [b"a\rb\r\n", b"\r", b"a\r\r\n", b"a\r", b"x\r.\r\n", b"\r\r\n"],
)
def test_bare_cr_is_refused_after_the_end(body):  # S-305
    stream = body + END + b"NEXT"
    out, consumed, error, _ = decode([stream])
    assert error is DataError.BARE_CR
    assert consumed == len(stream) - 4
    assert out == b""


@pytest.mark.parametrize("body", [b"a\x00b\r\n", b"\x00", b".\x00\r\n", b"\x00\x00\x00"])
def test_nul_is_refused_after_the_end(body):  # S-306
    stream = body + END + b"NEXT"
    _, consumed, error, _ = decode([stream])
    assert error is DataError.NUL
    assert consumed == len(stream) - 4


@pytest.mark.parametrize(
    "stream",
    [b"a\x00b\rc" + END, b"0123456789\rx" + END, b"0123456789\x00x" + END],
    ids=["nul-then-cr", "size-then-cr", "size-then-nul"],
)
def test_data_error_verdict_does_not_depend_on_chunking(stream):  # S-303, S-304..S-306
    verdicts = {decode(pieces, max_size=5)[2] for pieces in splits(stream, 1)}
    assert len(verdicts) == 1, verdicts


def test_cr_split_from_its_lf_is_not_bare():  # S-305
    out, consumed, error, _ = decode([b"a\r", b"\nb\r", b"\n.\r", b"\n"])
    assert (out, consumed, error) == (b"a\r\nb\r\n", 9, None)


def test_cr_at_chunk_edge_then_other_byte_is_bare():  # S-305
    assert decode([b"a\r", b"b\r\n.\r\n"])[2] is DataError.BARE_CR


def test_bytes_after_the_end_are_not_consumed():  # S-301
    stream = b"hi\r\n.\r\nMAIL FROM:<a@example.com>\r\n"
    out, consumed, _, _ = decode([stream])
    assert out == b"hi\r\n" and stream[consumed:] == b"MAIL FROM:<a@example.com>\r\n"


def test_decoder_keeps_only_a_few_bytes_between_chunks():  # S-303
    d = DataDecoder(10**9)
    got = bytearray()
    for _ in range(1000):
        out, consumed = d.feed(b"line of text\r\n")
        assert consumed is None
        got += out
    # All but the possible start of an end marker has been handed on.
    assert len(got) >= 1000 * 14 - 3


TRICKY = [
    b".\r\n",
    b"a\r\n.\r\n",
    b"..\r\n.\r\n",
    b"a\n.\nb\r\n.\r\n",
    b"a\n.\r\nb\r\n.\r\n",
    b"\r\n.\r\n",
    b"\n.\r\n.\r\n",
    b".\n.\r\n",
    b"a\r\r\n.\r\n",
    b"a\r\n..\r\n..x\n.\r\n",
    b"x\r\n\x00.\r\n.\r\n",
    b"\r\n.\r\r\n.\r\nNOOP",
    b"a\r.\r\n.\r\n",
    b"ab\r\n.\r\nRSET\r\n",
    b"\n\n\n.\r\n",
    b"abc",
    b"abc\r\n.",
    b"abc\r\n.\r",
]


@pytest.mark.parametrize("stream", TRICKY)
def test_decoder_agrees_with_the_line_reference(stream):  # S-301, S-302, S-305, S-306
    expected, consumed, errors = reference(stream)
    out, got_consumed, error, _ = decode([stream])
    assert got_consumed == consumed
    if errors:
        assert error in errors
    else:
        assert error is None
        if consumed is not None:
            assert out == expected
        else:  # what was handed on so far begins the message, however it ends
            completed, _, completed_errors = reference(stream + END)
            assert completed_errors or completed.startswith(out)


@pytest.mark.parametrize("stream", TRICKY)
def test_every_split_gives_the_same_result(stream):  # S-303
    whole = decode([stream])
    for pieces in splits(stream, 2) + [[bytes([b]) for b in stream]]:
        got = decode(pieces)
        assert got[1] == whole[1], pieces
        assert (got[2] is None) == (whole[2] is None), pieces
        if whole[1] is not None and whole[2] is None:
            assert got == whole, pieces


def test_every_split_of_a_message_with_dots_and_mixed_endings():  # S-303
    stream = b"Subject: .x\r\n\r\n.\n..\r\nfoo\n.bar\r\n\r\n..\r\n.\r\nQUIT\r\n"
    whole = decode([stream])
    assert whole[2] is None and whole[0] == reference(stream)[0]
    for pieces in splits(stream, 1) + splits(stream, 2):
        assert decode(pieces) == whole, pieces


# S-303 without a clock: the Python lines smtp_states/data.py runs for each
# 64 KiB chunk, counted with sys.settrace. bytes.find/count/replace run no
# Python line, so a decoder without a loop per line or per byte runs the same
# few lines for a chunk of dot lines as for a chunk of text.
CHUNK = 64 * 1024
DATA_PY = DataDecoder.feed.__code__.co_filename


def lines_run_per_chunk(body: bytes) -> list[int]:
    """Line events inside smtp_states/data.py for each 64 KiB feed of `body`."""
    decoder = DataDecoder(10**9)
    counts: list[int] = []

    def in_data_py(frame, event, arg):
        if event == "line":
            counts[-1] += 1
        return in_data_py

    def on_call(frame, event, arg):
        return in_data_py if frame.f_code.co_filename == DATA_PY else None

    previous = sys.gettrace()
    try:
        for i in range(0, len(body), CHUNK):
            counts.append(0)
            sys.settrace(on_call)
            out, consumed = decoder.feed(body[i : i + CHUNK])
            sys.settrace(previous)
            assert consumed is None and out
    finally:
        sys.settrace(previous)
    return counts


HOSTILE_LINES = [b"\n.", b"\r\n..", b"\n.\r\n"]  # the last: ".\r\n" lines after bare LFs


@pytest.mark.parametrize("unit", HOSTILE_LINES, ids=["lf-dot", "crlf-dot-dot", "dot-crlf-after-lf"])
def test_dot_lines_cost_no_python_line_each(unit):  # S-303
    text = lines_run_per_chunk(b"plain text, nothing to unstuff\r\n" * (1024 * 1024 // 32))
    small = lines_run_per_chunk(unit * (256 * 1024 // len(unit)))
    big = lines_run_per_chunk(unit * (1024 * 1024 // len(unit)))
    assert (len(small), len(big)) == (4, 16)
    # Every chunk holds over 10,000 dot lines: a loop per line would show.
    assert max(big) <= max(text) + 10, (big, text)
    # Four times the dot lines, four times the chunks, the same cost each.
    assert big[: len(small)] == small and set(big[len(small) :]) <= set(small[1:]), (small, big)


# =============================================================================
# DATA through the Connection (S-207, §3, S-1001)
# =============================================================================


class Policy:
    def may_send_as(self, user: str, address: str) -> bool:
        return True

    def reserve_message(self, user: str) -> bool:
        return True

    def reserve_recipient(self, user: str) -> bool:
        return True


class Client:
    """A trusted session in a transaction; pausing events answered at once."""

    def __init__(self, max_message_size: int = 26214400) -> None:
        self.conn = Connection(
            Settings(hostname=HOST, max_message_size=max_message_size), Policy(), tls=False, trusted=True
        )
        self.events: list[Event] = []
        self.delivered: list[tuple[DataEnd, bytes]] = []
        self.conn.start()

    def send(self, data: bytes) -> list[Event]:
        pending = deque(self.conn.receive(data))
        seen: list[Event] = []
        while pending:
            ev = pending.popleft()
            seen.append(ev)
            self.events.append(ev)
            if isinstance(ev, DataEnd):
                self.delivered.append((ev, self.message()))
                pending.extend(self.conn.delivery_done(R.queued(f"Q{len(self.delivered)}")))
        return seen

    def message(self) -> bytes:
        """The DataChunks of the current (or last) message, joined."""
        out = bytearray()
        for ev in self.events:
            if isinstance(ev, DataStart):
                out.clear()
            elif isinstance(ev, DataChunk):
                out += ev.data
        return bytes(out)

    def lines(self) -> list[str]:
        out = self.conn.data_to_send()
        return out.decode().split("\r\n")[:-1] if out else []

    def transaction(self) -> Client:
        self.send(
            b"EHLO client.example\r\nMAIL FROM:<alice@example.com>\r\nRCPT TO:<bob@example.org>\r\nDATA\r\n"
        )
        assert self.lines()[-1] == "354 End data with <CR><LF>.<CR><LF>"
        return self


def in_data(**kwargs: object) -> Client:
    return Client(**kwargs).transaction()  # type: ignore[arg-type]


def test_data_is_streamed_as_chunks_then_ends():  # S-207, S-302
    c = in_data()
    events = c.send(b"Subject: x\r\n\r\nhello\n")
    assert all(isinstance(e, DataChunk) for e in events)
    c.send(b"..dot\r\n.\r\n")
    assert c.lines() == ["250 2.0.0 Ok: queued as Q1"]
    ((end, body),) = c.delivered
    assert body == b"Subject: x\r\n\r\nhello\r\n.dot\r\n"
    assert end.size == len(body)


def test_empty_message_ends_at_once():  # S-301
    c = in_data()
    c.send(b".\r\n")
    assert c.lines() == ["250 2.0.0 Ok: queued as Q1"]
    assert c.delivered[0][0].size == 0 and c.delivered[0][1] == b""


def test_bytes_after_the_end_are_the_next_commands():  # S-301, S-105
    c = in_data()
    c.send(b"hi\r\n.\r\nNOOP\r\nRCPT TO:<bob@example.org>\r\nMAIL FROM:<alice@example.com>\r\n")
    assert c.lines() == [
        "250 2.0.0 Ok: queued as Q1",
        "250 2.0.0 Ok",
        "503 5.5.1 Need MAIL command",
        "250 2.1.0 Ok",
    ]


def test_data_pipelined_with_the_transaction():  # S-105
    c = Client()
    c.send(
        b"EHLO c\r\nMAIL FROM:<a@example.com>\r\nRCPT TO:<b@example.org>\r\nDATA\r\none\r\n.\r\n"
        b"MAIL FROM:<a@example.com>\r\nRCPT TO:<c@example.org>\r\nDATA\r\ntwo\r\n.\r\nQUIT\r\n"
    )
    assert c.lines()[-9:] == [
        "250 2.1.0 Ok",
        "250 2.1.5 Ok",
        "354 End data with <CR><LF>.<CR><LF>",
        "250 2.0.0 Ok: queued as Q1",
        "250 2.1.0 Ok",
        "250 2.1.5 Ok",
        "354 End data with <CR><LF>.<CR><LF>",
        "250 2.0.0 Ok: queued as Q2",
        "221 2.0.0 Bye",
    ]
    assert [body for _, body in c.delivered] == [b"one\r\n", b"two\r\n"]
    assert [end.envelope.recipients for end, _ in c.delivered] == [("b@example.org",), ("c@example.org",)]
    assert isinstance(c.events[-1], Close)


def test_size_over_the_limit_is_refused_after_the_end():  # S-304
    c = in_data(max_message_size=10)
    c.send(b"0123456789A\r\n")
    assert c.lines() == []  # nothing said before the end
    events = c.send(b"more\r\n.\r\nNOOP\r\n")
    assert c.lines() == ["552 5.3.4 Message size exceeds fixed limit", "250 2.0.0 Ok"]
    assert c.delivered == []
    assert any(isinstance(e, Reset) for e in events)
    c.send(b"RCPT TO:<bob@example.org>\r\n")
    assert c.lines() == ["503 5.5.1 Need MAIL command"]


def test_size_at_the_limit_is_delivered():  # S-304
    c = in_data(max_message_size=10)
    c.send(b"..3456789\r\n.\r\n")  # 10 octets after unstuffing
    assert c.lines() == ["250 2.0.0 Ok: queued as Q1"]
    assert c.delivered[0][0].size == 10


@pytest.mark.parametrize("body", [b"a\rb\r\n", b"line\r\n\r", b"x\r.\r\n"])
def test_bare_cr_is_refused_after_the_end_through_the_connection(body):  # S-305
    c = in_data()
    c.send(body + END + b"NOOP\r\n")
    assert c.lines() == ["554 5.6.0 Message contains a bare CR", "250 2.0.0 Ok"]
    assert c.delivered == []


def test_nul_is_refused_after_the_end_through_the_connection():  # S-306
    c = in_data()
    c.send(b"a\x00b" + END + b"NOOP\r\n")
    assert c.lines() == ["554 5.6.0 Message contains NUL characters", "250 2.0.0 Ok"]
    assert c.delivered == []


@pytest.mark.parametrize(
    "body",
    [b"a\x00b\rc" + END, b"0123456789\rx" + END, b"0123456789\x00x" + END],
    ids=["nul-then-cr", "size-then-cr", "size-then-nul"],
)
def test_final_reply_does_not_depend_on_reads(body):  # S-303, S-304..S-306
    replies = set()
    for cut in range(len(body) + 1):
        c = in_data(max_message_size=5)
        for piece in (body[:cut], body[cut:]):
            if piece:
                c.send(piece)
        replies.add(tuple(c.lines()))
    assert len(replies) == 1, replies


def test_after_a_refused_message_the_session_is_greeted():  # S-207
    c = in_data()
    c.send(b"\x00" + END)
    c.lines()
    c.send(b"RCPT TO:<bob@example.org>\r\nMAIL FROM:<alice@example.com>\r\n")
    assert c.lines() == ["503 5.5.1 Need MAIL command", "250 2.1.0 Ok"]


def test_a_dot_line_after_bare_lf_does_not_end_the_data():  # S-301
    c = in_data()
    c.send(b"a\n.\nQUIT\n")
    assert c.lines() == [] and not c.conn.closed
    c.send(b"\r\n.\r\n")
    assert c.lines() == ["250 2.0.0 Ok: queued as Q1"]
    assert c.delivered[0][1] == b"a\r\n\r\nQUIT\r\n\r\n"


SMUGGLING = [
    b"\n.\n",
    b"\r\n.\n",
    b"\n.\r\n",
    b"\r.\r\n",
    b"\r\n.\r",
    b"\r.\r",
    b"\r.\n",
    b"\n.\r",
    b"\r\n\x00.\r\n",
    b"\r\n.\x00\r\n",
    b"\r\n.\r\r\n",
]
SMUGGLED = (
    b"MAIL FROM:<mallory@example.com>\r\nRCPT TO:<smuggled@example.org>\r\nDATA\r\n"
    b"Subject: smuggled\r\n\r\nsecond\r\n"
)


def smuggle(payload: bytes) -> bytes:
    return b"Subject: first\r\n\r\nfirst" + payload + SMUGGLED + b".\r\n"


@pytest.mark.parametrize("chunking", ["whole", "bytes", "lines"])
@pytest.mark.parametrize("payload", SMUGGLING, ids=[repr(p)[2:-1] for p in SMUGGLING])
def test_smuggling_delivers_at_most_one_message(payload, chunking):  # S-1001
    c = in_data()
    stream = smuggle(payload) + b"QUIT\r\n"
    if chunking == "whole":
        pieces = [stream]
    elif chunking == "bytes":
        pieces = [bytes([b]) for b in stream]
    else:
        pieces = stream.splitlines(keepends=True)
    out: list[str] = []
    for piece in pieces:
        c.send(piece)
        out += c.lines()
    assert len(c.delivered) <= 1
    assert not any("354" in line[:3] for line in out)  # no reply after the first is a 354
    for end, body in c.delivered:
        assert end.envelope.recipients == ("bob@example.org",)
        assert body.startswith(b"Subject: first\r\n\r\nfirst")
    assert RcptTo("smuggled@example.org") not in c.events
    assert len([e for e in c.events if isinstance(e, DataEnd)]) <= 1
    assert out[-1] == "221 2.0.0 Bye"
    if b"\r" in payload.replace(b"\r\n", b"") or b"\x00" in payload:
        assert c.delivered == [] and out[0].startswith("554 5.6.0 ")
    else:
        assert out[0] == "250 2.0.0 Ok: queued as Q1"
