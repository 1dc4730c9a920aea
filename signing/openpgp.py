"""Just enough of OpenPGP's transferable key format (RFC 9580 §6, §4.2,
§10.1) for `msa.py check` to say what a `pgp_keys/USER.key` file holds:
whether it is a secret key, and the user IDs it names. Signing itself is
the SOP command's work; nothing here handles key material.

Pure functions over bytes; no I/O, no third-party import.
"""

from __future__ import annotations

import base64
import binascii
import re
from collections.abc import Iterator
from dataclasses import dataclass

TAG_SIGNATURE = 2
TAG_SECRET_KEY = 5
TAG_PUBLIC_KEY = 6
TAG_SECRET_SUBKEY = 7
TAG_USER_ID = 13

_ARMOR = re.compile(rb"-----BEGIN PGP ([A-Z ,0-9/]+)-----\r?\n(.*?)-----END PGP \1-----", re.S)
_ADDRESS = re.compile(r"<([^<>\s]+@[^<>\s]+)>\s*\Z")


class FormatError(ValueError):
    """Not an OpenPGP key this reader understands; the text says why."""


@dataclass(frozen=True, slots=True)
class KeyInfo:
    kind: str  # the armor label: "PRIVATE KEY BLOCK", "PUBLIC KEY BLOCK", ...
    secret: bool  # a Secret-Key packet leads it
    user_ids: tuple[str, ...]

    def addresses(self) -> tuple[str, ...]:
        """The e-mail address of each user ID (`Name <addr>` or a bare
        address), lower-cased, in order."""
        found = []
        for uid in self.user_ids:
            m = _ADDRESS.search(uid)
            addr = m.group(1) if m else uid.strip() if "@" in uid and " " not in uid.strip() else ""
            if addr:
                found.append(addr.lower())
        return tuple(found)


def dearmor(data: bytes) -> tuple[str, bytes]:
    """RFC 9580 §6: the first armored block's label and its octets; the
    CRC-24 line, when present, is checked."""
    m = _ARMOR.search(data)
    if m is None:
        raise FormatError("no ASCII-armored OpenPGP block (-----BEGIN PGP ...-----)")
    kind = m.group(1).decode("ascii")
    lines = m.group(2).replace(b"\r\n", b"\n").split(b"\n")
    # Armor headers ("Comment: ...") run to the first empty line; sqop writes none.
    if b"" in lines and any(b": " in line for line in lines[: lines.index(b"")]):
        lines = lines[lines.index(b"") + 1 :]
    crc = None
    body = []
    for line in lines:
        line = line.strip()
        if line.startswith(b"=") and len(line) == 5:
            crc = line[1:]
        elif line:
            body.append(line)
    try:
        octets = base64.b64decode(b"".join(body), validate=True)
    except binascii.Error as e:
        raise FormatError(f"bad base64 in the armor: {e}") from None
    if crc is not None:
        try:
            expected = int.from_bytes(base64.b64decode(crc, validate=True), "big")
        except binascii.Error:
            raise FormatError("bad armor checksum line") from None
        if crc24(octets) != expected:
            raise FormatError("armor checksum mismatch (the file is damaged)")
    return kind, octets


def crc24(data: bytes) -> int:
    """RFC 9580 §6.1.1."""
    crc = 0xB704CE
    for octet in data:
        crc ^= octet << 16
        for _ in range(8):
            crc <<= 1
            if crc & 0x1000000:
                crc ^= 0x1864CFB
    return crc & 0xFFFFFF


def packets(data: bytes) -> Iterator[tuple[int, bytes]]:
    """RFC 9580 §4.2: (tag, body) for each packet, old and new formats,
    partial lengths joined. A truncated or malformed packet is FormatError."""
    pos, end = 0, len(data)
    while pos < end:
        first = data[pos]
        pos += 1
        if not first & 0x80:
            raise FormatError(f"octet {pos - 1}: not a packet header")
        if first & 0x40:  # new format
            tag = first & 0x3F
            chunks = []
            while True:
                length, partial, pos = _new_length(data, pos)
                if pos + length > end:
                    raise FormatError(f"packet (tag {tag}) runs past the end")
                chunks.append(data[pos : pos + length])
                pos += length
                if not partial:
                    break
            yield tag, b"".join(chunks)
            continue
        tag, kind = (first >> 2) & 0x0F, first & 0x03
        if kind == 3:
            length = end - pos
        else:
            size = (1, 2, 4)[kind]
            if pos + size > end:
                raise FormatError(f"packet (tag {tag}) header runs past the end")
            length = int.from_bytes(data[pos : pos + size], "big")
            pos += size
        if pos + length > end:
            raise FormatError(f"packet (tag {tag}) runs past the end")
        yield tag, data[pos : pos + length]
        pos += length


def _new_length(data: bytes, pos: int) -> tuple[int, bool, int]:
    if pos >= len(data):
        raise FormatError("packet length runs past the end")
    o1 = data[pos]
    if o1 < 192:
        return o1, False, pos + 1
    if o1 < 224:
        if pos + 1 >= len(data):
            raise FormatError("packet length runs past the end")
        return ((o1 - 192) << 8) + data[pos + 1] + 192, False, pos + 2
    if o1 == 255:
        if pos + 5 > len(data):
            raise FormatError("packet length runs past the end")
        return int.from_bytes(data[pos + 1 : pos + 5], "big"), False, pos + 5
    return 1 << (o1 & 0x1F), True, pos + 1


def describe(data: bytes) -> KeyInfo:
    """What an armored key file holds (its first key, RFC 9580 §10.1)."""
    kind, octets = dearmor(data)
    seen = list(packets(octets))
    if not seen:
        raise FormatError("the armored block is empty")
    first = seen[0][0]
    if first not in (TAG_SECRET_KEY, TAG_PUBLIC_KEY):
        raise FormatError(f"starts with packet tag {first}, not a key")
    uids = []
    for tag, body in seen[1:]:
        if tag in (TAG_SECRET_KEY, TAG_PUBLIC_KEY):
            break  # a second key: only the first is the user's
        if tag == TAG_USER_ID:
            uids.append(body.decode("utf-8", "replace"))
    return KeyInfo(kind, first == TAG_SECRET_KEY, tuple(uids))
