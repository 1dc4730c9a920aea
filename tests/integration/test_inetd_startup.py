"""inetd mode's start-up (server/inetd.py): one process per connection, so
the greeting waits for nothing it does not need. Without a clock: what was
imported before the 220 is read from `python -X importtime`, whose lines
share one pipe with the greeting, so their order is the order of events.
What can still go wrong after the greeting reaches the log and the client."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

import msatest
from msatest import MSA

#: Nothing of these is needed to greet: AUTH (sasl/, argon2, the directories
#: and the state store), DATA (headers/, delivery/ past the spool check, email),
#: the SMTP parser and events (they come with the first command), TLS (a
#: STARTTLS unit handshakes later), and what the command line and the log
#: need only in other modes (argparse, logging.handlers for syslog). typing
#: alone is 2-3 ms: modules loaded before the greeting import it only under
#: `TYPE_CHECKING = False` (server/runtime.py).
NOT_BEFORE_GREETING = (
    "argon2", "sasl", "directory", "state", "sqlite3", "_sqlite3", "redis", "headers", "signing", "email",
    "delivery.message", "delivery.pipeline", "delivery.sendmail", "delivery.smtp", "delivery.slots",
    "smtp_states.connection", "smtp_states.commands", "smtp_states.events", "smtp_states.auth",
    "server.session", "server.auth", "server.transport", "server.tls", "ssl", "_ssl", "hashlib",
    "argparse", "logging.handlers", "statistics", "random", "secrets", "datetime", "typing",
)  # fmt: skip

_IMPORT = re.compile(r"import time:\s+\d+ \|\s+\d+ \|\s*(\S+)$")


def _imports_around_greeting(conf: Path, script: bytes = b"QUIT\r\n") -> tuple[set[str], set[str], str]:
    """(modules imported before the 220, after it, what the client read),
    from `msa.py inetd` on pipes with stdout and stderr on one pipe."""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPROFILEIMPORTTIME"}
    p = subprocess.run([sys.executable, "-X", "importtime", MSA, "inetd", "-c", str(conf)], input=script,
                       stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env, timeout=60)
    assert p.returncode == 0, p.stdout.decode(errors="replace")
    lines = p.stdout.decode(errors="replace").splitlines()
    greeting = next(i for i, line in enumerate(lines) if line.startswith("220 "))
    before = {m.group(1) for line in lines[:greeting] if (m := _IMPORT.match(line))}
    after = {m.group(1) for line in lines[greeting:] if (m := _IMPORT.match(line))}
    replies = "\n".join(line for line in lines if re.match(r"\d{3}[ -]", line))
    return before, after, replies


def _conf(tmp_path: Path, certs: msatest.Certs, **overrides: object) -> Path:
    users = tmp_path / "users.db"
    msatest.add_user(users, "alice", "alice pw 1234", ["alice@example.org"])
    return msatest.write_config(tmp_path, certs, **{"users": users, **overrides})


def test_inetd_greets_before_importing_what_the_greeting_does_not_need(tmp_path, certs):
    # TLS configured (STARTTLS is offered) and a users.db with a user: both
    # are loaded, but after the greeting.
    before, after, replies = _imports_around_greeting(_conf(tmp_path, certs), b"EHLO x.example\r\nQUIT\r\n")
    early = sorted(name for name in before if name.split(".")[0] in NOT_BEFORE_GREETING or name in NOT_BEFORE_GREETING)
    assert not early, f"imported before the 220: {early}"
    # The method sees what is imported lazily (smtp_states and sasl import
    # their names on first use): the session's modules are there, after.
    assert {"server.session", "smtp_states.connection", "smtp_states.events", "sasl.userdb", "ssl"} <= after
    assert "argon2" not in after  # not even for EHLO: only a password check needs it
    assert replies.startswith("220 msa.test ESMTP msa\n250-msa.test")
    assert replies.endswith("221 2.0.0 Bye")


@pytest.mark.parametrize("what", ["users.db", "tls_key"])
def test_inetd_content_problem_after_the_greeting_is_logged_and_gets_421(tmp_path, certs, what):
    # users.db and the TLS files are checked as files before the greeting and
    # read after it: a content msa cannot use is logged as it would have been
    # before the greeting (FILE:LINE: why), and the client hears 421.
    conf = _conf(tmp_path, certs)
    if what == "users.db":
        (tmp_path / "users.db").write_text("alice:not-a-hash\n")
        expected = f"{tmp_path / 'users.db'}:1: "
    else:
        bad = tmp_path / "bad-key.pem"
        bad.write_text("not a key\n")
        conf.write_text(conf.read_text().replace(certs.key, str(bad)))
        expected = f"{conf}:{_line_of(conf, 'tls_cert')}: cannot load "  # as tls_context words it
    p = subprocess.run([sys.executable, MSA, "inetd", "-c", str(conf)], input=b"EHLO x.example\r\nQUIT\r\n",
                       capture_output=True, timeout=60)
    assert p.returncode == 1
    assert p.stdout == b"220 msa.test ESMTP msa\r\n421 4.3.0 Internal error; try again later\r\n"
    log = p.stderr.decode()
    assert "Traceback" not in log and f"error: {expected}" in log, log
    assert "connect from" not in log  # no session was started


@pytest.mark.parametrize("key", ["users", "tls_key"])
def test_inetd_file_problem_still_stops_it_before_the_greeting(tmp_path, certs, key):
    # What is wrong with the file itself (a FIFO here: reading would hang)
    # is found before the greeting, as with the configuration.
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    conf = _conf(tmp_path, certs, **{key: fifo})
    p = subprocess.run([sys.executable, MSA, "inetd", "-c", str(conf)], input=b"QUIT\r\n",
                       capture_output=True, timeout=60)
    assert p.returncode == 1
    assert p.stdout == b""
    assert f"{conf}:{_line_of(conf, key)}: {key}: {fifo}: not a regular file (a FIFO)" in p.stderr.decode()


def _line_of(conf: Path, key: str) -> int:
    return next(n for n, line in enumerate(conf.read_text().split("\n"), 1) if line.startswith(f"{key} ="))
