"""signing/openpgp.py: the key-file reader behind `msa.py check`'s
pgp_keys lines (SPEC.md S-1104, CONTRACT.md "PGP keys")."""

from __future__ import annotations

import base64
import shutil
import subprocess

import pytest
from hypothesis import given
from hypothesis import strategies as st

from signing import openpgp as P


def armor(octets: bytes, kind: str = "PRIVATE KEY BLOCK", crc: int | None = None) -> bytes:
    text = base64.b64encode(octets)
    lines = [text[i : i + 64] for i in range(0, len(text), 64)]
    tail = [b"=" + base64.b64encode((P.crc24(octets) if crc is None else crc).to_bytes(3, "big"))]
    return b"\n".join([f"-----BEGIN PGP {kind}-----".encode(), b"Comment: test", b"", *lines, *tail,
                       f"-----END PGP {kind}-----".encode(), b""])


def new_packet(tag: int, body: bytes) -> bytes:
    n = len(body)
    if n < 192:
        length = bytes([n])
    elif n < 8384:
        n -= 192
        length = bytes([(n >> 8) + 192, n & 0xFF])
    else:
        length = b"\xff" + n.to_bytes(4, "big")
    return bytes([0xC0 | tag]) + length + body


def old_packet(tag: int, body: bytes) -> bytes:
    return bytes([0x80 | (tag << 2) | 1]) + len(body).to_bytes(2, "big") + body


def test_crc24_of_nothing_is_the_initial_value():  # RFC 9580 §6.1.1
    assert P.crc24(b"") == 0xB704CE


def test_packets_in_both_formats_and_every_length_form():
    data = (new_packet(5, b"k" * 10) + new_packet(13, b"u" * 300) + new_packet(2, b"s" * 9000)
            + old_packet(13, b"Bob <bob@example.org>"))
    assert [(t, len(b)) for t, b in P.packets(data)] == [(5, 10), (13, 300), (2, 9000), (13, 21)]


def test_partial_lengths_are_joined():
    data = bytes([0xC0 | 11, 0xE1]) + b"ab" + bytes([3]) + b"cde"  # 2^1 octets, then the last 3
    assert list(P.packets(data)) == [(11, b"abcde")]


def test_describe_reads_user_ids_of_the_first_key_only():
    key = (new_packet(5, b"secret") + new_packet(13, b"Alice <Alice@Example.org>") + new_packet(2, b"sig")
           + new_packet(13, b"alice@work.example") + new_packet(7, b"sub") + new_packet(5, b"other")
           + new_packet(13, b"mallory@example.org"))
    info = P.describe(armor(key))
    assert info.secret and info.kind == "PRIVATE KEY BLOCK"
    assert info.user_ids == ("Alice <Alice@Example.org>", "alice@work.example")
    assert info.addresses() == ("alice@example.org", "alice@work.example")


def test_a_public_key_is_not_secret():
    info = P.describe(armor(new_packet(6, b"pub") + new_packet(13, b"a@b.example"), "PUBLIC KEY BLOCK"))
    assert not info.secret and info.kind == "PUBLIC KEY BLOCK"


@pytest.mark.parametrize(
    ("data", "why"),
    [
        (b"not a key\n", "no ASCII-armored"),
        (armor(b"\x00\x01"), "not a packet header"),
        (armor(new_packet(5, b"x" * 50)[:20]), "runs past the end"),
        (armor(new_packet(2, b"sig")), "not a key"),
        (armor(b""), "empty"),
        (armor(new_packet(5, b"k"), crc=0x123456), "checksum mismatch"),
        (armor(new_packet(5, b"k")).replace(b"\n\n", b"\n\n!!", 1), "bad base64"),
    ],
)
def test_damaged_files_say_why(data, why):
    with pytest.raises(P.FormatError, match=why):
        P.describe(data)


@given(st.binary(max_size=300))
def test_any_octets_give_packets_or_format_error(data):
    try:
        list(P.packets(data))
        P.describe(armor(data))
    except P.FormatError:
        pass


@pytest.mark.skipif(shutil.which("sqop") is None, reason="sqop is not installed (Debian package sqop)")
def test_a_key_made_by_sqop():
    key = subprocess.run(["sqop", "generate-key", "Alice <alice@example.org>", "bob@example.org"],
                         capture_output=True, check=True, timeout=60).stdout
    info = P.describe(key)
    assert info.secret and info.addresses() == ("alice@example.org", "bob@example.org")
    cert = subprocess.run(["sqop", "extract-cert"], input=key, capture_output=True, check=True, timeout=60).stdout
    assert not P.describe(cert).secret
