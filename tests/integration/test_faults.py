"""Faults: sendmail failing or hanging, clients vanishing, limits, signals."""

from __future__ import annotations

import os
import shutil
import signal
import sys
import socket
import subprocess
import time
from pathlib import Path

import pytest

import msatest
from msatest import HDR, Wire, smtp


def _start_transaction(m, port_kind="tls"):
    w = Wire.connect(m.ports[port_kind], tls_ctx=m.client_ctx)
    w.reply()
    w.expect("EHLO x.example", 250)
    w.transaction("alice@example.org", "bob@example.net")
    return w


@pytest.mark.parametrize(
    "status, reply",
    [
        (75, "451 4.3.0 Temporary failure handing the message on; try again later"),
        (71, "451 4.3.0 Temporary failure handing the message on; try again later"),
        (67, "550 5.1.1 Rejected by the mail system (sendmail exit 67)"),
        (65, "554 5.6.0 Rejected by the mail system (sendmail exit 65)"),
        (77, "550 5.7.0 Rejected by the mail system (sendmail exit 77)"),
        (78, "554 5.3.5 Rejected by the mail system (sendmail exit 78)"),
        (70, "554 5.3.0 Rejected by the mail system (sendmail exit 70)"),
        (1, "451 4.3.0 Temporary failure handing the message on; try again later"),
    ],
)
def test_sendmail_exit_status_maps_to_reply(msa, status, reply):  # S-803
    msa.outbox.set("exit_code", status)
    w = _start_transaction(msa)
    w.send(HDR + b"Subject: x\r\n\r\nbody\r\n.\r\n")
    assert w.reply()[1] == reply
    assert msa.outbox.messages() == []
    assert msa.spool_files() == []
    msa.wait_log(rf"sendmail said: recording sendmail: exiting {status} as told")
    kind = "deferred" if reply.startswith("451") else "bounced"
    msa.wait_log(rf"to=<bob@example.net>, relay=sendmail, delay=[\d.]+, status={kind} \(exit {status}\)")


def test_sendmail_hanging_past_timeout_is_killed(start_msa):  # S-803
    m = start_msa(sendmail_timeout=1)
    m.outbox.set("delay", 30)
    w = _start_transaction(m)
    t0 = time.monotonic()
    w.send(HDR + b"Subject: x\r\n\r\nbody\r\n.\r\n")
    assert w.reply()[1] == "451 4.3.0 Temporary failure handing the message on; try again later"
    assert time.monotonic() - t0 < 15
    assert m.outbox.messages() == []
    assert m.spool_files() == []
    m.wait_log(r"status=deferred \(timeout after 1s\)")


def test_sendmail_that_cannot_start(start_msa):  # S-804
    m = start_msa(sendmail="/nonexistent/sendmail")
    w = _start_transaction(m)
    w.send(HDR + b"Subject: x\r\n\r\nbody\r\n.\r\n")
    assert w.reply()[0] == 451
    m.wait_log(r"cannot run /nonexistent/sendmail")
    assert m.spool_files() == []


def test_client_disconnect_mid_data_delivers_nothing(msa):  # S-308
    w = _start_transaction(msa)
    w.send(HDR + b"Subject: x\r\n\r\n" + b"partial body\r\n" * 1000)
    time.sleep(0.3)
    assert len(msa.spool_files()) == 1  # it was being spooled
    w.sock.close()
    msa.wait_log(r"disconnect from")
    time.sleep(0.2)
    assert msa.outbox.messages() == []
    assert msa.spool_files() == []


def test_spool_file_mode_and_directory_mode(msa):  # S-1012
    w = _start_transaction(msa)
    w.send(HDR + b"Subject: x\r\n\r\nbody\r\n")
    time.sleep(0.3)
    [name] = msa.spool_files()
    assert (os.stat(msa.spool / name).st_mode & 0o777) == 0o600
    assert (os.stat(msa.spool).st_mode & 0o777) == 0o700
    w.send(b".\r\n")
    assert w.reply()[0] == 250


