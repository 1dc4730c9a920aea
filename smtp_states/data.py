"""DataDecoder: the DATA phase, decoded in chunks (SPEC.md §3).

Owns: finding the end of the message, dot-unstuffing, line-ending
normalisation, and the size, bare-CR and NUL verdicts. It works on whole
chunks with `bytes.find`/`bytes.count` and carries at most three bytes from
one chunk to the next (S-303); there is no loop per line, only one per line
that starts with a dot.

The rules:
- S-301: only CRLF "." CRLF ends the data, the CRLF before the dot being the
  end of the previous line (or the dot being the first line).
- S-302: a bare LF is a line ending, stored as CRLF; every line starting with
  "." after either kind of ending loses that dot.
- S-304..S-306: size past the limit, a bare CR or a NUL stop storage; the
  data is still read to its end, then refused once.

Decoding starts as if a CRLF had just been seen, which makes "the dot is the
first line" the same case as any other.
"""

from __future__ import annotations

import re
from enum import Enum

_BARE_LF = re.compile(rb"(?<!\r)\n")
_END = b".\r\n"


class DataError(Enum):
    TOO_BIG = "size"  # S-304
    BARE_CR = "bare CR"  # S-305
    NUL = "NUL"  # S-306


class DataDecoder:
    __slots__ = ("_carry", "_skip", "_last_in", "size", "max_size", "done", "_bare_cr", "_nul")

    def __init__(self, max_size: int) -> None:
        self._carry = b"\r\n"  # virtual: the DATA command's own line ending
        self._skip = 2  # ... which is not part of the message
        self._last_in = 0  # the input byte just before _carry
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
        n = len(buf)

        # How far can be decided now: keep a trailing CR (is LF next?) and a
        # trailing LF followed by a prefix of ".\r\n" (is this the end?).
        limit = n
        if buf.endswith(b"\r"):
            limit = n - 1
        j = buf.rfind(b"\n", max(0, n - 3))
        if j != -1 and _END.startswith(buf[j + 1 :]):
            limit = min(limit, j)

        # One pass of counts tells whether every line ending in the region is
        # CRLF; then only "\r\n." can start a dot line, a rarer pattern.
        counts = self._counts(buf, limit)
        clean = counts[3]
        pattern, back = (b"\r\n.", 1) if clean else (b"\n.", 0)

        pieces: list[bytes] = []
        seg = self._skip
        self._skip = 0
        # The first byte stored is an LF whose CR ended the previous chunk.
        edge = seg == 0 and buf[:1] == b"\n" and self._last_in == 0x0D
        end_at: int | None = None
        pos = 0
        while True:
            if pos == 0 and buf.startswith(b"\n.") and limit >= 2:
                i = 0  # an LF whose CR ended the previous chunk
            else:
                k = buf.find(pattern, pos, limit)
                if k == -1:
                    break
                i = k + back
            d = i + 1
            prev = buf[i - 1] if i > 0 else self._last_in
            if prev == 0x0D and buf[d + 1 : d + 3] == b"\r\n":
                pieces.append(buf[seg : i + 1])
                end_at = d + 3
                break
            pieces.append(buf[seg:d])  # unstuff: drop the dot at d
            seg = d + 1
            pos = d
        if end_at is None:
            pieces.append(buf[seg:limit])
            region_end = limit
        else:
            region_end = end_at - 2  # through the LF before the final dot
            counts = self._counts(buf, region_end)  # once per message

        # Every fault is looked for in every chunk, stored or not (S-304..S-306).
        cr, crlf_from, _, clean = counts
        if cr != crlf_from:
            self._bare_cr = True  # S-305: a CR that does not start a CRLF
        if not self._nul and buf.find(b"\x00", 0, region_end) != -1:
            self._nul = True  # S-306
        out = b"".join(pieces) if len(pieces) != 1 else pieces[0]
        if out and not self._bare_cr:
            if not clean:
                out = self._normalise(out, edge)
            self.size += len(out)  # S-304: counted after unstuffing
        if self.error is not None:
            out = b""  # nothing more is stored

        if end_at is not None:
            self.done = True
            self._carry = b""
            return out, end_at - len(carry)
        if region_end > 0:
            self._last_in = buf[region_end - 1]
        self._skip = max(0, seg - region_end)  # the virtual CRLF, if still carried
        self._carry = buf[region_end:]
        return out, None

    def _counts(self, buf: bytes, end: int) -> tuple[int, int, int, bool]:
        """(CRs, CRLFs starting before `end`, LFs, every LF after a CR) over
        buf[:end], at C speed. Skipped once a bare CR has settled the verdict."""
        if self._bare_cr:
            return 0, 0, 0, True
        cr = buf.count(b"\r", 0, end)
        crlf_from = buf.count(b"\r\n", 0, end + 1)
        lf = buf.count(b"\n", 0, end)
        crlf_in = crlf_from - (end > 0 and buf[end - 1] == 0x0D and buf[end : end + 1] == b"\n")
        edge = buf[:1] == b"\n" and self._last_in == 0x0D
        return cr, crlf_from, lf, lf == crlf_in + edge

    @staticmethod
    def _normalise(out: bytes, edge: bool) -> bytes:
        """S-302: store a bare LF as CRLF. `edge`: the first byte is an LF
        whose CR ended the previous chunk, so it is not bare."""
        if edge:
            return b"\n" + _BARE_LF.sub(b"\r\n", out[1:])
        return _BARE_LF.sub(b"\r\n", out)
