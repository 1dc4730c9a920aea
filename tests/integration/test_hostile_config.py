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


EVERY = ("check", "serve", "inetd", "user")
NUL = "contains a control character (U+0000); remove it"

CASES: dict[str, Case] = {
    # configparser passes NUL and other controls through; each used to reach
    # pwd, os.open, bind or exec and end in a traceback.
    **{
        f"NUL in {key}": Case(lambda d, key=key, value=value: {key: value}, key, f"{key} {NUL}", EVERY)
        for key, value in [
            ("run_as", "msa\0x"), ("users", "users\0.db"), ("spool", "/var/spool/\0msa"),
            ("listen", "127.0.0.1:0\0 starttls"), ("hostname", "msa\0.test"), ("sendmail", "/usr/sbin/sendmail\0 -t"),
        ]  # fmt: skip
    },
    "ESC in tls_key": Case(
        lambda d: {"tls_key": "key\x1b[2J.pem"}, "tls_key", "tls_key contains a control character (U+001B)", EVERY, tls=True,
    ),
    "NEL in users": Case(lambda d: {"users": "users\x85.db"}, "users", "users contains a control character (U+0085)", EVERY),
    "bidi override in hostname": Case(
        lambda d: {"hostname": "msa.\u202etset"}, "hostname", "hostname contains an invisible formatting character (U+202E)", EVERY,
    ),
    "line separator in spool": Case(
        lambda d: {"spool": "/var/spool/msa\u2028x"}, "spool", "spool contains an invisible formatting character (U+2028)", EVERY,
    ),
    "continuation line in users": Case(
        lambda d: {"users": "users.db\n  other.db"}, "users", "users continues on a second line; write the value on one line", EVERY,
    ),
    "hostname a..b": Case(lambda d: {"hostname": "a..b"}, "hostname", "hostname 'a..b' is not a domain name: it has an empty label", EVERY),
    "hostname .a": Case(lambda d: {"hostname": ".a"}, "hostname", "hostname '.a' is not a domain name: it has an empty label", EVERY),
    "hostname a.": Case(lambda d: {"hostname": "a."}, "hostname", "hostname 'a.' is not a domain name: it has an empty label", EVERY),
    "hostname with a 64-octet label": Case(
        lambda d: {"hostname": "a" * 64 + ".test"}, "hostname", "is not a domain name: a label is longer than 63 octets", EVERY,
    ),
    "hostname of 254 octets": Case(
        lambda d: {"hostname": ("a" * 63 + ".") * 3 + "a" * 62}, "hostname", "is not a domain name: it is longer than 253 octets", EVERY,
    ),
    "hostname with an underscore": Case(
        lambda d: {"hostname": "msa_1.test"}, "hostname", "label 'msa_1' may hold only letters, digits and '-'", EVERY,
    ),
    "hostname in U-labels": Case(
        lambda d: {"hostname": "straße.test"}, "hostname", "write an internationalized name in its xn-- form", EVERY,
    ),
    "listen host a..b": Case(
        lambda d: {"listen": "a..b:587 starttls"}, "listen",
        "listen host 'a..b' is neither an IP address nor a host name: it has an empty label", EVERY,
    ),
    "listen host 127.1": Case(
        lambda d: {"listen": "127.1:587 starttls"}, "listen",
        "listen host '127.1' is neither an IP address nor a host name: its last label is all digits", EVERY,
    ),
    "spool is /dev/null": Case(lambda d: {"spool": "/dev/null"}, "spool", "spool: /dev/null: not a directory"),
    "spool is a regular file": Case(
        lambda d: {"spool": str(d / "users.db")}, "spool", "spool: {dir}/users.db: not a directory",
    ),
    "spool below /dev/null": Case(lambda d: {"spool": "/dev/null/msa"}, "spool", "spool: /dev/null/msa: "),
    "run_as no such user": Case(
        lambda d: {"run_as": "no-such-user-here"}, "run_as", "run_as: no such user 'no-such-user-here'", ("check", "serve"),
    ),
    "run_as that is no user name": Case(
        lambda d: {"run_as": "-x"}, "run_as", "run_as '-x' is not a user name", EVERY,
    ),
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
    (tmp_path / "users.db").write_text("# no users yet\n")
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
        if command == "check":  # one message, and no misleading second one
            assert len([line for line in p.stdout.splitlines() if not line.startswith("warning: ")]) == 1, out


@pytest.mark.parametrize("command", ["check", "serve", "inetd", "user"])
@pytest.mark.parametrize("what", ["/dev/zero", "FIFO", "directory"])
def test_the_config_file_itself_may_be_anything(tmp_path, command, what):
    path = {"/dev/zero": "/dev/zero", "FIFO": _fifo(tmp_path), "directory": str(tmp_path)}[what]
    p = run(command, Path(path))
    out = p.stdout + p.stderr
    assert "Traceback" not in out and p.returncode == 1, out
    assert f"{path}: not a regular file (" in out, out


def test_list_values_may_still_continue_on_indented_lines(tmp_path):
    # A newline (a continuation line) or a tab separates the items of
    # listen, trusted_networks and sendmail; only there is it no control.
    (tmp_path / "spool").mkdir()
    conf = msatest.write_config(
        tmp_path, None, hostname="localhost", listen="127.0.0.1:0 starttls,\n  localhost:0\tstarttls",
        trusted_networks="10.0.0.0/8,\n  192.168.0.0/16\t::1/128",
    )
    p = run("check", conf)
    assert p.returncode == 0, p.stdout + p.stderr


@pytest.mark.parametrize("key", ["users", "tls_key"])
def test_check_warns_when_secrets_are_readable_by_every_user(tmp_path, certs, key):  # S-1012
    (tmp_path / "spool").mkdir()
    secret = tmp_path / ("users.db" if key == "users" else "key.pem")
    if key == "users":
        msatest.add_user(secret, "alice", "pw", ["alice@example.org"])
    else:
        secret.write_bytes(Path(certs.key).read_bytes())
    conf = msatest.write_config(tmp_path, certs, users=str(tmp_path / "users.db"), tls_key=str(tmp_path / "key.pem")
                                if key == "tls_key" else certs.key)  # fmt: skip
    warning = f"warning: {secret}: mode 0644: readable by every user; chmod 600 (or 640 for msa's group)"
    for mode, warned in ((0o644, True), (0o640, False), (0o600, False)):
        secret.chmod(mode)
        p = run("check", conf)
        assert p.returncode == 0, p.stdout + p.stderr  # a warning leaves the status alone
        assert (warning.replace("0644", f"{mode:04o}") in p.stdout) is warned, p.stdout
