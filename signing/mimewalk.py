"""A streaming MIME walker for S-1104's 7-bit rule (RFC 3156 §3, amended):
every leaf part, at any multipart depth, that is 8-bit or binary, or has
a line with trailing white space or starting with "From ", is re-encoded
(a text/* part as quoted-printable, any other as base64), its
Content-Transfer-Encoding changed to match and nothing else of it; a
message/rfc822 part is an entity of its own, parsed as a message.

The walker is fed the body of the top-level entity (whose Content-Type
and Content-Transfer-Encoding come from the message header) chunk by
chunk, and runs twice: first without a `Recoding` (`Walker(...)`), it
only looks, and `result()` says what to change, or why the message
cannot be signed (`problem`), or that it holds inline PGP (`armor`);
then, only when something changes, with that Recoding it returns the
new body piece by piece. The two passes see the same bytes, so they
number the same entities the same way. Parts already clean, and every
preamble, epilogue, delimiter line and header but a changed
Content-Transfer-Encoding field, are copied byte for byte.

Memory is bounded however deep or large the body (S-1102): a stack of at
most MAX_DEPTH boundaries, one part header of at most PART_HEADER_MAX
octets held until it ends, a carry of at most a delimiter line, the
changes for at most MAX_ENTITIES entities. Past a bound the message is
left unsigned (`problem` says which), never held. Delimiters are found
with one compiled regular expression per set of open boundaries, run
over each chunk (C speed; no Python loop per line).
No I/O; no third-party import.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from . import recode
from .pgpmime import QuotedPrintable, content_type

#: Multiparts and message/rfc822 entities open at once. Mail programs nest
#: three or four deep; GMime stops at 1024, but msa holds a boundary each.
MAX_DEPTH = 50
#: One part's header (a message/rfc822's included) is held until its empty
#: line; msa's own header block allows 1 MiB, a part needs a few hundred octets.
PART_HEADER_MAX = 256 * 1024
#: Entities (parts, and the top-level one) numbered in one message.
MAX_ENTITIES = 10_000
#: RFC 2046 §5.1.1 allows 70 characters; longer ones exist, not this long.
BOUNDARY_MAX = 200
#: White space after a boundary on its line (RFC 2046 §5.1.1's transport
#: padding), carried while its line is unfinished.
PADDING_MAX = 1024

#: Containers whose content a signature or encryption already covers:
#: nothing inside may change (RFC 1847 §2.1).
SEALED = frozenset({"multipart/signed", "multipart/encrypted"})
#: RFC 2045 §6.1's identity encodings: the body is the content.
RAW = frozenset({"", "7bit", "8bit", "binary"})

# What a Recoding does to an entity, by its number.
QUOTED_PRINTABLE = "quoted-printable"  # raw text, encoded
BASE64 = "base64"  # raw octets, encoded
SEVEN_BIT = "7bit"  # a container labelled 8bit or binary, whose content is now 7-bit
REPAIR_QP = "repair-qp"  # a quoted-printable body made safe line by line
REPAIR_BASE64 = "repair-base64"  # a base64 body without the octets decoders ignore


@dataclass(frozen=True, slots=True)
class Recoding:
    """What the first pass found: `changes` (entity number to one of the
    actions above; 0 is the top-level entity), `problem` (why the message
    is left unsigned, or None), `armor` (an inline-PGP line in the first
    text part), `top_eight_bit` (the top-level entity is 8-bit text)."""

    changes: dict[int, str] = field(default_factory=dict)
    problem: str | None = None
    armor: bool = False
    top_eight_bit: bool = False

    def top_cte(self) -> str | None:
        """The top-level entity's new Content-Transfer-Encoding, or None: as it was."""
        action = self.changes.get(0)
        return action if action in (QUOTED_PRINTABLE, BASE64, SEVEN_BIT) else None

    def reencoded(self) -> int:
        """How many leaf parts change (for the log)."""
        return sum(1 for a in self.changes.values() if a != SEVEN_BIT)


