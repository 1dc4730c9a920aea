"""App passwords end to end (SPEC.md S-515, CONTRACT.md `msa.py app`): made
by the real command, used with PLAIN and LOGIN over real sockets, their
senders narrowing the user's at MAIL and in From:, `app=LABEL` in the log,
revoked by `app del` and `user del` while the daemon runs, failing like a
wrong password with the same delay, and checked by `msa.py check`."""

from __future__ import annotations

import os
import re
import stat
import subprocess
import sys
import time

import msatest
from msatest import MSA, Wire, b64

PASSWORD = "alice main pw"


def cli(conf, *args, stdin: str | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, MSA, *args, "-c", str(conf)], capture_output=True, text=True,
                          timeout=60, input=stdin)


def started(start_msa, tmp_path):
    users = tmp_path / "users.db"
    msatest.add_user(users, "alice", PASSWORD, ["alice@example.org", "@example.net"])
    msatest.add_user(users, "bob", "bob pw", ["bob@example.org"])
    m = start_msa(users=users, trusted_networks="", app_passwords=tmp_path / "apps.db")
    return m, m.dir / "msa.conf", tmp_path / "apps.db"


def add_app(conf, user: str, label: str, *senders: str) -> str:
    args = ["app", "add", user, label] + [x for s in senders for x in ("--sender", s)]
    p = cli(conf, *args)
    assert p.returncode == 0, p.stderr
    secret = p.stdout.strip()
    assert re.fullmatch(r"[a-z2-7]{8}(-[a-z2-7]{5}){4}-[a-z2-7]{6}", secret), secret
    return secret


def wait_reload(m, count: int) -> None:
    assert msatest.wait_until(lambda: m.log().count("reloaded: ") >= count, 10), m.log()


def login(m, secret: str, mechanism: str = "PLAIN", user: str = "alice") -> tuple[Wire, int]:
    w = Wire.connect(m.ports["tls"], tls_ctx=m.client_ctx)
    w.reply()
    w.expect("EHLO phone.example", 250)
    if mechanism == "PLAIN":
        code, _ = w.cmd("AUTH PLAIN " + b64(f"\0{user}\0{secret}"))
    else:
        w.expect("AUTH LOGIN", 334)
        w.expect(b64(user), 334)
        code, _ = w.cmd(b64(secret))
    return w, code


def test_app_password_logs_in_with_plain_and_login_and_is_logged(start_msa, tmp_path):  # S-515
    m, conf, apps = started(start_msa, tmp_path)
    secret = add_app(conf, "alice", "phone")
    assert stat.S_IMODE(os.stat(apps).st_mode) == 0o600
    assert secret not in apps.read_text() and secret.replace("-", "") not in apps.read_text()  # hash only
    listed = cli(conf, "app", "list")
    assert listed.returncode == 0 and re.search(r"^alice  phone  created \d{4}-\d\d-\d\d \d\d:\d\d:\d\dZ", listed.stdout,
                                                re.M)
    assert secret not in listed.stdout
    wait_reload(m, 1)
    w, code = login(m, secret)
    assert code == 235
    w.transaction("alice@example.org", "carol@example.com")
    w.send(b"From: alice@example.org\r\nSubject: from the phone\r\n\r\nhi\r\n.\r\n")
    assert w.reply()[0] == 250
    w.close()
    m.wait_log(r"client=\S+, sasl_method=PLAIN, sasl_username=alice, app=phone")
    # Typed as a phone would: capital first letter, no dashes.
    w, code = login(m, secret.replace("-", "").capitalize(), "LOGIN")
    assert code == 235
    w.close()
    m.wait_log(r"sasl_method=LOGIN, sasl_username=alice, app=phone")
    # The main password still works, and is logged without app=.
    w, code = login(m, PASSWORD)
    assert code == 235
    w.close()
    assert re.search(r"sasl_method=PLAIN, sasl_username=alice, directory=users.db$", m.log(), re.M)
    # Someone else's name with alice's app password: no.
    w, code = login(m, secret, user="bob")
    assert code == 535
    w.close()