def test_fifty_mib_message_memory_stays_flat(start_msa):  # S-303, DESIGN "DATA"
    msa = start_msa(max_message_size=64 * 1024 * 1024)
    line = b"0123456789" * 7 + b"abcdef\r\n"  # 78 octets
    block = line * (1 << 14)
    total = 50 * 1024 * 1024
    w = _start_transaction(msa)
    before = msa.rss_kib()
    msa.reset_hwm()
    sent = 0
    w.send(HDR + b"Subject: big\r\n\r\n")
    while sent < total:
        w.send(block)
        sent += len(block)
    w.send(b".\r\n")
    code, text = w.reply()
    assert code == 250, text
    growth = msa.hwm_kib() - before
    assert growth < 32 * 1024, f"peak RSS grew by {growth} KiB"
    [d] = msa.outbox.messages()
    assert len(msatest.strip_received(d.data)) == len(HDR + b"Subject: big\r\n\r\n") + sent


def test_sigterm_lets_a_message_in_flight_finish(msa):  # S-110, CONTRACT serve
    msa.outbox.set("delay", 1.5)
    w = _start_transaction(msa)
    idle = Wire.connect(msa.ports["starttls"])
    idle.reply()
    idle_tls = Wire.connect(msa.ports["tls"], tls_ctx=msa.client_ctx)
    idle_tls.reply()
    w.send(HDR + b"Subject: x\r\n\r\nbody\r\n.\r\n")
    time.sleep(0.4)  # the hand-off is running
    msa.proc.send_signal(signal.SIGTERM)
    assert w.reply()[0] == 250
    assert idle.reply()[1] == "421 4.3.2 msa.test Service shutting down"
    assert idle_tls.reply()[1] == "421 4.3.2 msa.test Service shutting down"
    assert msa.proc.wait(20) == 0
    assert len(msa.outbox.messages()) == 1
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", msa.ports["starttls"]), timeout=2)


def test_sigterm_waits_for_an_open_transaction(msa):  # S-110
    w = _start_transaction(msa)
    msa.proc.send_signal(signal.SIGTERM)
    time.sleep(0.5)
    w.send(HDR + b"Subject: late\r\n\r\nstill accepted\r\n.\r\n")
    assert w.reply()[0] == 250
    assert w.cmd("NOOP")[1] == "421 4.3.2 msa.test Service shutting down"
    assert msa.proc.wait(20) == 0
    assert len(msa.outbox.messages()) == 1


def test_connection_limit(start_msa):  # S-109
    m = start_msa(max_connections=3)
    held = [Wire.connect(m.ports["starttls"]) for _ in range(3)]
    for h in held:
        assert h.reply()[0] == 220
    extra = Wire.connect(m.ports["starttls"])
    assert extra.reply()[1] == "421 4.7.0 msa.test Too many connections"
    assert extra.closed()
    extra_tls = Wire.connect(m.ports["tls"], tls_ctx=m.client_ctx)
    assert extra_tls.reply()[1] == "421 4.7.0 msa.test Too many connections"
    held[0].cmd("QUIT")
    held[0].closed()
    time.sleep(0.3)
    again = Wire.connect(m.ports["starttls"])
    assert again.reply()[0] == 220


def test_connection_limit_per_ip(start_msa):  # S-109
    m = start_msa(max_connections_per_ip=2)
    held = [Wire.connect(m.ports["starttls"]) for _ in range(2)]
    for h in held:
        h.reply()
    extra = Wire.connect(m.ports["starttls"])
    assert extra.reply()[1] == "421 4.7.0 msa.test Too many connections"
    other = Wire.connect(m.ports["starttls"], source="127.0.0.2")  # another address
    assert other.reply()[0] == 220


def test_idle_client_is_cut_after_timeout(start_msa):  # S-108, S-1009
    m = start_msa(timeout=1)
    w = Wire.connect(m.ports["starttls"])
    w.reply()
    w.send(b"EHLO x.exa")  # an incomplete command does not reset the clock
    assert w.reply()[1] == "421 4.4.2 msa.test Error: timeout exceeded"
    assert w.closed()


