"""The pieces of S-1104's 7-bit rule (RFC 3156 §3) that look at, or
rewrite, one region of a body: a part's body, a preamble, an epilogue.
`signing/mimewalk.py` finds the regions; this module owns what is done
inside one, fed in pieces of any size:

- `LineScan`: 8-bit octets, a line with trailing white space, a line
  starting with "From ", an inline-PGP armor line, a boundary string.
- `Base64`: base64 of raw octets (RFC 2045 §6.8), lines of 76 characters.
- `QPRepair`: a quoted-printable body made safe line by line.
- `base64_repair`: a base64 body without the octets base64 ignores.

Quoted-printable of raw text is `pgpmime.QuotedPrintable`. Each works with
a constant number of C-speed bytes operations per piece for the usual
input (no Python loop per line); a region starts at a line start and
its end is a line end (the CRLF of the delimiter that follows, RFC 2046
§5.1.1, or the line break S-1104 gives a body without one). The input is
a stored body: CRLF line ends, no bare CR, no NUL (S-302, S-305, S-306).
No I/O; no third-party import.
"""

from __future__ import annotations

import binascii
import re
from functools import partial

from .pgpmime import qp_line

#: The line patterns LineScan looks for, and how many octets it carries
#: between pieces to find one cut by a piece's edge.
_ARMOR = b"\n-----BEGIN PGP"
_MIN_CARRY = len(_ARMOR)
#: A quoted-printable line longer than this is not repaired (RFC 2045 §6.7
#: allows 76 characters): QPRepair keeps a line whole until its end.
QP_LINE_MAX = 1024 * 1024


class LineScan:
    """What the 7-bit rule needs to know of a region: `eight_bit`,
    `trailing_ws` (a line ending in a space or tab), `from_line` (a line
    starting with "From "), and on request `armor` (a line starting with
    "-----BEGIN PGP", S-1104's inline PGP), `boundary_inside` (one of
    `needles`, the enclosing multiparts' "--BOUNDARY" strings, anywhere)
    and `long_line` (a line over QP_LINE_MAX). The line patterns are
    looked for only in a piece that has a space or a tab at all (one
    memchr): a base64 body, the usual big one, costs a pass of `isascii`
    and two of memchr."""

    __slots__ = ("eight_bit", "trailing_ws", "from_line", "armor", "boundary_inside", "long_line",
                 "_tail", "_carry", "_watch_armor", "_needles", "_since_lf", "_last")

    def __init__(self, watch_armor: bool = False, needles: tuple[bytes, ...] = ()) -> None:
        self.eight_bit = self.trailing_ws = self.from_line = self.armor = False
        self.boundary_inside = self.long_line = False
        self._watch_armor = watch_armor
        self._needles = needles
        self._carry = max([_MIN_CARRY, *(len(n) for n in needles)])
        self._tail = b"\r\n"  # the region starts at a line start
        self._since_lf = 0
        self._last = b""

    def feed(self, data: bytes) -> None:
        if not data:
            return
        if not self.eight_bit and not data.isascii():
            self.eight_bit = True
        window = self._tail + data  # patterns cut by the edge between pieces
        space = window.find(b" ") != -1
        if not self.trailing_ws and (space or window.find(b"\t") != -1):
            self.trailing_ws = window.find(b" \r\n") != -1 or window.find(b"\t\r\n") != -1
        if not self.from_line and space:
            self.from_line = window.find(b"\nFrom ") != -1
        if self._watch_armor and not self.armor:
            self.armor = window.find(_ARMOR) != -1
        if self._needles and not self.boundary_inside:
            self.boundary_inside = any(window.find(n) != -1 for n in self._needles)
        first = data.find(b"\n")
        if first == -1:
            self._since_lf += len(data)
        else:  # a line inside one piece is no longer than the piece
            self.long_line = self.long_line or self._since_lf + first > QP_LINE_MAX or len(data) > QP_LINE_MAX
            self._since_lf = len(data) - data.rfind(b"\n") - 1
        self.long_line = self.long_line or self._since_lf > QP_LINE_MAX
        self._tail = window[-self._carry :]
        self._last = data[-1:]

    def finish(self) -> None:
        """The region has ended, and with it its last line."""
        if self._last in (b" ", b"\t"):
            self.trailing_ws = True

    @property
    def unsafe(self) -> bool:
        """RFC 3156 §3: what a transport may change."""
        return self.eight_bit or self.trailing_ws or self.from_line


