"""`msa.py user ...` end to end, as an administrator runs it (CONTRACT.md)."""

from __future__ import annotations

import os
import subprocess
import sys

from msatest import MSA


def _user(db, *args, password=None):
    return subprocess.run([sys.executable, MSA, "user", "--users", str(db), *args],
                          input=None if password is None else password + "\n",
                          capture_output=True, text=True, timeout=60)


def test_concurrent_adds_through_the_cli_all_land(tmp_path):  # CONTRACT user add: atomic
    db = tmp_path / "users.db"
    db.write_text("# our users\n\n")
    procs = [subprocess.Popen([sys.executable, MSA, "user", "--users", str(db), "add", f"u{i}",
                               "--sender", f"u{i}@example.org", "--password-stdin"],
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for i in range(6)]
    for p in procs:
        p.stdin.write("secret\n")
        p.stdin.close()
    assert [p.wait(60) for p in procs] == [0] * 6
    listed = _user(db, "list").stdout.split("\n")
    assert sorted(line.split()[0] for line in listed if line) == [f"u{i}" for i in range(6)]
    assert db.read_text().startswith("# our users\n\n")
    assert os.stat(db).st_mode & 0o777 in (0o600, 0o640)  # S-1012: never world-readable
    assert "$argon2" not in _user(db, "list").stdout


def test_hand_edited_broken_line_is_reported_and_nothing_changes(tmp_path):  # CONTRACT users database
    db = tmp_path / "users.db"
    assert _user(db, "add", "alice", "--password-stdin", password="pw").returncode == 0
    text = db.read_text() + "bob:not-a-hash::\n"
    db.write_text(text)
    p = _user(db, "add", "carol", "--password-stdin", password="pw")
    assert p.returncode == 1
    assert f"{db}:2: " in p.stderr and "Traceback" not in p.stderr
    assert db.read_text() == text
    assert _user(db, "senders", "alice", "alice@example.org").returncode == 1
    db.write_text(text.replace("bob:not-a-hash::\n", ""))
    assert _user(db, "senders", "alice", "alice@example.org", "@alice.example").returncode == 0
    assert "alice@example.org" in _user(db, "list").stdout
    assert _user(db, "del", "alice").returncode == 0
    assert _user(db, "list").stdout.strip() == ""