def test_slow_client_does_not_block_others(start_msa):  # S-1009
    m = start_msa(timeout=5)
    slow = Wire.connect(m.ports["starttls"])
    slow.reply()
    for ch in b"EHLO sl":
        slow.send(bytes([ch]))
        with smtp(m) as s:
            assert s.noop()[0] == 250
    slow.send(b"ow.example\r\n")
    assert slow.reply()[0] == 250


def test_stale_spool_files_removed_at_start(tmp_path, certs):  # S-1015
    spool = tmp_path / "m" / "spool"
    spool.mkdir(parents=True)
    (spool / "msa-0123456789.msg").write_bytes(b"half a message")
    (spool / "unrelated").write_bytes(b"keep")
    m = msatest.start(tmp_path / "m", certs)
    try:
        assert m.spool_files() == ["unrelated"]
        m.wait_log(r"removed 1 stale spool file")
    finally:
        m.stop()


def test_a_start_removes_only_what_no_live_session_holds(tmp_path, certs):  # S-1015, delivery/spool.py
    # An inetd session sharing the spool is mid-DATA when serve starts: its
    # file is held (flock) and stays; a stale one goes; the session delivers.
    conf = msatest.write_config(tmp_path, certs, trusted_networks="127.0.0.1/32")
    ours, theirs = socket.socketpair()
    proc = subprocess.Popen([sys.executable, msatest.MSA, "inetd", "-c", str(conf)], stdin=theirs, stdout=theirs,
                            stderr=subprocess.DEVNULL, env={**os.environ, "TCPREMOTEIP": "127.0.0.1"})
    theirs.close()
    try:
        w = Wire(ours)
        w.reply()
        w.expect("EHLO x.example", 250)
        w.transaction("alice@example.org", "bob@example.net")
        w.send(HDR + b"Subject: shared spool\r\n\r\nfirst half\r\n")
        spool = tmp_path / "spool"
        assert msatest.wait_until(lambda: len(list(spool.glob("msa-*.msg"))) == 1, 10)
        [live] = [p.name for p in spool.glob("msa-*.msg")]
        (spool / "msa-0123456789.msg").write_bytes(b"left by a crash")
        m = msatest.start(tmp_path / "serve", certs, spool=str(spool))
        try:
            m.wait_log(r"removed 1 stale spool file")
            assert sorted(p.name for p in spool.glob("msa-*.msg")) == [live]
        finally:
            m.stop()
        w.send(b"second half\r\n.\r\n")
        assert w.reply()[0] == 250
        w.expect("QUIT", 221)
        assert proc.wait(10) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    [d] = msatest.Outbox(tmp_path / "outbox").messages()
    assert d.data.endswith(b"first half\r\nsecond half\r\n")
    assert list(spool.glob("msa-*.msg")) == []


@pytest.mark.parametrize("workers", [1, 2])
def test_spool_files_are_emptied_reused_and_gone_at_stop(tmp_path, certs, workers):  # S-1012, S-1015, delivery/spool.py
    # A finished message's file is emptied and waits as idle-PID-N (0600),
    # the next message of that process takes the same inode under its own
    # name, and nothing is left in the spool once serve has stopped.
    m = msatest.start(tmp_path / "m", certs, workers=workers)
    spool = m.dir / "spool"
    try:
        inodes = []
        for i in range(6):
            w = _start_transaction(m)
            w.send(HDR + f"Subject: {i}\r\n\r\n".encode() + b"body line\r\n" * 200 + b".\r\n")
            assert w.reply()[0] == 250
            w.expect("QUIT", 221)
            w.close()
            assert m.spool_files() == []
            idle = sorted(spool.glob("idle-*"))
            assert idle and all(p.stat().st_size == 0 and p.stat().st_mode & 0o777 == 0o600 for p in idle)
            inodes.append({p.stat().st_ino for p in idle})
        assert len(set().union(*inodes)) <= workers  # one file per process, used again and again
        assert len(m.outbox.messages()) == 6
        assert all(d.data.endswith(b"body line\r\n" * 200) for d in m.outbox.messages())
    finally:
        assert m.stop() == 0
    assert sorted(p.name for p in spool.iterdir() if not p.name.startswith("slot-")) == []


