"""`make dist`: the one-file build runs every command as msa.py does
(DESIGN.md "Build and deploy")."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys

import msatest
from msatest import ROOT, Wire, b64


def test_zipapp_alone_checks_adds_a_user_and_delivers(tmp_path, certs):
    build = subprocess.run(["make", "-s", "dist", f"PYTHON={sys.executable}"], cwd=ROOT,
                           capture_output=True, text=True, timeout=120)
    assert build.returncode == 0, build.stderr
    app = tmp_path / "deploy" / "msa"
    app.parent.mkdir()
    shutil.copy(ROOT / "msa.pyz", app)  # copied alone, as with scp
    # The host has no cryptography (a stand-in that fails to import): without
    # dkim_keys, nothing needs it (DESIGN.md: imported only when configured).
    shim = tmp_path / "no-cryptography" / "cryptography"
    shim.mkdir(parents=True)
    (shim / "__init__.py").write_text("raise ImportError('cryptography is not installed here')\n")
    env = {**os.environ, "PYTHONPATH": str(shim.parent)}

    def run(*args, **kw):
        return subprocess.run([sys.executable, str(app), *args], capture_output=True, text=True,
                              timeout=60, cwd=tmp_path / "deploy", env=env, **kw)

    assert run("--version").stdout.startswith("msa ")
    conf = msatest.write_config(tmp_path, certs, trusted_networks="")
    (tmp_path / "spool").mkdir()
    added = run("user", "add", "erin", "--sender", "erin@example.org", "--password-stdin", "-c", str(conf),
                input="erin pw\n")
    assert added.returncode == 0, added.stderr
    assert run("user", "list", "-c", str(conf)).stdout.split()[0] == "erin"
    checked = run("check", "-c", str(conf))
    assert checked.returncode == 0, checked.stdout + checked.stderr

    m = msatest.start(tmp_path / "served", certs, conf=conf, argv=[sys.executable, str(app)],
                      env={"PYTHONPATH": str(shim.parent)})
    try:
        w = Wire.connect(m.ports["tls"], tls_ctx=m.client_ctx)
        w.reply()
        w.expect("EHLO x.example", 250)
        w.expect("AUTH PLAIN " + b64("\0erin\0erin pw"), 235)
        w.transaction("erin@example.org", "bob@example.net")
        w.send(b"From: erin@example.org\r\nSubject: from the zipapp\r\n\r\nhi\r\n.\r\n")
        assert w.reply()[0] == 250
    finally:
        m.stop()
    [d] = msatest.Outbox(tmp_path / "outbox").messages()
    assert b"\r\nSubject: from the zipapp\r\n" in d.data and d.data.endswith(b"\r\n\r\nhi\r\n")
    assert b"with ESMTPSA" in d.data
