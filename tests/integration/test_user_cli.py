"""`msa.py user ...` end to end, as an administrator runs it (CONTRACT.md)."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

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


@pytest.mark.parametrize(
    ("name", "why"),
    [
        ("#x", "user name starts with '#' (it would be read as a comment)"),
        ("\ufeffbob", "user name contains an invisible formatting character (U+FEFF)"),
        ("admin\u202e", "user name contains an invisible formatting character (U+202E)"),
        ("al\u200bice", "user name contains an invisible formatting character (U+200B)"),
        ("al\u2028ice", "user name contains a line separator (U+2028)"),
        ("al\u00a0ice", "user name contains a space (U+00A0)"),
        ("jose\u0301", "user name is not in Unicode normalization form NFC (write accented letters precomposed, as keyboards send them)"),
    ],
)
def test_add_refuses_names_the_database_cannot_hold(tmp_path, name, why):  # S-509
    db = tmp_path / "users.db"
    p = _user(db, "add", name, "--password-stdin", password="Secret-1")
    assert p.returncode == 1, p.stdout + p.stderr
    assert p.stderr == f"bad user name: {why}\n"
    assert "added" not in p.stdout and "Traceback" not in p.stderr
    assert name not in p.stdout + p.stderr  # a password typed as the name stays unseen
    assert not db.exists()


def test_import_names_the_line_of_a_bad_name_and_imports_nothing(tmp_path):  # S-509
    hashed = "{ARGON2ID}$argon2id$v=19$m=8,t=1,p=1$c29tZXNhbHQ$" + "A" * 43
    passwd = tmp_path / "dovecot.users"
    passwd.write_text(f"\ufeffalice:{hashed}\n# a comment\nbad\u202ename:{hashed}\nbob:{hashed}\n")
    db = tmp_path / "users.db"
    p = _user(db, "import", str(passwd))
    assert p.returncode == 1
    assert p.stderr == (f"{passwd}:3: bad user name: user name contains an invisible formatting character (U+202E)\n"
                        "nothing imported\n")  # fmt: skip
    assert not db.exists()
    passwd.write_text(f"\ufeffalice:{hashed}\nbob:{hashed}\n")  # an editor's BOM is the file's, not alice's
    p = _user(db, "import", str(passwd))
    assert p.returncode == 0, p.stderr
    assert [line.split()[0] for line in _user(db, "list").stdout.splitlines()] == ["alice", "bob"]
