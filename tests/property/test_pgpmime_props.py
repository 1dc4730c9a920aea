"""The streaming quoted-printable encoder and the line scan, however the
body is split (SPEC.md S-1102: streamed; S-1104: the 7-bit rule)."""

from __future__ import annotations

import quopri

from hypothesis import given
from hypothesis import strategies as st

from signing import pgpmime as G
from signing import recode

pieces = st.sampled_from([b"a", b" ", b"\t", b"\r\n", b"From ", b"=", b".", b"\xc3\xa9", b"x" * 90, b"x" * 73, b"\r",
                          b"\xff", b"\x00", b"\x01", b"--=_q1", b"-----BEGIN PGP"])
# A stored body: CRLF line ends, no bare CR or LF (S-302, S-305).
bodies = st.lists(pieces, max_size=60).map(lambda p: b"".join(p).replace(b"\r", b"").replace(b"\n", b"\r\n"))


def split(data: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({c % (len(data) + 1) for c in cuts})
    return [data[a:b] for a, b in zip([0, *points], [*points, len(data)], strict=True)]


@given(bodies, st.lists(st.integers(min_value=0, max_value=2000), max_size=10), st.sampled_from([5, 74, 64 * 1024]),
       st.booleans())
def test_quoted_printable_round_trips_and_is_seven_bit_safe(body, cuts, piece, by_lines):  # S-1104, RFC 2045 §6.7
    # piece 5 or 74: lines without LF are cut into pieces often; by_lines:
    # the path for a block that leaves no control free to mark with.
    saved = G.QP_LINE_PIECE, G._SENTINELS
    G.QP_LINE_PIECE, G._SENTINELS = piece, b"" if by_lines else G._SENTINELS
    try:
        enc = G.QuotedPrintable()
        out = b"".join(enc.feed(c) for c in split(body, cuts)) + enc.finish()
    finally:
        G.QP_LINE_PIECE, G._SENTINELS = saved
    assert out.isascii()
    lines = out.split(b"\r\n")
    for line in lines:
        assert len(line) <= 76
        assert not line.startswith(b"From ")
        assert not line.endswith((b" ", b"\t"))
        assert b"\r" not in line and b"\n" not in line
    assert quopri.decodestring(out.replace(b"\r\n", b"\n")) == body.replace(b"\r\n", b"\n")


@given(bodies, st.lists(st.integers(min_value=0, max_value=2000), max_size=10))
def test_line_scan_is_the_same_however_split(body, cuts):  # S-1104
    def scan(chunks):
        s = recode.LineScan(watch_armor=True, needles=(b"--=_q1",))
        for c in chunks:
            s.feed(c)
        s.finish()
        return s.eight_bit, s.trailing_ws, s.from_line, s.armor, s.boundary_inside

    assert scan(split(body, cuts)) == scan([body])
