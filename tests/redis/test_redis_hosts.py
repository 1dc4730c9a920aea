"""Two msa hosts sharing one Redis (SPEC.md §14): real `msa.py serve`
processes on their own ports and their own state_dir, one users.db, one
private redis-server. One sending limit whichever host a message goes
through, simultaneous sessions on both never passing it together, login
delays that follow an address from host to host, unknown users' SCRAM
salts alike on both and after a restart, every key under the prefix with a
TTL, and `msa.py limits` and `check` against Redis."""

from __future__ import annotations

import base64
import os
import subprocess
import sys
import threading
import time

import pytest

import msatest
import redistest
import scramtest
from msatest import MSA, Wire, b64

pytestmark = pytest.mark.xdist_group("redis")

PASSWORD = "two hosts pw"
HEADER = b"From: alice@example.org\r\nTo: bob@example.net\r\nSubject: hosts\r\n\r\nhello\r\n.\r\n"


@pytest.fixture
def users(tmp_path):
    db = tmp_path / "users.db"
    msatest.add_user(db, "alice", PASSWORD, ["alice@example.org"], scram=True)
    return db


@pytest.fixture
def hosts(start_msa, users, redis_server, request):
    """start(**overrides) -> two serve processes sharing one Redis, one prefix."""
    prefix = redistest.unused_prefix(request.node.name)

    def start(url: str | None = None, **overrides):
        settings = dict(users=users, trusted_networks="", state=url or redis_server.unix_url(), state_prefix=prefix,
                        **overrides)
        return start_msa(**settings), start_msa(**settings)  # each its own port and state_dir

    start.prefix = prefix
    return start


def login(m, source: str | None = None, password: str = PASSWORD) -> Wire:
    w = Wire.connect(m.ports["tls"], tls_ctx=m.client_ctx, source=source)
    w.reply()
    w.expect("EHLO laptop.example", 250)
    w.expect("AUTH PLAIN " + b64("\0alice\0" + password), 235)
    return w


def send_once(m) -> int:
    """One message in a session of its own: MAIL's reply when refused, else
    the final dot's."""
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


def limits_cmd(m, *words) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, MSA, "limits", "-c", str(m.conf), *words], capture_output=True,
                          text=True, timeout=30)


def test_two_hosts_enforce_one_limit_and_every_key_has_the_prefix_and_a_ttl(hosts, redis_server):  # S-1401, S-1201
    db = 1  # this test's own database: a key without the prefix would show in it
    redis_server.client(db).flushdb()
    a, b = hosts(redis_server.unix_url(db), limit_messages="3/1h")
    assert [send_once(h) for h in (a, b, a, b, a)] == [250, 250, 250, 450, 450]
    delivered = len(a.outbox.messages()) + len(b.outbox.messages())
    assert delivered == 3
    # S-1201: the first refusal of the window is logged once, by whichever host made it.
    b.wait_log(r"reject: MAIL from \S+: 450 4\.7\.1 .*limit=messages 3/1h sasl_username=alice")
    time.sleep(0.2)
    assert a.log().count("limit=messages") + b.log().count("limit=messages") == 1
    # A failed login and an unknown SCRAM user make the other kinds of keys.
    w = Wire.connect(a.ports["tls"], tls_ctx=a.client_ctx, source="127.0.0.9")
    w.reply()
    w.expect("EHLO x.example", 250)
    w.expect("AUTH PLAIN " + b64("\0mallory\0guess"), 535)
    w.close()
    client = redis_server.client(db)
    found = list(client.scan_iter())
    kinds = {key[len(hosts.prefix):].split(b":", 1)[0] for key in found}
    assert kinds == {b"sent", b"noted", b"fail", b"secret"}, found
    for key in found:
        assert key.startswith(hosts.prefix.encode()), key
        assert client.pttl(key) > 0, key  # S-1401: nothing grows without bound


