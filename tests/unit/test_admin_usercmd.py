"""`msa.py user ...` through admin.usercmd.run() (CONTRACT.md "Command line")."""

from __future__ import annotations

import argparse
import fcntl
import io
import os
import stat
import subprocess
import sys
import time

import pytest
from argon2 import PasswordHasher

import sasl
from sasl import Credentials, parse_bytes, verify
from sasl.md5state import cram_md5_credential
from admin import edit, usercmd
from util.files import USERS_MAX_OCTETS, read_regular

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
FAST = PasswordHasher(time_cost=1, memory_cost=8, parallelism=1)


def load(path: str) -> sasl.UserDB:
    """The database as the daemon reads it (server.runtime.load_users)."""
    return parse_bytes(read_regular(path, USERS_MAX_OCTETS), path)


@pytest.fixture(autouse=True)
def fast_hashes(monkeypatch):
    """Low-cost argon2 for speed; tests about defaults undo it."""
    monkeypatch.setattr(usercmd, "hash_password", lambda password: FAST.hash(password))


@pytest.fixture
def db_path(tmp_path):
    return str(tmp_path / "users.db")


def parser() -> argparse.ArgumentParser:
    top = argparse.ArgumentParser(prog="msa.py user")
    usercmd.build_parser(top)
    return top


class Result:
    def __init__(self, code: int, out: str, err: str) -> None:
        self.code, self.out, self.err = code, out, err


def user(path: str, *argv: str, stdin: str = "") -> Result:
    out, err = io.StringIO(), io.StringIO()
    code = usercmd.run(
        parser().parse_args(list(argv)), path, stdin=io.StringIO(stdin), stdout=out, stderr=err
    )
    return Result(code, out.getvalue(), err.getvalue())


def plain_ok(path: str, name: str, password: bytes) -> bool:
    return verify(load(path), Credentials(mechanism="PLAIN", username=name, password=password)).ok


# --- add ----------------------------------------------------------------------


def test_add_creates_the_file_with_mode_0600(db_path):  # S-1012
    result = user(
        db_path, "add", "Alice", "--sender", "alice@example.com", "--password-stdin", stdin="s3cret\n"
    )
    assert result.code == 0, result.err
    assert "alice" in result.out
    assert stat.S_IMODE(os.stat(db_path).st_mode) == 0o600
    db = load(db_path)
    alice = db.get("alice")
    assert alice is not None and alice.senders == ("alice@example.com",) and alice.cram is None
    assert plain_ok(db_path, "alice", b"s3cret")
    assert not plain_ok(db_path, "alice", b"s3cret\n")  # only the newline is stripped


def test_add_with_default_parameters_and_cram(db_path, monkeypatch):  # S-508, S-510
    monkeypatch.setattr(usercmd, "hash_password", sasl.hash_password)
    result = user(db_path, "add", "tim", "--cram-md5", "--password-stdin", stdin="tanstaaftanstaaf\r\n")
    assert result.code == 0, result.err
    db = load(db_path)
    tim = db.get("tim")
    assert tim is not None and tim.cram == cram_md5_credential(b"tanstaaftanstaaf")
    assert sasl.nondefault_params(db) == []
    assert db.all_have_cram


def test_add_never_prints_hashes(db_path):  # CONTRACT.md, S-903
    result = user(db_path, "add", "alice", "--cram-md5", "--password-stdin", stdin="pw\n")
    listing = user(db_path, "list")
    text = open(db_path).read()
    phc, cram = text.split(":")[1], text.split(":")[2]
    for output in (result.out, result.err, listing.out, listing.err):
        assert phc not in output and cram not in output and "pw" not in output.replace("passw", "")


def test_add_existing_user_fails(db_path):
    user(db_path, "add", "alice", "--password-stdin", stdin="pw\n")
    result = user(db_path, "add", "ALICE", "--password-stdin", stdin="pw\n")
    assert result.code == 1 and "already exists" in result.err


@pytest.mark.parametrize("password", ["\n", "", "x" * 256 + "\n"])
def test_empty_or_too_long_password_refused(db_path, password):  # S-505
    result = user(db_path, "add", "alice", "--password-stdin", stdin=password)
    assert result.code == 1 and "password" in result.err
    assert not os.path.exists(db_path)


def test_password_from_binary_stdin_must_be_utf8(db_path):
    class Binary(io.StringIO):
        buffer = io.BytesIO(b"\xff\xfe\n")

    out, err = io.StringIO(), io.StringIO()
    args = parser().parse_args(["add", "alice", "--password-stdin"])
    assert usercmd.run(args, db_path, stdin=Binary(), stdout=out, stderr=err) == 1
    assert "UTF-8" in err.getvalue()


def test_utf8_password_from_binary_stdin(db_path):
    class Binary(io.StringIO):
        buffer = io.BytesIO("pässwörd\n".encode())

    args = parser().parse_args(["add", "alice", "--password-stdin"])
    assert usercmd.run(args, db_path, stdin=Binary(), stdout=io.StringIO(), stderr=io.StringIO()) == 0
    assert plain_ok(db_path, "alice", "pässwörd".encode())


