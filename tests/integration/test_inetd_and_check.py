"""`inetd` mode over a socketpair and over pipes; `check` on broken configs."""

from __future__ import annotations

import os
import socket
import subprocess
import sys

import pytest

import msatest
from msatest import HDR, MSA, Wire


def _inetd(conf, stdin, stdout=None, extra=(), env=None):
    return subprocess.Popen(
        [sys.executable, MSA, "inetd", "-c", str(conf), *extra],
        stdin=stdin, stdout=stdout if stdout is not None else stdin,
        stderr=subprocess.PIPE, env={**os.environ, **(env or {})},
    )


def test_inetd_session_on_a_socketpair_with_starttls(tmp_path, certs):  # CONTRACT inetd, S-401
    conf = msatest.write_config(tmp_path, certs, trusted_networks="")
    ours, theirs = socket.socketpair()
    proc = _inetd(conf, theirs, env={"TCPREMOTEIP": "127.0.0.1"})
    theirs.close()
    w = Wire(ours)
    assert w.reply()[1] == "220 msa.test ESMTP msa"
    assert "STARTTLS" in w.expect("EHLO x.example", 250)
    w.starttls(certs.client_context())
    w.expect("EHLO x.example", 250)
    # not trusted (TCPREMOTEIP is not in trusted_networks): AUTH needed
    assert w.cmd("MAIL FROM:<alice@example.org>")[0] == 530
    w.expect("QUIT", 221)
    assert proc.wait(10) == 0
    assert b"connect from unknown[127.0.0.1]" in proc.stderr.read()


def test_inetd_implicit_tls_delivers(tmp_path, certs):  # CONTRACT inetd --tls
    conf = msatest.write_config(tmp_path, certs, trusted_networks="127.0.0.1/32")
    ours, theirs = socket.socketpair()
    proc = _inetd(conf, theirs, extra=["--tls"], env={"TCPREMOTEIP": "127.0.0.1"})
    theirs.close()
    w = Wire(certs.client_context().wrap_socket(ours, server_hostname="localhost"))
    w.reply()
    assert "STARTTLS" not in w.expect("EHLO x.example", 250)
    w.transaction("alice@example.org", "bob@example.net")
    w.send(HDR + b"Subject: inetd\r\n\r\nhi\r\n.\r\n")
    assert w.reply()[0] == 250
    w.expect("QUIT", 221)
    assert proc.wait(10) == 0
    [d] = msatest.Outbox(tmp_path / "outbox").messages()
    assert msatest.strip_received(d.data) == HDR + b"Subject: inetd\r\n\r\nhi\r\n"


def test_inetd_on_pipes_offers_no_starttls(tmp_path, certs):
    conf = msatest.write_config(tmp_path, certs)
    proc = subprocess.run(
        [sys.executable, MSA, "inetd", "-c", str(conf)],
        input=b"EHLO x.example\r\nSTARTTLS\r\nQUIT\r\n", capture_output=True, timeout=20,
    )
    assert proc.returncode == 0
    assert b"STARTTLS" not in proc.stdout.split(b"502")[0]
    assert b"502 5.5.1 TLS not available\r\n" in proc.stdout
    assert proc.stdout.endswith(b"221 2.0.0 Bye\r\n")
    bad = subprocess.run([sys.executable, MSA, "inetd", "-c", str(conf), "--tls"],
                         input=b"", capture_output=True, timeout=20)
    assert bad.returncode == 2
    assert b"needs a socket" in bad.stderr


def _check(conf) -> tuple[int, str]:
    p = subprocess.run([sys.executable, MSA, "check", "-c", str(conf)], capture_output=True, text=True, timeout=30)
    assert "Traceback" not in p.stdout + p.stderr
    return p.returncode, p.stdout + p.stderr


