"""state/redis.py, the shared state store, against a real private
redis-server (SPEC.md S-1401, S-1402, S-511, S-1201, S-514): the S-511
delay rules as SQLite keeps them, sliding windows on the server's clock,
reservations that are atomic across threads and hosts, keys that all have
the prefix and a TTL, the scripts surviving SCRIPT FLUSH, the shared SCRAM
secret, failing open, and the configuration keys. No fake: where the
behaviour is Redis's (atomicity, TTL, scripts), Redis shows it."""

from __future__ import annotations

import threading
import time

import pytest

import redistest
from sasl.limits import THROTTLE_MAX_NAMES

pytestmark = pytest.mark.xdist_group("redis")


@pytest.fixture
def prefix(request):
    return redistest.unused_prefix(request.node.name)


@pytest.fixture
def make_store(redis_server, prefix, tmp_path):
    from state.redis import RedisStore

    made = []

    def make(url: str | None = None, directory=None, timeout: float = 0.5, store_prefix: str | None = None):
        s = RedisStore(url or redis_server.unix_url(), store_prefix or prefix, timeout,
                       str(directory or tmp_path / f"state{len(made)}"))
        made.append(s)
        return s

    yield make
    for s in made:
        s.close()


@pytest.fixture
def store(make_store):
    return make_store()


def keys(redis_server, prefix: str, db: int = 0) -> list[bytes]:
    return sorted(redis_server.client(db).scan_iter(match=prefix.encode() + b"*"))


def dead_url() -> str:
    return f"redis://127.0.0.1:{redistest.free_port()}/0"  # nothing listens there


# -- login failures (S-511) ---------------------------------------------------------------
def test_delay_doubles_per_failure_up_to_thirty_seconds(store):  # S-511
    assert store.delay("192.0.2.1") == 0
    for expected in (1, 2, 4, 8, 16, 30, 30):
        store.failed("192.0.2.1", "alice")
        assert store.delay("192.0.2.1") == expected
    assert store.delay("192.0.2.2") == 0


def test_a_host_sees_another_hosts_failures_and_success(make_store):  # S-1401, S-511
    a, b = make_store(), make_store()  # two hosts: their own state_dir, one Redis
    a.failed("192.0.2.1", "bob")
    a.failed("192.0.2.1", "alice")
    assert b.delay("192.0.2.1") == 2  # b's own process never saw a failure
    b.succeeded("192.0.2.1", "alice")  # hashed alike on both hosts: b forgets what a recorded ...
    assert a.delay("192.0.2.1") == 1  # ... for a too; bob's failure stands (S-511: only that name)
    assert make_store().delay("192.0.2.1") == 1


def test_many_names_fold_into_a_bucket_no_success_clears(store, redis_server, prefix):  # S-511
    for i in range(THROTTLE_MAX_NAMES + 5):
        store.failed("192.0.2.1", f"user{i}")
    fields = redis_server.client().hkeys(f"{prefix}fail:192.0.2.1")
    assert len(fields) == THROTTLE_MAX_NAMES + 1  # bounded: the names kept and the bucket (as SQLite)
    for i in range(THROTTLE_MAX_NAMES + 5):
        store.succeeded("192.0.2.1", f"user{i}")
    store.fallback = type(store.fallback)()  # this process's own memory aside: what Redis holds
    assert store.delay("192.0.2.1") > 0  # the folded failures stay


def test_failures_are_forgotten_fifteen_minutes_after_the_last(store, redis_server, prefix,
                                                                monkeypatch):  # S-511
    key = f"{prefix}fail:192.0.2.1"
    store.failed("192.0.2.1", "alice")
    ttl = redis_server.client().pttl(key)
    assert 899_000 < ttl <= 900_000  # expires 15 minutes after the failure ...
    redis_server.client().pexpire(key, 100_000)
    store.failed("192.0.2.1", "bob")
    assert redis_server.client().pttl(key) > 899_000  # ... after the last one
    from state import redis as module

    monkeypatch.setattr(module, "THROTTLE_FORGET_SECONDS", 0.3)  # Redis's own expiry, made short
    store.failed("192.0.2.9", "alice")
    store.fallback = type(store.fallback)()
    assert store.delay("192.0.2.9") == 1
    time.sleep(0.45)
    assert store.delay("192.0.2.9") == 0


def test_failed_names_are_kept_only_as_keyed_hashes(store, redis_server, prefix):  # S-1202 amended
    typed = "correct horse battery staple"  # a password typed into the user field
    store.failed("192.0.2.1", typed)
    store.failed("192.0.2.1", "alice")
    client = redis_server.client()
    dump = b"".join(client.dump(k) or b"" for k in keys(redis_server, prefix))
    assert typed.encode() not in dump and b"alice" not in dump
    assert len(client.hkeys(f"{prefix}fail:192.0.2.1")) == 2


