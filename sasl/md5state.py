"""MD5 resumed from a stored state, for ``{CRAM-MD5}`` credentials.

This module owns the MD5 compression function (RFC 1321 §3.4), written out
because ``hashlib`` cannot start from a saved state, and the CRAM-MD5
credential of SPEC.md S-508: the HMAC-MD5 (RFC 2104) inner and outer states
after one block of the padded key, stored as 64 hex digits, so that the
password itself is never stored. ``hashlib`` is used only to shorten keys
longer than one block (RFC 2104 §2). Standard library only.
"""

from __future__ import annotations

import hashlib
import math
import struct

from .limits import CRAM_CREDENTIAL_HEX_DIGITS, HMAC_MD5_BLOCK_OCTETS

__all__ = ["MD5_INITIAL_STATE", "State", "cram_md5_credential", "cram_md5_digest", "md5_resume"]

State = tuple[int, int, int, int]

_MASK = 0xFFFFFFFF
_BLOCK = 64

#: RFC 1321 §3.3: words A, B, C, D before the first block.
MD5_INITIAL_STATE: State = (0x67452301, 0xEFCDAB89, 0x98BADCFE, 0x10325476)

#: RFC 1321 §3.4: T[i] = floor(4294967296 * abs(sin(i))), i = 1..64.
_T = tuple(int(4294967296 * abs(math.sin(i))) & _MASK for i in range(1, 65))

#: RFC 1321 §3.4: the per-step rotation amounts of rounds 1 to 4.
_S = (7, 12, 17, 22) * 4 + (5, 9, 14, 20) * 4 + (4, 11, 16, 23) * 4 + (6, 10, 15, 21) * 4

#: RFC 1321 §3.4: which message word each of the 64 steps reads.
_G = tuple(
    [i for i in range(16)]
    + [(5 * i + 1) % 16 for i in range(16, 32)]
    + [(3 * i + 5) % 16 for i in range(32, 48)]
    + [(7 * i) % 16 for i in range(48, 64)]
)

_WORDS = struct.Struct("<16I")
_STATE = struct.Struct("<4I")
_HEX_DIGITS = frozenset("0123456789abcdefABCDEF")


def _compress(state: State, block: bytes) -> State:
    """One MD5 compression (RFC 1321 §3.4) of a 64-octet block."""
    x = _WORDS.unpack(block)
    a, b, c, d = state
    for i in range(64):
        if i < 16:
            f = (b & c) | (~b & d)  # F(X,Y,Z) = XY v not(X) Z
        elif i < 32:
            f = (b & d) | (c & ~d)  # G(X,Y,Z) = XZ v Y not(Z)
        elif i < 48:
            f = b ^ c ^ d  # H(X,Y,Z) = X xor Y xor Z
        else:
            f = c ^ (b | ~d)  # I(X,Y,Z) = Y xor (X v not(Z))
        f = (f + a + _T[i] + x[_G[i]]) & _MASK
        s = _S[i]
        a, d, c = d, c, b
        b = (b + ((f << s) | (f >> (32 - s)))) & _MASK
    return (
        (state[0] + a) & _MASK,
        (state[1] + b) & _MASK,
        (state[2] + c) & _MASK,
        (state[3] + d) & _MASK,
    )


def md5_resume(state: State, data: bytes, already: int) -> bytes:
    """Digest of ``already`` octets hashed into ``state``, followed by ``data``.

    ``already`` must be a multiple of 64 (only whole blocks leave a state
    behind); it counts into the length appended by the padding (RFC 1321
    §3.1, §3.2). With ``MD5_INITIAL_STATE`` and 0 this is plain MD5.
    """
    if already < 0 or already % _BLOCK:
        raise ValueError("already must be a non-negative multiple of 64")
    if len(state) != 4 or any(not 0 <= w <= _MASK for w in state):
        raise ValueError("state must be four 32-bit words")
    total_bits = ((already + len(data)) * 8) & 0xFFFFFFFFFFFFFFFF
    padding = b"\x80" + b"\x00" * ((55 - len(data)) % _BLOCK)
    message = data + padding + struct.pack("<Q", total_bits)
    for offset in range(0, len(message), _BLOCK):
        state = _compress(state, message[offset : offset + _BLOCK])
    return _STATE.pack(*state)


def _padded_key(password: bytes) -> bytes:
    """RFC 2104 §2: the key, hashed when longer than a block, zero-padded."""
    key = hashlib.md5(password).digest() if len(password) > HMAC_MD5_BLOCK_OCTETS else password
    return key.ljust(HMAC_MD5_BLOCK_OCTETS, b"\x00")


def cram_md5_credential(password: bytes) -> str:
    """The stored CRAM-MD5 credential of ``password`` (SPEC.md S-508).

    64 hex digits: the outer state after ``key XOR 0x5c``, then the inner
    state after ``key XOR 0x36``, each as words A, B, C, D in 32-bit
    little-endian order, as Dovecot's ``{CRAM-MD5}`` scheme stores them.
    """
    key = _padded_key(password)
    outer = _compress(MD5_INITIAL_STATE, bytes(k ^ 0x5C for k in key))
    inner = _compress(MD5_INITIAL_STATE, bytes(k ^ 0x36 for k in key))
    return (_STATE.pack(*outer) + _STATE.pack(*inner)).hex()


def _is_hex(text: str) -> bool:
    return all(ch in _HEX_DIGITS for ch in text)


def _states(credential_hex: str) -> tuple[State, State]:
    """Outer and inner states of a stored credential; ValueError if malformed."""
    if len(credential_hex) != CRAM_CREDENTIAL_HEX_DIGITS or not _is_hex(credential_hex):
        raise ValueError("a CRAM-MD5 credential has 64 hex digits")
    raw = bytes.fromhex(credential_hex)
    return _STATE.unpack(raw[:16]), _STATE.unpack(raw[16:])


def cram_md5_digest(credential_hex: str, challenge: bytes) -> str:
    """HMAC-MD5(password, challenge) in lower-case hex, from the stored states.

    RFC 2104 §2: ``H(K XOR opad, H(K XOR ipad, text))``; both inner and outer
    hashes resume after the one key block already in the state (S-508).
    """
    outer, inner = _states(credential_hex)
    inner_digest = md5_resume(inner, challenge, HMAC_MD5_BLOCK_OCTETS)
    return md5_resume(outer, inner_digest, HMAC_MD5_BLOCK_OCTETS).hex()