@dataclass(slots=True)
class _Level:
    """An open multipart (`boundary`) or message/rfc822 entity (no boundary)."""

    boundary: bytes | None
    sealed: bool  # inside multipart/signed or multipart/encrypted
    digest: bool = False  # multipart/digest: parts are message/rfc822 by default (RFC 2046 §5.1.5)


@dataclass(slots=True)
class _Region:
    """A stretch between delimiters: a leaf's body, a preamble, an epilogue."""

    kind: str  # "leaf", "preamble", "epilogue"
    number: int = -1  # the leaf's entity number
    mtype: str | None = None  # the leaf's type; None: its Content-Type did not parse
    cte: str = ""  # the leaf's declared encoding, lower case
    sealed: bool = False
    scan: recode.LineScan | None = None  # first pass
    sink: Any = None  # second pass: an encoder, or None to copy


class Walker:
    """One pass over a body; see the module's docstring."""

    def __init__(self, content_type_value: bytes | None, cte_value: bytes | None,
                 recoding: Recoding | None = None) -> None:
        self._recoding = recoding  # None: the first pass, which only looks
        self._changes: dict[int, str] = {}
        self._problem: str | None = None
        self._armor = False
        self._text_seen = False  # the first text part was looked at for armor
        self._top_eight_bit = False
        self._levels: list[_Level] = []
        self._patterns: tuple[re.Pattern[bytes], ...] | None = None
        self._buf = b""
        self._in_header = False
        self._region: _Region | None = None
        self._at_line_start = True  # nothing of the current header or region consumed yet
        self._entities = 0
        self._out: list[bytes] = []
        self._entity(content_type_value, cte_value, None, "text/plain")

    # -- the interface ------------------------------------------------------------------
    def feed(self, chunk: bytes) -> bytes:
        if self._problem is not None:
            return b""
        self._buf = self._buf + chunk if self._buf else chunk
        self._run(eof=False)  # carries at most a header (bounded there) or a delimiter line
        return self._take()

    def finish(self) -> bytes:
        if self._problem is None:
            self._run(eof=True)
            if self._region is not None:
                self._end_region()
        return self._take()

    def result(self) -> Recoding:
        return Recoding(dict(self._changes), self._problem, self._armor, self._top_eight_bit)

    # -- the walk ---------------------------------------------------------------------
    def _take(self) -> bytes:
        out = b"".join(self._out)
        self._out = []
        return out

    def _emit(self, data: bytes) -> None:
        if self._recoding is not None and data:
            self._out.append(data)

    def _fail(self, why: str) -> None:
        if self._problem is None:
            self._problem = why
        self._buf = b""
        self._out = []

    def _run(self, eof: bool) -> None:
        buf, pos = self._buf, 0
        while self._problem is None:
            new = self._header_step(buf, pos, eof) if self._in_header else self._region_step(buf, pos, eof)
            if new is None:
                break
            pos = new
        self._buf = buf[pos:] if self._problem is None else b""

    def _header_step(self, buf: bytes, pos: int, eof: bool) -> int | None:
        """A part's header up to its empty line (RFC 2045 §3, RFC 5322 §2.1),
        or up to a delimiter line (a part with a header and no body)."""
        if len(buf) - pos < 2 and not eof:
            return None
        if buf.startswith(b"\r\n", pos):  # no header at all
            head_end, body = pos, pos + 2
        else:
            blank = buf.find(b"\r\n\r\n", pos)
            m = self._delimiter(buf, pos, eof, blank + 2 if blank != -1 else len(buf))
            if m is not None:
                head_end = body = m.start()  # the delimiter is matched again as the body's end
            elif blank != -1:
                head_end, body = blank + 2, blank + 4
            elif eof:
                head_end = body = len(buf)
            elif len(buf) - pos > PART_HEADER_MAX:
                return self._fail("a part header over 256 KiB")
            else:
                return None
        if head_end - pos > PART_HEADER_MAX:
            return self._fail("a part header over 256 KiB")
        self._in_header = False
        header = buf[pos:head_end]
        self._part_header(header, buf[head_end:body])
        return body

    def _part_header(self, header: bytes, blank: bytes) -> None:
        """A part's header is complete: what it is decides what follows."""
        if not header.isascii():
            return self._fail("8-bit octets in a part's header")
        if header.startswith(b"From ") or header.find(b"\nFrom ") != -1:
            return self._fail('a part\'s header has a line starting with "From "')
        ct = cte = None
        for name, value in _fields(header):
            if name == b"content-type" and ct is None:
                ct = value
            elif name == b"content-transfer-encoding" and cte is None:
                cte = value
        parent = self._levels[-1] if self._levels else None
        default = "message/rfc822" if parent is not None and parent.digest else "text/plain"
        number = self._entities
        self._entity(ct, cte, header, default)
        if self._problem is not None:
            return
        action = (self._recoding.changes if self._recoding is not None else self._changes).get(number)
        if action is not None and action not in (REPAIR_QP, REPAIR_BASE64):
            header = _set_cte(header, action.encode("ascii"))
        self._emit(header + blank)

    def _entity(self, ct: bytes | None, cte_raw: bytes | None, header: bytes | None, default: str) -> None:
        """An entity begins (its header read): push a level, or open a leaf."""
        number = self._entities
        self._entities += 1
        if self._entities > MAX_ENTITIES:
            return self._fail(f"more than {MAX_ENTITIES} parts")
        parsed = content_type(ct) if ct is not None else (default, {})
        mtype, params = parsed if parsed is not None else (None, {})
        cte = _cte(cte_raw)
        sealed = bool(self._levels) and self._levels[-1].sealed
        # RFC 2046 §5.2.1: a message/rfc822 in base64 or quoted-printable is
        # not allowed; one that comes anyway is a leaf like any other.
        container = mtype is not None and (mtype.startswith("multipart/")
                                           or (mtype == "message/rfc822" and cte in RAW))
        if container:
            if len(self._levels) >= MAX_DEPTH:
                return self._fail(f"parts nested deeper than {MAX_DEPTH}")
            if cte not in RAW:  # RFC 2045 §6.4
                return self._fail(f"a {mtype} part in {cte}")
            if cte in ("8bit", "binary") and not sealed and self._recoding is None:
                self._changes[number] = SEVEN_BIT  # its content will be 7-bit: an MTA must not downgrade it
        if mtype is not None and mtype.startswith("multipart/"):
            boundary = params.get("boundary", "").encode("ascii", "replace")
            if not boundary or len(boundary) > BOUNDARY_MAX:
                return self._fail(f"a {mtype} part without a usable boundary")
            self._push(_Level(boundary, sealed or mtype in SEALED, mtype == "multipart/digest"))
            self._open_region(_Region("preamble"))
        elif container:  # message/rfc822: its header comes next (RFC 2046 §5.2.1)
            self._push(_Level(None, sealed))
            self._in_header = True
            self._at_line_start = True
        else:
            self._open_region(_Region("leaf", number, mtype, cte, sealed))

    def _push(self, level: _Level) -> None:
        self._levels.append(level)
        self._patterns = None

    def _open_region(self, region: _Region) -> None:
        self._region = region
        self._at_line_start = True
        if self._recoding is None:
            # S-1104: inline PGP is looked for in the first text part of the
            # message itself, not of a message it forwards.
            forwarded = any(lv.boundary is None for lv in self._levels)
            armor = (region.kind == "leaf" and not self._text_seen and not forwarded
                     and region.mtype is not None and region.mtype.startswith("text/"))
            if armor:
                self._text_seen = True
            region.scan = recode.LineScan(armor, tuple(b"--" + b for b in self._boundaries()))
            return
        action = self._recoding.changes.get(region.number) if region.kind == "leaf" else None
        encoder = _ENCODERS.get(action) if action is not None else None
        region.sink = encoder() if encoder is not None else None  # None: copied

    def _region_step(self, buf: bytes, pos: int, eof: bool) -> int | None:
        m = self._delimiter(buf, pos, eof, len(buf))
        end = m.start() if m is not None else len(buf) if eof else self._safe_end(buf, pos)
        if end > pos:
            self._region_data(buf[pos:end])
            self._at_line_start = False
        if m is None:
            return end if end > pos else None
        self._end_region()
        self._delimiter_line(m)
        return m.end()

    def _region_data(self, data: bytes) -> None:
        region = self._region
        assert region is not None
        if region.scan is not None:
            region.scan.feed(data)
        elif region.sink is not None:
            self._emit(region.sink.feed(data))
        else:
            self._emit(data)

    def _end_region(self) -> None:
        region, self._region = self._region, None
        assert region is not None
        if region.sink is not None:
            self._emit(region.sink.finish())
        if region.scan is None:
            return
        scan = region.scan
        scan.finish()
        if scan.armor:
            self._armor = True
        if region.kind != "leaf":
            if scan.unsafe:
                self._fail(f"8-bit octets or unsafe lines in a multipart {region.kind}")
            return
        if region.number == 0:
            self._top_eight_bit = scan.eight_bit
        if not (scan.unsafe or region.cte in ("8bit", "binary")):
            return
        if region.sealed:
            return self._fail("an 8-bit or unsafe part inside a signed or encrypted part")
        if region.cte in RAW:
            if region.mtype is None:
                return self._fail("an 8-bit or unsafe part whose Content-Type does not parse")
            if region.mtype in ("message/partial", "message/external-body"):  # 7bit only, RFC 2046 §5.2.2-3
                return self._fail(f"an 8-bit or unsafe {region.mtype} part")
            # Quoted-printable starts new lines (soft breaks): one could start
            # with a boundary the text holds in the middle of a line; base64 cannot.
            text = region.mtype.startswith("text/") and not scan.boundary_inside
            self._changes[region.number] = QUOTED_PRINTABLE if text else BASE64
        elif region.cte == "quoted-printable":
            if scan.long_line:
                return self._fail(f"a quoted-printable line over {recode.QP_LINE_MAX} octets")
            self._changes[region.number] = REPAIR_QP
        elif region.cte == "base64":
            self._changes[region.number] = REPAIR_BASE64
        else:
            self._fail(f"an 8-bit or unsafe part in {region.cte[:40]}")

    def _delimiter_line(self, m: re.Match[bytes]) -> None:
        """RFC 2046 §5.1.1: a delimiter (or close delimiter) line of one of
        the open multiparts; one that closes an outer multipart closes the
        ones inside it too (as Python's email parser and GMime read it)."""
        if m.group(3) and self._recoding is None:  # transport padding: a transport may strip it
            return self._fail("white space after a boundary")
        self._emit(m.group(0))
        boundary = m.group(1)
        while self._levels[-1].boundary != boundary:
            self._levels.pop()
        self._patterns = None
        if m.group(2):  # the close delimiter: the epilogue follows, up to an outer delimiter
            self._levels.pop()
            self._open_region(_Region("epilogue"))
        else:
            self._in_header = True
            self._at_line_start = True

    # -- delimiters ----------------------------------------------------------------------
    def _boundaries(self) -> list[bytes]:
        return [lv.boundary for lv in self._levels if lv.boundary is not None]

    def _delimiter(self, buf: bytes, pos: int, eof: bool, limit: int) -> re.Match[bytes] | None:
        """The first delimiter line of an open multipart in buf[pos:limit]:
        CRLF "--" boundary ["--"] padding, then CRLF (or the end, at eof);
        at a line start the leading CRLF is the previous line's."""
        if self._patterns is None:
            self._patterns = _patterns(self._boundaries())
        if not self._patterns:
            return None
        mid, start, mid_eof, start_eof = self._patterns
        if self._at_line_start:
            m = (start_eof if eof else start).match(buf, pos)
            if m is not None:
                return m
        m = (mid_eof if eof else mid).search(buf, pos)
        return m if m is not None and m.start() < limit else None

    def _safe_end(self, buf: bytes, pos: int) -> int:
        """How far buf[pos:] may go to the region: up to a last, unfinished
        line that could still become a delimiter line."""
        boundaries = self._boundaries()
        if not boundaries:
            return len(buf)
        last = buf.rfind(b"\r\n", pos)
        if last == -1:
            if self._at_line_start and _could_be_delimiter(buf[pos:], boundaries):
                return pos  # the region's first line, unfinished
            return _cr_end(buf, pos)
        if _could_be_delimiter(buf[last + 2 :], boundaries):
            return last
        return _cr_end(buf, pos)