def test_narrowed_senders_hold_at_mail_and_in_from(start_msa, tmp_path):  # S-515, S-601, S-602
    m, conf, _ = started(start_msa, tmp_path)
    secret = add_app(conf, "alice", "printer", "scans@example.net")
    wait_reload(m, 1)
    w, code = login(m, secret)
    assert code == 235
    assert w.cmd("MAIL FROM:<alice@example.org>")[0] == 550  # alice's, but not the printer's
    w.expect("MAIL FROM:<scans@example.net>", 250)
    w.expect("RCPT TO:<carol@example.com>", 250)
    w.expect("DATA", 354)
    w.send(b"From: alice@example.org\r\nSubject: scan\r\n\r\nhi\r\n.\r\n")
    assert w.reply()[0] == 550  # the From: too (S-602)
    w.transaction("scans@example.net", "carol@example.com")
    w.send(b"From: Scanner <scans@example.net>\r\nSubject: scan\r\n\r\nhi\r\n.\r\n")
    assert w.reply()[0] == 250
    w.close()


def test_senders_outside_the_users_are_refused_by_the_command(start_msa, tmp_path):  # CONTRACT app add
    m, conf, apps = started(start_msa, tmp_path)
    for bad in ("mallory@example.org", "@example.org", "not an address"):
        p = cli(conf, "app", "add", "alice", "x", "--sender", bad)
        assert p.returncode == 1 and "msa.py app add:" in p.stderr and "Traceback" not in p.stderr, p.stderr
    assert cli(conf, "app", "add", "nobody", "x").returncode == 1
    assert cli(conf, "app", "add", "alice", "bad label").returncode == 1
    add_app(conf, "alice", "tablet", "x+tag@example.net", "alice+lists@example.org")
    dup = cli(conf, "app", "add", "alice", "Tablet")
    assert dup.returncode == 1 and "tablet" in dup.stderr.lower()
    lines = [line for line in apps.read_text().splitlines() if line and not line.startswith("#")]
    assert len(lines) == 1 and lines[0].startswith("alice:tablet:")  # nothing refused was written


def test_revoked_app_password_fails_like_a_wrong_one_and_is_throttled(start_msa, tmp_path):  # S-515, S-511
    m, conf, _ = started(start_msa, tmp_path)
    secret = add_app(conf, "alice", "phone")
    wait_reload(m, 1)
    w, code = login(m, secret)
    assert code == 235
    w.close()
    p = cli(conf, "app", "del", "alice", "phone")
    assert p.returncode == 0 and "revoked app password phone of alice" in p.stdout
    wait_reload(m, 2)
    w, code = login(m, secret)
    assert code == 535
    w.close()
    m.wait_log(r"SASL PLAIN authentication failed: authentication failure, sasl_username=alice")
    t0 = time.monotonic()
    w, code = login(m, secret)
    assert code == 535 and time.monotonic() - t0 >= 1.0  # the same delay as any failure
    w.close()
    assert cli(conf, "app", "del", "alice", "phone").returncode == 1  # already gone


def test_user_del_revokes_the_users_app_passwords(start_msa, tmp_path):  # CONTRACT: user del revokes
    m, conf, apps = started(start_msa, tmp_path)
    add_app(conf, "alice", "phone")
    add_app(conf, "alice", "laptop")
    bob = add_app(conf, "bob", "phone")
    p = cli(conf, "user", "del", "alice")
    assert p.returncode == 0 and "revoked 2 app password(s) of alice" in p.stdout, p.stderr
    assert "alice" not in cli(conf, "app", "list").stdout
    # Several edits of two files, each reloaded when the daemon sees it:
    # wait for the last state (bob alone, with his one app password).
    m.wait_log(r"reloaded: 1 users, 1 app passwords")
    w, code = login(m, bob, user="bob")
    assert code == 235
    w.close()


def test_check_reports_a_broken_app_passwords_file(start_msa, tmp_path):  # S-515, CONTRACT check
    m, conf, apps = started(start_msa, tmp_path)
    add_app(conf, "alice", "phone")
    assert cli(conf, "check").returncode == 0
    apps.chmod(0o644)
    assert "readable by every user" in cli(conf, "check").stdout
    with open(apps, "a") as f:
        f.write("ghost:phone:aaaaaaaa:" + "0" * 64 + ":20261201T000000Z:\n")
        f.write("alice:broken\n")
    p = cli(conf, "check")
    assert p.returncode == 1
    assert re.search(rf"{re.escape(str(apps))}:\d+: ", p.stdout), p.stdout
    assert "Traceback" not in p.stdout + p.stderr
    # The running daemon keeps the last good set (like users.db).
    m.wait_log(r"reload failed, keeping the previous configuration: .*apps\.db:\d+")
