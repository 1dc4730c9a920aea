"""The streaming relaxed body canonicaliser against dkimpy's, however the
body is split (SPEC.md S-1103: fed chunk by chunk; S-303: C-speed, bounded
carry). dkimpy is a test dependency only."""

from __future__ import annotations

import hashlib

import pytest
from hypothesis import given
from hypothesis import strategies as st

from signing import dkim as D

dkim_canon = pytest.importorskip("dkim.canonicalization")

bodies = st.lists(
    st.sampled_from([b"a", b" ", b"\t", b"\r\n", b"  ", b"x y", b"\r\n\r\n", b"\xc3\xa9", b".", b" \t \r\n"]),
    max_size=80,
).map(lambda parts: b"".join(parts).replace(b"\r", b"").replace(b"\n", b"\r\n"))


def split(data: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({c % (len(data) + 1) for c in cuts})
    return [data[a:b] for a, b in zip([0, *points], [*points, len(data)], strict=True)]


@given(bodies, st.lists(st.integers(min_value=0, max_value=500), max_size=12), st.booleans())
def test_relaxed_body_equals_dkimpy_however_split(body, cuts, crlf_end):  # S-1103
    if crlf_end and not body.endswith(b"\r\n"):
        body += b"\r\n"  # msa's bodies always end so; the other case is covered too
    expected = hashlib.sha256(dkim_canon.Relaxed.canonicalize_body(body)).digest()
    c = D.RelaxedBody()
    for piece in split(body, cuts):
        c.feed(piece)
    assert c.digest() == expected


@given(bodies, st.lists(st.integers(min_value=0, max_value=500), max_size=12))
def test_relaxed_body_with_a_tiny_carry_bound(body, cuts):  # S-1103: bounded carry
    saved = D.MAX_CARRY
    D.MAX_CARRY = 3  # every line is "long": the piecewise path decides
    try:
        expected = hashlib.sha256(dkim_canon.Relaxed.canonicalize_body(body)).digest()
        c = D.RelaxedBody()
        for piece in split(body, cuts):
            c.feed(piece)
        assert c.digest() == expected
    finally:
        D.MAX_CARRY = saved


def test_a_line_without_end_keeps_memory_bounded():  # S-1102, S-303
    c = D.RelaxedBody()
    for _ in range(64):
        c.feed(b"x" * 65536)  # 4 MiB on one line
    assert len(c._carry) <= 1
    c.feed(b"\r\n")
    assert c.digest() == hashlib.sha256(b"x" * (64 * 65536) + b"\r\n").digest()
