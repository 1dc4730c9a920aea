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
    __slots__ = ("_carry", "_skip", "_last_in", "_last_out", "size", "max_size", "done", "_bare_cr", "_nul")

    def __init__(self, max_size: int) -> None:
        self._carry = b"\r\n"  # virtual: the DATA command's own line ending
        self._skip = 2  # ... which is not part of the message
        self._last_in = 0  # the input byte just before _carry
        self._last_out = 0x0A  # last byte stored, for bare LF at a chunk edge
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

        pieces: list[bytes] = []
        seg = self._skip
        self._skip = 0
        end_at: int | None = None
        pos = 0
        while True:
            i = buf.find(b"\n.", pos, limit)
            if i == -1:
                break
            d = i + 1
            prev = buf[i - 1] if i > 0 else self._last_in
            if prev == 0x0D and buf[d + 1 : d + 3] == b"\r\n":
                pieces.append(buf[seg : i + 1])
                end_at = d + 3
                limit = i + 1
                break
            pieces.append(buf[seg:d])  # unstuff: drop the dot at d
            seg = d + 1
            if seg > limit:
                limit = seg
            pos = d
        if end_at is None:
            pieces.append(buf[seg:limit])
        region_end = limit

        # Every fault is looked for in every chunk, stored or not (S-304..S-306).
        if not self._bare_cr and buf.count(b"\r", 0, region_end) != buf.count(b"\r\n", 0, region_end + 1):
            self._bare_cr = True  # S-305: a CR that does not start a CRLF
        if not self._nul and buf.find(b"\x00", 0, region_end) != -1:
            self._nul = True  # S-306
        out = b"".join(pieces) if len(pieces) != 1 else pieces[0]
        if out:
            out = self._normalise(out)
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

    def _normalise(self, out: bytes) -> bytes:
        """S-302: store a bare LF as CRLF (checked at C speed first)."""
        lf = out.count(b"\n")
        if lf:
            # An LF completing a CRLF whose CR ended the previous chunk.
            edge = out[0] == 0x0A and self._last_out == 0x0D
            if lf != out.count(b"\r\n") + edge:
                if edge:
                    out = b"\n" + _BARE_LF.sub(b"\r\n", out[1:])
                else:
                    out = _BARE_LF.sub(b"\r\n", out)
        self._last_out = out[-1]
        return out
