"""DATA decoding test support: a line-by-line reference of SPEC.md S-301..S-306
and a harness feeding DataDecoder chunk by chunk (unit and property tests)."""

from __future__ import annotations

from smtp_states.data import DataDecoder, DataError


def reference(stream: bytes, max_size: int = 10**9) -> tuple[bytes, int | None, set[DataError]]:
    """SPEC.md S-301..S-306, one line at a time: (stored, consumed, errors)."""
    out = bytearray()
    errors: set[DataError] = set()
    pos = 0
    after_crlf = True  # the DATA line's own CRLF (S-301: "or the dot is the first line")
    while True:
        lf = stream.find(b"\n", pos)
        if lf == -1:
            return bytes(out), None, errors
        line = stream[pos : lf + 1]
        pos = lf + 1
        if line == b".\r\n" and after_crlf:  # S-301
            if len(out) > max_size:
                errors.add(DataError.TOO_BIG)
            return (b"" if errors else bytes(out)), pos, errors
        crlf = line.endswith(b"\r\n")
        content = line[:-2] if crlf else line[:-1]
        if content.startswith(b"."):  # S-302: either kind of line ending
            content = content[1:]
        if b"\r" in content:
            errors.add(DataError.BARE_CR)  # S-305
        if b"\x00" in content:
            errors.add(DataError.NUL)  # S-306
        out += content + b"\r\n"  # S-302: bare LF stored as CRLF
        after_crlf = crlf


def decode(chunks: list[bytes], max_size: int = 10**9) -> tuple[bytes, int | None, DataError | None, int]:
    """Feed `chunks` to a DataDecoder; (output, consumed in the whole stream, error, size)."""
    d = DataDecoder(max_size)
    out = bytearray()
    offset = 0
    for chunk in chunks:
        got, consumed = d.feed(chunk)
        out += got
        if consumed is not None:
            assert 0 <= consumed <= len(chunk)
            assert d.done
            return bytes(out), offset + consumed, d.error, d.size
        offset += len(chunk)
    return bytes(out), None, d.error, d.size
