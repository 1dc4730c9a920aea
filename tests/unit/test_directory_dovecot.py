"""directory/dovecot.py against scripted Dovecots (tests/helpers/fake_dovecot.py):
what a real Dovecot cannot be made to do on cue. The real one: tests/dovecot."""

from __future__ import annotations

import base64
import shutil
import socket
import tempfile
import threading
import time
from pathlib import Path

import pytest
from helpers.fake_dovecot import FakeDovecot

from directory import Client
from directory.dovecot import DovecotDirectory, parse_address, tab_escape, tab_unescape

RIGHT = b"right password"
CLIENT = Client(session="S1", local_ip="127.0.0.1", local_port=587, remote_ip="192.0.2.7", remote_port=40000, tls=True)


class Log:
    def __init__(self) -> None:
        self.warnings: list[str] = []
        self.infos: list[str] = []


@pytest.fixture
def short_dir():
    """A directory with a short path (a unix socket path has at most 107 octets)."""
    d = Path(tempfile.mkdtemp(prefix="msa-dv-"))
    yield d
    shutil.rmtree(d, ignore_errors=True)


@pytest.fixture
def make(short_dir):
    made: list[tuple[FakeDovecot | None, DovecotDirectory]] = []

    def make(mode="2.4", answer=None, address=None, **kw) -> tuple[FakeDovecot | None, DovecotDirectory, Log]:
        fake = None
        if address is None:
            name = f"fake-auth{len(made) or ''}"
            fake = FakeDovecot(short_dir, mode, answer, name=name) if answer else FakeDovecot(short_dir, mode, name=name)
            address = fake.address
        log = Log()
        d = DovecotDirectory(address, warn=log.warnings.append, info=log.infos.append, **kw)
        made.append((fake, d))
        return fake, d, log

    yield make
    for fake, d in made:
        d.close()
        if fake:
            fake.stop()


def answering(reply: bytes):
    """An `answer` that sends `reply` (with {id} filled in) to every AUTH."""
    return lambda request_id, user, password: reply.replace(b"{id}", request_id.encode())


# -- the handshake ------------------------------------------------------------------------------


@pytest.mark.parametrize("mode", ["2.4", "2.3"])
def test_handshake_of_both_versions(make, mode):
    # S-1302: 2.4 sends only VERSION and waits for the client's; 2.3 sends all at once.
    fake, d, log = make(mode)
    v = d.authenticate("alice@example.org", RIGHT, CLIENT)
    assert (v.ok, v.user, v.temporary) == (True, "alice@example.org", False)
    assert fake.connections[0][:2] == [b"VERSION\t1\t2", b"CPID\t%d" % __import__("os").getpid()]
    assert log.warnings == []


@pytest.mark.parametrize("handshake, why", [
    (b"VERSION\t1\t2\n" + b"X" * 20000, "longer than 16384"),
    (b"VERSION\t2\t0\nMECH\tPLAIN\nDONE\n", "not auth protocol 1.x"),
    (b"VERSION\tone\ttwo\nMECH\tPLAIN\nDONE\n", "not auth protocol 1.x"),
    (b"MECH\tPLAIN\nDONE\n", "no VERSION"),
    (b"VERSION\t1\t2\nMECH\tLOGIN\nDONE\n", "does not offer PLAIN"),
    (b"\xff\xfe\x00garbage\n\x01\x02\nDONE\n", "no VERSION"),
    (b"SPID\t1\n" * 10000, "handshake longer than"),
])
def test_broken_handshakes_are_temporary(make, handshake, why):
    # S-1302: a broken or over-long line is temporary (454), never an exception.
    fake, d, log = make(handshake, timeout=5)
    start = time.monotonic()
    v = d.authenticate("alice@example.org", RIGHT, CLIENT)
    assert (v.ok, v.temporary) == (False, True)
    assert why in v.reason
    assert time.monotonic() - start < 4  # refused at once, not at the timeout
    assert fake.requests() == []
    assert len(log.warnings) == 1 and why in log.warnings[0]


def test_silent_dovecot_is_temporary_within_the_timeout_and_warns_once(make):
    # S-1302: no answer within the timeout is temporary; one warning per outage.
    fake, d, log = make("silent", timeout=1)
    for _ in range(2):
        start = time.monotonic()
        v = d.authenticate("alice@example.org", RIGHT, CLIENT)
        elapsed = time.monotonic() - start
        assert (v.ok, v.temporary) == (False, True)
        assert "no answer within the timeout" in v.reason
        assert 0.9 <= elapsed < 4
    assert len(log.warnings) == 1 and log.infos == []


