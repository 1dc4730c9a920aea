"""MD5 resumed from a stored state and the {CRAM-MD5} credential (S-508)."""

from __future__ import annotations

import hashlib
import hmac
import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sasl.md5state import (
    MD5_INITIAL_STATE,
    _compress,
    cram_md5_credential,
    cram_md5_digest,
    md5_resume,
)

RFC2195_CHALLENGE = b"<1896.697170952@postoffice.reston.mci.net>"


def test_s508_vector_tanstaaf():  # S-508, checked with doveadm pw
    credential = cram_md5_credential(b"tanstaaftanstaaf")
    assert credential == "d06d4e1b26fccaa4b0b61801132340a354b21152711fb604ca3e035e7015116b"


def test_s508_vector_correct_horse():  # S-508
    credential = cram_md5_credential(b"correct horse battery")
    assert credential == "83b1f18da0d222b257057a021ab40d776e1efb2767611d85cc3f47dcb2d338d3"


def test_rfc2195_response_from_stored_credential():  # S-507, S-508, RFC 2195 §2
    credential = cram_md5_credential(b"tanstaaftanstaaf")
    assert cram_md5_digest(credential, RFC2195_CHALLENGE) == "b913a602c7eda7a495b4e6e7334d3890"


@pytest.mark.parametrize(
    ("key", "data", "expected"),
    [
        # RFC 2104 Appendix / RFC 2202 §2 test cases 1-3, 6 and 7 for HMAC-MD5.
        (b"\x0b" * 16, b"Hi There", "9294727a3638bb1c13f48ef8158bfc9d"),
        (b"Jefe", b"what do ya want for nothing?", "750c783e6ab0b503eaa86e310a5db738"),
        (b"\xaa" * 16, b"\xdd" * 50, "56be34521d144c88dbb8c733f0e8b3f6"),
        (
            b"\xaa" * 80,
            b"Test Using Larger Than Block-Size Key - Hash Key First",
            "6b1ab7fe4bd7bf8f0b62e6ce61b9d0cd",
        ),
        (
            b"\xaa" * 80,
            b"Test Using Larger Than Block-Size Key and Larger Than One Block-Size Data",
            "6f630fad67cda0ee1fb1f562db3aa53e",
        ),
    ],
)
def test_rfc2104_vectors(key, data, expected):  # RFC 2104, S-508 (long keys hashed)
    assert cram_md5_digest(cram_md5_credential(key), data) == expected
    assert hmac.new(key, data, "md5").hexdigest() == expected


@pytest.mark.parametrize("length", [0, 1, 55, 56, 57, 63, 64, 65, 119, 120, 128, 1000])
def test_plain_md5_at_padding_edges(length):  # RFC 1321 §3.1
    data = bytes(i % 251 for i in range(length))
    assert md5_resume(MD5_INITIAL_STATE, data, 0) == hashlib.md5(data).digest()


@settings(max_examples=200, deadline=None)
@given(first=st.binary(min_size=64, max_size=64), rest=st.binary(max_size=300))
def test_resume_after_one_block_equals_hashlib(first, rest):  # S-508
    state = _compress(MD5_INITIAL_STATE, first)
    assert md5_resume(state, rest, 64) == hashlib.md5(first + rest).digest()


@settings(max_examples=100, deadline=None)
@given(
    blocks=st.lists(st.binary(min_size=64, max_size=64), min_size=1, max_size=4), rest=st.binary(max_size=130)
)
def test_resume_after_several_blocks_equals_hashlib(blocks, rest):
    state = MD5_INITIAL_STATE
    for block in blocks:
        state = _compress(state, block)
    assert md5_resume(state, rest, 64 * len(blocks)) == hashlib.md5(b"".join(blocks) + rest).digest()


@settings(max_examples=200, deadline=None)
@given(password=st.binary(max_size=150), challenge=st.binary(max_size=200))
def test_cram_digest_equals_hmac_md5(password, challenge):  # S-507, S-508
    expected = hmac.new(password, challenge, "md5").hexdigest()
    assert cram_md5_digest(cram_md5_credential(password), challenge) == expected


def test_credential_is_outer_then_inner_little_endian():  # S-508 layout
    credential = bytes.fromhex(cram_md5_credential(b"k"))
    key = b"k".ljust(64, b"\0")
    outer = _compress(MD5_INITIAL_STATE, bytes(b ^ 0x5C for b in key))
    inner = _compress(MD5_INITIAL_STATE, bytes(b ^ 0x36 for b in key))
    assert credential == struct.pack("<4I", *outer) + struct.pack("<4I", *inner)


def test_credential_is_lower_case_hex():
    credential = cram_md5_credential(b"x")
    assert len(credential) == 64 and credential == credential.lower()


def test_upper_case_credential_is_accepted():
    credential = cram_md5_credential(b"tanstaaftanstaaf").upper()
    assert cram_md5_digest(credential, RFC2195_CHALLENGE) == "b913a602c7eda7a495b4e6e7334d3890"


@pytest.mark.parametrize("credential", ["", "00" * 31, "zz" * 32, "0" * 62 + " 0", "0" * 65])
def test_malformed_credential_raises_value_error(credential):  # local misuse, not client input
    with pytest.raises(ValueError):
        cram_md5_digest(credential, b"x")


@pytest.mark.parametrize("already", [-64, 1, 63, 65])
def test_resume_needs_whole_blocks(already):
    with pytest.raises(ValueError):
        md5_resume(MD5_INITIAL_STATE, b"", already)