# -- sending reservations (S-1201) ---------------------------------------------------------
def test_a_reservation_is_refused_at_the_limit_and_given_back(store):  # S-1201 amended
    held = [store.reserve("alice", "messages", 3, 3600, 30) for _ in range(3)]
    assert all(h is not None and h.counted for h in held)
    assert store.reserve("alice", "messages", 3, 3600, 30) is None
    store.release(held[:1])  # a message that was not accepted gives its count back
    assert store.reserve("alice", "messages", 3, 3600, 30) is not None
    assert store.reserve("alice", "messages", 3, 3600, 30) is None
    assert store.reserve("alice", "recipients", 3, 3600, 30) is not None  # another kind, another window
    assert store.reserve("bob", "messages", 3, 3600, 30) is not None
    assert store.usage("alice", 3600, 3600).messages == 3


def test_windows_slide_on_the_servers_clock(store):  # S-1201, S-1401
    for _ in range(2):
        assert store.reserve("alice", "messages", 2, 1.0, 0.1).counted
    assert store.reserve("alice", "messages", 2, 1.0, 0.1) is None
    time.sleep(1.15)  # the steps leave the window: pruned, counted no more
    assert store.reserve("alice", "messages", 2, 1.0, 0.1).counted
    assert store.usage("alice", 1.0, 1.0).messages == 1


def test_the_local_clock_does_not_matter(store, monkeypatch):  # S-1401: hosts with skewed clocks agree
    for _ in range(2):
        assert store.reserve("alice", "messages", 2, 3600, 30).counted
    real = time.time
    monkeypatch.setattr(time, "time", lambda: real() + 7200)  # this host's clock two hours ahead
    assert store.reserve("alice", "messages", 2, 3600, 30) is None  # the window is the server's


