"""users.db and `msa.py user import` take the hash schemes of SPEC.md S-1304,
made by the real `doveadm pw`: each logs in over SMTP with PLAIN and LOGIN,
a weak one never does, `check` names the users whose login time differs
(S-510), and `user passwd` rehashes to argon2id (CONTRACT.md)."""

from __future__ import annotations

import shutil
import subprocess
import sys

import pytest

import msatest
from msatest import MSA, Wire, b64

DOVEADM = shutil.which("doveadm")
pytestmark = pytest.mark.skipif(DOVEADM is None, reason="doveadm is not installed (Debian package dovecot-core)")
PASSWORD = "tr0ub4dor&3"
SCHEMES = ("BLF-CRYPT", "SHA512-CRYPT", "SHA256-CRYPT", "ARGON2I", "ARGON2ID")


def doveadm_pw(scheme: str, password: str = PASSWORD) -> str:
    p = subprocess.run([DOVEADM, "pw", "-s", scheme, "-p", password], capture_output=True, text=True, timeout=60)
    assert p.returncode == 0, p.stderr
    return p.stdout.strip()


_SOURCES = iter(f"127.0.{n // 250}.{n % 250 + 2}" for n in range(10**4))


def login(m, name: str, password: str, mechanism: str = "PLAIN") -> int:
    # Each from an address of its own: a failure's S-511 delay stays there.
    w = Wire.connect(m.ports["tls"], tls_ctx=m.client_ctx, source=next(_SOURCES))
    w.reply()
    w.expect("EHLO x.example", 250)
    if mechanism == "PLAIN":
        code, _ = w.cmd("AUTH PLAIN " + b64(f"\0{name}\0{password}"))
    else:
        w.expect("AUTH LOGIN " + b64(name), 334)
        code, _ = w.cmd(b64(password))
    w.close()
    return code


def test_users_db_takes_every_scheme_with_or_without_its_prefix(start_msa, tmp_path):  # S-1304
    lines = []
    for i, scheme in enumerate(SCHEMES):
        made = doveadm_pw(scheme)  # {SCHEME}hash
        bare = made.split("}", 1)[1]
        lines.append(f"p{i}:{made}::p{i}@example.org")
        lines.append(f"b{i}:{bare}::b{i}@example.org")
    lines.append(f"weak:{doveadm_pw('MD5-CRYPT')}::weak@example.org")
    db = tmp_path / "users.db"
    db.write_text("\n".join(lines[:-1]) + "\n")
    m = start_msa(users=db, trusted_networks="")
    for i in range(len(SCHEMES)):
        for name in (f"p{i}", f"b{i}"):
            assert login(m, name, PASSWORD, "PLAIN") == 235, (name, SCHEMES[i])
            assert login(m, name, PASSWORD, "LOGIN") == 235
            assert login(m, name, "wrong") == 535
    # A weak scheme is refused when the file is read, naming the scheme.
    weak = tmp_path / "weak.db"
    weak.write_text(lines[-1] + "\n")
    conf = msatest.write_config(tmp_path / "w", None, users=weak)
    p = subprocess.run([sys.executable, MSA, "check", "-c", str(conf)], capture_output=True, text=True, timeout=60)
    assert p.returncode == 1 and f"{weak}:1: bad password hash: unsupported scheme MD5-CRYPT" in p.stdout, p.stdout


def test_import_keeps_dovecot_hashes_and_passwd_rehashes_to_argon2id(start_msa, tmp_path):  # S-1304, CONTRACT
    passwd = tmp_path / "dovecot-users"
    passwd.write_text("".join(f"u{i}:{doveadm_pw(s)}::::::\n" for i, s in enumerate(SCHEMES[:3])))
    db = tmp_path / "users.db"
    imported = subprocess.run([sys.executable, MSA, "user", "--users", str(db), "import", str(passwd)],
                              capture_output=True, text=True, timeout=60)
    assert imported.returncode == 0, imported.stderr
    assert "imported 3 users" in imported.stdout
    assert "3 imported hashes are not argon2id with the default parameters" in imported.stdout
    m = start_msa(users=db, trusted_networks="")
    for i in range(3):
        assert login(m, f"u{i}", PASSWORD) == 235
    conf = msatest.write_config(tmp_path / "c", None, users=db)
    p = subprocess.run([sys.executable, MSA, "check", "-c", str(conf)], capture_output=True, text=True, timeout=60)
    assert "u0, u1, u2" in p.stdout and "S-510" in p.stdout, p.stdout
    changed = subprocess.run([sys.executable, MSA, "user", "--users", str(db), "passwd", "u0", "--password-stdin"],
                             input="new pass\n", capture_output=True, text=True, timeout=60)
    assert changed.returncode == 0, changed.stderr
    assert db.read_text().startswith("u0:$argon2id$")
    m.wait_log(r"reloaded")
    assert login(m, "u0", "new pass") == 235