def test_without_terminal_or_password_stdin_refuses(db_path):
    result = user(db_path, "add", "alice", stdin="pw\n")
    assert result.code == 1 and "--password-stdin" in result.err


def test_terminal_password_asked_twice(db_path, monkeypatch):
    class Tty(io.StringIO):
        def isatty(self) -> bool:
            return True

    answers = iter(["one", "two"])
    monkeypatch.setattr(usercmd.getpass, "getpass", lambda prompt="": next(answers))
    args = parser().parse_args(["add", "alice"])
    err = io.StringIO()
    assert usercmd.run(args, db_path, stdin=Tty(), stdout=io.StringIO(), stderr=err) == 1
    assert "differ" in err.getvalue()
    answers = iter(["same", "same"])
    assert usercmd.run(args, db_path, stdin=Tty(), stdout=io.StringIO(), stderr=err) == 0
    assert plain_ok(db_path, "alice", b"same")


@pytest.mark.parametrize("name", ["al ice", "a:b", "a\tb", ""])
def test_bad_user_name_refused(db_path, name):  # S-509
    result = user(db_path, "add", name, "--password-stdin", stdin="pw\n")
    assert result.code == 1 and "bad user name" in result.err


def test_bad_sender_refused(db_path):  # S-603
    result = user(db_path, "add", "alice", "--sender", "nobody", "--password-stdin", stdin="pw\n")
    assert result.code == 1 and "bad sender 'nobody'" in result.err


# --- passwd, senders, del, list -----------------------------------------------------


def test_passwd_changes_password_and_drops_stale_cram(db_path):  # S-508
    user(db_path, "add", "alice", "--cram-md5", "--password-stdin", stdin="old\n")
    result = user(db_path, "passwd", "Alice", "--password-stdin", stdin="new\n")
    assert result.code == 0, result.err
    assert "CRAM-MD5" in result.out
    assert plain_ok(db_path, "alice", b"new") and not plain_ok(db_path, "alice", b"old")
    assert load(db_path).get("alice").cram is None  # type: ignore[union-attr]
    user(db_path, "passwd", "alice", "--cram-md5", "--password-stdin", stdin="newer\n")
    assert load(db_path).get("alice").cram == cram_md5_credential(b"newer")  # type: ignore[union-attr]


def test_passwd_unknown_user(db_path):
    user(db_path, "add", "alice", "--password-stdin", stdin="pw\n")
    result = user(db_path, "passwd", "bob", "--password-stdin", stdin="pw\n")
    assert result.code == 1 and f"{db_path}: no user bob" in result.err
    missing = user(db_path + ".none", "passwd", "bob", "--password-stdin", stdin="pw\n")
    assert missing.code == 1 and "no such file" in missing.err


def test_senders_replaces_the_list(db_path):  # S-603
    user(db_path, "add", "alice", "--sender", "a@x.org", "--password-stdin", stdin="pw\n")
    result = user(db_path, "senders", "alice", "Alice@Y.org", "@z.org")
    assert result.code == 0, result.err
    db = load(db_path)
    assert db.get("alice").senders == ("alice@y.org", "@z.org")  # type: ignore[union-attr]
    assert db.may_send_as("alice", "alice+x@y.org") and not db.may_send_as("alice", "a@x.org")
    assert plain_ok(db_path, "alice", b"pw")
    bad = user(db_path, "senders", "alice", "@")
    assert bad.code == 1 and load(db_path).get("alice").senders == ("alice@y.org", "@z.org")  # type: ignore[union-attr]


def test_del_and_list(db_path):
    user(db_path, "add", "alice", "--sender", "a@x.org", "--sender", "@y.org", "--cram-md5",
         "--password-stdin", stdin="pw\n")  # fmt: skip
    user(db_path, "add", "bob", "--password-stdin", stdin="pw\n")
    assert user(db_path, "list").out == "alice  a@x.org @y.org  [cram-md5]\nbob  (no senders)\n"
    assert user(db_path, "del", "BOB").code == 0
    assert user(db_path, "list").out == "alice  a@x.org @y.org  [cram-md5]\n"
    missing = user(db_path, "del", "bob")
    assert missing.code == 1 and "no user bob" in missing.err


def test_list_missing_file_warns_and_succeeds(db_path):
    result = user(db_path, "list")
    assert result.code == 0 and result.out == "" and "no such file" in result.err


def test_comments_blank_lines_and_order_are_kept(db_path):  # CONTRACT.md
    head = "# the users\n\n  # of this host\n"
    bob = f"bob:{FAST.hash('pw')}::bob@x.org , @y.org\n"
    tail = "# end\n"
    with open(db_path, "w") as file:
        file.write(head + bob + tail)
    assert user(db_path, "add", "alice", "--password-stdin", stdin="pw\n").code == 0
    text = open(db_path).read()
    assert text.startswith(head + bob + tail)
    assert user(db_path, "del", "alice").code == 0
    assert open(db_path).read() == head + bob + tail
    assert user(db_path, "senders", "bob", "b@x.org").code == 0
    lines = open(db_path).read().split("\n")
    assert lines[:3] == head.split("\n")[:3] and lines[4] == "# end"


