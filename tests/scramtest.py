"""A SCRAM-SHA-256 client written from RFC 5802 §3 and §7, independently of
sasl/scram.py, for the unit and property tests (SPEC.md S-514)."""

from __future__ import annotations

import base64
import hashlib
import hmac


def _hmac(key: bytes, message: bytes) -> bytes:
    return hmac.new(key, message, hashlib.sha256).digest()


def saslname(name: str) -> bytes:
    """RFC 5802 §5.1: "," as "=2C" and "=" as "=3D" (the "=" first)."""
    return name.encode("utf-8").replace(b"=", b"=3D").replace(b",", b"=2C")


def client_first(name: str, nonce: bytes, gs2: bytes = b"n,,") -> tuple[bytes, bytes]:
    """``(client-first-message, client-first-message-bare)``."""
    bare = b"n=" + saslname(name) + b",r=" + nonce
    return gs2 + bare, bare


def client_final(
    password: bytes, bare: bytes, server_first: bytes, gs2: bytes = b"n,,"
) -> tuple[bytes, bytes]:
    """``(client-final-message, the server-final message expected back)``."""
    attrs = dict(part.split(b"=", 1) for part in server_first.split(b","))
    salted = hashlib.pbkdf2_hmac("sha256", password, base64.b64decode(attrs[b"s"]), int(attrs[b"i"]))
    client_key = _hmac(salted, b"Client Key")
    stored_key = hashlib.sha256(client_key).digest()
    without_proof = b"c=" + base64.b64encode(gs2) + b",r=" + attrs[b"r"]
    auth_message = bare + b"," + server_first + b"," + without_proof
    signature = _hmac(stored_key, auth_message)
    proof = bytes(a ^ b for a, b in zip(client_key, signature, strict=True))
    server_signature = _hmac(_hmac(salted, b"Server Key"), auth_message)
    return without_proof + b",p=" + base64.b64encode(proof), b"v=" + base64.b64encode(server_signature)