def test_silence_after_the_handshake_is_temporary(make):
    fake, d, log = make("2.4", answer=lambda *a: b"", timeout=1)
    start = time.monotonic()
    v = d.authenticate("alice@example.org", RIGHT, CLIENT)
    assert (v.ok, v.temporary) == (False, True)
    assert time.monotonic() - start < 2.5
    assert len(fake.requests()) == 1


@pytest.mark.parametrize("reply", [
    b"OK\t{id}\tuser=" + b"a" * 20000 + b"\n",
    b"NOISE\t{id}\n" * 200,
])
def test_broken_answers_are_temporary(make, reply):
    fake, d, log = make(answer=answering(reply), timeout=3)
    v = d.authenticate("alice@example.org", RIGHT, CLIENT)
    assert (v.ok, v.temporary) == (False, True)
    assert len(log.warnings) == 1


def test_missing_socket_then_dovecot_starts(make, short_dir):
    # S-1302: Dovecot started after msa works without restarting msa: one
    # warning while it is missing, one info line when it answers.
    path = short_dir / "fake-auth"
    _, d, log = make(address=f"unix:{path}", timeout=2)
    start = time.monotonic()
    for _ in range(3):
        v = d.authenticate("alice@example.org", RIGHT, CLIENT)
        assert (v.ok, v.temporary) == (False, True)
    assert time.monotonic() - start < 1
    assert len(log.warnings) == 1 and "connect" in log.warnings[0]
    fake = FakeDovecot(short_dir, "2.4")
    try:
        v = d.authenticate("alice@example.org", RIGHT, CLIENT)
        assert (v.ok, v.user) == (True, "alice@example.org")
        assert len(log.warnings) == 1 and len(log.infos) == 1
    finally:
        fake.stop()


# -- the request --------------------------------------------------------------------------------


def test_the_auth_line_word_for_word(make):
    # S-1302: the parameters in this order, resp= last, PLAIN with an empty authzid.
    fake, d, _ = make()
    d.authenticate("alice@example.org", RIGHT, CLIENT)
    d.authenticate("alice@example.org", b"wrong", Client())
    resp = base64.b64encode(b"\0alice@example.org\0right password")
    resp2 = base64.b64encode(b"\0alice@example.org\0wrong")
    assert fake.requests() == [
        b"AUTH\t1\tPLAIN\tservice=smtp\tsession=S1\tlip=127.0.0.1\trip=192.0.2.7\tlport=587\trport=40000"
        b"\tsecured=tls\tno-penalty\tresp=" + resp,
        b"AUTH\t2\tPLAIN\tservice=smtp\tno-penalty\tresp=" + resp2,  # nothing unknown is sent
    ]
    assert len(fake.connections) == 1  # kept and reused, the ID incremented


def test_client_fields_are_escaped_or_left_out(make):
    fake, d, _ = make()
    d.authenticate("alice@example.org", RIGHT,
                   Client(session="a\tb\nc", local_ip="not an ip", remote_ip="2001:db8::1", local_port=0, remote_port=70000))
    assert fake.requests()[0].startswith(b"AUTH\t1\tPLAIN\tservice=smtp\tsession=a\x01tb\x01nc\trip=2001:db8::1\tno-penalty\tresp=")


@pytest.mark.parametrize("name, password", [
    ("alice@example.org\tx", RIGHT), ("alice@example.org\r", RIGHT), ("alice@example.org\n", RIGHT),
    ("alice\0@example.org", RIGHT), ("alice@example.org", b"right\tpassword"), ("alice@example.org", b"right\r"),
    ("alice@example.org", b"right\npassword"), ("alice@example.org", b"right\0password"),
])
def test_injection_is_refused_without_asking(make, name, password):
    # S-1302: TAB, CR, LF or NUL in the name or password fails (535) and Dovecot is never asked.
    fake, d, log = make()
    v = d.authenticate(name, password, CLIENT)
    assert (v.ok, v.temporary, v.user) == (False, False, None)
    assert fake.connections == [] and log.warnings == []


# -- the answers --------------------------------------------------------------------------------


