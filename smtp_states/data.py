"""DataDecoder: the DATA phase, decoded in chunks (SPEC.md §3).

Owns: finding the end of the message, dot-unstuffing, line-ending
normalisation, and the size, bare-CR and NUL verdicts. Imports nothing but
`re` and `enum`.

The rules:
- S-301: only CRLF "." CRLF ends the data, the CRLF before the dot being the
  end of the previous line (or the dot being the first line).
- S-302: a bare LF is a line ending, stored as CRLF; every line starting with
  "." after either kind of ending loses that dot.
- S-304..S-306: size past the limit, a bare CR or a NUL stop storage; the
  data is still read to its end, then refused once.

S-303: every chunk costs the same few C-speed operations (`bytes.find`,
`bytes.count`, `bytes.replace`, one anchored regex), whatever it holds; there
is no Python loop per line or per byte, so a message of nothing but dot lines
costs about what plain text does.

How: decoding starts as if a CRLF had just been seen (the DATA command's
own, not part of the message), which makes "the dot is the first line" the
same case as any other. Then, with `buf` = carry + chunk:

- Every CRLF ends a line, so the end is the first b"\\r\\n.\\r\\n" in `buf`.
- Without one, the longest tail of at most 4 bytes that may begin the end
  (b"\\r\\n.\\r\\n"), or else a last LF, is carried to the next chunk. What
  comes before it, the decided region, then never ends in a CR whose LF may
  follow, nor in an LF whose dot may follow: each question about the region
  is answered inside it. (An LF "." that ends it is decided: that dot goes.)
- In the region: a bare CR iff there are more CRs than CRLFs (S-305); a
  bare LF iff there are more LFs than CRLFs, and only then does anything but
  unstuffing change the bytes (S-302). Every LF starts a line, so unstuffing
  is one `replace` of LF "." by LF, and the size after it is known from
  counts alone (S-304).

tests/datatest.py holds the line-by-line reference this is checked against.
"""

from __future__ import annotations

import re
from enum import Enum

_END = b"\r\n.\r\n"  # S-301
#: The longest suffix that is a prefix of b"\r\n.\r\n", else a last LF.
_TAIL = re.compile(rb"(?:\r(?:\n(?:\.\r?)?)?|\n)\Z")
_TAIL_MAX = 4


class DataError(Enum):
    TOO_BIG = "size"  # S-304
    BARE_CR = "bare CR"  # S-305
    NUL = "NUL"  # S-306


class DataDecoder:
    __slots__ = ("_carry", "_skip", "size", "max_size", "done", "_bare_cr", "_nul")

    def __init__(self, max_size: int) -> None:
        self._carry = b"\r\n"  # virtual: the DATA command's own line ending
        self._skip = 2  # ... which is not part of the message
        self.size = 0
        self.max_size = max_size
        self.done = False
        self._bare_cr = False
        self._nul = False

    @property
    def error(self) -> DataError | None:
        """The verdict, by a fixed priority so that it never depends on how
        the client's bytes were split: bare CR, then NUL, then size."""
        if self._bare_cr:
            return DataError.BARE_CR
        if self._nul:
            return DataError.NUL
        if self.size > self.max_size:
            return DataError.TOO_BIG
        return None

    def feed(self, data: bytes) -> tuple[bytes, int | None]:
        """Decode `data`; return (decoded bytes, consumed).

        `consumed` is None while the end has not been seen; otherwise it is
        the number of bytes of `data` that belonged to the message, the rest
        being the next commands. Once an error is set nothing more is
        returned, but the end is still searched for.
        """
        carry = self._carry
        buf = carry + data if carry else data
        # Most chunks hold no CRLF ".". A chunk with no "." at all (base64,
        # what big messages are mostly made of) is told by memchr; else a
        # reverse search says it fastest.
        crlf_dot = buf.find(b".") != -1 and buf.rfind(b"\r\n.") != -1
        end = buf.find(_END) if crlf_dot else -1
        if end != -1:
            out = self._decide(buf, end + 2, crlf_dot)  # through the CRLF before the dot
            self.done = True
            self._carry = b""
            return out, end + len(_END) - len(carry)
        tail = _TAIL.search(buf, max(0, len(buf) - _TAIL_MAX))
        stop = tail.start() if tail is not None else len(buf)
        out = self._decide(buf, stop, crlf_dot)
        self._carry = buf[stop:]
        return out, None

    def _decide(self, buf: bytes, stop: int, crlf_dot: bool) -> bytes:
        """Judge and decode buf[:stop], the decided region; return what is
        stored. `crlf_dot`: buf may hold a CRLF ".". Every fault is looked
        for in every region, stored or not (S-304..S-306); after a bare CR
        nothing else can change the verdict."""
        if stop == 0 or self._bare_cr:
            return b""
        skip = self._skip  # never splits the virtual CRLF: see _TAIL
        self._skip = 0
        crlf = buf.count(b"\r\n", 0, stop)
        if buf.count(b"\r", 0, stop) != crlf:
            self._bare_cr = True  # S-305: a CR that does not start a CRLF
            return b""
        if not self._nul and buf.find(b"\x00", 0, stop) != -1:
            self._nul = True  # S-306
        bare_lf = buf.count(b"\n", 0, stop) - crlf
        if self.error is not None:
            # Nothing more is stored, but the size is still counted, from
            # counts: every LF starts a line, so each LF "." is a dropped dot.
            self.size += stop - skip - buf.count(b"\n.", 0, stop) + bare_lf
            return b""
        out = buf[:stop]
        if bare_lf:
            # S-302, with no bare CR: drop the first dot of each line (the
            # matches cannot overlap), then store every LF as CRLF. Removing
            # a dot after an LF never makes or breaks a CRLF.
            if out.rfind(b"\n.") != -1:
                out = out.replace(b"\n.", b"\n")
            if crlf:
                out = out.replace(b"\r\n", b"\n")
            out = out.replace(b"\n", b"\r\n")
        elif crlf_dot:
            out = out.replace(b"\r\n.", b"\r\n")  # every line ends in CRLF
        if skip:
            out = out[skip:]
        self.size += len(out)  # S-304: counted after unstuffing
        if self.size > self.max_size:
            return b""  # nothing more is stored
        return out
