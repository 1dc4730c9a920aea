"""`msa.py user import`: Dovecot passwd-files (CONTRACT.md "Command line")."""

from __future__ import annotations

import argparse
import io
import os

import pytest
from argon2 import PasswordHasher

import sasl
from sasl import Credentials, parse_bytes, verify
from sasl.md5state import cram_md5_credential
from admin import usercmd
from util.files import USERS_MAX_OCTETS, read_regular

FAST = PasswordHasher(time_cost=1, memory_cost=8, parallelism=1)


def load(path: str) -> sasl.UserDB:
    """The database as the daemon reads it (server.runtime.load_users)."""
    return parse_bytes(read_regular(path, USERS_MAX_OCTETS), path)


@pytest.fixture
def db_path(tmp_path):
    return str(tmp_path / "users.db")


class Result:
    def __init__(self, code: int, out: str, err: str) -> None:
        self.code, self.out, self.err = code, out, err


def user(path: str, *argv: str, stdin: str = "") -> Result:
    parser = argparse.ArgumentParser(prog="msa.py user")
    usercmd.build_parser(parser)
    out, err = io.StringIO(), io.StringIO()
    code = usercmd.run(parser.parse_args(list(argv)), path, stdin=io.StringIO(stdin), stdout=out, stderr=err)
    return Result(code, out.getvalue(), err.getvalue())


def plain_ok(path: str, name: str, password: bytes) -> bool:
    return verify(load(path), Credentials(mechanism="PLAIN", username=name, password=password)).ok


# --- import (Dovecot passwd-file) ---------------------------------------------------


def test_import_argon2_and_cram(db_path, tmp_path):  # CONTRACT.md import
    phc = FAST.hash("pw-alice")
    cram = cram_md5_credential(b"tanstaaftanstaaf")
    dovecot = tmp_path / "passwd"
    dovecot.write_text(
        "# dovecot\n"
        f"Alice:{{ARGON2ID}}{phc}:1000:1000::/home/alice::\n"
        f"tim:{{argon2id}}{FAST.hash('tanstaaftanstaaf')}\n"
    )
    crams = tmp_path / "passwd.cram"
    crams.write_text(f"tim:{{CRAM-MD5}}{cram.upper()}::::::\n")
    result = user(db_path, "import", str(dovecot), str(crams))
    assert result.code == 0, result.err
    assert "alice" in result.out and "tim" in result.out
    assert "S-510" in result.out  # low-cost hashes: their timing differs
    db = load(db_path)
    assert [u.name for u in db] == ["alice", "tim"]
    assert db.get("tim").cram == cram and db.get("alice").senders == ()  # type: ignore[union-attr]
    assert plain_ok(db_path, "alice", b"pw-alice")
    for output in (result.out, result.err):
        assert phc not in output and cram not in output


@pytest.mark.parametrize(
    ("content", "why"),
    [
        ("bob:{CRAM-MD5}" + "ab" * 32 + "\n", "user bob has only a {CRAM-MD5} credential"),
        ("bob:{SHA512-CRYPT}$6$salt$hash\n", "bad password hash: malformed SHA512-CRYPT hash"),
        ("bob:{MD5-CRYPT}$1$salt$hash\n", "scheme {MD5-CRYPT} cannot be imported"),
        ("bob:$argon2id$v=19$m=8,t=1,p=1$c2FsdHNhbHQ$aGFzaA\n", "expected user:{SCHEME}password"),
        ("bob:{ARGON2ID}$argon2id$v=19$m=524288,t=3,p=4$c2FsdHNhbHQ$aGFzaA\n",
         "bad argon2 hash: memory cost 524288 KiB exceeds 262144"),
        ("bob:{ARGON2ID}$argon2id$v=19$m=8,t=1,p=1$c2FsdHNhbHQ$aGFzaA\n"
         "BOB:{ARGON2ID}$argon2id$v=19$m=8,t=1,p=1$c2FsdHNhbHQ$aGFzaA\n", ":3: second {ARGON2ID} line for bob"),
        ("bob:{CRAM-MD5}xyz\n", "bad CRAM-MD5 credential"),
        ("bo b:{ARGON2ID}x\n", "bad user name"),
    ],
)  # fmt: skip
def test_import_problems_name_file_and_line_and_import_nothing(db_path, tmp_path, content, why):  # S-1013
    dovecot = tmp_path / "passwd"
    dovecot.write_text(f"ok:{{ARGON2ID}}{FAST.hash('x')}\n" + content)
    result = user(db_path, "import", str(dovecot))
    assert result.code == 1
    where = f"{dovecot}{why}" if why.startswith(":") else f"{dovecot}:2: {why}"
    assert where in result.err, result.err
    assert "nothing imported" in result.err
    assert not os.path.exists(db_path)


def test_import_existing_user_is_an_error_for_that_line(db_path, tmp_path):
    with open(db_path, "w") as file:
        file.write(f"# kept\nalice:{FAST.hash('pw')}::\n")
    before = open(db_path).read()
    dovecot = tmp_path / "passwd"
    dovecot.write_text(f"carol:{{ARGON2ID}}{FAST.hash('x')}\nalice:{{ARGON2ID}}{FAST.hash('x')}\n")
    result = user(db_path, "import", str(dovecot))
    assert result.code == 1 and f"{dovecot}:2: user alice exists" in result.err
    assert open(db_path).read() == before


def test_import_missing_file(db_path, tmp_path):
    result = user(db_path, "import", str(tmp_path / "nope"))
    assert result.code == 1 and "no such file" in result.err