@pytest.mark.parametrize("reply, ok, temporary, user", [
    (b"OK\t{id}\tuser=Alice@Example.ORG\toriginal_user=x\n", True, False, "alice@example.org"),
    (b"OK\t{id}\tuser=first\x01.last@example.org\n", True, False, "first.last@example.org"),  # an unknown escape keeps its character
    (b"OK\t{id}\tuser=a\x01tb@example.org\n", False, False, None),  # an escaped TAB in the name
    (b"OK\t{id}\tuser=a\x01nb@example.org\n", False, False, None),  # an escaped LF
    (b"OK\t{id}\tuser=a b@example.org\n", False, False, None),
    (b"OK\t{id}\tuser=\n", False, False, None),
    (b"OK\t{id}\n", False, False, None),
    (b"OK\t{id}\tuser=alice@example.org\tnologin\treason=disabled\n", False, False, None),
    (b"OK\t{id}\tuser=alice@example.org\tproxy\thost=192.0.2.1\n", False, False, None),
    (b"OK\t{id}\tuser=alice@example.org\thost=192.0.2.1\n", True, False, "alice@example.org"),
    (b"FAIL\t{id}\tuser=alice@example.org\n", False, False, None),
    (b"FAIL\t{id}\tuser=alice@example.org\tcode=user_disabled\treason=gone\n", False, False, None),
    (b"FAIL\t{id}\tuser=alice@example.org\tcode=temp_fail\treason=db down\n", False, True, None),
    (b"OK\t999\tuser=mallory\nFAIL\t{id}\n", False, False, None),  # another ID's answer is ignored
    (b"FAIL\t999\nOK\t{id}\tuser=alice@example.org\n", True, False, "alice@example.org"),
])
def test_answers(make, reply, ok, temporary, user):
    # S-1302: OK user= is success as NAME unless nologin; temp_fail is 454; other FAILs 535.
    fake, d, log = make(answer=answering(reply))
    v = d.authenticate("alice@example.org", RIGHT, CLIENT)
    assert (v.ok, v.temporary, v.user, v.known) == (ok, temporary, user, True)
    assert log.warnings == []  # Dovecot answered: no outage


def test_reason_is_for_the_log_only(make):
    # S-1302: Dovecot's reason= goes to the Verdict's reason (the log), sanitised.
    fake, d, _ = make(answer=answering(b"FAIL\t{id}\tcode=temp_fail\treason=db\x01ndown\x1b[31m\n"))
    v = d.authenticate("alice@example.org", RIGHT, CLIENT)
    assert v.temporary and "db?down?[31m" in v.reason


def test_cont_fails_and_drops_the_connection(make):
    # PLAIN has no second step: CONT is a failure, and the connection (with its
    # request still open in Dovecot) is not reused.
    fake, d, _ = make(answer=answering(b"CONT\t{id}\tAAAA\n"))
    for _ in range(2):
        v = d.authenticate("alice@example.org", RIGHT, CLIENT)
        assert (v.ok, v.temporary) == (False, False)
    assert len(fake.connections) == 2


# -- the pool -----------------------------------------------------------------------------------


def test_an_idle_connection_closed_by_dovecot_is_replaced(make):
    fake, d, log = make()
    assert d.authenticate("alice@example.org", RIGHT, CLIENT).ok
    fake.drop_connections()  # Dovecot restarted
    time.sleep(0.1)
    assert d.authenticate("alice@example.org", RIGHT, CLIENT).ok
    assert len(fake.connections) == 2 and log.warnings == []


def test_a_reused_connection_that_breaks_is_retried_once_on_a_fresh_one(make):
    calls = []

    def answer(request_id, user, password):
        calls.append(request_id)
        return None if len(calls) == 2 else b"OK\t%s\tuser=alice@example.org\n" % request_id.encode()

    fake, d, log = make(answer=answer)
    assert d.authenticate("alice@example.org", RIGHT, CLIENT).ok
    assert d.authenticate("alice@example.org", RIGHT, CLIENT).ok  # 2nd AUTH: closed unanswered, retried
    assert calls == ["1", "2", "1"] and len(fake.connections) == 2 and log.warnings == []


def test_a_fresh_connection_that_breaks_is_not_retried(make):
    fake, d, log = make(answer=lambda *a: None)
    v = d.authenticate("alice@example.org", RIGHT, CLIENT)
    assert (v.ok, v.temporary) == (False, True)
    assert len(fake.requests()) == 1 and len(log.warnings) == 1


def test_at_most_max_connections_at_once(make):
    # Sixteen threads over a pool of four: each gets its own right answer, and
    # no more than four connections are ever open.
    open_now = []
    peak = []
    lock = threading.Lock()

    def answer(request_id, user, password):
        with lock:
            open_now.append(1)
            peak.append(len(open_now))
        time.sleep(0.1)
        with lock:
            open_now.pop()
        ok = password == b"pw-" + user
        return (b"OK\t%s\tuser=%s\n" if ok else b"FAIL\t%s\tuser=%s\n") % (request_id.encode(), user)

    fake, d, _ = make(answer=answer, max_connections=4)
    results = {}

    def run(i):
        user = f"user{i}@example.org"
        pw = f"pw-{user}".encode() if i % 3 else b"wrong"
        results[i] = d.authenticate(user, pw, CLIENT)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(20)
    for i in range(16):
        v = results[i]
        assert v.ok == bool(i % 3) and not v.temporary
        assert v.user == (f"user{i}@example.org" if i % 3 else None)
    assert max(peak) <= 4 and len(fake.connections) <= 4


