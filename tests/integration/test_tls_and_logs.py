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
    assert maillog.esc("x" * 1000) == "x" * 253 + "..."
    assert maillog.esc("x" * 256) == "x" * 256


@pytest.mark.parametrize(
    ("raw", "shown"),
    [
        ("tab\there", "tab\\x09here"),
        ("nel\x85csi\x9b[31m", "nel\\x85csi\\x9b[31m"),  # C1 controls
        ("line\u2028para\u2029", "line\\u2028para\\u2029"),
        ("bidi\u202egnp.exe", "bidi\\u202egnp.exe"),  # RIGHT-TO-LEFT OVERRIDE
        ("\u2066iso\u2069 \u200b\ufeff\u00ad", "\\u2066iso\\u2069 \\u200b\\ufeff\\xad"),
        ("nbsp\u00a0x", "nbsp\\xa0x"),  # a space that is not the ASCII one
        ("private\ue000 unassigned\U000e0001", "private\\ue000 unassigned\\U000e0001"),
        ("ok: Grüße 用户 ☃", "ok: Grüße 用户 ☃"),  # printable UTF-8 stays readable
    ],
)
def test_escape_every_unprintable_character(raw, shown):  # S-901
    assert maillog.esc(raw) == shown


def test_client_text_in_log_lines_is_cut_to_256(start_msa):  # S-901, S-902
    m = start_msa(trusted_networks="")
    w = Wire.connect(m.ports["tls"], tls_ctx=m.client_ctx)
    w.reply()
    w.expect("EHLO " + "h" * 1500, 250)
    assert w.cmd("MAIL FROM:<alice@example.org>")[0] == 530
    line = m.wait_log(r"reject: MAIL from .*helo=<(h+\.\.\.)>").group(1)
    assert len(line) == 256
    assert all(len(x) < 1000 for x in m.log().splitlines())
    assert re.search(r"msa\[\d+\]: [0-9A-F]{10}: connect from unknown\[127\.0\.0\.1\]:\d+", m.log())  # S-901


def _alice(start_msa, tmp_path):
    import msatest

    users = tmp_path / "users.db"
    msatest.add_user(users, "alice", "alice pw", ["alice@example.org"])
    m = start_msa(users=users, trusted_networks="")
    w = Wire.connect(m.ports["tls"], tls_ctx=m.client_ctx)
    w.reply()
    w.expect("EHLO client.example", 250)
    w.expect("AUTH PLAIN " + msatest.b64("\0alice\0alice pw"), 235)
    return m, w


def test_reject_lines_escape_and_cut_the_reply_text(start_msa, tmp_path):  # S-901, S-902
    # The reply to a forged From: names the address; the reject: line
    # carries that reply, so it must be escaped and cut like any client text.
    m, w = _alice(start_msa, tmp_path)
    for forged in (b"x" * 500_000 + b"@evil.example", b'"a\tb"@evil.example',
                   "\u202egnp.exe@evil.example".encode()):
        w.expect("MAIL FROM:<alice@example.org> SMTPUTF8", 250)
        w.expect("RCPT TO:<bob@example.net>", 250)
        w.expect("DATA", 354)
        w.send(b"From: " + forged + b"\r\nSubject: forged\r\n\r\nbody\r\n.\r\n")
        code, text = w.reply()
        assert code == 550, (forged[:40], text)
        assert len(text) <= 510  # S-104: the reply line itself is bounded too
    m.wait_log(r"reject: END-OF-MESSAGE .*gnp")
    lines = [x for x in m.log().splitlines() if "reject: END-OF-MESSAGE" in x]
    assert len(lines) == 3
    for line in lines:
        assert len(line) <= 2048 + 40  # the stderr time stamp comes before msa[PID]:
        assert line.isprintable(), repr(line)  # no TAB, ESC, NEL, U+2028, U+202E...
    assert "x" * 200 in lines[0] and "..." in lines[0]
    assert '"a\\x09b"@evil.example' in lines[1]
    assert "\\u202egnp.exe@evil.example" in lines[2]
    assert all(line.isprintable() for line in m.log().splitlines())


def test_sender_with_bidi_and_c1_controls_is_escaped_in_the_log(start_msa, tmp_path):  # S-901
    m, w = _alice(start_msa, tmp_path)
    code, _ = w.cmd("MAIL FROM:<\u202eexe.gnp\u0085\u009b31m@example.org> SMTPUTF8".encode())
    assert code == 550
    line = m.wait_log(r"reject: MAIL from .*").group(0)
    assert "from=<\\u202eexe.gnp\\x85\\x9b31m@example.org>" in line, line
    assert all(x.isprintable() for x in m.log().splitlines())


