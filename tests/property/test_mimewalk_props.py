"""The MIME walker over arbitrary multipart trees in arbitrary chunks
(SPEC.md S-1104, amended 7-bit rule; S-1102, streamed): its output is
7-bit, with no line starting with "From " and none ending in white space,
and Python's email parser decodes every part of it to what it decodes the
original to; what the first pass finds does not depend on the chunking."""

from __future__ import annotations

import base64
import email
import email.policy
import re

from hypothesis import assume, event, given
from hypothesis import strategies as st

from signing import mimewalk as W

# Raw content: CRLF line ends, no bare CR or LF, no NUL (S-302, S-305, S-306).
_RAW = st.lists(st.sampled_from([b"a", b" ", b"\t", b"\r\n", b"From ", b"=", b".", b"\xc3\xa9", b"\xff", b"x" * 90,
                                 b"-", b"--", b"b1", b"=_q", b"\x01", b"-----BEGIN PGP"]), max_size=30)
raw_content = _RAW.map(lambda p: b"".join(p).replace(b"\r", b"").replace(b"\n", b"\r\n"))
# Quoted-printable as clients send it, and as broken ones do: literal
# "From ", trailing white space, 8-bit octets, stray "=".
qp_content = st.lists(st.sampled_from([b"a", b" ", b"\t", b"=3D", b"=20", b"=\r\n", b"\r\n", b"\r\nFrom ", b"\xc3\xa9",
                                       b"=C3=A9", b"x" * 80, b"=", b"==", b"=A", b"-"]), max_size=30).map(b"".join)


@st.composite
def b64_content(draw) -> bytes:
    data = draw(st.binary(max_size=200))
    encoded = base64.encodebytes(data).replace(b"\n", b"\r\n")
    junk = draw(st.lists(st.tuples(st.integers(0, 10_000), st.sampled_from([b" ", b"\t", b"\xff", b"  "])), max_size=3))
    for at, piece in junk:  # octets decoders ignore, anywhere
        at %= len(encoded) + 1
        encoded = encoded[:at] + piece + encoded[at:]
    return encoded.replace(b" \r\n\r", b" \r\n").replace(b"\t\r\n\r", b"\t\r\n")


counter = iter(range(10**9))
TYPES = [b"text/plain; charset=utf-8", b"text/html", b"application/octet-stream", b"image/png", None]


@st.composite
def leaf(draw):
    ctype = draw(st.sampled_from(TYPES))
    cte = draw(st.sampled_from([None, b"7bit", b"8bit", b"binary", b"quoted-printable", b"base64"]))
    content = draw(qp_content if cte == b"quoted-printable" else b64_content() if cte == b"base64" else raw_content)
    return ("leaf", ctype, cte, content)


def tree(children):
    multipart = st.tuples(st.just("multipart"), st.sampled_from([b"mixed", b"alternative", b"related"]),
                          st.sampled_from([b"b", b"b1", b"=_q", b"a  b", b"(p)"]),
                          st.sampled_from([None, b"7bit", b"8bit"]), st.sampled_from([b"", b"MIME preamble.\r\n"]),
                          st.sampled_from([b"", b"\r\n", b"epilogue\r\n"]), st.lists(children, min_size=1, max_size=3))
    message = st.tuples(st.just("message"), st.sampled_from([None, b"7bit", b"8bit"]), children)
    return multipart | message


trees = st.recursive(leaf(), tree, max_leaves=6)


def entity(node, contents: list[bytes], boundaries: list[bytes]) -> tuple[bytes | None, bytes | None, bytes]:
    """(Content-Type value, Content-Transfer-Encoding value, body); the
    leaves' contents and the boundaries made are gathered on the way."""
    kind = node[0]
    if kind == "leaf":
        _, ctype, cte, content = node
        contents.append(content)
        return ctype, cte, content
    if kind == "message":
        _, cte, inner = node
        ct, icte, ibody = entity(inner, contents, boundaries)
        return b"message/rfc822", cte, b"Subject: inner\r\n" + fields(ct, icte) + b"\r\n" + ibody
    _, subtype, stem, cte, preamble, epilogue, children = node
    boundary = stem + b"%d" % next(counter)  # unique, and often one begins another ("b1", "b12")
    boundaries.append(boundary)
    parts = []
    for child in children:
        ct, ccte, cbody = entity(child, contents, boundaries)
        parts.append(b"--" + boundary + b"\r\n" + fields(ct, ccte) + b"\r\n" + cbody + b"\r\n")
    body = preamble + b"".join(parts) + b"--" + boundary + b"--\r\n" + epilogue
    return b"multipart/" + subtype + b';\r\n boundary="' + boundary + b'"', cte, body


def fields(ct: bytes | None, cte: bytes | None) -> bytes:
    return ((b"Content-Type: " + ct + b"\r\n" if ct is not None else b"")
            + (b"Content-Transfer-Encoding: " + cte + b"\r\n" if cte is not None else b""))


def leaves(message: bytes) -> list[tuple[str, bytes]]:
    msg = email.message_from_bytes(message, policy=email.policy.default)
    return [(p.get_content_type(), p.get_payload(decode=True)) for p in msg.walk() if not p.is_multipart()]


def split(data: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({c % (len(data) + 1) for c in cuts})
    return [data[a:b] for a, b in zip([0, *points], [*points, len(data)], strict=True)]


cuts = st.lists(st.integers(min_value=0, max_value=5000), max_size=12)


@given(trees, cuts, cuts)
def test_walked_trees_are_seven_bit_safe_and_decode_the_same(node, cuts1, cuts2):  # S-1104, S-1102
    contents: list[bytes] = []
    boundaries: list[bytes] = []
    ct, cte, body = entity(node, contents, boundaries)
    if boundaries:  # a content line starting with a boundary would change the tree itself: not a case
        starts = re.compile(rb"(?m)^--(?:" + b"|".join(re.escape(b) for b in boundaries) + rb")")
        assume(not any(starts.search(c) for c in contents))
    original = b"MIME-Version: 1.0\r\n" + fields(ct, cte) + b"\r\n" + body
    first = W.Walker(ct, cte)
    for piece in split(body, cuts1):
        first.feed(piece)
    first.finish()
    found = first.result()
    again = W.Walker(ct, cte)
    for piece in split(body, cuts2):
        again.feed(piece)
    again.finish()
    assert again.result() == found  # the chunking changes nothing
    assert found.problem is None, found.problem
    event(f"changes: {' '.join(sorted(set(found.changes.values()))) or 'none'}; depth {len(boundaries) > 1}")
    if found.changes:
        second = W.Walker(ct, cte, found)
        out = b"".join(second.feed(piece) for piece in split(body, cuts2)) + second.finish()
        top_cte = found.top_cte()
        top = fields(ct, top_cte.encode() if top_cte is not None else cte)
    else:
        out, top = body, fields(ct, cte)
    assert out.isascii()
    for line in out.split(b"\r\n"):
        assert not line.startswith(b"From ")
        assert not line.endswith((b" ", b"\t"))
    assert leaves(b"MIME-Version: 1.0\r\n" + top + b"\r\n" + out) == leaves(original)
