"""TLS settings (S-404) and how client text reaches the log (S-901)."""

from __future__ import annotations

import re
import socket
import ssl
import time

import pytest

from msatest import Wire
from server import maillog, tls


def test_server_context_is_tls12_or_newer_without_renegotiation(certs):  # S-404
    ctx = tls.server_context(certs.cert, certs.key)
    assert ctx.minimum_version == ssl.TLSVersion.TLSv1_2
    assert ctx.options & ssl.OP_NO_RENEGOTIATION


@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # TLS 1.1 on purpose
def test_tls11_client_is_refused_tls12_accepted(msa):  # S-404
    old = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    old.check_hostname = False
    old.verify_mode = ssl.CERT_NONE
    try:
        old.minimum_version = ssl.TLSVersion.TLSv1
        old.maximum_version = ssl.TLSVersion.TLSv1_1
        old.set_ciphers("DEFAULT:@SECLEVEL=0")
    except (ValueError, ssl.SSLError):
        pytest.skip("this OpenSSL cannot even offer TLS 1.1")
    with pytest.raises((ssl.SSLError, ConnectionResetError, BrokenPipeError)):
        Wire.connect(msa.ports["tls"], tls_ctx=old).reply()
    new = msa.client_ctx
    new.maximum_version = ssl.TLSVersion.TLSv1_2
    w = Wire.connect(msa.ports["tls"], tls_ctx=new)
    assert w.reply()[0] == 220
    assert w.sock.version() == "TLSv1.2"
    msa.wait_log(r"SSL_accept error from unknown\[127\.0\.0\.1\]:\d+: .*(?i:version|protocol)")


def test_tls_handshake_has_the_session_timeout(start_msa):  # S-404, S-108
    m = start_msa(timeout=1)
    s = socket.create_connection(("127.0.0.1", m.ports["tls"]), timeout=10)
    t0 = time.monotonic()
    assert s.recv(100) == b""  # closed without a handshake ever starting
    assert time.monotonic() - t0 < 8
    m.wait_log(r"SSL_accept error from unknown\[127\.0\.0\.1\]")


def test_escape_controls_and_non_utf8_and_cut():  # S-901
    assert maillog.esc("a\x01b\x7fc") == "a\\x01b\\x7fc"
    assert maillog.esc(b"caf\xc3\xa9 \xff") == "café \\xff"
    assert len(maillog.esc("x" * 1000)) == 256


def test_client_text_in_log_lines_is_cut_to_256(start_msa):  # S-901, S-902
    m = start_msa(trusted_networks="")
    w = Wire.connect(m.ports["tls"], tls_ctx=m.client_ctx)
    w.reply()
    w.expect("EHLO " + "h" * 1500, 250)
    assert w.cmd("MAIL FROM:<alice@example.org>")[0] == 530
    line = m.wait_log(r"reject: MAIL from .*helo=<(h+)>").group(1)
    assert len(line) == 256
    assert all(len(x) < 1000 for x in m.log().splitlines())
    assert re.search(r"msa\[\d+\]: [0-9A-F]{10}: connect from unknown\[127\.0\.0\.1\]:\d+", m.log())  # S-901
