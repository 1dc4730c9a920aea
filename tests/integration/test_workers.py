"""`workers = N` over real sockets against a real `msa.py serve` (SPEC.md
S-1601): every worker serves; `max_connections` and
`max_connections_per_ip` stay host totals (S-109), also when the master
does not answer and when a worker is killed; SIGHUP and SIGTERM reach
every worker; a killed worker is replaced without losing or doubling a
message; sending limits hold across workers (S-1201); systemd hears only
the master; bad values of the key are refused with FILE:LINE."""

from __future__ import annotations

import contextlib
import os
import re
import signal
import socket
import ssl
import struct
import subprocess
import sys
import threading
import time

import pytest

import msatest
from msatest import HDR, MSA, Wire, b64

TOO_MANY = "421 4.7.0 msa.test Too many connections"
SHUTTING_DOWN = "421 4.3.2 msa.test Service shutting down"
PASSWORD = "alice workers pw"


def worker_pids(m) -> dict[int, int]:
    """Worker number → the pid of its latest start, from the log."""
    return {int(n): int(pid) for pid, n in re.findall(r"msa\[(\d+)\]: worker (\d+) of \d+ started", m.log())}


def session_pid(m, w: Wire) -> int:
    """The pid of the worker serving `w` (its `connect from` line)."""
    port = w.sock.getsockname()[1]
    return int(m.wait_log(rf"msa\[(\d+)\]: \w+: connect from unknown\[[\d.]+\]:{port}\n").group(1))


def serving_pids(m) -> set[int]:
    return {int(p) for p in re.findall(r"msa\[(\d+)\]: \w+: connect from ", m.log())}


def open_session(m, source: str | None = None, mode: str = "starttls") -> tuple[Wire, int]:
    """A session that got its greeting, and the pid serving it. A refusal
    right after another session closed is tried again: the closed one's
    slot is given back just after its `disconnect` line."""
    for _ in range(50):
        if mode == "tls":
            w = Wire.connect(m.ports["tls"], tls_ctx=m.client_ctx, source=source)
        else:
            w = Wire.connect(m.ports["starttls"], source=source)
        code, text = w.reply()
        if code == 220:
            return w, session_pid(m, w)
        assert text == TOO_MANY, text
        w.close()
        time.sleep(0.05)
    raise AssertionError("no slot came free")


def close_session(m, w: Wire) -> None:
    port = w.sock.getsockname()[1]
    w.expect("QUIT", 221)
    w.close()
    m.wait_log(rf"disconnect from unknown\[[\d.]+\]:{port} ")


def open_spread(m, n: int, **kw) -> list[tuple[Wire, int]]:
    """n sessions held open, served by at least two workers: the kernel
    gives a connection to whichever worker accepts first, so sessions are
    opened (and the last one closed and opened again) until they are."""
    sessions = [open_session(m, **kw) for _ in range(n)]
    for _ in range(60):
        if len({pid for _, pid in sessions}) >= 2:
            return sessions
        w, _ = sessions.pop()
        close_session(m, w)
        sessions.append(open_session(m, **kw))
    raise AssertionError(f"every session went to one worker: {sessions}")


@contextlib.contextmanager
def only(m, pid: int):
    """Every worker but `pid` stopped (SIGSTOP) meanwhile: the connections
    made then can only be accepted by `pid`, however the kernel would
    have chosen on a busy machine."""
    others = [p for p in worker_pids(m).values() if p != pid]
    for p in others:
        os.kill(p, signal.SIGSTOP)
    # A thread running when the signal came stops only at its next entry
    # into the kernel: until every one has, one could still accept().
    assert msatest.wait_until(lambda: all(_stopped(p) for p in others), 10)
    try:
        yield
    finally:
        for p in others:
            os.kill(p, signal.SIGCONT)


def _stopped(pid: int) -> bool:
    """Every thread of `pid` stopped (state T)."""
    for task in os.listdir(f"/proc/{pid}/task"):
        try:
            with open(f"/proc/{pid}/task/{task}/stat") as f:
                if f.read().rsplit(") ", 1)[1][0] != "T":
                    return False
        except FileNotFoundError:
            pass  # a thread that ended meanwhile
    return True


def alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(") ", 1)[1][0] != "Z"
    except (FileNotFoundError, ProcessLookupError):
        return False


