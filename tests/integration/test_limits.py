"""Sending limits and the state store over real sockets and real processes
(SPEC.md S-1201, S-1202, S-511): the replies at MAIL and RCPT, the one log
line per window, counts that survive a restart and hold across inetd
processes, login delays shared the same way, `msa.py limits`, and a store
that is removed, corrupted or made read-only while msa serves."""

from __future__ import annotations

import os
import shutil
import sqlite3
import subprocess
import sys
import time

import pytest

import msatest
from msatest import MSA, Wire, b64

PASSWORD = "alice limits pw"
HEADER = b"From: alice@example.org\r\nTo: bob@example.net\r\nSubject: limits\r\n\r\nhello\r\n.\r\n"


def users(tmp_path):
    db = tmp_path / "users.db"
    if not db.exists():
        msatest.add_user(db, "alice", PASSWORD, ["alice@example.org"])
    return db


def login(m) -> Wire:
    w = Wire.connect(m.ports["tls"], tls_ctx=m.client_ctx)
    w.reply()
    w.expect("EHLO laptop.example", 250)
    w.expect("AUTH PLAIN " + b64("\0alice\0" + PASSWORD), 235)
    return w


def send(w: Wire, *recipients: str) -> tuple[int, str]:
    w.transaction("alice@example.org", *recipients)
    w.send(HEADER)
    return w.reply()


def limits_cmd(conf, *words) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, MSA, "limits", "-c", str(conf), *words], capture_output=True,
                          text=True, timeout=30)


def test_message_limit_refuses_mail_with_450_and_logs_once(start_msa, tmp_path):  # S-1201
    m = start_msa(users=users(tmp_path), trusted_networks="", limit_messages="2/1h")
    w = login(m)
    assert send(w, "bob@example.net")[0] == 250
    assert send(w, "carol@example.net", "dave@example.net")[0] == 250
    assert w.cmd("MAIL FROM:<alice@example.org>") == (450, "450 4.7.1 Sending rate limit exceeded; try again later")
    # RCPT and DATA pipelined after the refused MAIL: not in a transaction.
    w.send("RCPT TO:<bob@example.net>\r\nDATA\r\n")
    assert w.reply()[0] == 503 and w.reply()[0] == 503
    assert w.cmd("MAIL FROM:<alice@example.org>")[0] == 450
    w.expect("QUIT", 221)
    line = m.wait_log(r"reject: MAIL from \S+: 450 4\.7\.1 .*limit=messages 2/1h sasl_username=alice").group(0)
    assert "from=<alice@example.org>" in line
    time.sleep(0.2)
    assert m.log().count("limit=messages") == 1  # once per window, however many refusals
    assert len(msatest.Outbox(m.dir / "outbox").messages()) == 2


def test_recipient_past_the_limit_gets_452_and_the_earlier_ones_are_sent(start_msa, tmp_path):  # S-1201
    m = start_msa(users=users(tmp_path), trusted_networks="", limit_recipients="3/24h")
    w = login(m)
    assert send(w, "a@example.net", "b@example.net")[0] == 250
    w.expect("MAIL FROM:<alice@example.org>", 250)
    w.expect("RCPT TO:<c@example.net>", 250)
    assert w.cmd("RCPT TO:<d@example.net>") == (452, "452 4.5.3 Recipient limit reached; try again later")
    assert w.cmd("RCPT TO:<e@example.net>")[0] == 452
    w.expect("DATA", 354)
    w.send(HEADER)
    assert w.reply()[0] == 250
    w.expect("QUIT", 221)
    delivered = msatest.Outbox(m.dir / "outbox").messages()
    assert [d.recipients for d in delivered] == [["a@example.net", "b@example.net"], ["c@example.net"]]
    m.wait_log(r"reject: RCPT from \S+: 452 4\.5\.3 .*to=<d@example.net>.* limit=recipients 3/24h "
               r"sasl_username=alice")
    assert m.log().count("limit=recipients") == 1