def test_busy_pool_is_temporary_within_the_timeout(make):
    fake, d, log = make("silent", timeout=1, max_connections=1)
    results = []
    threads = [threading.Thread(target=lambda: results.append(d.authenticate("alice@example.org", RIGHT, CLIENT)))
               for _ in range(3)]
    start = time.monotonic()
    for t in threads:
        t.start()
    for t in threads:
        t.join(5)
    assert time.monotonic() - start < 2.5
    assert [v.temporary for v in results] == [True, True, True]
    # (a waiter whose deadline is a little later than the holder's may still
    # get the slot and open a second connection, with too little time left)
    assert len(log.warnings) == 1


def test_closed_directory_asks_nothing(make):
    fake, d, _ = make()
    d.close()
    v = d.authenticate("alice@example.org", RIGHT, CLIENT)
    assert (v.ok, v.temporary) == (False, True) and fake.connections == []


# -- check, addresses, escaping -----------------------------------------------------------------


def test_check(make, short_dir):
    _, d, _ = make()
    assert d.check() is None
    _, d, _ = make(address=f"unix:{short_dir}/missing", timeout=1)
    assert "connect" in d.check()
    fake, d, _ = make(b"VERSION\t1\t2\nMECH\tLOGIN\nDONE\n")
    assert "does not offer PLAIN" in d.check()
    assert d.senders("alice@example.org") is None and d.name == "dovecot"


def test_inet_listener(make):
    # inet:HOST:PORT: a loopback listener that speaks the 2.3 handshake.
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(1)

    def serve():
        c, _ = srv.accept()
        c.sendall(b"VERSION\t1\t2\nMECH\tPLAIN\nDONE\n")
        buf = b""
        while b"AUTH" not in buf or not buf.endswith(b"\n"):
            buf += c.recv(4096)
        c.sendall(b"OK\t1\tuser=alice@example.org\n")
        c.recv(1)
        c.close()

    threading.Thread(target=serve, daemon=True).start()
    _, d, _ = make(address=f"inet:127.0.0.1:{srv.getsockname()[1]}")
    assert d.authenticate("alice@example.org", RIGHT, CLIENT).ok
    d.close()
    srv.close()


@pytest.mark.parametrize("text, expected", [
    ("unix:/run/dovecot/auth-msa", (socket.AF_UNIX, "/run/dovecot/auth-msa")),
    ("inet:127.0.0.1:12345", (socket.AF_INET, ("127.0.0.1", 12345))),
    ("inet:[::1]:12345", (socket.AF_INET, ("::1", 12345))),
    ("inet:dovecot.example:1", (socket.AF_INET, ("dovecot.example", 1))),
])
def test_parse_address(text, expected):
    assert parse_address(text) == expected


@pytest.mark.parametrize("text", [
    "/run/dovecot/auth", "unix:auth", "unix:/" + "x" * 120, "inet:127.0.0.1", "inet:127.0.0.1:0",
    "inet:127.0.0.1:65536", "inet:::1:25", "inet:[nope]:25", "inet::25", "tcp:127.0.0.1:25",
])
def test_parse_address_refuses(text):
    with pytest.raises(ValueError, match="auth_dovecot"):
        parse_address(text)


@pytest.mark.parametrize("value", ["", "plain", "a\tb", "\r\n", "\x01", "\x01t", "\0", "mixed\x01\t\0end"])
def test_tab_escaping_round_trips(value):
    escaped = tab_escape(value)
    assert not any(c in escaped for c in "\t\r\n\0")
    assert tab_unescape(escaped) == value


def test_tab_unescape_as_dovecot():
    assert tab_unescape("a\x01tb\x01") == "a\tb"  # a trailing escape is dropped
    assert tab_unescape("a\x01xb") == "axb"  # an unknown one keeps its character


def test_a_bug_inside_is_temporary_never_an_exception(make, monkeypatch):
    from directory import dovecot as module

    def broken(*args, **kwargs):
        raise RuntimeError("right password")  # what a bug's message might hold

    fake, d, log = make()
    monkeypatch.setattr(module._Connection, "readline", broken)
    v = d.authenticate("alice@example.org", RIGHT, CLIENT)
    assert (v.ok, v.temporary) == (False, True)
    assert "right password" not in v.reason and "RuntimeError" in v.reason
    assert len(log.warnings) == 1 and "right password" not in log.warnings[0]