def test_limits_command_reads_and_resets_the_shared_counts(hosts, redis_server):  # S-1403
    a, b = hosts(limit_messages="2/1h")
    assert send_once(a) == 250 and send_once(b) == 250
    assert send_once(a) == 450
    shown = limits_cmd(b)
    assert shown.returncode == 0, shown.stderr
    assert "alice: 2 messages, 2 recipients in the current windows" in shown.stdout
    reset = limits_cmd(b, "reset", "alice")
    assert reset.returncode == 0 and "reset alice: 2 message(s) forgotten" in reset.stdout
    assert send_once(a) == 250  # cleared for both hosts
    assert "nobody: 0 messages" in limits_cmd(a, "nobody").stdout


def test_sixteen_simultaneous_sessions_on_two_hosts_send_exactly_the_limit(hosts):  # S-1201 amended, S-1401
    a, b = hosts(limit_messages="5/1h")
    barrier = threading.Barrier(16)
    codes: list = [None] * 16

    def session(i: int) -> None:
        w = login(a if i % 2 else b)
        try:
            barrier.wait(30)
            code, _ = w.cmd("MAIL FROM:<alice@example.org>")
            if code == 250:
                w.expect(f"RCPT TO:<r{i}@example.net>", 250)
                w.expect("DATA", 354)
                w.send(HEADER)
                code = w.reply()[0]
            codes[i] = code
        finally:
            w.close()

    threads = [threading.Thread(target=session, args=(i,)) for i in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert sorted(codes) == [250] * 5 + [450] * 11, codes
    assert len(a.outbox.messages()) + len(b.outbox.messages()) == 5


def test_failures_on_one_host_delay_the_next_auth_on_the_other(hosts):  # S-511, S-1401
    a, b = hosts()
    w = Wire.connect(a.ports["tls"], tls_ctx=a.client_ctx, source="127.0.0.77")
    w.reply()
    w.expect("EHLO x.example", 250)
    w.expect("AUTH PLAIN " + b64("\0alice\0wrong"), 535)
    w.expect("AUTH PLAIN " + b64("\0alice\0wrong again"), 535)
    w.close()
    t0 = time.monotonic()
    login(b, source="127.0.0.78").close()  # another address: not delayed
    assert time.monotonic() - t0 < 1.9  # (a failure would mean 1 s or more; two, 2 s)
    t0 = time.monotonic()
    login(b, source="127.0.0.77").close()  # host B never saw a failure from .77
    assert time.monotonic() - t0 >= 2.0  # two failures: 2 s (S-511)
    # B's success forgot alice's failures for host A too.
    t0 = time.monotonic()
    login(a, source="127.0.0.77").close()
    assert time.monotonic() - t0 < 1.9


def _scram_salt(m, name: str, source: str) -> bytes:
    w = Wire.connect(m.ports["tls"], tls_ctx=m.client_ctx, source=source)
    w.reply()
    w.expect("EHLO x.example", 250)
    first, _ = scramtest.client_first(name, b"rOprNGfwEbeRWgbNEkqO", b"n,,")
    code, text = w.cmd("AUTH SCRAM-SHA-256 " + base64.b64encode(first).decode())
    w.close()
    assert code == 334, text
    return dict(p.split(b"=", 1) for p in base64.b64decode(text[4:]).split(b","))[b"s"]


def test_unknown_users_scram_salts_are_alike_on_both_hosts_and_after_a_restart(hosts, start_msa, users,
                                                                                 redis_server, tmp_path):  # S-514, S-1401
    a, b = hosts(auth_scram="yes")
    salt = _scram_salt(a, "ghost", "127.0.0.21")
    assert _scram_salt(b, "ghost", "127.0.0.22") == salt  # a per-host secret would differ here
    assert _scram_salt(a, "ghost", "127.0.0.23") == salt
    assert _scram_salt(a, "phantom", "127.0.0.24") != salt  # each name its own
    assert (a.dir / "state" / "secret").read_bytes() == (b.dir / "state" / "secret").read_bytes()
    b.stop()
    # A restart, even with an empty state_dir of its own: the secret is Redis's.
    c = start_msa(users=users, trusted_networks="", state=redis_server.unix_url(), state_prefix=hosts.prefix,
                  auth_scram="yes", state_dir=tmp_path / "fresh-state")
    assert _scram_salt(c, "ghost", "127.0.0.25") == salt


def _check(conf) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, MSA, "check", "-c", str(conf)], capture_output=True, text=True,
                          timeout=60)


