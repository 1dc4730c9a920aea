"""directory/dovecot.py against a real Dovecot (conftest.py): S-1302."""

from __future__ import annotations

import threading
import time

import pytest

from directory import Client
from directory.dovecot import DovecotDirectory

pytestmark = pytest.mark.xdist_group("dovecot")

#: What conftest.py's instance holds (its Dovecot class has the same names).
SCHEMES = ("ARGON2ID", "BLF-CRYPT", "SHA512-CRYPT", "SHA256-CRYPT")
PASSWORD = "correct horse battery"
PW = PASSWORD.encode()
CLIENT = Client(session="t1", local_ip="127.0.0.1", local_port=587, remote_ip="127.0.0.1", remote_port=40000, tls=True)


class Log:
    def __init__(self) -> None:
        self.warnings: list[str] = []
        self.infos: list[str] = []


@pytest.fixture
def connect(dovecot):
    made: list[DovecotDirectory] = []

    def connect(which: str = "unix", **kw) -> tuple[DovecotDirectory, Log]:
        log = Log()
        d = DovecotDirectory(getattr(dovecot, which), warn=log.warnings.append, info=log.infos.append, **kw)
        made.append(d)
        return d, log

    yield connect
    for d in made:
        d.close()


@pytest.mark.parametrize("listener", ["unix", "inet"])
@pytest.mark.parametrize("scheme", list(SCHEMES))
def test_each_scheme_over_each_listener(connect, dovecot, listener, scheme):
    # S-1302 (and S-1304's schemes, as Dovecot stores them): OK with the canonical name.
    d, log = connect(listener)
    v = d.authenticate(dovecot.user(scheme), PW, CLIENT)
    assert (v.ok, v.user, v.temporary) == (True, dovecot.user(scheme), False)
    assert log.warnings == []


def test_ipv6_listener(connect, dovecot):
    # S-1302: inet:[::1]:PORT.
    if not dovecot.ipv6:
        pytest.skip("this host has no IPv6 loopback")
    d, _ = connect("inet6")
    assert d.authenticate(dovecot.user("ARGON2ID"), PW, CLIENT).user == dovecot.user("ARGON2ID")


def test_renamed_user_gets_the_canonical_name(connect, dovecot):
    # S-1302, S-1301: the name that authenticated is Dovecot's user=, in lower case.
    d, _ = connect()
    v = d.authenticate(dovecot.RENAMED, PW, CLIENT)
    assert (v.ok, v.user) == (True, dovecot.CANONICAL)
    # Dovecot's default auth_username_format (%Lu) lower-cases what the client typed.
    v = d.authenticate(dovecot.user("SHA256-CRYPT").upper(), PW, CLIENT)
    assert (v.ok, v.user) == (True, dovecot.user("SHA256-CRYPT"))


def test_failures_look_alike(connect, dovecot):
    # S-1302, S-503, S-510: a wrong password, an unknown name and nologin all
    # fail (535) the same way; only the log's reason may differ.
    d, _ = connect()
    verdicts = [d.authenticate(dovecot.user("SHA512-CRYPT"), b"wrong password", CLIENT),
                d.authenticate("nobody-here@example.org", PW, CLIENT),
                d.authenticate(dovecot.NOLOGIN, PW, CLIENT)]
    for v in verdicts:
        assert (v.known, v.ok, v.user, v.temporary) == (True, False, None, False)
    assert "nologin" in verdicts[2].reason and "disabled-by-the-test" in verdicts[2].reason


def test_temp_fail_is_temporary(connect, dovecot):
    # S-1302: FAIL code=temp_fail (a passdb that cannot answer) is 454; Dovecot
    # itself answered, so it is not an outage.
    d, log = connect()
    v = d.authenticate(dovecot.TEMPFAIL, PW, CLIENT)
    assert (v.ok, v.temporary) == (False, True)
    assert log.warnings == []
    dovecot.wait_log(r"checkpassword\(tempfail@example\.org.*exited with status 111")


@pytest.mark.parametrize("in_name", [True, False])
@pytest.mark.parametrize("char", ["\t", "\r", "\n", "\0"])
def test_injection_never_reaches_dovecot(connect, dovecot, in_name, char):
    # S-1302: TAB, CR, LF or NUL in the name or password fails without asking Dovecot.
    d, _ = connect()
    name = dovecot.RENAMED + char if in_name else dovecot.RENAMED
    password = PW if in_name else PW + char.encode()
    session = f"inject-{time.monotonic_ns()}"
    v = d.authenticate(name, password, Client(session=session))
    assert (v.ok, v.temporary) == (False, False)
    # A request that does reach Dovecot, logged after the refused one would have
    # been; it is the first on its connection: the refused one took no ID.
    assert d.authenticate(dovecot.RENAMED, PW, Client(session=session + "-control")).ok
    dovecot.wait_log(rf"client in: AUTH\t\d+\tPLAIN\tservice=smtp\tsession={session}-control\t")
    assert [r for r in dovecot.requests() if f"session={session}" in r] == [
        f"AUTH\t1\tPLAIN\tservice=smtp\tsession={session}-control\tno-penalty\tresp=<hidden>"]