def test_group_readable_file_stays_0640(db_path):  # S-1012: 0640 to msa's group
    user(db_path, "add", "alice", "--password-stdin", stdin="pw\n")
    os.chmod(db_path, 0o644)
    user(db_path, "add", "bob", "--password-stdin", stdin="pw\n")
    assert stat.S_IMODE(os.stat(db_path).st_mode) == 0o640  # never world-readable


def test_broken_line_is_reported_as_path_line(db_path):  # CONTRACT.md
    with open(db_path, "w") as file:
        file.write(
            f"# c\nalice:{FAST.hash('pw')}::\nbob:$argon2id$v=19$m=1048576,t=3,p=4$c2FsdHNhbHQ$aGFzaA::\n"
        )
    before = open(db_path).read()
    for argv in (
        ["add", "carol", "--password-stdin"],
        ["del", "alice"],
        ["list"],
        ["senders", "alice", "@x.org"],
    ):
        result = user(db_path, *argv, stdin="pw\n")
        assert result.code == 1
        assert f"{db_path}:3: bad argon2 hash: memory cost 1048576 KiB exceeds 262144" in result.err
    assert open(db_path).read() == before


def test_invalid_utf8_database_is_reported(db_path):
    with open(db_path, "wb") as file:
        file.write(b"# ok\n\xff\n")
    result = user(db_path, "del", "alice")
    assert result.code == 1 and f"{db_path}:2: not valid UTF-8" in result.err


def test_symlinked_database_stays_a_symlink(tmp_path):
    real = tmp_path / "real.db"
    link = tmp_path / "users.db"
    link.symlink_to(real)
    assert user(str(link), "add", "alice", "--password-stdin", stdin="pw\n").code == 0
    assert link.is_symlink() and "alice:" in real.read_text()


def test_no_temporary_files_left(db_path, tmp_path):
    user(db_path, "add", "alice", "--password-stdin", stdin="pw\n")
    user(db_path, "add", "alice", "--password-stdin", stdin="pw\n")  # fails
    assert sorted(os.listdir(tmp_path)) == ["users.db", "users.db.lock"]


# --- locking and concurrency ----------------------------------------------------------


def test_locked_database_exits_75(db_path, monkeypatch):  # CONTRACT.md: EX_TEMPFAIL
    monkeypatch.setattr(edit, "LOCK_WAIT_SECONDS", 0.3)
    fd = os.open(db_path + ".lock", os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        started = time.monotonic()
        result = user(db_path, "add", "alice", "--password-stdin", stdin="pw\n")
        assert result.code == 75 and "users.db is locked" in result.err
        assert time.monotonic() - started >= 0.3
    finally:
        os.close(fd)
    assert not os.path.exists(db_path)
    assert user(db_path, "add", "alice", "--password-stdin", stdin="pw\n").code == 0


SCRIPT = """
import argparse, sys
sys.path.insert(0, sys.argv[1])
from argon2 import PasswordHasher
from admin import usercmd
usercmd.hash_password = PasswordHasher(time_cost=1, memory_cost=8, parallelism=1).hash
parser = argparse.ArgumentParser()
usercmd.build_parser(parser)
sys.exit(usercmd.run(parser.parse_args(sys.argv[3:]), sys.argv[2]))
"""


def test_concurrent_adds_all_land(db_path):  # CONTRACT.md: atomic edits
    with open(db_path, "w") as file:
        file.write("# shared\n")
    names = [f"user{i}" for i in range(8)]
    procs = [
        subprocess.Popen(
            [
                sys.executable,
                "-c",
                SCRIPT,
                ROOT,
                db_path,
                "add",
                name,
                "--sender",
                f"{name}@x.org",
                "--password-stdin",
            ],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        for name in names
    ]
    for proc, name in zip(procs, names, strict=True):
        out, err = proc.communicate(f"pw-{name}\n".encode(), timeout=60)
        assert proc.returncode == 0, err.decode()
    db = load(db_path)
    assert sorted(u.name for u in db) == names
    assert open(db_path).read().startswith("# shared\n")
    for name in names:
        assert plain_ok(db_path, name, f"pw-{name}".encode())


def test_subcommands_accept_location_options_after_arguments():  # CONTRACT.md syntax
    top = argparse.ArgumentParser(prog="msa.py")
    sub = top.add_subparsers(dest="command")
    user_parser = sub.add_parser("user")
    user_parser.add_argument("-c", "--config", default="/etc/msa/msa.conf")
    user_parser.add_argument("--users")
    usercmd.build_parser(user_parser)
    args = top.parse_args(["user", "add", "alice", "--users", "/tmp/u.db", "-c", "x.conf"])
    assert (args.user_command, args.name, args.users, args.config) == ("add", "alice", "/tmp/u.db", "x.conf")
    args = top.parse_args(["user", "--users", "/tmp/v.db", "list"])
    assert (args.users, args.config) == ("/tmp/v.db", "/etc/msa/msa.conf")
    with pytest.raises(SystemExit):
        top.parse_args(["user"])