def message(tag: str) -> bytes:
    return (b"From: alice@example.org\r\nTo: bob@example.net\r\nSubject: workers\r\n"
            b"Message-ID: <" + tag.encode() + b"@example.org>\r\n\r\n")


def message_ids(m) -> list[str]:
    out = []
    for d in msatest.Outbox(m.dir / "outbox").messages():
        out += re.findall(rb"Message-ID: <([^>]+)@example.org>", d.data)
    return sorted(x.decode() for x in out)


def test_every_worker_serves_sessions_each_under_its_own_pid(start_msa):  # S-1601
    m = start_msa(workers=2)
    pids = worker_pids(m)
    assert sorted(pids) == [1, 2] and len(set(pids.values())) == 2
    assert m.proc.pid not in pids.values()  # the master serves no session
    assert re.search(rf"msa\[{m.proc.pid}\]: ready: msa.test, 0 users, 2 workers\n", m.log())

    def sessions(k: int) -> None:
        # 40 sessions from 4 clients at once: the kernel wakes every idle
        # worker and whichever accepts first serves. A machine busy with
        # other work may keep one worker's core for a while, so the
        # clients go on (at most 200 sessions) until both have served.
        for _ in range(50):
            w = Wire.connect(m.ports["starttls"])
            assert w.reply()[0] == 220
            w.expect("EHLO client.example", 250)
            w.expect("QUIT", 221)
            w.close()
            if m.log().count("disconnect from") >= 40 and len(serving_pids(m)) == 2:
                return

    threads = [threading.Thread(target=sessions, args=(k,)) for k in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert serving_pids(m) == set(pids.values())  # both took some
    for n, pid in pids.items():
        assert alive(pid)
        assert f"msa[{pid}]: worker {n} of 2 started" in m.log()


def test_workers_1_is_one_process_as_before(start_msa):  # S-1601: the default changes nothing
    m = start_msa()
    w, pid = open_session(m)
    assert pid == m.proc.pid
    close_session(m, w)
    children = [p for task in os.listdir(f"/proc/{m.proc.pid}/task")
                for p in open(f"/proc/{m.proc.pid}/task/{task}/children").read().split()]
    assert children == []
    assert not re.search(r"msa\[\d+\]: (worker \d|ready: .*workers)", m.log())


def test_max_connections_and_per_ip_are_host_totals(start_msa):  # S-109, S-1601
    m = start_msa(workers=2, max_connections=4, max_connections_per_ip=3)
    held = open_spread(m, 3)  # the per-address cap, over both workers
    for pid in worker_pids(m).values():  # the 4th from that address: refused by either worker
        with only(m, pid):
            w = Wire.connect(m.ports["starttls"])
            assert w.reply() == (421, TOO_MANY)
            assert w.closed()
        m.wait_log(rf"msa\[{pid}\]: warning: too many connections from 127\.0\.0\.1")
    other, _ = open_session(m, source="127.0.0.2")  # the 4th of the host
    for source in ("127.0.0.3", "127.0.0.4", "127.0.0.1"):
        w = Wire.connect(m.ports["starttls"], source=source)
        assert w.reply() == (421, TOO_MANY)
    # Given back as sessions end, whichever worker served them.
    for w, _ in held[:2]:
        close_session(m, w)
    later = [open_session(m, source=source) for source in ("127.0.0.3", "127.0.0.4")]
    for w, _ in later:
        w.expect("EHLO client.example", 250)
    w = Wire.connect(m.ports["starttls"], source="127.0.0.5")
    assert w.reply() == (421, TOO_MANY)
    assert other.cmd("NOOP")[0] == 250


def test_a_master_that_does_not_answer_means_421_not_a_hang(start_msa):  # S-109, S-1601: fail closed
    m = start_msa(workers=2, max_connections=2)
    os.kill(m.proc.pid, signal.SIGSTOP)
    try:
        assert msatest.wait_until(lambda: _stopped(m.proc.pid), 10)
        t0 = time.monotonic()
        w = Wire.connect(m.ports["starttls"])
        assert w.reply() == (421, TOO_MANY)
        assert time.monotonic() - t0 < 10
        m.wait_log(r"warning: connection slots: the master process does not answer \(no answer within 2 s\); "
                   r"refusing new connections until it does \(S-109\)")
    finally:
        os.kill(m.proc.pid, signal.SIGCONT)
    # The slot the master granted after the worker gave up was given back:
    # the cap's two sessions open, on whichever workers, and a third is refused.
    held = [open_session(m) for _ in range(2)]
    w = Wire.connect(m.ports["starttls"])
    assert w.reply() == (421, TOO_MANY)
    for s, _ in held:
        close_session(m, s)
    assert m.log().count("does not answer") == 1  # one warning for the episode


def test_sighup_reloads_users_in_every_worker(start_msa, tmp_path):  # S-1601, CONTRACT serve SIGHUP
    db = tmp_path / "users.db"
    msatest.add_user(db, "alice", PASSWORD, ["alice@example.org"])
    m = start_msa(workers=2, users=db)
    pids = set(worker_pids(m).values())
    os.kill(m.proc.pid, signal.SIGHUP)  # nothing changed: only the signal makes them reload
    assert msatest.wait_until(
        lambda: {int(p) for p in re.findall(r"msa\[(\d+)\]: reloaded: 1 users", m.log())} == pids)
    msatest.add_user(db, "bob", "bob workers pw", ["bob@example.org"])
    os.kill(m.proc.pid, signal.SIGHUP)
    assert msatest.wait_until(
        lambda: {int(p) for p in re.findall(r"msa\[(\d+)\]: reloaded: 2 users", m.log())} == pids)
    served: set[int] = set()
    for pid in pids:  # every worker lets bob in
        with only(m, pid):
            w, served_by = open_session(m, mode="tls")
        w.expect("EHLO laptop.example", 250)
        w.expect("AUTH PLAIN " + b64("\0bob\0bob workers pw"), 235)
        close_session(m, w)
        served.add(served_by)
    assert served == pids
    assert len(re.findall(r"sasl_username=bob", m.log())) >= 2
    assert m.proc.pid not in served


def test_sigterm_drains_every_worker_and_the_master_exits_0(start_msa):  # S-1601, S-110, CONTRACT serve
    m = start_msa(workers=2)
    pids = list(worker_pids(m).values())
    idle = open_spread(m, 2)
    busy, _ = open_session(m)
    busy.expect("EHLO client.example", 250)
    busy.transaction("alice@example.org", "bob@example.net")
    busy.send(message("drained") + b"the first half,\r\n")
    t0 = time.monotonic()
    m.proc.send_signal(signal.SIGTERM)
    for w, _ in idle:
        assert w.reply() == (421, SHUTTING_DOWN)
        assert w.closed()
    busy.send(b"and the second.\r\n.\r\n")
    assert busy.reply()[0] == 250  # a transaction in progress finishes first
    assert m.proc.wait(20 + 10 + 5 + 5) == 0  # sendmail_timeout + DRAIN_GRACE + the master's margin
    assert time.monotonic() - t0 < 20 + 10 + 5
    assert not any(alive(pid) for pid in pids)
    log = m.log()
    for n, pid in worker_pids(m).items():
        assert f"msa[{pid}]: worker {n} stopped" in log
    assert log.rstrip().endswith(f"msa[{m.proc.pid}]: stopped")
    assert message_ids(m) == ["drained"]


def test_a_killed_worker_is_replaced_and_loses_nor_doubles_nothing(start_msa):  # S-1601, S-109, S-309
    m = start_msa(workers=2, max_connections=4, max_connections_per_ip=10)
    sessions = open_spread(m, 4)
    for i, (w, _) in enumerate(sessions):
        w.expect("EHLO client.example", 250)
        w.transaction("alice@example.org", "bob@example.net")
        w.send(message(f"m{i}") + b"half of the body\r\n")
    spool = m.dir / "spool"
    spooled = lambda: sorted(spool.glob("msa-*.msg"))  # noqa: E731
    assert msatest.wait_until(lambda: len(spooled()) == 4, 10)  # one per transaction in DATA
    victim = sessions[0][1]
    number = next(n for n, pid in worker_pids(m).items() if pid == victim)
    lost = [i for i, (_, pid) in enumerate(sessions) if pid == victim]
    kept = [i for i, (_, pid) in enumerate(sessions) if pid != victim]
    t0 = time.monotonic()
    os.kill(victim, signal.SIGKILL)
    m.wait_log(rf"worker {number} pid {victim} killed by signal 9")
    assert len(spooled()) == len(kept)  # the live sessions' files are theirs still
    for i in kept:  # the other worker's transactions go on
        w = sessions[i][0]
        w.send(b"the rest\r\n.\r\n")
        assert w.reply()[0] == 250
    for i in lost:  # cut before the final dot: never handed over, never acknowledged
        w = sessions[i][0]
        with pytest.raises((OSError, EOFError)):
            w.send(b"the rest\r\n.\r\n")
            w.reply()
        w.close()
    # S-1015 without waiting for a restart of serve: the master removes the
    # dead worker's spool files at once, and none of the other's live ones.
    m.wait_log(rf"msa\[{m.proc.pid}\]: warning: worker {number} pid {victim} killed by signal 9 \(SIGKILL\), "
               rf"{len(lost)} connection slot\(s\) given back, {len(lost)} spool file\(s\) it left removed; "
               rf"starting another")
    assert msatest.wait_until(lambda: worker_pids(m)[number] != victim, 10)
    assert time.monotonic() - t0 < 10
    new_pid = worker_pids(m)[number]
    assert alive(new_pid) and not alive(victim)
    # Its slots are free again: the kept sessions and len(lost) new ones fill the cap exactly.
    resent = [open_session(m) for _ in lost]
    w = Wire.connect(m.ports["starttls"])
    assert w.reply() == (421, TOO_MANY)
    for (w, _), i in zip(resent, lost, strict=True):  # the client sends again what was never acknowledged
        w.expect("EHLO client.example", 250)
        w.transaction("alice@example.org", "bob@example.net")
        w.send(message(f"m{i}") + b"half of the body\r\nthe rest\r\n.\r\n")
        assert w.reply()[0] == 250
        close_session(m, w)
    for i in kept:
        close_session(m, sessions[i][0])
    assert message_ids(m) == [f"m{i}" for i in range(4)]  # each exactly once
    assert spooled() == []


def _alice(tmp_path):
    db = tmp_path / "users.db"
    if not db.exists():
        msatest.add_user(db, "alice", PASSWORD, ["alice@example.org"])
    return db


@pytest.mark.parametrize("store", ["sqlite", pytest.param("redis", marks=pytest.mark.xdist_group("redis"))])
def test_sending_limits_hold_across_workers(start_msa, tmp_path, store, request):  # S-1201, S-1202, S-1401, S-1601
    shared = {}
    if store == "redis":  # each worker opens its own connections after the fork
        import redistest

        server = request.getfixturevalue("redis_server")
        shared = dict(state=server.unix_url(), state_prefix=redistest.unused_prefix(request.node.name))
    m = start_msa(workers=2, users=_alice(tmp_path), trusted_networks="", limit_messages="5/1h",
                  max_connections_per_ip=50, **shared)
    sessions = open_spread(m, 12, mode="tls")  # however busy the machine, over both workers
    barrier = threading.Barrier(12)
    codes: list[int] = [0] * 12

    def session(i: int) -> None:
        w = sessions[i][0]
        try:
            w.expect("EHLO laptop.example", 250)
            w.expect("AUTH PLAIN " + b64("\0alice\0" + PASSWORD), 235)
            barrier.wait(60)
            code, _ = w.cmd("MAIL FROM:<alice@example.org>")
            if code == 250:
                w.expect(f"RCPT TO:<r{i}@example.net>", 250)
                w.expect("DATA", 354)
                w.send(message(f"l{i}") + b"hello\r\n.\r\n")
                code = w.reply()[0]
            codes[i] = code
        finally:
            w.close()

    threads = [threading.Thread(target=session, args=(i,)) for i in range(12)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert sorted(codes) == [250] * 5 + [450] * 7, codes
    assert len({pid for _, pid in sessions}) == 2  # both workers took part
    assert len(message_ids(m)) == 5


def _notifications(sock: socket.socket, timeout: float = 15) -> tuple[bytes, int]:
    """One sd_notify datagram and its sender's pid (SCM_CREDENTIALS)."""
    sock.settimeout(timeout)
    data, ancillary, _, _ = sock.recvmsg(256, socket.CMSG_SPACE(12))
    pid = next(struct.unpack("3i", d)[0] for level, kind, d in ancillary
               if level == socket.SOL_SOCKET and kind == socket.SCM_CREDENTIALS)
    return data, pid


# Puts the given fds at 3, 4, ... and sets LISTEN_PID to its own pid before
# exec, as systemd does (as in test_deploy.py).
_ACTIVATE = r"""
import os, sys
fds = [int(x) for x in sys.argv[1].split(",")]
for i, fd in enumerate(fds):
    os.dup2(fd, 3 + i)
os.environ["LISTEN_PID"] = str(os.getpid())
os.environ["LISTEN_FDS"] = str(len(fds))
os.execv(sys.executable, [sys.executable] + sys.argv[2:])
"""


def test_systemd_hears_only_the_master_and_passed_sockets_are_shared(tmp_path, certs):  # S-1601, contrib/systemd
    listeners = []
    for _ in range(2):
        s = socket.socket()
        s.bind(("127.0.0.1", 0))
        s.listen(16)
        listeners.append(s)
    notify = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    notify.setsockopt(socket.SOL_SOCKET, socket.SO_PASSCRED, 1)
    notify_path = str(tmp_path / "notify")
    notify.bind(notify_path)
    conf = msatest.write_config(tmp_path, certs, listen="127.0.0.1:1 starttls", workers=2)
    fds = [s.fileno() for s in listeners]
    log = open(tmp_path / "msa.log", "wb")
    proc = subprocess.Popen(
        [sys.executable, "-c", _ACTIVATE, ",".join(map(str, fds)), MSA, "serve", "-c", str(conf)],
        pass_fds=fds, stdout=log, stderr=log,
        env={**os.environ, "LISTEN_FDNAMES": "starttls:tls", "NOTIFY_SOCKET": notify_path},
    )
    log.close()
    try:
        assert _notifications(notify) == (b"READY=1", proc.pid)
        text = (tmp_path / "msa.log").read_text()
        assert len(re.findall(r"worker \d of 2 started", text)) == 2  # READY=1 came once both were up
        plain_port, tls_port = (s.getsockname()[1] for s in listeners)
        for s in listeners:
            s.close()  # msa holds its own copies now
        ctx = certs.client_context()
        for port, tls in ((plain_port, None), (tls_port, ctx)):
            for _ in range(6):
                w = Wire.connect(port, tls_ctx=tls)
                assert w.reply()[0] == 220
                w.expect("EHLO x.example", 250)
                w.expect("MAIL FROM:<alice@example.org>", 250)
                w.expect("RCPT TO:<bob@example.net>", 250)
                w.expect("DATA", 354)
                w.send(HDR + b"Subject: activated\r\n\r\nok\r\n.\r\n")
                assert w.reply()[0] == 250
                w.close()
        proc.send_signal(signal.SIGHUP)
        assert _notifications(notify) == (b"RELOADING=1", proc.pid)
        assert _notifications(notify) == (b"READY=1", proc.pid)
        text = (tmp_path / "msa.log").read_text()
        assert len(re.findall(r"reloaded: ", text)) == 2  # READY=1 came once both had reloaded
        proc.terminate()
        assert _notifications(notify) == (b"STOPPING=1", proc.pid)
        assert proc.wait(20) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    text = (tmp_path / "msa.log").read_text()
    assert f"listening on 127.0.0.1:{plain_port} (starttls)" in text
    assert f"listening on 127.0.0.1:{tls_port} (tls)" in text
    assert len({int(p) for p in re.findall(r"msa\[(\d+)\]: \w+: connect from ", text)}) == 2
    assert len(msatest.Outbox(tmp_path / "outbox").messages()) == 12
    notify.setblocking(False)
    with pytest.raises(BlockingIOError):  # nothing more, and nothing from a worker
        notify.recv(256)


@pytest.mark.parametrize("value", ["0", "x", "-2", "1.5", "257"])
def test_bad_workers_values_are_refused_with_file_and_line(tmp_path, value):  # S-1601, CONTRACT check
    conf = msatest.write_config(tmp_path, None, workers=value)
    line = conf.read_text().splitlines().index(f"workers = {value}") + 1
    want = f"{conf}:{line}: workers must be a whole number from 1 to 256, or auto (one per CPU), not {value!r}"
    check = subprocess.run([sys.executable, MSA, "check", "-c", str(conf)], capture_output=True, text=True, timeout=60)
    assert check.returncode == 1 and want in check.stdout.splitlines(), check.stdout
    serve = subprocess.run([sys.executable, MSA, "serve", "-c", str(conf)], capture_output=True, text=True, timeout=60)
    assert serve.returncode == 1 and want in serve.stderr.splitlines(), serve.stderr


def test_check_says_how_many_workers_auto_means(tmp_path):  # S-1601
    conf = msatest.write_config(tmp_path, None, workers="auto")
    check = subprocess.run([sys.executable, MSA, "check", "-c", str(conf)], capture_output=True, text=True, timeout=60)
    n = len(os.sched_getaffinity(0))
    assert f"serve runs {n} worker process{'es' if n != 1 else ''} (auto: one per CPU this process may run on)" \
        in check.stdout, check.stdout


def test_the_tls_listener_is_shared_too(start_msa):  # S-1601, S-403
    m = start_msa(workers=2)
    seen = set()
    for pid in worker_pids(m).values():
        with only(m, pid):
            w = Wire.connect(m.ports["tls"], tls_ctx=m.client_ctx)
            assert w.reply()[0] == 220  # the handshake and greeting came from that worker
        assert isinstance(w.sock, ssl.SSLSocket)
        seen.add(session_pid(m, w))
        w.expect("QUIT", 221)
        w.close()
    assert seen == set(worker_pids(m).values())


def test_each_worker_keeps_to_a_core_of_its_own_and_sendmail_gets_all(start_msa):  # S-1601, server/affinity.py
    cores = sorted(os.sched_getaffinity(0))
    if len(cores) < 2:
        pytest.skip("one core: nothing to pin")
    m = start_msa(workers=2)
    for n, pid in worker_pids(m).items():
        allowed = set()
        for task in os.listdir(f"/proc/{pid}/task"):
            with open(f"/proc/{pid}/task/{task}/status") as f:
                allowed |= {line.split(":", 1)[1].strip() for line in f if line.startswith("Cpus_allowed_list")}
        assert allowed == {str(cores[(n - 1) % len(cores)])}, (n, allowed)
        assert f"msa[{pid}]: worker {n} of 2 started, session threads on CPU {cores[(n - 1) % len(cores)]}" in m.log()
    assert sorted(os.sched_getaffinity(m.proc.pid)) == cores  # the master is not pinned
    w, _ = open_session(m)
    w.expect("EHLO client.example", 250)
    w.transaction("alice@example.org", "bob@example.net")
    w.send(HDR + b"\r\naffinity\r\n.\r\n")
    assert w.reply()[0] == 250
    assert (m.outbox.path / "0.cpus").read_text() == ",".join(str(c) for c in cores)


def test_run_as_holds_for_the_master_and_every_worker(tmp_path, certs):  # S-1601, CONTRACT run_as
    if os.getuid() != 0:
        pytest.skip("run_as needs root to switch users")
    import pwd
    import shutil

    nobody = pwd.getpwnam("nobody")
    base, outbox = msatest.run_as_scratch()
    try:
        m = msatest.start(tmp_path / "m", certs, run_as="nobody", spool=str(base / "spool"), workers=2,
                          sendmail=f"/bin/sh -c 'cat > \"$0/$$.message\"' {outbox}")
        try:
            for pid in (m.proc.pid, *worker_pids(m).values()):
                with open(f"/proc/{pid}/status") as f:
                    uids = next(line for line in f if line.startswith("Uid:")).split()[1:]
                assert {int(u) for u in uids} == {nobody.pw_uid}, pid
            for _ in range(2):
                w, _ = open_session(m)
                w.expect("EHLO client.example", 250)
                w.transaction("alice@example.org", "bob@example.net")
                w.send(HDR + b"Subject: as nobody\r\n\r\nok\r\n.\r\n")
                assert w.reply()[0] == 250
                close_session(m, w)
            assert len(list(outbox.glob("*.message"))) == 2
        finally:
            assert m.stop() == 0
    finally:
        shutil.rmtree(base, ignore_errors=True)


def test_workers_stop_when_the_master_is_gone(start_msa):  # S-1601: no worker left behind
    m = start_msa(workers=2)
    pids = worker_pids(m)
    w, _ = open_session(m)
    m.proc.kill()
    m.proc.wait()
    assert w.reply() == (421, SHUTTING_DOWN)  # drained as on SIGTERM
    assert msatest.wait_until(lambda: not any(alive(pid) for pid in pids.values()), 15)
    for n, pid in pids.items():
        assert f"msa[{pid}]: warning: worker {n}: the master process is gone; stopping" in m.log()