def test_sigkill_mid_data_then_restart(tmp_path, certs):  # S-1015
    m = msatest.start(tmp_path / "m", certs)
    w = _start_transaction(m)
    w.send(HDR + b"Subject: x\r\n\r\n" + b"line\r\n" * 5000)
    time.sleep(0.3)
    assert len(m.spool_files()) == 1
    m.stop(signal.SIGKILL)
    m2 = msatest.start(tmp_path / "m", certs)
    try:
        assert m2.spool_files() == []
        assert m2.outbox.messages() == []
    finally:
        m2.stop()


def test_spool_disk_full_gives_452(tmp_path, certs):  # S-307
    import resource

    def limit_file_size():  # a small disk, as RLIMIT_FSIZE (no mount needed)
        resource.setrlimit(resource.RLIMIT_FSIZE, (256 * 1024, 256 * 1024))

    m = msatest.start(tmp_path / "m", certs, preexec=limit_file_size)
    try:
        w = _start_transaction(m)
        w.send(HDR + b"Subject: x\r\n\r\n" + b"0123456789abcdef" * 65536 + b"\r\n.\r\n")
        assert w.reply()[1] == "452 4.3.1 Insufficient system storage"
        assert w.cmd("NOOP")[0] == 250
        assert m.outbox.messages() == []
        assert m.spool_files() == []
        # A message that fits still goes through.
        w.transaction("alice@example.org", "bob@example.net")
        w.send(HDR + b"Subject: small\r\n\r\nsmall\r\n.\r\n")
        assert w.reply()[0] == 250
    finally:
        m.stop()


def test_client_leaving_after_the_final_dot_does_not_stop_the_hand_off(msa):  # S-308
    msa.outbox.set("delay", 1)
    w = _start_transaction(msa)
    w.send(HDR + b"Subject: x\r\n\r\nbody\r\n.\r\n")
    time.sleep(0.2)
    w.sock.close()
    msa.wait_log(r"left after the final dot; the message was handed on and may be sent again")
    assert len(msa.outbox.messages()) == 1
    assert msa.spool_files() == []


def test_run_as_drops_privileges_after_binding(tmp_path, certs):  # CONTRACT run_as
    if os.getuid() != 0:
        pytest.skip("run_as needs root to switch users")
    import pwd

    nobody = pwd.getpwnam("nobody")
    # Outside pytest's 0700 tree, so that nobody can reach the spool and the
    # outbox; the sendmail is a shell line, as nobody cannot run this venv.
    base, outbox = msatest.run_as_scratch()
    try:
        m = msatest.start(tmp_path / "m", certs, run_as="nobody", spool=str(base / "spool"),
                          sendmail=f"/bin/sh -c 'cat > \"$0/message\"' {outbox}")
        try:
            with open(f"/proc/{m.proc.pid}/status") as f:
                uids = next(line for line in f if line.startswith("Uid:")).split()[1:]
            assert {int(u) for u in uids} == {nobody.pw_uid}
            assert os.stat(base / "spool").st_uid == nobody.pw_uid
            w = _start_transaction(m)
            w.send(HDR + b"Subject: as nobody\r\n\r\nok\r\n.\r\n")
            assert w.reply()[0] == 250
            assert (outbox / "message").read_bytes().endswith(b"Subject: as nobody\r\n\r\nok\r\n")
            assert os.stat(outbox / "message").st_uid == nobody.pw_uid
        finally:
            m.stop()
    finally:
        shutil.rmtree(base, ignore_errors=True)


def test_ipv6_listener(start_msa):  # CONTRACT listen, S-706
    if not socket.has_ipv6:
        pytest.skip("no IPv6 here")
    try:
        socket.create_server(("::1", 0), family=socket.AF_INET6).close()
    except OSError:
        pytest.skip("no IPv6 loopback here")
    m = start_msa(listen="[::1]:0 starttls", trusted_networks="::1/128")
    w = Wire.connect(m.ports["starttls6"], host="::1")
    assert w.reply()[0] == 220
    w.expect("EHLO x.example", 250)
    w.starttls(m.client_ctx)
    w.expect("EHLO x.example", 250)
    w.transaction("alice@example.org", "bob@example.net")
    w.send(HDR + b"Subject: v6\r\n\r\nok\r\n.\r\n")
    assert w.reply()[0] == 250
    [d] = m.outbox.messages()
    assert d.data.startswith(b"Received: from x.example ([IPv6:::1])\r\n")
    m.wait_log(r"connect from unknown\[::1\]:\d+")