def test_a_refused_message_costs_nothing(start_msa, tmp_path):  # S-1201: counted once the MTA accepted
    m = start_msa(users=users(tmp_path), trusted_networks="", limit_messages="1/1h")
    outbox = msatest.Outbox(m.dir / "outbox")
    outbox.set("exit_code", 75)  # the MTA refuses (EX_TEMPFAIL)
    w = login(m)
    assert send(w, "bob@example.net")[0] == 451
    outbox.clear_setting("exit_code")
    assert send(w, "bob@example.net")[0] == 250
    assert w.cmd("MAIL FROM:<alice@example.org>")[0] == 450
    w.close()


def _simultaneously(n: int, session) -> list:
    """Run `session(i)` in n threads that all pass a barrier together; the results."""
    import threading

    barrier = threading.Barrier(n)
    results: list = [None] * n

    def run(i: int) -> None:
        results[i] = session(i, barrier)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    return results


def test_simultaneous_sessions_never_pass_the_message_limit_together(start_msa, tmp_path):  # S-1201 amended
    m = start_msa(users=users(tmp_path), trusted_networks="", limit_messages="5/1h", max_connections_per_ip=50)

    def session(i, barrier):
        w = login(m)
        try:
            barrier.wait()
            code, _ = w.cmd("MAIL FROM:<alice@example.org>")
            if code != 250:
                return code
            w.expect(f"RCPT TO:<r{i}@example.net>", 250)
            w.expect("DATA", 354)
            w.send(HEADER)
            return w.reply()[0]
        finally:
            w.close()

    codes = _simultaneously(12, session)
    assert sorted(codes) == [250] * 5 + [450] * 7, codes
    assert len(msatest.Outbox(m.dir / "outbox").messages()) == 5


def test_simultaneous_messages_never_pass_the_recipient_limit_together(start_msa, tmp_path):  # S-1201 amended
    m = start_msa(users=users(tmp_path), trusted_networks="", limit_recipients="5/1h")

    def session(i, barrier):
        w = login(m)
        try:
            w.expect("MAIL FROM:<alice@example.org>", 250)
            barrier.wait()
            took = [r for r in range(5) if w.cmd(f"RCPT TO:<m{i}r{r}@example.net>")[0] == 250]
            if not took:
                return 0
            w.expect("DATA", 354)
            w.send(HEADER)
            assert w.reply()[0] == 250
            return len(took)
        finally:
            w.close()

    accepted = _simultaneously(4, session)
    assert sum(accepted) == 5, accepted
    delivered = msatest.Outbox(m.dir / "outbox").messages()
    assert sum(len(d.recipients) for d in delivered) == 5


def test_what_a_failed_or_abandoned_message_reserved_is_given_back(start_msa, tmp_path):  # S-1201 amended
    m = start_msa(users=users(tmp_path), trusted_networks="", limit_messages="2/1h", limit_recipients="2/1h")
    w = login(m)
    w.expect("MAIL FROM:<alice@example.org>", 250)
    w.expect("RCPT TO:<a@example.net>", 250)
    w.expect("RSET", 250)  # given back
    w.expect("MAIL FROM:<alice@example.org>", 250)
    w.expect("RCPT TO:<b@example.net>", 250)
    w.close()  # a client that vanishes mid-transaction: given back too
    m.wait_log(r"disconnect from")
    w = login(m)
    w.expect("MAIL FROM:<alice@example.org>", 250)
    w.expect("RCPT TO:<c@example.net>", 250)
    w.expect("DATA", 354)
    w.send(b"no header separator and a NUL\x00\r\n.\r\n")
    assert w.reply()[0] == 554  # refused at the dot: given back
    # Nothing of the three is counted: both recipients and a message are left.
    assert send(w, "d@example.net", "e@example.net")[0] == 250
    w.expect("MAIL FROM:<alice@example.org>", 250)
    assert w.cmd("RCPT TO:<f@example.net>")[0] == 452
    w.close()
    shown = limits_cmd(m.dir / "msa.conf", "alice")
    assert "alice: 1 messages, 2 recipients" in shown.stdout, shown.stdout


def test_trusted_clients_are_not_limited(start_msa, tmp_path):  # S-1201
    m = start_msa(users=users(tmp_path), limit_messages="1/1h")
    with msatest.smtp(m) as s:
        for _ in range(3):
            s.sendmail("anyone@example.org", ["bob@example.net"], HEADER[:-3])
    assert len(msatest.Outbox(m.dir / "outbox").messages()) == 3


