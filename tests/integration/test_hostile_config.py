"""Hostile configurations: `check`, `serve`, `inetd` and `user` give a clear
`FILE:LINE: why` (or `FILE: why`) and exit 1; never a traceback, never a
hang (CONTRACT.md `check`). Every case runs the real msa.py."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

import msatest
from msatest import MSA

#: A case that hangs fails here instead of holding the test run.
TIMEOUT = 30


@dataclass(frozen=True)
class Case:
    #: config overrides, given the test's directory (which it may fill)
    overrides: Callable[[Path], dict[str, object]]
    #: the key whose line the message names (None: the message names a file)
    key: str | None
    #: text the message must hold
    expected: str
    #: the commands that must fail with it
    commands: tuple[str, ...] = ("check", "serve", "inetd")
    #: the certificate fixture's files as tls_cert/tls_key
    tls: bool = False


def _fifo(directory: Path) -> str:
    path = directory / "fifo"
    if not path.exists():
        os.mkfifo(path)
    return str(path)


CASES: dict[str, Case] = {
    "users is /dev/zero": Case(
        lambda d: {"users": "/dev/zero"}, "users", "/dev/zero: not a regular file (a character device)",
        ("check", "serve", "inetd", "user"),
    ),
    "users is a FIFO": Case(
        lambda d: {"users": _fifo(d)}, "users", "/fifo: not a regular file (a FIFO)", ("check", "serve", "inetd", "user"),
    ),
    "users is a directory": Case(
        lambda d: {"users": str(d)}, "users", "{dir}: not a regular file (a directory)",
        ("check", "serve", "inetd", "user"),
    ),
    "tls_key is a FIFO": Case(
        lambda d: {"tls_key": _fifo(d)}, "tls_key", "tls_key: {dir}/fifo: not a regular file (a FIFO)", tls=True,
    ),
    "tls_cert is /dev/zero": Case(
        lambda d: {"tls_cert": "/dev/zero"}, "tls_cert", "tls_cert: /dev/zero: not a regular file", tls=True,
    ),
    "tls_key is a directory": Case(
        lambda d: {"tls_key": str(d)}, "tls_key", "tls_key: {dir}: not a regular file (a directory)", tls=True,
    ),
}


def run(command: str, conf: Path) -> subprocess.CompletedProcess[str]:
    argv = {
        "check": ["check", "-c", str(conf)],
        "serve": ["serve", "-c", str(conf)],
        "inetd": ["inetd", "-c", str(conf)],
        "user": ["user", "-c", str(conf), "list"],
    }[command]
    try:
        return subprocess.run([sys.executable, MSA, *argv], stdin=subprocess.DEVNULL, capture_output=True,
                              text=True, errors="replace", timeout=TIMEOUT)  # fmt: skip
    except subprocess.TimeoutExpired:
        pytest.fail(f"msa.py {command} still running after {TIMEOUT} s: it hangs on this configuration")


def line_of(conf: Path, key: str) -> int:
    for number, text in enumerate(conf.read_text(errors="replace").split("\n"), 1):
        if text.split("=", 1)[0].strip() == key:
            return number
    raise AssertionError(f"{key} not in {conf}")


@pytest.mark.parametrize("name", list(CASES))
def test_hostile_value_is_refused_with_file_and_line(tmp_path, certs, name):
    case = CASES[name]
    (tmp_path / "spool").mkdir()
    conf = msatest.write_config(tmp_path, certs if case.tls else None, **case.overrides(tmp_path))
    expected = case.expected.format(dir=tmp_path)
    for command in case.commands:
        p = run(command, conf)
        out = p.stdout + p.stderr
        assert "Traceback" not in out, f"{command}:\n{out}"
        assert p.returncode == 1, f"{command} exited {p.returncode}:\n{out}"
        assert expected in out, f"{command}:\n{out}"
        if case.key and command != "user":  # user commands name the users file itself
            assert f"{conf}:{line_of(conf, case.key)}: " in out, f"{command}:\n{out}"


@pytest.mark.parametrize("command", ["check", "serve", "inetd", "user"])
@pytest.mark.parametrize("what", ["/dev/zero", "FIFO", "directory"])
def test_the_config_file_itself_may_be_anything(tmp_path, command, what):
    path = {"/dev/zero": "/dev/zero", "FIFO": _fifo(tmp_path), "directory": str(tmp_path)}[what]
    p = run(command, Path(path))
    out = p.stdout + p.stderr
    assert "Traceback" not in out and p.returncode == 1, out
    assert f"{path}: not a regular file (" in out, out