class _Base64Repair:
    """recode.base64_repair in the encoders' shape."""

    @staticmethod
    def feed(data: bytes) -> bytes:
        return recode.base64_repair(data)

    @staticmethod
    def finish() -> bytes:
        return b""


#: What the second pass feeds a changed leaf's body through.
_ENCODERS: dict[str, type] = {QUOTED_PRINTABLE: QuotedPrintable, BASE64: recode.Base64,
                              REPAIR_QP: recode.QPRepair, REPAIR_BASE64: _Base64Repair}


def _cr_end(buf: bytes, pos: int) -> int:
    """The end, or before a last CR: it may begin a delimiter's CRLF."""
    return len(buf) - 1 if buf.endswith(b"\r") and len(buf) - 1 >= pos else len(buf)


def _could_be_delimiter(line: bytes, boundaries: list[bytes]) -> bool:
    """Whether an unfinished line (maybe ending in the CR of its CRLF)
    could still be a delimiter line of one of `boundaries`."""
    if line.endswith(b"\r"):
        line = line[:-1]
    for boundary in boundaries:
        dash = b"--" + boundary
        if len(line) <= len(dash):
            if dash.startswith(line):
                return True
        elif line.startswith(dash):
            rest = line[len(dash) :]
            if rest == b"-":
                return True
            if rest.startswith(b"--"):
                rest = rest[2:]
            if len(rest) <= PADDING_MAX and not rest.strip(b" \t"):
                return True
    return False