def test_reservations_are_atomic_across_threads_and_hosts(make_store):  # S-1201 amended
    hosts = [make_store(), make_store()]
    got = []
    barrier = threading.Barrier(16)

    def one(s):
        barrier.wait()
        got.append(s.reserve("alice", "messages", 5, 3600, 30))

    threads = [threading.Thread(target=one, args=(hosts[i % 2],)) for i in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sum(1 for h in got if h is not None) == 5


def test_a_reservation_left_by_a_dead_process_expires_with_its_window(store, redis_server, prefix):  # S-1201
    store.reserve("alice", "messages", 10, 3600, 30)
    ttl = redis_server.client().pttl(f"{prefix}sent:messages:alice")
    assert 3_600_000 < ttl <= 3_630_000  # the window and one step, not more
    store.reserve("alice", "recipients", 10, 1.0, 0.5)
    time.sleep(1.6)
    assert redis_server.client().exists(f"{prefix}sent:recipients:alice") == 0


def test_first_refusal_once_per_window(store):  # S-1201: logged once
    assert store.first_refusal("alice", "messages", 0.3)
    assert not store.first_refusal("alice", "messages", 0.3)
    assert store.first_refusal("alice", "recipients", 0.3)
    assert store.first_refusal("bob", "messages", 0.3)
    time.sleep(0.4)
    assert store.first_refusal("alice", "messages", 0.3)


def test_scripts_survive_a_script_flush(store, redis_server):  # S-1401: NOSCRIPT after a restart or failover
    assert store.reserve("alice", "messages", 10, 3600, 30).counted
    redis_server.client().script_flush()
    assert store.reserve("alice", "messages", 10, 3600, 30).counted
    store.failed("192.0.2.1", "alice")
    assert not store.failing


def test_every_key_has_the_prefix_and_a_ttl(make_store, redis_server, prefix):  # S-1401
    db = 7  # a database of this test's alone: a key without the prefix would show
    redis_server.client(db).flushdb()
    s = make_store(redis_server.unix_url(db))
    s.reserve("alice", "messages", 1, 3600, 30)
    s.reserve("alice", "messages", 1, 3600, 30)
    hold = s.reserve("alice", "recipients", 5, 86400, 30)
    s.release([hold])
    s.first_refusal("alice", "messages", 3600)
    s.failed("192.0.2.1", "mallory")
    s.succeeded("192.0.2.1", "mallory")
    s.failed("192.0.2.1", "eve")
    s.secret()
    client = redis_server.client(db)
    found = list(client.scan_iter())
    assert len(found) == 5, found  # the two windows, the note, the failures, the secret
    for key in found:
        assert key.startswith(prefix.encode()), key
        assert client.pttl(key) > 0, key


def test_counts_and_reset_for_the_admin_command(store):  # S-1403
    for _ in range(2):
        store.reserve("alice", "messages", 10, 3600, 30)
    store.reserve("alice", "recipients", 10, 86400, 30)
    store.reserve("b*b", "messages", 10, 3600, 30)
    store.first_refusal("alice", "messages", 3600)
    counts = store.counts(None, (3600, 86400))
    assert {u: (c.messages, c.recipients) for u, c in counts.items()} == {"alice": (2, 1), "b*b": (1, 0)}
    assert store.counts("b*b", (3600, 86400))["b*b"].messages == 1
    assert store.counts("alice", (3600, 0))["alice"].recipients == 0  # the recipient limit is off
    assert store.reset("alice") == 2
    assert store.counts(None, (3600, 86400)).keys() == {"b*b"}
    assert store.first_refusal("alice", "messages", 3600)  # the note went with the counts


# -- the SCRAM secret (S-514, S-1401) ------------------------------------------------------
def test_every_host_gets_the_same_secret_and_keeps_a_copy(make_store, tmp_path, redis_server, prefix):  # S-514
    a, b = make_store(directory=tmp_path / "a"), make_store(directory=tmp_path / "b")
    secret = a.secret()
    assert len(secret) == 32 and b.secret() == secret
    assert redis_server.client().get(f"{prefix}secret") == secret
    for host in ("a", "b"):
        copy = tmp_path / host / "secret"
        assert copy.read_bytes() == secret and copy.stat().st_mode & 0o777 == 0o600


def test_a_hosts_copy_holds_while_redis_is_down(make_store, tmp_path):  # S-514 amended, S-1402
    secret = make_store(directory=tmp_path / "a").secret()
    down = make_store(url=dead_url(), directory=tmp_path / "a")
    assert down.secret() == secret  # the outage does not change this host's salts


def test_a_first_start_while_redis_is_down_then_the_shared_secret_wins(make_store, tmp_path, capfd):  # S-514
    from util import maillog

    maillog.setup("stderr")
    shared = make_store(directory=tmp_path / "up").secret()
    own = make_store(url=dead_url(), directory=tmp_path / "new").secret()
    assert own != shared and (tmp_path / "new" / "secret").read_bytes() == own
    assert make_store(url=dead_url(), directory=tmp_path / "new").secret() == own  # one secret per host
    assert "a secret of its own" in capfd.readouterr().err
    again = make_store(directory=tmp_path / "new")  # the host's next process, Redis answering
    assert again.secret() == shared
    assert (tmp_path / "new" / "secret").read_bytes() == shared
    assert "holds another secret" in capfd.readouterr().err


def test_a_secret_that_is_not_msas_is_replaced(make_store, redis_server, prefix, tmp_path):  # S-514
    redis_server.client().set(f"{prefix}secret", b"short")
    secret = make_store(directory=tmp_path / "x").secret()
    assert len(secret) == 32 and redis_server.client().get(f"{prefix}secret") == secret


def test_the_names_key_comes_from_the_shared_secret(make_store, tmp_path):  # S-1202, S-1401
    a, b = make_store(directory=tmp_path / "a"), make_store(directory=tmp_path / "b")
    assert a._hashed("alice") == b._hashed("alice") != a._hashed("bob")


# -- faults (S-1402) ------------------------------------------------------------------------
def test_an_unreachable_redis_fails_open_with_one_warning(make_store, capfd):  # S-1402
    from util import maillog

    maillog.setup("stderr")
    s = make_store(url=dead_url())
    hold = s.reserve("alice", "messages", 1, 3600, 30)
    assert hold is not None and not hold.counted  # the limits fail open
    s.release([hold])
    s.failed("192.0.2.1", "alice")
    assert s.delay("192.0.2.1") == 1  # the delay holds in this process
    t0 = time.monotonic()
    for _ in range(50):  # within the episode's pause: no attempt at all, no wait
        assert s.reserve("alice", "messages", 1, 3600, 30).counted is False
        assert s.first_refusal("alice", "messages", 3600)
    assert time.monotonic() - t0 < 1.0  # (a wait per call would be 50 x 0.5 s)
    assert s.failing
    err = capfd.readouterr().err
    assert err.count("until it works again") == 1, err
    assert s.problem() is not None


def test_error_replies_fail_open_too(store, redis_server, prefix, capfd):  # S-1402: "answering errors"
    from util import maillog

    maillog.setup("stderr")
    redis_server.client().set(f"{prefix}sent:messages:alice", b"not a window")  # WRONGTYPE for the script
    hold = store.reserve("alice", "messages", 1, 3600, 30)
    assert hold is not None and not hold.counted
    assert "WRONGTYPE" in capfd.readouterr().err
    assert store.failing
    redis_server.client().delete(f"{prefix}sent:messages:alice")
    time.sleep(0.6)  # the episode's first pause
    assert store.reserve("alice", "messages", 1, 3600, 30).counted  # the same connection serves again
    assert "works again" in capfd.readouterr().err


def test_a_server_that_never_answers_costs_at_most_the_timeout(make_store):  # S-1402
    import socket

    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen(64)  # the kernel accepts; nobody ever answers
    try:
        s = make_store(url=f"redis://127.0.0.1:{silent.getsockname()[1]}/0", timeout=0.3)
        t0 = time.monotonic()
        assert not s.reserve("alice", "messages", 1, 3600, 30).counted
        took = time.monotonic() - t0
        assert 0.25 < took < 2.0, took
        t0 = time.monotonic()
        s.failed("192.0.2.1", "alice")
        s.delay("192.0.2.1")
        assert time.monotonic() - t0 < 0.5  # the episode's pause: failing open at once
    finally:
        silent.close()


def test_the_store_works_again_after_a_pause_and_says_so(make_store, redis_server, capfd, monkeypatch):  # S-1402
    from state import redis as module
    from util import maillog

    maillog.setup("stderr")
    monkeypatch.setattr(module, "RETRY_FIRST", 0.2)
    s = make_store()
    s.mark_failing("was down at start")  # serve's start-up check logged the episode's warning
    assert s.reserve("alice", "messages", 5, 3600, 30).counted  # tried at once: it works
    assert not s.failing
    err = capfd.readouterr().err
    assert "works again" in err and "until it works again" not in err


def test_connections_closed_by_the_server_are_made_again_without_an_episode(store, redis_server):  # S-1402
    assert store.reserve("alice", "messages", 10, 3600, 30).counted
    killed = redis_server.client().client_kill_filter(_type="normal", skipme=True)
    assert killed >= 1  # what a restart or the server's idle timeout does to the pool
    assert store.reserve("alice", "messages", 10, 3600, 30).counted
    assert not store.failing


def test_a_missing_redis_module_is_named(monkeypatch):  # S-1403
    import importlib.util

    from state.redis import module_problem

    assert module_problem() is None
    monkeypatch.setattr(importlib.util, "find_spec", lambda name: None)
    assert "python3-redis" in module_problem()


# -- configuration (CONTRACT.md: state, state_prefix, state_timeout) -------------------------
def _parse(tmp_path, text: str):
    from server import config

    return config.parse("[msa]\nlisten = 127.0.0.1:0 starttls\n" + text, str(tmp_path / "m.conf"))


def test_state_defaults_and_urls(tmp_path):  # S-1401, CONTRACT
    cfg = _parse(tmp_path, "")
    assert (cfg.state, cfg.state_prefix, cfg.state_timeout) == ("sqlite", "msa:", 0.5)
    for url in ("redis://:secret@redis.example:6380/2", "rediss://redis.example?ssl_ca_certs=/etc/ca.pem",
                "unix:///run/redis/redis.sock?db=1", "redis://[::1]/0", "redis://msa:pw@10.0.0.5"):
        assert _parse(tmp_path, f"state = {url}\n").state == url
    cfg = _parse(tmp_path, "state = SQLite\nstate_prefix = mail:\nstate_timeout = 0.2\n")
    assert (cfg.state, cfg.state_prefix, cfg.state_timeout) == ("sqlite", "mail:", 0.2)


@pytest.mark.parametrize("line, why", [
    ("state = memcached://x", "must be sqlite or a Redis URL"),
    ("state = redis://", "names no host"),
    ("state = redis://h/x", "must be a database number"),
    ("state = redis://h?socket_timeout=9", "only db may be given"),
    ("state = unix://relative.sock", "unix:///PATH"),
    ("state = redis://:p#w@h", "%23"),
    ("state_prefix = has space", "state_prefix must be"),
    ("state_timeout = 0", "state_timeout must be between"),
    ("state_timeout = slow", "state_timeout must be a number"),
])
def test_bad_state_settings_are_refused_with_file_and_line(tmp_path, line, why):  # CONTRACT
    from server import config

    with pytest.raises(config.ConfigError) as e:
        _parse(tmp_path, line + "\n")
    assert any(p.startswith(f"{tmp_path / 'm.conf'}:3: ") and why in p for p in e.value.problems), e.value.problems
    assert not any("p#w" in p for p in e.value.problems)  # a password is never repeated


def test_the_url_shown_in_logs_has_no_password():  # S-1402: the warnings name the server
    from state.redis import shown_url

    assert shown_url("redis://:hunter2@h:6379/1") == "redis://h:6379/1"
    assert shown_url("redis://msa:hunter2@h/0") == "redis://msa@h/0"
    assert shown_url("unix://:hunter2@/run/r.sock?db=2") == "unix:///run/r.sock?db=2"
