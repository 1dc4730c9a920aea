"""Deployment paths (contrib/): systemd socket activation with LISTEN_FDS,
sd_notify, xinetd-style `inetd` under socat, and `user import` of a
Dovecot passwd-file."""

from __future__ import annotations

import hashlib
import hmac
import os
import shutil
import socket
import subprocess
import sys
import time

import pytest

import msatest
from msatest import HDR, MSA, Wire, b64

# Puts the given fds at 3, 4, ... and sets LISTEN_PID to its own pid before
# exec, as systemd does.
_ACTIVATE = r"""
import os, sys
fds = [int(x) for x in sys.argv[1].split(",")]
for i, fd in enumerate(fds):
    os.dup2(fd, 3 + i)
os.environ["LISTEN_PID"] = str(os.getpid())
os.environ["LISTEN_FDS"] = str(len(fds))
os.execv(sys.executable, [sys.executable] + sys.argv[2:])
"""


def _submit(w: Wire, sender="alice@example.org") -> int:
    w.expect("EHLO x.example", 250)
    w.expect(f"MAIL FROM:<{sender}>", 250)
    w.expect("RCPT TO:<bob@example.net>", 250)
    w.expect("DATA", 354)
    w.send(HDR + b"Subject: deployed\r\n\r\nok\r\n.\r\n")
    return w.reply()[0]


def test_socket_activation_and_sd_notify(tmp_path, certs):  # contrib/systemd/msa-activated.*
    listeners = []
    for _ in range(2):
        s = socket.socket()
        s.bind(("127.0.0.1", 0))
        s.listen(16)
        listeners.append(s)
    notify = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    notify_path = str(tmp_path / "notify")
    notify.bind(notify_path)
    notify.settimeout(15)
    conf = msatest.write_config(tmp_path, certs, listen="127.0.0.1:1 starttls")  # ignored when sockets are passed
    fds = [s.fileno() for s in listeners]
    log = open(tmp_path / "msa.log", "wb")
    proc = subprocess.Popen(
        [sys.executable, "-c", _ACTIVATE, ",".join(map(str, fds)), MSA, "serve", "-c", str(conf)],
        pass_fds=fds, stdout=log, stderr=log,
        env={**os.environ, "LISTEN_FDNAMES": "starttls:tls", "NOTIFY_SOCKET": notify_path},
    )
    try:
        assert notify.recv(100) == b"READY=1"
        plain_port, tls_port = (s.getsockname()[1] for s in listeners)
        for s in listeners:
            s.close()  # msa holds its own copies now
        w = Wire.connect(plain_port)
        assert w.reply()[0] == 220
        w.starttls(certs.client_context())
        assert _submit(w) == 250
        t = Wire.connect(tls_port, tls_ctx=certs.client_context())
        assert t.reply()[0] == 220
        assert _submit(t) == 250
    finally:
        proc.terminate()
        assert proc.wait(20) == 0
        log.close()
    text = (tmp_path / "msa.log").read_text()
    assert f"listening on 127.0.0.1:{plain_port} (starttls)" in text
    assert f"listening on 127.0.0.1:{tls_port} (tls)" in text
    assert len(msatest.Outbox(tmp_path / "outbox").messages()) == 2


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.parametrize("implicit", [False, True])
def test_inetd_mode_under_socat(tmp_path, certs, implicit):  # contrib/inetd, CONTRACT inetd
    socat = shutil.which("socat")
    if socat is None:
        pytest.skip("socat is not installed (CI installs the socat package)")
    conf = msatest.write_config(tmp_path, certs, trusted_networks="127.0.0.1/32")
    port = _free_port()
    cmd = f"{sys.executable} {MSA} inetd -c {conf}" + (" --tls" if implicit else "")
    proc = subprocess.Popen([socat, f"TCP-LISTEN:{port},bind=127.0.0.1,reuseaddr,fork", f"EXEC:{cmd}"],
                            stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 10
        while True:
            try:
                w = Wire.connect(port, tls_ctx=certs.client_context() if implicit else None)
                break
            except ConnectionRefusedError:
                assert time.monotonic() < deadline
                time.sleep(0.05)
        assert w.reply()[0] == 220
        if not implicit:
            w.expect("EHLO x.example", 250)
            w.starttls(certs.client_context())
        assert _submit(w) == 250  # trusted: the client address came from socat
        w.expect("QUIT", 221)
    finally:
        proc.terminate()
        proc.wait(10)
    [d] = msatest.Outbox(tmp_path / "outbox").messages()
    assert d.data.startswith(b"Received: from x.example ([127.0.0.1])\r\n")


def test_user_import_from_dovecot_keeps_passwords(tmp_path, start_msa):  # CONTRACT user import
    from argon2 import PasswordHasher

    from sasl.md5state import cram_md5_credential

    pw = "moved from dovecot"
    passwd = tmp_path / "dovecot-users"
    passwd.write_text(
        f"frank:{{ARGON2ID}}{PasswordHasher().hash(pw)}:1000:1000::/home/frank::\n"
        f"frank:{{CRAM-MD5}}{cram_md5_credential(pw.encode())}\n"
    )
    db = tmp_path / "users.db"
    p = subprocess.run([sys.executable, MSA, "user", "--users", str(db), "import", str(passwd)],
                       capture_output=True, text=True, timeout=60)
    assert p.returncode == 0, p.stderr
    p = subprocess.run([sys.executable, MSA, "user", "--users", str(db), "senders", "frank", "frank@example.org"],
                       capture_output=True, text=True, timeout=60)
    assert p.returncode == 0, p.stderr
    m = start_msa(users=db, trusted_networks="")
    w = Wire.connect(m.ports["tls"], tls_ctx=m.client_ctx)
    w.reply()
    assert "CRAM-MD5" in w.expect("EHLO x.example", 250)
    w.expect("AUTH PLAIN " + b64("\0frank\0" + pw), 235)
    c = Wire.connect(m.ports["tls"], tls_ctx=m.client_ctx)
    c.reply()
    c.expect("EHLO x.example", 250)
    code, text = c.cmd("AUTH CRAM-MD5")
    import base64

    challenge = base64.b64decode(text[4:])
    digest = hmac.new(pw.encode(), challenge, hashlib.md5).hexdigest()
    assert c.cmd(b64(f"frank {digest}"))[0] == 235
    assert _submit_after_auth(c) == 250


def _submit_after_auth(w: Wire) -> int:
    w.transaction("frank@example.org", "bob@example.net")
    w.send(b"From: frank@example.org\r\nSubject: imported\r\n\r\nok\r\n.\r\n")
    return w.reply()[0]
