"""The header block of a message, read incrementally, bounded, byte-exact.

This module owns where the header block ends (SPEC.md S-701), its limits
(S-703) and the ``Field``/``HeaderBlock`` values the rest of the package
works on. It sees the message as the SMTP layer decoded it (dot-unstuffed,
CRLF line endings; no NUL and no bare CR, since DATA holding either is
refused whole at its end, S-305 and S-306) in chunks split anywhere, keeps only the header and never
looks at the body (S-708). Client faults are results (``HeaderTooLarge``),
never exceptions. It imports only the standard library and never does I/O.

Lines end at LF (a CR right before it belongs to the ending), which is how
Postfix and every other downstream reader split lines, so msa and the MTA
agree on which lines are fields.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from dataclasses import field as dataclass_field

from .limits import MAX_HEADER_BYTES, MAX_HEADER_FIELDS, MAX_NAME_SCAN

__all__ = ["Field", "HeaderBlock", "HeaderTooLarge", "HeaderReader", "fields_of", "unfolded"]

# RFC 5322 §2.2 / §3.6.8: field-name = 1*ftext, ftext = %d33-57 / %d59-126
# (printable US-ASCII except ":"). obs-optional (§4.5.3) allows WSP before
# the colon: "optional spaces before the colon tolerated" (S-701).
_FIELD_LINE = re.compile(rb"[\x21-\x39\x3b-\x7e]+[ \t]*:")
# A line start that may still become a field line once more octets arrive.
_FIELD_PREFIX = re.compile(rb"[\x21-\x39\x3b-\x7e]+[ \t]*")
# RFC 5322 §2.2.3: unfolding removes each CRLF that is followed by WSP.
_FOLD = re.compile(rb"\r?\n(?=[ \t])")

_WSP = b" \t"  # octets of WSP (RFC 5234 B.1)
_CR, _LF = 0x0D, 0x0A


@dataclass(frozen=True, slots=True)
class Field:
    """One header field exactly as received (RFC 5322 §2.2)."""

    #: The name as written (ASCII), without the colon and the spaces before it.
    name: str
    #: The whole field: its first line and continuation lines, each with its
    #: CRLF. Only a field cut off by the end of the message lacks the last CRLF.
    raw: bytes
    #: The name in lower case; field names are case-insensitive (RFC 5322
    #: §1.2.2). Computed once: every check and the fix look at it.
    lname: str = dataclass_field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "lname", self.name.lower())

    def value(self) -> bytes:
        """The unfolded value (RFC 5322 §2.2.3): everything after the colon,
        leading white space included, with the final line ending stripped and
        every line ending that precedes a space or tab removed."""
        value = self.raw[self.raw.index(b":") + 1 :]
        if value.endswith(b"\r\n"):
            value = value[:-2]
        elif value.endswith(b"\n"):
            value = value[:-1]
        return _FOLD.sub(b"", value)


@dataclass(frozen=True, slots=True)
class HeaderBlock:
    """The header block of a message (S-701)."""

    fields: tuple[Field, ...]
    #: Where the body begins in the fed stream: after the empty line; at the
    #: start of the line that ended the block when it was not a field line;
    #: at the end of the input when the message is all header.
    body_offset: int
    #: True when an empty line ended the block.
    separator: bool

    def named(self, lname: str) -> tuple[Field, ...]:
        """The fields whose lower-case name is ``lname``, in order."""
        return tuple(f for f in self.fields if f.lname == lname)


@dataclass(frozen=True, slots=True)
class HeaderTooLarge:
    """The header block broke a limit of S-703: reply 552 5.3.4."""

    reason: str


class HeaderReader:
    """Collects the header block from the chunks of a message.

    ``feed()`` takes every chunk in order; once the block has ended, later
    chunks cost O(1) and are not kept. ``finish()`` is called after the last
    chunk. Memory stays below ``max_bytes`` plus one chunk plus
    ``MAX_NAME_SCAN`` whatever the input: past a limit nothing more is stored
    and ``finish()`` answers ``HeaderTooLarge``.
    """

    __slots__ = (
        "_max_bytes",
        "_max_fields",
        "_buf",
        "_line",
        "_search",
        "_tail_is_header",
        "_field_start",
        "_spans",
        "_nfields",
        "_done",
        "_header_end",
        "_body_offset",
        "_separator",
        "_too_large",
        "_result",
    )

    def __init__(
        self, max_bytes: int = MAX_HEADER_BYTES, max_fields: int = MAX_HEADER_FIELDS
    ) -> None:
        self._max_bytes = max_bytes
        self._max_fields = max_fields
        self._buf = bytearray()  # the stream from offset 0, header part only
        self._line = 0  # start of the current, incomplete line
        self._search = 0  # where the search for the next LF resumes
        self._tail_is_header = False  # the incomplete line is known to be header
        self._field_start = -1  # start of the field still open, -1 if none
        self._spans: list[tuple[int, int]] = []  # closed fields, [start, end)
        self._nfields = 0  # fields seen, the open one included
        self._done = False
        self._header_end = 0  # end of the last field once done
        self._body_offset = 0
        self._separator = False
        self._too_large: str | None = None
        self._result: HeaderBlock | HeaderTooLarge | None = None

    # -- input ---------------------------------------------------------------

    def feed(self, chunk: bytes) -> None:
        """Take the next chunk of the message; a no-op once the block ended."""
        if self._done or self._too_large is not None or self._result is not None:
            return
        if not chunk:
            return
        buf = self._buf
        buf += chunk
        while not self._done:
            nl = buf.find(b"\n", self._search)
            if nl < 0:
                self._search = len(buf)
                break
            self._complete_line(self._line, nl + 1)
            if self._too_large is not None:
                return
        if not self._done:
            self._classify_tail()
        if self._too_large is not None:
            return
        if self._done:
            # Forget the body octets of this chunk (S-708).
            del buf[self._header_end :]
        elif self._stored_header() > self._max_bytes:
            # The same line may pass both limits: the field is counted first,
            # however the line was cut into chunks.
            if self._tail_is_header and buf[self._line] not in _WSP and self._nfields >= self._max_fields:
                self._overflow(f"more than {self._max_fields} header fields")
            else:
                self._overflow(f"header block larger than {self._max_bytes} octets")

    @property
    def body_offset(self) -> int | None:
        """Where the body starts in the stream, once the block has ended
        (a body fed elsewhere, such as a DKIM hash, starts there); None
        before, or when the block was too large."""
        return self._body_offset if self._done and self._too_large is None else None

    def finish(self) -> HeaderBlock | HeaderTooLarge:
        """The result, once the whole message was fed. Idempotent."""
        if self._result is None:
            self._result = self._finish()
        return self._result

    # -- lines ---------------------------------------------------------------

    def _complete_line(self, start: int, end: int) -> None:
        """Classify the line [start, end), which ends with LF (S-701)."""
        buf = self._buf
        first = buf[start]
        if end - start <= 2 and (first == _LF or (first == _CR and end - start == 2)):
            self._end_block(start, end, separator=True)
        elif first in _WSP:
            if self._field_start < 0:
                # A continuation needs a field before it (RFC 5322 §2.2.3).
                self._end_block(start, start, separator=False)
        elif _FIELD_LINE.match(buf, start, min(end, start + MAX_NAME_SCAN)):
            self._open_field(start)
        else:
            self._end_block(start, start, separator=False)
        if not self._done and self._too_large is None and end > self._max_bytes:
            # Checked line by line, so that the limit passed first in the
            # stream is the one reported, whatever the chunks.
            self._overflow(f"header block larger than {self._max_bytes} octets")
            return
        if not self._done:
            self._line = self._search = end
            self._tail_is_header = False

    def _classify_tail(self) -> None:
        """Decide early what the incomplete last line is, when its first
        octets already tell, so that a long non-field line is never buffered."""
        if self._tail_is_header:
            return
        buf, start = self._buf, self._line
        length = len(buf) - start
        if length == 0 or (length == 1 and buf[start] == _CR):
            return  # nothing yet, or maybe the empty line
        first = buf[start]
        if first in _WSP:
            if self._field_start < 0:
                self._end_block(start, start, separator=False)
            else:
                self._tail_is_header = True
            return
        scan_end = min(len(buf), start + MAX_NAME_SCAN)
        if _FIELD_LINE.match(buf, start, scan_end):
            self._tail_is_header = True
        elif length >= MAX_NAME_SCAN or not _FIELD_PREFIX.fullmatch(buf, start, scan_end):
            self._end_block(start, start, separator=False)

    def _open_field(self, start: int) -> None:
        self._close_field(start)
        self._field_start = start
        self._nfields += 1
        if self._nfields > self._max_fields:
            self._overflow(f"more than {self._max_fields} header fields")

    def _close_field(self, end: int) -> None:
        if self._field_start >= 0:
            self._spans.append((self._field_start, end))
            self._field_start = -1

    def _end_block(self, header_end: int, body_offset: int, *, separator: bool) -> None:
        self._close_field(header_end)
        self._done = True
        self._header_end = header_end
        self._body_offset = body_offset
        self._separator = separator
        if header_end > self._max_bytes:
            self._overflow(f"header block larger than {self._max_bytes} octets")

    def _stored_header(self) -> int:
        """Octets known to belong to the header so far."""
        return len(self._buf) if self._tail_is_header else self._line

    def _overflow(self, reason: str) -> None:
        self._too_large = reason
        self._buf = bytearray()
        self._spans = []

    # -- result --------------------------------------------------------------

    def _finish(self) -> HeaderBlock | HeaderTooLarge:
        if self._too_large is None and not self._done:
            self._finish_partial_line()
        if self._too_large is not None:
            return HeaderTooLarge(self._too_large)
        buf = self._buf
        fields = []
        for start, end in self._spans:
            raw = bytes(buf[start:end])
            name = raw[: raw.index(b":")].rstrip(b" \t").decode("ascii")
            fields.append(Field(name, raw))
        self._buf = bytearray()
        self._spans = []
        return HeaderBlock(tuple(fields), self._body_offset, self._separator)

    def _finish_partial_line(self) -> None:
        """The input ended inside the header. A last line without its line
        ending is kept as header when it is a field or a continuation line
        (its raw then lacks the CRLF, which fix() adds); otherwise it is the
        body, so no octet is lost either way."""
        buf, start = self._buf, self._line
        end = len(buf)
        if end > start:
            first = buf[start]
            if first in _WSP and self._field_start >= 0:
                pass  # continuation of the open field
            elif first not in _WSP and _FIELD_LINE.match(
                buf, start, min(end, start + MAX_NAME_SCAN)
            ):
                self._open_field(start)
                if self._too_large is not None:
                    return
            else:
                self._end_block(start, start, separator=False)
                return
        self._end_block(end, end, separator=False)


def fields_of(header: bytes) -> list[tuple[str, bytes]]:
    """(name, raw) of each field of a header block msa made itself (CRLF
    throughout, within the limits): what the signing steps work on."""
    reader = HeaderReader()
    reader.feed(header)
    block = reader.finish()
    assert not isinstance(block, HeaderTooLarge)  # msa's own output is bounded
    return [(f.name, f.raw) for f in block.fields]


def unfolded(name: str, raw: bytes) -> bytes:
    """A field's unfolded value (RFC 5322 §2.2.3), as the address parser takes it."""
    return Field(name, raw).value()