def test_counts_survive_a_restart_and_limits_reset_clears_them(start_msa, tmp_path):  # S-1202, CONTRACT limits
    state = tmp_path / "shared-state"
    db = users(tmp_path)
    m = start_msa(users=db, trusted_networks="", limit_messages="2/1h", state_dir=state)
    w = login(m)
    assert send(w, "bob@example.net", "carol@example.net")[0] == 250
    assert send(w, "bob@example.net")[0] == 250
    w.close()
    assert m.stop() == 0
    m2 = start_msa(users=db, trusted_networks="", limit_messages="2/1h", state_dir=state)
    w = login(m2)
    assert w.cmd("MAIL FROM:<alice@example.org>")[0] == 450
    w.close()
    conf = m2.dir / "msa.conf"
    shown = limits_cmd(conf)
    assert shown.returncode == 0, shown.stderr
    assert "messages: limit 2/1h; recipients: limit 2000/24h" in shown.stdout
    assert "alice: 2 messages, 3 recipients in the current windows" in shown.stdout
    assert "alice: 2 messages" in limits_cmd(conf, "Alice").stdout
    assert "nobody: 0 messages" in limits_cmd(conf, "nobody").stdout
    reset = limits_cmd(conf, "reset", "alice")
    assert reset.returncode == 0 and "reset alice: 2 message(s) forgotten" in reset.stdout
    w = login(m2)
    assert send(w, "bob@example.net")[0] == 250
    w.close()
    assert limits_cmd(conf, "reset").returncode == 2  # usage: reset needs USER


def _inetd_session(conf, script: bytes, ip: str = "192.0.2.7") -> tuple[bytes, float]:
    """One inetd session on pipes; (what msa wrote, seconds it took)."""
    t0 = time.monotonic()
    p = subprocess.run([sys.executable, MSA, "inetd", "-c", str(conf)], input=script, capture_output=True,
                       timeout=60, env={**os.environ, "TCPREMOTEIP": ip})
    return p.stdout, time.monotonic() - t0


def _inetd_conf(tmp_path, **overrides):
    return msatest.write_config(tmp_path, None, users=users(tmp_path), trusted_networks="",
                                require_tls_for_auth="no", **overrides)


def _auth(password: str) -> bytes:
    return b"EHLO x.example\r\nAUTH PLAIN " + b64("\0alice\0" + password).encode() + b"\r\n"


def test_counts_hold_across_inetd_processes(tmp_path):  # S-1202
    conf = _inetd_conf(tmp_path, limit_messages="1/1h")
    message = b"MAIL FROM:<alice@example.org>\r\nRCPT TO:<bob@example.net>\r\nDATA\r\n" + HEADER
    out, _ = _inetd_session(conf, _auth(PASSWORD) + message + b"QUIT\r\n")
    assert b"\r\n250 2.0.0 Ok: queued as " in out, out
    out, _ = _inetd_session(conf, _auth(PASSWORD) + b"MAIL FROM:<alice@example.org>\r\nQUIT\r\n")
    assert b"\r\n450 4.7.1 Sending rate limit exceeded; try again later\r\n" in out, out


def test_login_delay_holds_across_inetd_processes(tmp_path):  # S-511, S-1202
    conf = _inetd_conf(tmp_path)
    out, _ = _inetd_session(conf, _auth("wrong") + b"QUIT\r\n")
    assert b"\r\n535 5.7.8 " in out
    out, took = _inetd_session(conf, _auth(PASSWORD) + b"QUIT\r\n")
    assert b"\r\n235 2.7.0 " in out
    assert took >= 1.0  # the second process waited for the first one's failure
    # The failure is in the store, under that address only (the unit tests
    # of state/sqlite.py show other addresses are not delayed).
    with sqlite3.connect(tmp_path / "state" / "state.sqlite") as db:
        assert db.execute("SELECT client FROM failures").fetchall() == []  # forgotten by the success