def test_rcpt_pipelined_after_a_refused_mail_logs_its_recipient(start_msa, tmp_path):  # S-902
    # MAIL refused, RCPT and DATA pipelined behind it: the RCPT's reject
    # line names the recipient the client sent (not to=<>), and no sender
    # from an earlier transaction.
    m, w = _alice(start_msa, tmp_path)
    w.expect("MAIL FROM:<alice@example.org>", 250)
    w.expect("RCPT TO:<first@example.net>", 250)
    w.expect("DATA", 354)
    w.send(b"From: alice@example.org\r\n\r\nfirst\r\n.\r\n")
    assert w.reply()[0] == 250
    w.send(b"MAIL FROM:<mallory@example.org>\r\nRCPT TO:<victim@example.net>\r\nDATA\r\n")
    assert w.reply()[0] == 550
    assert w.reply()[1] == "503 5.5.1 Need MAIL command"
    assert w.reply()[0] == 503
    line = m.wait_log(r"reject: RCPT from .*").group(0)
    assert "to=<victim@example.net>" in line, line
    assert "from=<" not in line, line  # no transaction, so no sender: not alice's old one
    mail_line = m.wait_log(r"reject: MAIL from .*").group(0)
    assert "from=<mallory@example.org>" in mail_line


# -- S-111: close_notify before the TCP close -----------------------------------------------
def _strict(m, port_key: str = "tls") -> ssl.SSLSocket:
    """A TLS client that reports a close without close_notify as an error
    (suppress_ragged_eofs=False), as Exim and OpenSSL's s_client do."""
    raw = socket.create_connection(("127.0.0.1", m.ports[port_key]), timeout=10)
    return m.client_ctx.wrap_socket(raw, server_hostname="localhost", suppress_ragged_eofs=False)


def _read_to_close(sock: ssl.SSLSocket) -> bytes:
    """Everything until the server's close; an SSLEOFError (no close_notify)
    fails the test."""
    data = b""
    while True:
        chunk = sock.recv(4096)
        if not chunk:
            return data
        data += chunk


def test_quit_sends_close_notify_on_implicit_tls(msa):  # S-111
    s = _strict(msa)
    assert s.recv(4096).startswith(b"220 ")
    s.sendall(b"QUIT\r\n")
    assert _read_to_close(s) == b"221 2.0.0 Bye\r\n"


def test_quit_sends_close_notify_after_starttls(msa):  # S-111
    raw = socket.create_connection(("127.0.0.1", msa.ports["starttls"]), timeout=10)
    w = Wire(raw)
    w.reply()
    w.expect("EHLO client.example", 250)
    w.expect("STARTTLS", 220)
    s = msa.client_ctx.wrap_socket(raw, server_hostname="localhost", suppress_ragged_eofs=False)
    s.sendall(b"EHLO client.example\r\nQUIT\r\n")
    assert _read_to_close(s).endswith(b"221 2.0.0 Bye\r\n")


def test_timeout_and_errors_send_close_notify(start_msa):  # S-111, S-108, S-106
    m = start_msa(timeout=1)
    s = _strict(m)
    assert s.recv(4096).startswith(b"220 ")
    assert _read_to_close(s) == b"421 4.4.2 msa.test Error: timeout exceeded\r\n"
    s = _strict(m)
    assert s.recv(4096).startswith(b"220 ")
    s.sendall(b"FOO\r\n" * 10)
    assert _read_to_close(s).endswith(b"421 4.7.0 msa.test Error: too many errors\r\n")


def test_too_many_connections_on_tls_listener_sends_close_notify(start_msa):  # S-111, S-109
    m = start_msa(max_connections=1)
    first = _strict(m)
    assert first.recv(4096).startswith(b"220 ")
    second = _strict(m)
    assert _read_to_close(second) == b"421 4.7.0 msa.test Too many connections\r\n"


def test_shutdown_sends_close_notify(start_msa):  # S-111, S-110
    import signal

    m = start_msa()
    s = _strict(m)
    assert s.recv(4096).startswith(b"220 ")
    m.proc.send_signal(signal.SIGTERM)
    assert _read_to_close(s) == b"421 4.3.2 msa.test Service shutting down\r\n"
    assert m.proc.wait(10) == 0


def test_openssl_s_client_sees_no_unexpected_eof(msa, certs):  # S-111, RFC 8446 §6.1
    import shutil
    import subprocess

    if shutil.which("openssl") is None:
        pytest.skip("openssl is not installed")
    p = subprocess.run(["openssl", "s_client", "-connect", f"127.0.0.1:{msa.ports['tls']}", "-quiet",
                        "-CAfile", certs.ca], input=b"QUIT\r\n", capture_output=True, timeout=30)
    assert b"221 2.0.0 Bye" in p.stdout
    assert b"unexpected eof" not in p.stderr.lower(), p.stderr

