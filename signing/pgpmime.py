"""PGP/MIME signing frames (RFC 3156 on RFC 1847, protected headers per
RFC 9788), built around a body that is never held (SPEC.md S-1104).

This module owns the decisions from the header and the frame's bytes:
whether a message is wrapped (`plan`: left alone when already signed or
encrypted, skipped when its Content-Type does not parse), the signed
part's header (its Content-* fields as they were,
`protected-headers="v1"; hp="clear"`, copies of the header fields a
reader sees), the frame's prefix and suffix, the outer header, and a
streaming quoted-printable encoder. What the body needs (S-1104's 7-bit
rule, inline PGP) is signing/mimewalk.py's. The shell streams the body
through the walker, runs the SOP command over exactly the signed part's
bytes, and hands on prefix, body and suffix.
No I/O here; no third-party import.
"""

from __future__ import annotations

import binascii
import re
from collections.abc import Sequence
from dataclasses import dataclass

#: RFC 9788 §4.1 (and what Thunderbird copies): the header fields a reader
#: sees, copied into the signed part so that the signature covers them.
PROTECTED = ("from", "to", "cc", "reply-to", "subject", "date", "message-id", "in-reply-to", "references")
#: Top-level types that already carry a signature or encryption: left alone.
ALREADY = frozenset({
    "multipart/signed", "multipart/encrypted", "application/pkcs7-mime", "application/x-pkcs7-mime",
    "application/pgp-encrypted",
})  # fmt: skip
#: The quoted-printable encoder encodes a line without LF in pieces past this.
QP_LINE_PIECE = 64 * 1024
PREAMBLE = b"This is an OpenPGP/MIME signed message (RFC 4880 and 3156)\r\n"

_TOKEN = r"[!#$%&'*+\-.0-9A-Z^_`a-z{|}~]+"
_PARAM = re.compile(r"\s*;\s*(" + _TOKEN + r")\s*=\s*(" + _TOKEN + r'|"(?:[^"\\\r\n]|\\.)*")', re.S)
_TYPE = re.compile(r"\s*(" + _TOKEN + r")\s*/\s*(" + _TOKEN + r")", re.S)
#: A quoted string (kept) or a comment without a comment inside (removed):
#: comments go innermost first, and never from inside a quoted string.
_QUOTED_OR_COMMENT = re.compile(r'("(?:[^"\\]|\\.)*")|\((?:[^()"\\]|\\.)*\)')


def content_type(value: bytes) -> tuple[str, dict[str, str]] | None:
    """RFC 2045 §5.1: `type/subtype` (lower case) and the parameters
    (names lower case, values unquoted), or None when it does not parse."""
    try:
        text = value.decode("ascii")
    except UnicodeDecodeError:
        return None
    text = _uncomment(text.replace("\r\n", ""))
    m = _TYPE.match(text)
    if not m:
        return None
    params: dict[str, str] = {}
    pos = m.end()
    while pos < len(text.rstrip(" \t;")):
        p = _PARAM.match(text, pos)
        if not p:
            return None
        v = p.group(2)
        if v.startswith('"'):
            v = re.sub(r"\\(.)", r"\1", v[1:-1])
        params[p.group(1).lower()] = v
        pos = p.end()
    return f"{m.group(1).lower()}/{m.group(2).lower()}", params


def _uncomment(text: str) -> str:
    """RFC 5322 §3.2.2: comments (nested ones too) become a space;
    quoted strings stay as they are, parentheses and all."""
    while "(" in text:
        plain = _QUOTED_OR_COMMENT.sub(lambda m: m.group(1) or " ", text)
        if plain == text:
            break
        text = plain
    return text


def _value(raw: bytes) -> bytes:
    return raw.partition(b":")[2].strip()


def header_values(fields: Sequence[tuple[str, bytes]]) -> tuple[bytes | None, bytes | None]:
    """The values of the first Content-Type and Content-Transfer-Encoding
    fields (folds included), or None for one that is absent."""
    ct = next((raw for name, raw in fields if name.lower() == "content-type"), None)
    cte = next((raw for name, raw in fields if name.lower() == "content-transfer-encoding"), None)
    return (_value(ct) if ct is not None else None), (_value(cte) if cte is not None else None)


