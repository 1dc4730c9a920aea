"""The server SSLContext (SPEC.md S-404): TLS 1.2 or newer, the ssl
module's server defaults otherwise, and renegotiation refused."""

from __future__ import annotations

import ssl


def server_context(cert: str, key: str) -> ssl.SSLContext:
    """Callers check both paths with files.read_regular first
    (runtime.tls_context does): load_cert_chain would block on a FIFO."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.options |= getattr(ssl, "OP_NO_RENEGOTIATION", 0)  # not set by Python
    ctx.load_cert_chain(cert, key)
    return ctx


def describe(sock: ssl.SSLSocket) -> tuple[str, str]:
    """(protocol version, cipher name) of an established connection."""
    cipher = sock.cipher()
    return sock.version() or "TLS", cipher[0] if cipher else "unknown"