def test_check_accepts_a_good_config(tmp_path, certs):
    conf = msatest.write_config(tmp_path, certs)
    (tmp_path / "spool").mkdir()
    code, out = _check(conf)
    assert code == 0, out
    assert "users database does not exist" in out  # a warning only (CONTRACT)


@pytest.mark.parametrize(
    "text, expected",
    [
        ("[msa]\nbogus_key = 1\n", r"msa.conf:2: unknown key 'bogus_key'"),
        ("[msa]\nmax_recipients = lots\n", r"msa.conf:2: max_recipients must be a whole number, not 'lots'"),
        ("[msa]\nlisten = 127.0.0.1 starttls\n", r"msa.conf:2: listen entry '127.0.0.1 starttls' is not HOST:PORT MODE"),
        ("[msa]\nlisten = 127.0.0.1:587 smtps\n", r"msa.conf:2: mode 'smtps' must be starttls or tls"),
        ("[msa]\nlisten = 127.0.0.1:465 tls\n", r"msa.conf:2: a tls listener needs tls_cert and tls_key"),
        ("[msa]\ntrusted_networks = 10.0.0.0/33\n", r"msa.conf:2: '10.0.0.0/33' is not a network"),
        ("[msa]\nrequire_tls_for_auth = maybe\n", r"msa.conf:2: require_tls_for_auth must be yes or no"),
        ("[msa]\ntimeout = -1\n", r"msa.conf:2: timeout must be between 1 and 86400"),
        ("hostname = x\n", r"msa.conf:1: expected the section header \[msa\]"),
        ("[msa]\nhostname = a\nhostname = b\n", r"msa.conf:3: duplicate key 'hostname'"),
        ("[msa]\nsendmail = /nonexistent/sendmail\nlisten = 127.0.0.1:2525 starttls\n",
         r"msa.conf:2: sendmail: /nonexistent/sendmail is not an executable file"),
        ("[msa]\ntls_cert = nope.pem\ntls_key = nope.key\nlisten = 127.0.0.1:2525 starttls\n",
         r"msa.conf:2: tls_cert: .*nope.pem: no such file"),
    ],
)
def test_check_reports_file_and_line(tmp_path, text, expected):
    conf = tmp_path / "msa.conf"
    conf.write_text(text)
    code, out = _check(conf)
    assert code == 1
    import re

    assert re.search(expected, out), out


def test_check_reports_every_problem(tmp_path):
    conf = tmp_path / "msa.conf"
    conf.write_text("[msa]\nfoo = 1\nbar = 2\nmax_recipients = x\n")
    code, out = _check(conf)
    assert code == 1
    assert "msa.conf:2: unknown key 'foo'" in out
    assert "msa.conf:3: unknown key 'bar'" in out
    assert "msa.conf:4: max_recipients" in out


def test_check_missing_config(tmp_path):
    code, out = _check(tmp_path / "none.conf")
    assert code == 1
    assert "none.conf: no such file" in out


def test_serve_refuses_a_bad_config_without_traceback(tmp_path):
    conf = tmp_path / "msa.conf"
    conf.write_text("[msa]\nlisten = nonsense\n")
    p = subprocess.run([sys.executable, MSA, "serve", "-c", str(conf)], capture_output=True, text=True, timeout=30)
    assert p.returncode == 1
    assert "Traceback" not in p.stderr
    assert "msa.conf:2: listen entry 'nonsense'" in p.stderr


def test_version_and_help():
    p = subprocess.run([sys.executable, MSA, "--version"], capture_output=True, text=True, timeout=30)
    assert p.returncode == 0 and p.stdout.startswith("msa ")
    for cmd in ("serve", "inetd", "check", "user"):
        h = subprocess.run([sys.executable, MSA, cmd, "--help"], capture_output=True, text=True, timeout=30)
        assert h.returncode == 0 and "usage:" in h.stdout
    u = subprocess.run([sys.executable, MSA, "frobnicate"], capture_output=True, text=True, timeout=30)
    assert u.returncode == 2