def test_what_dovecot_receives(connect, dovecot):
    # S-1302: the AUTH line as Dovecot parsed and logged it, over one kept connection.
    # The session ID is this test's own, and Dovecot's log process writes a
    # line after the reply is sent: the test waits for the second.
    d, _ = connect()
    session = f"t1-{time.monotonic_ns()}"
    client = Client(session=session, local_ip="127.0.0.1", local_port=587, remote_ip="127.0.0.1",
                    remote_port=40000, tls=True)
    for _ in range(2):
        assert d.authenticate(dovecot.user("BLF-CRYPT"), PW, client).ok
    dovecot.wait_log(rf"client in: AUTH\t2\tPLAIN\tservice=smtp\tsession={session}\t")
    got = [r for r in dovecot.requests() if f"session={session}\t" in r]
    assert got == [f"AUTH\t{n}\tPLAIN\tservice=smtp\tsession={session}\tlip=127.0.0.1\trip=127.0.0.1\tlport=587"
                   f"\trport=40000\tsecured=tls\tno-penalty\tresp=<hidden>" for n in (1, 2)]


def test_concurrent_threads_get_their_own_answers(connect, dovecot):
    # S-1302: 16 threads at once over the pool, a quarter with a wrong password
    # (each delayed by Dovecot's 2 s auth_failure_delay).
    d, log = connect()
    users = [dovecot.user(s) for s in SCHEMES] + [dovecot.RENAMED]
    results: dict[int, object] = {}

    def run(i: int) -> None:
        name = users[i % len(users)]
        results[i] = d.authenticate(name, b"wrong" if i % 4 == 0 else PW, CLIENT)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    for i in range(16):
        v = results[i]
        name = users[i % len(users)]
        expected = dovecot.CANONICAL if name == dovecot.RENAMED else name
        if i % 4 == 0:
            assert (v.ok, v.user, v.temporary) == (False, None, False), (i, v)
        else:
            assert (v.ok, v.user, v.temporary) == (True, expected, False), (i, v)
    assert log.warnings == []


def test_check(dovecot):
    ok = DovecotDirectory(dovecot.unix, warn=print, info=print)
    assert ok.check() is None
    # A userdb listener speaks another protocol: check says so.
    wrong = DovecotDirectory(f"unix:{dovecot.root}/run/auth-userdb", warn=print, info=print, timeout=3)
    why = wrong.check()
    assert why and "auth type listener" in why


def test_dovecot_stopped_and_started_again(connect, dovecot):
    # S-1302: Dovecot down is temporary within the timeout, one warning for the
    # whole outage; started again, the same object works (one info line).
    d_unix, log_unix = connect("unix", timeout=3)
    d_inet, log_inet = connect("inet", timeout=3)
    for d in (d_unix, d_inet):
        assert d.authenticate(dovecot.user("SHA256-CRYPT"), PW, CLIENT).ok  # a kept connection now
    dovecot.stop()
    try:
        for d, log in ((d_unix, log_unix), (d_inet, log_inet)):
            for _ in range(3):
                start = time.monotonic()
                v = d.authenticate(dovecot.user("SHA256-CRYPT"), PW, CLIENT)
                assert (v.ok, v.temporary) == (False, True)
                assert time.monotonic() - start < 3.5
            assert len(log.warnings) == 1, log.warnings
            assert PASSWORD not in log.warnings[0]
            assert log.infos == []
    finally:
        dovecot.start()
    for d, log in ((d_unix, log_unix), (d_inet, log_inet)):
        v = d.authenticate(dovecot.user("SHA256-CRYPT"), PW, CLIENT)
        assert (v.ok, v.user) == (True, dovecot.user("SHA256-CRYPT"))
        assert len(log.warnings) == 1 and len(log.infos) == 1


def test_restart_behind_a_kept_connection(connect, dovecot):
    # A restart between two requests: the idle connection is dead, a new one
    # is opened, and the client never sees it (no temporary failure, no warning).
    d, log = connect()
    assert d.authenticate(dovecot.user("ARGON2ID"), PW, CLIENT).ok
    dovecot.stop()
    dovecot.start()
    v = d.authenticate(dovecot.user("ARGON2ID"), PW, CLIENT)
    assert (v.ok, v.temporary) == (True, False)
    assert log.warnings == []