@dataclass(frozen=True, slots=True)
class Plan:
    """What to do with a message, from its header: `action` "sign",
    "leave" or "skip" (`why` says why, for the log)."""

    action: str
    why: str = ""


def plan(fields: Sequence[tuple[str, bytes]]) -> Plan:
    """S-1104's decision from the header alone; the body walk decides the rest."""
    ct, _ = header_values(fields)
    if ct is None:
        return Plan("sign")
    parsed = content_type(ct)
    if parsed is None:
        return Plan("skip", "unparsable Content-Type")
    mtype, params = parsed
    if mtype in ALREADY:
        return Plan("leave", "already protected")
    if mtype.startswith("multipart/") and not params.get("boundary"):
        return Plan("skip", "multipart without a boundary")
    return Plan("sign")


class QuotedPrintable:
    """RFC 2045 §6.7 quoted-printable of a CRLF text body, chunk by chunk:
    whole lines at a time through binascii (C speed), trailing white space
    encoded, lines of at most 76 characters, a line without LF in pieces
    with soft breaks. "From " is written "=46rom " wherever it occurs, so
    that no line, not even one that a soft break starts, begins with it
    (RFC 3156 §3). The input is a stored body: CRLF line ends, no bare CR, no NUL (S-302,
    S-305, S-306)."""

    __slots__ = ("_carry",)

    def __init__(self) -> None:
        self._carry = b""

    def feed(self, chunk: bytes) -> bytes:
        data = self._carry + chunk if self._carry else chunk
        end = data.rfind(b"\n") + 1
        out = _qp(data[:end]) if end else b""
        rest = data[end:]
        if len(rest) > QP_LINE_PIECE:
            keep = 1 if rest.endswith(b"\r") else 0  # half a CRLF: it stays with its LF
            out += self._piece(rest[: len(rest) - keep])
            rest = rest[len(rest) - keep :]
        self._carry = rest
        return out

    def finish(self) -> bytes:
        """The body's end: what is held is its last line, whose line break
        follows the body (the delimiter's CRLF inside a multipart, or the
        one S-1104 gives a body without one): no soft break after it."""
        rest, self._carry = self._carry, b""
        return qp_line(rest) if rest else b""

    @staticmethod
    def _piece(piece: bytes) -> bytes:
        """Part of a line: a soft break follows. Without a CRLF in its
        input binascii breaks lines with LF alone, and the piece has no LF
        of its own, so each LF out is such a soft break."""
        out = _qp(piece).replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")
        start = out.rfind(b"\n") + 1
        if len(out) - start > 75:  # the soft break would make it 77: break it once more, not inside an =XX
            cut = start + 75
            cut -= 1 if out[cut - 1 : cut] == b"=" else 2 if out[cut - 2 : cut - 1] == b"=" else 0
            out = out[:cut] + b"=\r\n" + out[cut:]
        return out + b"=\r\n"


#: What _qp marks before binascii encodes, and what the mark's =XX becomes.
#: "From " anywhere, so that no line (not even one a soft break starts)
#: begins with it (RFC 3156 §3); white space before a line end, because
#: binascii encodes that one after its line-length check and so makes
#: lines of 77 characters.
_MARKS = ((b"From ", b"rom ", b"=46"), (b" \r\n", b"\r\n", b"=20"), (b"\t\r\n", b"\r\n", b"=09"))
#: Octets a mark may be: controls that binascii encodes as =XX. A stored
#: body holds no NUL (S-306), so NUL is almost always the first one free.
_SENTINELS = bytes([0, 1, 2, 3, 4, 5, 6, 7, 8, 11, 12, 14, 15, 16, 17, 18, 19, 20, 21, 22, 23, 24, 25, 26, 27])