def test_login_delay_survives_a_restart(start_msa, tmp_path):  # S-511, S-1202
    state = tmp_path / "shared-state"
    db = users(tmp_path)
    m = start_msa(users=db, trusted_networks="", state_dir=state)
    w = Wire.connect(m.ports["tls"], tls_ctx=m.client_ctx)
    w.reply()
    w.expect("EHLO x.example", 250)
    w.expect("AUTH PLAIN " + b64("\0alice\0nope"), 535)
    w.expect("AUTH PLAIN " + b64("\0alice\0nope again"), 535)
    w.close()
    assert m.stop() == 0
    m2 = start_msa(users=db, trusted_networks="", state_dir=state)
    w = Wire.connect(m2.ports["tls"], tls_ctx=m2.client_ctx)
    w.reply()
    w.expect("EHLO x.example", 250)
    t0 = time.monotonic()
    w.expect("AUTH PLAIN " + b64("\0alice\0" + PASSWORD), 235)
    assert time.monotonic() - t0 >= 2.0  # two failures: the next reply waits 2 s (S-511)
    w.close()
    # The success forgot alice's failures: the next login is not delayed.
    w = Wire.connect(m2.ports["tls"], tls_ctx=m2.client_ctx)
    w.reply()
    w.expect("EHLO x.example", 250)
    t0 = time.monotonic()
    w.expect("AUTH PLAIN " + b64("\0alice\0" + PASSWORD), 235)
    assert time.monotonic() - t0 < 1.9  # the two failures would still mean a 2 s wait
    w.close()


def _send_once(m) -> int:
    """One message in a session of its own: the reply to MAIL when it is
    refused, else the reply to the final dot."""
    w = login(m)
    try:
        code, _ = w.cmd("MAIL FROM:<alice@example.org>")
        if code != 250:
            return code
        w.expect("RCPT TO:<bob@example.net>", 250)
        w.expect("DATA", 354)
        w.send(HEADER)
        return w.reply()[0]
    finally:
        w.close()


def test_store_removed_while_serving_is_made_again(start_msa, tmp_path):  # S-1202
    m = start_msa(users=users(tmp_path), trusted_networks="", limit_messages="3/1h")
    state = m.dir / "state" / "state.sqlite"
    assert _send_once(m) == 250
    assert state.exists()
    for name in ("state.sqlite", "state.sqlite-wal", "state.sqlite-shm"):
        (m.dir / "state" / name).unlink(missing_ok=True)
    assert _send_once(m) == 250
    assert _send_once(m) == 250
    m.wait_log(r"warning: state store \S+ was removed; making a new one")
    assert m.log().count("was removed") == 1
    assert state.exists()
    # Counting goes on in the new file, which the limit then sees.
    assert _send_once(m) == 250
    assert _send_once(m) == 450


def test_corrupt_store_fails_open_with_one_warning(start_msa, tmp_path):  # S-1202
    m = start_msa(users=users(tmp_path), trusted_networks="", limit_messages="1/1h")
    state_dir = m.dir / "state"
    assert _send_once(m) == 250
    for name in ("state.sqlite-wal", "state.sqlite-shm"):
        (state_dir / name).unlink(missing_ok=True)
    # Replaced by junk in place of the database (a new inode: msa reopens it).
    junk = state_dir / "junk"
    junk.write_bytes(b"this is not a database\n" * 1000)
    os.replace(junk, state_dir / "state.sqlite")
    for _ in range(3):
        assert _send_once(m) == 250  # the limit of 1 no longer applies: fail open, mail flows
    m.wait_log(r"warning: state store \S+: cannot .*; until it works again sending limits are not applied")
    assert m.log().count("until it works again") == 1
    conf = m.dir / "msa.conf"
    p = subprocess.run([sys.executable, MSA, "check", "-c", str(conf)], capture_output=True, text=True, timeout=60)
    assert p.returncode == 1
    assert "state_dir: " in p.stdout and "is not an SQLite database" in p.stdout


def _immutable(path, on: bool) -> bool:
    chattr = shutil.which("chattr")
    if chattr is None:
        return False
    return subprocess.run([chattr, "+i" if on else "-i", str(path)], capture_output=True).returncode == 0