def test_session_threads_share_one_core_and_sendmail_gets_all(msa):  # server/affinity.py
    # Python code runs one thread at a time: serve keeps its threads on one
    # core (cross-core GIL hand-offs doubled the CPU per small message), but
    # what it starts, sendmail here, may use every core.
    cores = os.sched_getaffinity(0)
    if len(cores) < 2:
        pytest.skip("one core: nothing to pin")
    w = Wire.connect(msa.ports["tls"], tls_ctx=msa.client_ctx)
    w.reply()
    w.expect("EHLO client.example", 250)
    w.transaction("alice@example.org", "bob@example.net")
    w.send(HDR + b"\r\naffinity\r\n.\r\n")
    assert w.reply()[0] == 250
    allowed = set()
    for task in os.listdir(f"/proc/{msa.proc.pid}/task"):
        with open(f"/proc/{msa.proc.pid}/task/{task}/status") as f:
            allowed |= {line.split(":", 1)[1].strip() for line in f if line.startswith("Cpus_allowed_list")}
    assert allowed == {str(min(cores))}, allowed
    assert (msa.outbox.path / "0.cpus").read_text() == ",".join(str(c) for c in sorted(cores))
    msa.wait_log(r"ready: msa\.test, \d+ users, session threads on one CPU")


def test_a_reload_after_run_as_can_add_a_directory(tmp_path, certs):  # S-1307, CONTRACT run_as
    # After run_as the Python library may be unreadable (a Python under
    # root's home): serve loads every module a reload may need first, and a
    # reload that fails anyway never stops the daemon.
    if os.getuid() != 0:
        pytest.skip("run_as needs root to switch users")
    import sqlite3
    import subprocess
    import tempfile

    base = Path(tempfile.mkdtemp(prefix="msa-run-as-"))
    os.chmod(base, 0o755)
    try:
        users = base / "users.db"
        users.write_text("")
        users.chmod(0o644)
        hashed = subprocess.run([sys.executable, "-c", "import argon2; print(argon2.PasswordHasher().hash('sql pw'))"],
                                capture_output=True, text=True, check=True).stdout.strip()
        db = base / "mail.sqlite"
        with sqlite3.connect(db) as c:
            c.execute("CREATE TABLE mailbox (username TEXT, password TEXT)")
            c.execute("INSERT INTO mailbox VALUES ('dora@example.org', ?)", (hashed,))
        db.chmod(0o644)
        sql = base / "sql.conf"
        sql.write_text(f"[sql]\ndsn = sqlite://{db}\npassword_query = SELECT password FROM mailbox WHERE username = :login\n")
        sql.chmod(0o644)
        own = msatest.make_certs(base / "certs")  # readable by nobody at the reload, unlike pytest's tree
        for path in (own.cert, own.key):
            os.chmod(path, 0o644)
        m = msatest.start(base / "m", own, run_as="nobody", spool=str(base / "spool"), users=users,
                          state_dir=str(base / "state"), trusted_networks="")
        try:
            with open(m.conf, "a") as f:
                f.write(f"sql = {sql}\n")
            m.proc.send_signal(signal.SIGHUP)
            m.wait_log(r"reloaded: 0 users, sql")
            w = Wire.connect(m.ports["tls"], tls_ctx=m.client_ctx)
            w.reply()
            w.expect("EHLO x.example", 250)
            w.expect("AUTH PLAIN " + msatest.b64("\0dora@example.org\0sql pw"), 235)
            w.close()
            assert m.proc.poll() is None
        finally:
            m.stop()
    finally:
        shutil.rmtree(base, ignore_errors=True)