def _patterns(boundaries: list[bytes]) -> tuple[re.Pattern[bytes], ...]:
    """The delimiter expressions for a set of open boundaries (longest
    first, so that one boundary that begins another is tried last)."""
    if not boundaries:
        return ()
    alternatives = b"|".join(re.escape(b) for b in sorted(set(boundaries), key=len, reverse=True))
    line = b"--(" + alternatives + b")(--)?([ \t]*)"
    return (re.compile(b"\r\n" + line + b"\r\n"), re.compile(line + b"\r\n"),
            re.compile(b"\r\n" + line + b"(?:\r\n|\\Z)"), re.compile(line + b"(?:\r\n|\\Z)"))


_FIELD = re.compile(rb"(?m)^([^:\s]+)[ \t]*:([^\r\n]*(?:\r\n[ \t][^\r\n]*)*)")


def _fields(header: bytes) -> list[tuple[bytes, bytes]]:
    """(lower-case name, value with its folds) of each field of a part's header."""
    return [(m.group(1).lower(), m.group(2)) for m in _FIELD.finditer(header)]


def _cte(value: bytes | None) -> str:
    """A Content-Transfer-Encoding value (RFC 2045 §6.1) in lower case,
    comments removed; "" when absent (7bit)."""
    if value is None:
        return ""
    text = value.decode("ascii", "replace").replace("\r\n", "")
    return re.sub(r"\([^()]*\)", " ", text).strip().lower()


_CTE_FIELD = re.compile(rb"(?im)^(content-transfer-encoding[ \t]*):[^\r\n]*(?:\r\n[ \t][^\r\n]*)*")


def _set_cte(header: bytes, value: bytes) -> bytes:
    """The header with its Content-Transfer-Encoding field(s) saying
    `value`, the field name as written; a header without one gets one."""
    new, count = _CTE_FIELD.subn(lambda m: m.group(1) + b": " + value, header)
    if count:
        return new
    if header and not header.endswith(b"\r\n"):
        header += b"\r\n"
    return header + b"Content-Transfer-Encoding: " + value + b"\r\n"