#: RFC 2045 §6.8: 57 octets make a line of 76 characters.
_B64_LINE_IN = 57
_b64_line = partial(binascii.b2a_base64, newline=False)


class Base64:
    """RFC 2045 §6.8 base64 of raw octets, in lines of 76 characters with
    CRLF between them and none after the last (the region's end brings
    it). Each piece is encoded in one pass of C calls: b2a_base64 over
    57-octet slices, mapped and joined without a Python loop per line."""

    __slots__ = ("_carry", "_started")

    def __init__(self) -> None:
        self._carry = b""
        self._started = False

    def feed(self, data: bytes) -> bytes:
        data = self._carry + data if self._carry else data
        whole = len(data) - len(data) % _B64_LINE_IN
        self._carry = data[whole:]
        return self._lines(data[:whole]) if whole else b""

    def finish(self) -> bytes:
        rest, self._carry = self._carry, b""
        return self._lines(rest) if rest else b""

    def _lines(self, block: bytes) -> bytes:
        step = _B64_LINE_IN
        pieces = map(block.__getitem__, map(slice, range(0, len(block), step), range(step, len(block) + step, step)))
        out = b"\r\n".join(map(_b64_line, pieces))
        if self._started:
            return b"\r\n" + out
        self._started = True
        return out


#: Octets base64 decoders skip (RFC 2045 §6.8: "ignored"), CR and LF aside.
_B64_JUNK = bytes(c for c in range(256) if not (chr(c).isalnum() and c < 128) and c not in b"+/=\r\n")


def base64_repair(data: bytes) -> bytes:
    """A base64 body with the octets decoders ignore removed (spaces, tabs,
    8-bit octets): it decodes to the same octets (RFC 2045 §6.8) and no
    line ends in white space or starts with "From ". Works on any piece."""
    return data.translate(None, _B64_JUNK)


class QPRepair:
    """A quoted-printable body made transport-safe (RFC 3156 §3) and decoded
    the same: a line starting with "From " starts with "=46rom " (the same
    octet, encoded), and a line with trailing white space or 8-bit octets
    is decoded (binascii, as Python's email package decodes) and encoded
    again, whatever it held (istext=False: a CR or LF it decodes to stays
    an octet, =0D or =0A). Whole lines at a time; the usual line, already
    clean, is only copied. A line is held until its end; LineScan's
    `long_line` says beforehand whether one is over QP_LINE_MAX."""

    __slots__ = ("_carry",)

    def __init__(self) -> None:
        self._carry = b""

    def feed(self, data: bytes) -> bytes:
        data = self._carry + data if self._carry else data
        end = data.rfind(b"\n") + 1
        self._carry = data[end:]
        return _qp_repair_lines(data[:end]) if end else b""

    def finish(self) -> bytes:
        """The region's end: the line held is its last."""
        rest, self._carry = self._carry, b""
        return _qp_repair_lines(rest) if rest else b""


_TRAILING_WS = re.compile(rb"[ \t]\r\n|[ \t]\Z")


def _qp_repair_lines(block: bytes) -> bytes:
    """Whole lines of a quoted-printable body, each but the last followed
    by CRLF; the last (empty when the block ends with CRLF) is the
    region's last line, whose CRLF belongs to what follows the region."""
    if block.isascii() and _TRAILING_WS.search(block) is None:
        fixed = block  # the usual block: nothing to decode
    else:
        lines = block.split(b"\r\n")
        last = len(lines) - 1
        fixed = b"\r\n".join(_requote(line, i < last) if not line.isascii() or line.endswith((b" ", b"\t"))
                              else line for i, line in enumerate(lines))
    if fixed.startswith(b"From "):
        fixed = b"=46" + fixed[1:]
    return fixed.replace(b"\nFrom ", b"\n=46rom ")


def _requote(line: bytes, crlf_follows: bool) -> bytes:
    """One line of a quoted-printable body (without its CRLF) decoded and
    encoded again: a line decodes alone (RFC 2045 §6.7: an encoded octet
    never spans lines), and one that ended in a soft line break ends in
    one again."""
    if not crlf_follows:  # the region's last line: what follows is not its content
        return qp_line(binascii.a2b_qp(line), istext=False)
    decoded = binascii.a2b_qp(line + b"\r\n")
    if decoded.endswith(b"\r\n"):  # a hard line break: the join puts it back
        return qp_line(decoded[:-2], istext=False)
    return qp_line(decoded, istext=False, soft=True)  # the CRLF was a soft line break