def _qp(block: bytes) -> bytes:
    """binascii's quoted-printable of whole lines (or a piece of one),
    with the _MARKS turned into encoded octets first: each is counted in
    the line length as the three characters it becomes."""
    found = [mark for mark in _MARKS if block.find(mark[0]) != -1]
    if not found:
        return binascii.b2a_qp(block, quotetabs=False, istext=True, header=False)
    free = [c for c in _SENTINELS if block.find(bytes([c])) == -1][: len(found)]
    if len(free) < len(found):  # a block holding nearly every control: by lines, in Python
        return b"".join(qp_line(line) for line in block.splitlines(keepends=True))
    marked = block
    for (pattern, rest, _), c in zip(found, free, strict=True):
        marked = marked.replace(pattern, bytes([c]) + rest)
    out = binascii.b2a_qp(marked, quotetabs=False, istext=True, header=False)
    for (_, _, encoded), c in zip(found, free, strict=True):
        out = out.replace(b"=%02X" % c, encoded)
    return out


def qp_line(line: bytes, istext: bool = True, soft: bool = False) -> bytes:
    """One line (the rare path of _qp, and QuotedPrintable's last line):
    encoded whole, then broken into pieces of at most 76 characters (never
    inside an =XX), each piece that starts with "From " starting with =46
    instead. `istext=False`: a CR or LF in it is an octet (=0D, =0A);
    `soft`: it ends in a soft line break (its "=" counted in the 76)."""
    body, end = (line[:-2], b"\r\n") if istext and line.endswith(b"\r\n") else (line, b"")
    # Without a line end binascii encodes trailing white space; its own soft
    # breaks (=CRLF when the input holds a CRLF, else =LF) are removed, for
    # the breaks made here.
    out = binascii.b2a_qp(body, quotetabs=False, istext=istext, header=False)
    out = out.replace(b"=\r\n", b"").replace(b"=\n", b"")
    last = 75 if soft else 76
    pieces = []
    while True:
        if out.startswith(b"From "):
            out = b"=46" + out[1:]
        if len(out) <= last:
            break
        cut = 75
        cut -= 1 if out[cut - 1 : cut] == b"=" else 2 if out[cut - 2 : cut - 1] == b"=" else 0
        pieces.append(out[:cut] + b"=\r\n")
        out = out[cut:]
    return b"".join(pieces) + out + (b"=" if soft else b"") + end


def _fold_param_line(name: str, value: str) -> bytes:
    """`Name: value` with `; ` parameters, folded before a parameter when a
    line would pass 78 characters (for the fields msa makes itself)."""
    head, *params = [p.strip() for p in value.split(";")]
    lines = [f"{name}: {head};"] if params else [f"{name}: {head}"]
    for i, p in enumerate(params):
        piece = p + (";" if i < len(params) - 1 else "")
        if len(lines[-1]) + 1 + len(piece) > 78:
            lines.append("\t" + piece)
        else:
            lines[-1] += " " + piece
    return ("\r\n".join(lines) + "\r\n").encode("utf-8", "surrogateescape")


#: RFC 9788 §4.1: what the signed part's Content-Type says beside the original.
_PROTECTED_PARAMS = (("protected-headers", b'protected-headers="v1"'), ("hp", b'hp="clear"'))


def _protected_content_type(raw: bytes) -> bytes:
    """The Content-Type field `raw` (name, value, folds, CRLF) as it was,
    byte for byte, with the RFC 9788 parameters it lacks appended (S-1104):
    a quoted string or comment is never touched, so `boundary="a  b"` and
    `name="a;b"` stay what they were. On its last line when that stays
    within 78 characters (RFC 5322 §2.1.1), else on a folded line of its own."""
    field = raw[:-2] if raw.endswith(b"\r\n") else raw
    parsed = content_type(_value(field))
    have = parsed[1] if parsed is not None else {}
    added = b"; ".join(param for name, param in _PROTECTED_PARAMS if name not in have)
    if not added:
        return field + b"\r\n"
    sep = b"" if field.rstrip(b" \t").endswith(b";") else b";"  # never an empty parameter
    last_line = len(field) - (field.rfind(b"\n") + 1)
    if last_line + len(sep) + 1 + len(added) <= 78:
        return field + sep + b" " + added + b"\r\n"
    return field + sep + b"\r\n\t" + added + b"\r\n"