def test_read_only_store_fails_open_with_one_warning_and_recovers(start_msa, tmp_path):  # S-1202
    m = start_msa(users=users(tmp_path), trusted_networks="", limit_messages="2/1h")
    state_dir = m.dir / "state"
    assert _send_once(m) == 250
    m.stop()  # a clean stop checkpoints the WAL, so the database file holds everything
    m = start_msa(users=users(tmp_path), trusted_networks="", limit_messages="2/1h", state_dir=state_dir)
    files = [state_dir / n for n in ("state.sqlite", "state.sqlite-wal", "state.sqlite-shm") if (state_dir / n).exists()]
    if not all(_immutable(f, True) for f in files + [state_dir]):
        for f in files + [state_dir]:
            _immutable(f, False)
        pytest.skip("chattr +i is not permitted here (needs CAP_LINUX_IMMUTABLE); root ignores file modes")
    try:
        for _ in range(3):
            assert _send_once(m) == 250  # a limit of 2 with one counted: would refuse the third
        m.wait_log(r"warning: state store \S+: cannot .*; until it works again")
        assert m.log().count("until it works again") == 1
    finally:
        for f in files + [state_dir]:
            _immutable(f, False)
    # While the episode lasts the store is tried again after a growing pause
    # (at most 5 s), never once per message: mail keeps flowing meanwhile.
    deadline = time.monotonic() + 15
    while "works again" not in m.log().replace("until it works again", "") and time.monotonic() < deadline:
        assert _send_once(m) in (250, 450)
        time.sleep(0.5)
    m.wait_log(r"state store \S+ works again")


def test_a_write_locked_store_is_one_warning_not_one_per_message(start_msa, tmp_path):  # S-1202
    m = start_msa(users=users(tmp_path), trusted_networks="", limit_messages="50/1h")
    assert _send_once(m) == 250
    locker = sqlite3.connect(m.dir / "state" / "state.sqlite", isolation_level=None)
    locker.execute("BEGIN IMMEDIATE")  # another process holds the write lock; readers still read
    try:
        w = Wire.connect(m.ports["tls"], tls_ctx=m.client_ctx)
        w.reply()
        w.expect("EHLO x.example", 250)
        w.expect("AUTH PLAIN " + b64("\0alice\0wrong"), 535)
        w.close()
        for _ in range(4):
            assert _send_once(m) == 250
        m.wait_log(r"until it works again")
        log = m.log()
        assert log.count("until it works again") == 1, log
        assert "works again" not in log.replace("until it works again", "")
    finally:
        locker.execute("ROLLBACK")
        locker.close()


def test_serve_starts_with_an_unusable_state_dir_and_check_names_it(start_msa, tmp_path):  # S-1202
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("x")
    m = start_msa(users=users(tmp_path), trusted_networks="", state_dir=blocker)
    m.wait_log(r"warning: .*state_dir: cannot create .*not-a-dir")
    assert _send_once(m) == 250
    p = subprocess.run([sys.executable, MSA, "check", "-c", str(m.dir / "msa.conf")], capture_output=True,
                       text=True, timeout=60)
    assert p.returncode == 1
    assert f"state_dir: {blocker} is not a directory" in p.stdout


def test_check_warns_of_a_readable_state_dir_and_refuses_a_symlinked_store(tmp_path):  # S-1202 amended
    state = tmp_path / "state"
    state.mkdir(mode=0o755)
    state.chmod(0o755)
    conf = msatest.write_config(tmp_path, None, users=users(tmp_path), state_dir=state)

    def check():
        return subprocess.run([sys.executable, MSA, "check", "-c", str(conf)], capture_output=True, text=True,
                              timeout=60)

    p = check()
    assert p.returncode == 0, p.stdout
    assert f"warning: {conf}" in p.stdout and f"state_dir: {state} is mode 0755" in p.stdout
    state.chmod(0o700)
    (state / "state.sqlite").symlink_to(tmp_path / "elsewhere")
    p = check()
    assert p.returncode == 1 and "state.sqlite is a symbolic link" in p.stdout, p.stdout


def test_concurrent_writers_share_one_store(tmp_path):  # S-1202: serve and inetd write the same file
    from state.sqlite import SqliteStore

    a, b = SqliteStore(str(tmp_path)), SqliteStore(str(tmp_path))
    for _ in range(50):
        assert a.reserve("alice", "messages", 10**6, 3600).counted
        assert b.reserve("alice", "recipients", 10**6, 3600).counted
    assert a.usage("alice", 3600, 86400).messages == 50
    assert b.usage("alice", 3600, 86400).recipients == 50
    with sqlite3.connect(tmp_path / "state.sqlite") as db:
        assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    a.close()
    b.close()