def test_check_pings_redis_and_names_state_when_it_cannot(tmp_path, certs, users, redis_server):  # S-1403
    good = msatest.write_config(tmp_path / "good", certs, users=users, state=redis_server.unix_url())
    p = _check(good)
    assert p.returncode == 0, p.stdout
    dead = f"redis://:hunter2@127.0.0.1:{redistest.free_port()}/0"
    bad = msatest.write_config(tmp_path / "bad", certs, users=users, state=dead, state_timeout=0.3)
    p = _check(bad)
    assert p.returncode == 1
    line = next(x for x in p.stdout.splitlines() if ": state: " in x)
    assert line.startswith(f"{bad}:") and "redis://127.0.0.1:" in line
    assert "hunter2" not in p.stdout  # never the password


def test_a_password_protected_redis_over_tcp(tmp_path, certs, users, start_msa, tmp_path_factory):  # S-1401
    server = redistest.RedisServer(tmp_path_factory.mktemp("redis-pw"), password="s3cret pw").start()
    try:
        url = f"redis://:s3cret%20pw@127.0.0.1:{server.port}/2"
        conf = msatest.write_config(tmp_path / "c", certs, users=users, state=url)
        conf.chmod(0o600)
        assert _check(conf).returncode == 0
        wrong = msatest.write_config(tmp_path / "w", certs, users=users, state=url.replace("s3cret", "wrong"))
        p = _check(wrong)
        assert p.returncode == 1 and ": state: " in p.stdout and "wrong" not in p.stdout, p.stdout
        m = start_msa(users=users, trusted_networks="", state=url, limit_messages="1/1h")
        assert send_once(m) == 250
        assert send_once(m) == 450
        assert server.client(2).keys(b"msa:sent:messages:alice") == [b"msa:sent:messages:alice"]
    finally:
        server.stop()


def test_inetd_processes_count_in_redis_too(tmp_path, users, redis_server, request):  # S-1401, S-1202
    conf = msatest.write_config(tmp_path / "inetd", None, users=users, trusted_networks="",
                                require_tls_for_auth="no", limit_messages="1/1h", state=redis_server.unix_url(),
                                state_prefix=redistest.unused_prefix(request.node.name))
    auth = b"EHLO x.example\r\nAUTH PLAIN " + b64("\0alice\0" + PASSWORD).encode() + b"\r\n"
    message = b"MAIL FROM:<alice@example.org>\r\nRCPT TO:<bob@example.net>\r\nDATA\r\n" + HEADER + b"QUIT\r\n"

    def session() -> bytes:
        return subprocess.run([sys.executable, MSA, "inetd", "-c", str(conf)], input=auth + message,
                              capture_output=True, timeout=60, env={**os.environ, "TCPREMOTEIP": "192.0.2.7"}).stdout

    assert b"\r\n250 2.0.0 Ok: queued as " in session()
    assert b"\r\n450 4.7.1 Sending rate limit exceeded; try again later\r\n" in session()


def test_a_missing_redis_py_is_named_by_check_and_stops_serve(tmp_path):  # S-1403
    # `python -S`: no site-packages, so no redis-py (and no argon2: check says so too).
    conf = msatest.write_config(tmp_path, None, state=f"redis://127.0.0.1:{redistest.free_port()}/0")
    for command in ("check", "serve"):
        p = subprocess.run([sys.executable, "-S", MSA, command, "-c", str(conf)], capture_output=True, text=True,
                           timeout=60)
        out = p.stdout + p.stderr
        assert p.returncode == 1, out
        assert f"{conf}:" in out and ": state: the redis module (redis-py) is missing" in out, out
        assert "Traceback" not in out