def part_header(fields: Sequence[tuple[str, bytes]], cte: str | None = None, eight_bit: bool = False) -> bytes:
    """The signed part's header (S-1104): its Content-Type byte for byte
    with `protected-headers="v1"; hp="clear"` added (RFC 9788 §4.1), its
    other Content-* fields, the transfer encoding as it will be (the
    original field byte for byte unless re-encoded), and copies of the
    PROTECTED fields, CRLF throughout; the empty line not included.
    `cte`: the body's new transfer encoding, None when it is as it was;
    `eight_bit`: the body is 8-bit text (it names the default charset)."""
    ct_raw = next((raw for name, raw in fields if name.lower() == "content-type"), None)
    if ct_raw is None:
        # RFC 2045 §5.2's default, or RFC 1428's label for 8-bit text of no declared charset.
        ct_raw = b"Content-Type: text/plain; charset=" + (b"unknown-8bit" if eight_bit else b"us-ascii") + b"\r\n"
    out = [_protected_content_type(ct_raw)]
    for name, raw in fields:
        lname = name.lower()
        if lname.startswith("content-") and lname not in ("content-type", "content-transfer-encoding"):
            out.append(raw)
    if cte is not None:
        out.append(b"Content-Transfer-Encoding: " + cte.encode("ascii") + b"\r\n")
    else:
        out += [raw for name, raw in fields if name.lower() == "content-transfer-encoding"]
    for name, raw in fields:
        if name.lower() in PROTECTED:
            out.append(raw)
    return b"".join(out)


def prefix(boundary: bytes, part_head: bytes) -> bytes:
    """From the end of the outer header to the start of the body: the
    preamble, the first delimiter, the signed part's header, its empty line."""
    return b"\r\n" + PREAMBLE + b"--" + boundary + b"\r\n" + part_head + b"\r\n"


def signed_part(part_head: bytes) -> bytes:
    """What the signed part holds before the body: its header and empty line."""
    return part_head + b"\r\n"


def part_end(body_ends_crlf: bool) -> bytes:
    """What the signed part holds after the body (S-1104, amended): the
    body is whole, its last CRLF included, and one without a final CRLF
    gets one here. RFC 3156 §5 ends the signed entity with its own line
    break: the CRLF before the next delimiter belongs to the delimiter
    (RFC 1847 §2.1) and is not signed, so a body whose last CRLF served
    as the delimiter's lost its line break, and GMime, which rebuilds
    the entity with it, called the signature bad."""
    return b"" if body_ends_crlf else b"\r\n"


def suffix(boundary: bytes, signature: bytes, body_ends_crlf: bool) -> bytes:
    """From the end of the body: the end of the signed part (`part_end`),
    the delimiter with a CRLF of its own, the signature part, the close
    delimiter."""
    sig = signature.replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")
    if not sig.endswith(b"\r\n"):
        sig += b"\r\n"
    return (part_end(body_ends_crlf) + b"\r\n--" + boundary + b"\r\n"
            + b'Content-Type: application/pgp-signature; name="signature.asc"\r\n'
            + b"Content-Description: OpenPGP digital signature\r\n"
            + b'Content-Disposition: attachment; filename="signature.asc"\r\n\r\n'
            + sig + b"\r\n--" + boundary + b"--\r\n")


def outer_header(fields: Sequence[tuple[str, bytes]], boundary: bytes, micalg: str) -> bytes:
    """The message's header once wrapped: every field but Content-* and
    MIME-Version, as they were, then MIME-Version and the multipart/signed
    Content-Type (RFC 3156 §5), then the empty line."""
    kept = [raw for name, raw in fields
            if not name.lower().startswith("content-") and name.lower() != "mime-version"]
    ct = (f'multipart/signed; micalg="{micalg}"; protocol="application/pgp-signature"; '
          f'boundary="{boundary.decode("ascii")}"')
    return b"".join(kept) + b"MIME-Version: 1.0\r\n" + _fold_param_line("Content-Type", ct) + b"\r\n"
