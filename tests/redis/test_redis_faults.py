"""A shared Redis that fails while msa serves (SPEC.md S-1402): stopped
and started again, and a socket that accepts and never answers. Mail flows
whatever Redis does, each host says so once, counting resumes, and no
message waits much longer than state_timeout."""

from __future__ import annotations

import socket
import subprocess
import sys
import time

import pytest

import msatest
import redistest
from msatest import MSA, Wire, b64

pytestmark = pytest.mark.xdist_group("redis")

PASSWORD = "faults pw"
HEADER = b"From: alice@example.org\r\nTo: bob@example.net\r\nSubject: faults\r\n\r\nhello\r\n.\r\n"


@pytest.fixture
def users(tmp_path):
    db = tmp_path / "users.db"
    msatest.add_user(db, "alice", PASSWORD, ["alice@example.org"])
    return db


def send_once(m) -> tuple[int, float, float]:
    """One authenticated message in a session of its own: (MAIL's reply
    when refused, else the final dot's; seconds AUTH took; seconds from
    MAIL to that reply)."""
    w = Wire.connect(m.ports["tls"], tls_ctx=m.client_ctx)
    try:
        w.reply()
        w.expect("EHLO laptop.example", 250)
        t0 = time.monotonic()
        w.expect("AUTH PLAIN " + b64("\0alice\0" + PASSWORD), 235)
        t1 = time.monotonic()
        code, _ = w.cmd("MAIL FROM:<alice@example.org>")
        if code == 250:
            w.expect("RCPT TO:<bob@example.net>", 250)
            w.expect("DATA", 354)
            w.send(HEADER)
            code = w.reply()[0]
        return code, t1 - t0, time.monotonic() - t1
    finally:
        w.close()


def episodes(m) -> int:
    """Warnings that a failure episode started (at start-up or later)."""
    return m.log().count("sending limits are not applied")


def recovered(m) -> bool:
    return "works again" in m.log().replace("until it works again", "")


def test_redis_stopped_mail_flows_with_one_warning_per_host_then_counting_resumes(
        start_msa, users, tmp_path_factory):  # S-1402, S-1401
    server = redistest.RedisServer(tmp_path_factory.mktemp("redis-restart")).start()  # not the shared one
    try:
        settings = dict(users=users, trusted_networks="", state=server.unix_url(), limit_messages="2/1h")
        a, b = start_msa(**settings), start_msa(**settings)
        assert send_once(a)[0] == 250
        server.stop()
        for host in (a, b, a, b, a, b):
            assert send_once(host)[0] == 250  # over the limit of 2: failing open, mail flows
        for host in (a, b):
            host.wait_log(r"warning: state store unix://\S+: cannot .*; until it works again sending limits "
                          r"are not applied and login delays hold in this process only")
            assert episodes(host) == 1, host.log()
        server.start()  # empty: it kept nothing (no persistence)
        deadline = time.monotonic() + 20  # the pause between tries grows to 5 s at most
        while not (recovered(a) and recovered(b)) and time.monotonic() < deadline:
            for host in (a, b):
                assert send_once(host)[0] in (250, 450)
            time.sleep(0.3)
        for host in (a, b):
            host.wait_log(r"state store unix://\S+ works again")
            assert episodes(host) == 1  # one warning per episode, per host
        reset = subprocess.run([sys.executable, MSA, "limits", "-c", str(a.conf), "reset", "alice"],
                               capture_output=True, text=True, timeout=30)
        assert reset.returncode == 0, reset.stderr
        assert [send_once(h)[0] for h in (a, b, a)] == [250, 250, 450]  # counting resumed, shared again
    finally:
        server.stop()


def test_a_redis_that_never_answers_holds_no_message_longer_than_state_timeout(start_msa, users):  # S-1402
    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen(128)  # the kernel accepts connections; nothing ever reads or answers them
    try:
        m = start_msa(users=users, trusted_networks="", state=f"redis://127.0.0.1:{silent.getsockname()[1]}/0",
                      state_timeout=0.5, limit_messages="1/1h")
        auths, messages = [], []
        for _ in range(4):  # a second apart: some sessions meet the store's next try, and wait for it
            code, auth, message = send_once(m)
            assert code == 250  # a limit of 1: failing open
            auths.append(auth)
            messages.append(message)
            time.sleep(1.0)
        # Each try waits state_timeout, then the store fails open at once
        # until the next (a growing pause): no AUTH and no message waits
        # much longer than 0.5 s (the rest is a loaded test machine's margin).
        assert max(auths) < 0.5 + 0.5 and max(messages) < 0.5 + 0.5, (auths, messages)
        assert max(auths + messages) > 0.4, (auths, messages)  # some did meet a try: the bound was tested
        assert episodes(m) == 1
    finally:
        silent.close()
