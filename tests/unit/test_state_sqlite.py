"""state/sqlite.py, the state store, on a real SQLite file with a fake clock
(SPEC.md S-511, S-1201, S-1202): the login delay rules of S-511 as the
in-process throttle has them, the sliding windows, bounds, and failing open."""

from __future__ import annotations

import os

import pytest

from sasl.limits import THROTTLE_FORGET_SECONDS, THROTTLE_MAX_NAMES
from state.limits import SendingLimits
from state.sqlite import SqliteStore, open_problem


class Clock:
    def __init__(self) -> None:
        self.now = 1_800_000_000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock():
    return Clock()


@pytest.fixture
def store(tmp_path, clock):
    s = SqliteStore(str(tmp_path / "state"), clock=clock)
    yield s
    s.close()


def test_delay_doubles_per_failure_up_to_thirty_seconds(store):  # S-511
    assert store.delay("192.0.2.1") == 0
    for expected in (1, 2, 4, 8, 16, 30, 30):
        store.failed("192.0.2.1", "alice")
        assert store.delay("192.0.2.1") == expected
    assert store.delay("192.0.2.2") == 0


def test_success_forgets_only_its_own_name(store):  # S-511 (amended)
    store.failed("192.0.2.1", "bob")
    store.failed("192.0.2.1", "carol")
    store.failed("192.0.2.1", "alice")
    assert store.delay("192.0.2.1") == 4
    store.succeeded("192.0.2.1", "alice")
    assert store.delay("192.0.2.1") == 2  # bob's and carol's failures stand


def test_failures_are_forgotten_fifteen_minutes_after_the_last(store, clock):  # S-511
    store.failed("192.0.2.1", "alice")
    clock.now += THROTTLE_FORGET_SECONDS - 1
    store.failed("192.0.2.1", "bob")
    assert store.delay("192.0.2.1") == 2  # the address's last failure is recent
    clock.now += THROTTLE_FORGET_SECONDS
    assert store.delay("192.0.2.1") == 0


def test_many_names_fold_into_a_bucket_no_success_clears(store):  # S-511
    for i in range(THROTTLE_MAX_NAMES + 5):
        store.failed("192.0.2.1", f"user{i}")
    assert store.delay("192.0.2.1") == 30
    for i in range(THROTTLE_MAX_NAMES + 5):
        store.succeeded("192.0.2.1", f"user{i}")
    assert store.delay("192.0.2.1") > 0  # the folded failures stay


def test_a_second_process_sees_the_failures(store, tmp_path, clock):  # S-1202: shared by inetd processes
    store.failed("192.0.2.1", "alice")
    other = SqliteStore(str(tmp_path / "state"), clock=clock)
    assert other.delay("192.0.2.1") == 1
    other.close()


def _reserve(store, user: str, kind: str, times: int = 1, limit: int = 10**6, period: float = 86400):
    return [store.reserve(user, kind, limit, period) for _ in range(times)]


def test_windows_slide(store, clock):  # S-1201
    _reserve(store, "alice", "messages")
    _reserve(store, "alice", "recipients", 3)
    clock.now += 1800
    _reserve(store, "alice", "messages")
    _reserve(store, "alice", "recipients", 2)
    assert store.usage("alice", 3600, 86400).messages == 2
    clock.now += 1801
    usage = store.usage("alice", 3600, 86400)
    assert (usage.messages, usage.recipients) == (1, 5)
    clock.now += 86400
    assert store.usage("alice", 3600, 86400).recipients == 0
    assert store.usage("bob", 3600, 86400).messages == 0


def test_a_reservation_is_refused_at_the_limit_and_given_back(store, clock):  # S-1201 amended
    held = _reserve(store, "alice", "messages", 3, limit=3, period=3600)
    assert all(h is not None and h.counted for h in held)
    assert store.reserve("alice", "messages", 3, 3600) is None  # the fourth
    store.release(held[:1])  # a message that was not accepted gives its count back
    assert store.reserve("alice", "messages", 3, 3600) is not None
    assert store.reserve("alice", "messages", 3, 3600) is None
    clock.now += 3601  # the window slides past them: reservations left behind expire with it
    assert store.reserve("alice", "messages", 3, 3600) is not None


def test_reservations_are_atomic_across_threads_and_stores(store, tmp_path, clock):  # S-1201 amended
    import threading

    other = SqliteStore(str(tmp_path / "state"), clock=clock)  # another process's view of the same file
    got = []
    barrier = threading.Barrier(16)

    def one(s):
        barrier.wait()
        got.append(s.reserve("alice", "messages", 5, 3600))

    threads = [threading.Thread(target=one, args=(store if i % 2 else other,)) for i in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sum(1 for h in got if h is not None) == 5
    other.close()


def test_first_refusal_once_per_window(store, clock):  # S-1201: logged once
    assert store.first_refusal("alice", "messages", 3600)
    assert not store.first_refusal("alice", "messages", 3600)
    assert store.first_refusal("alice", "recipients", 3600)
    assert store.first_refusal("bob", "messages", 3600)
    clock.now += 3600
    assert store.first_refusal("alice", "messages", 3600)


def test_old_rows_are_pruned(store, clock):  # S-1202: bounded
    import sqlite3

    for _ in range(10):
        _reserve(store, "alice", "messages")
        store.failed("192.0.2.1", "alice")
    clock.now += 8 * 86400
    _reserve(store, "bob", "messages")  # a write prunes, at most once a minute
    db = sqlite3.connect(store.path)
    assert db.execute("SELECT COUNT(*) FROM sent").fetchone()[0] == 1
    assert db.execute("SELECT COUNT(*) FROM failures").fetchone()[0] == 0
    db.close()


def test_reservations_from_the_limits(store, tmp_path):  # S-1201
    from server import config

    cfg = config.parse("[msa]\nlisten = 127.0.0.1:0 starttls\nlimit_messages = 2/1h\nlimit_recipients = 5/1d\n",
                       str(tmp_path / "msa.conf"))
    limits = SendingLimits(store, cfg.limit_messages, cfg.limit_recipients)
    holds = [limits.reserve("alice", "recipients") for _ in range(5)]
    assert all(h is not None and h.counted for h in holds)
    assert limits.reserve("alice", "recipients") is None
    assert limits.reserve("alice", "messages") is not None and limits.reserve("alice", "messages") is not None
    assert limits.reserve("alice", "messages") is None
    limits.release(holds[:2])
    assert limits.reserve("alice", "recipients") is not None
    assert limits.first_refusal("alice", "messages") == "messages 2/1h"
    assert limits.first_refusal("alice", "messages") is None


def test_limits_off(store, tmp_path):  # CONTRACT: 0 turns a limit off
    from server import config

    cfg = config.parse("[msa]\nlisten = 127.0.0.1:0 starttls\nlimit_messages = 0\nlimit_recipients = 0\n",
                       str(tmp_path / "msa.conf"))
    limits = SendingLimits(store, cfg.limit_messages, cfg.limit_recipients)
    for _ in range(100):
        hold = limits.reserve("alice", "messages")
        assert hold is not None and not hold.counted
    limits.release([hold])
    assert not os.path.exists(store.path)  # nothing recorded, nothing opened


@pytest.mark.parametrize("value, why", [
    ("lots", "must be N/PERIOD"), ("10/1w", "must be N/PERIOD"), ("0/1h", "must be N/PERIOD"),
    ("5/8d", "between 1s and 7d"), ("5/0m", "between 1s and 7d"),
])
def test_bad_limits_are_refused_with_file_and_line(tmp_path, value, why):  # CONTRACT limit_*
    from server import config

    with pytest.raises(config.ConfigError) as e:
        config.parse(f"[msa]\nlisten = 127.0.0.1:0 starttls\nlimit_messages = {value}\n", str(tmp_path / "m.conf"))
    assert any(p.startswith(f"{tmp_path / 'm.conf'}:3: limit_messages") and why in p for p in e.value.problems)


def test_a_failing_store_fails_open_and_warns_once(tmp_path, clock, capfd):  # S-1202
    from util import maillog

    maillog.setup("stderr")
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    s = SqliteStore(str(blocker), clock=clock)
    assert s.usage("alice", 3600, 3600) is None
    hold = s.reserve("alice", "messages", 1, 3600)
    assert hold is not None and not hold.counted  # the limits then fail open
    s.failed("192.0.2.1", "alice")
    assert s.delay("192.0.2.1") == 1  # the delay still holds in this process
    assert capfd.readouterr().err.count("until it works again") == 1
    assert open_problem(str(blocker)) is not None
    assert open_problem(str(tmp_path)) is None


def test_a_write_locked_store_is_one_episode_not_one_per_message(store, tmp_path, capfd, monkeypatch):  # S-1202
    import sqlite3

    from state import sqlite as state
    from util import maillog

    maillog.setup("stderr")
    monkeypatch.setattr(state, "BUSY_TIMEOUT", 0.05)
    monkeypatch.setattr(state, "RETRY_FIRST", 0.0)  # every call tries the file again
    monkeypatch.setattr(state, "RETRY_MAX", 0.0)
    _reserve(store, "alice", "messages")
    store.close()
    locker = sqlite3.connect(store.path, isolation_level=None)
    locker.execute("BEGIN IMMEDIATE")  # another process holds the write lock; reads still work
    try:
        for _ in range(5):
            assert store.usage("alice", 3600, 3600) is not None  # a read works ...
            assert not store.reserve("alice", "messages", 100, 3600).counted  # ... a write fails open
            store.failed("192.0.2.9", "bob")
        err = capfd.readouterr().err
        assert err.count("until it works again") == 1, err
        assert "works again" not in err.replace("until it works again", "")
    finally:
        locker.execute("ROLLBACK")
        locker.close()
    assert store.reserve("alice", "messages", 100, 3600).counted
    assert capfd.readouterr().err.count("works again") == 1


def test_failed_names_are_kept_only_as_keyed_hashes(store):  # S-1202 amended, S-511
    import sqlite3

    typed = "correct horse battery staple"  # a password typed into the user field
    store.failed("192.0.2.1", typed)
    store.failed("192.0.2.1", "alice")
    raw = open(store.path, "rb").read() + b"".join(
        open(store.path + ext, "rb").read() for ext in ("-wal",) if os.path.exists(store.path + ext))
    assert typed.encode() not in raw and b"alice" not in raw
    with sqlite3.connect(store.path) as db:
        names = [n for (n,) in db.execute("SELECT name FROM failures")]
    assert len(names) == 2 and typed not in names and "alice" not in names
    store.succeeded("192.0.2.1", "alice")  # S-511's per-name rule still works on the hashes
    assert store.delay("192.0.2.1") == 1
    other = SqliteStore(store.directory)  # another process hashes alike
    other.succeeded("192.0.2.1", typed)
    assert other.delay("192.0.2.1") == 0  # (store's in-process fallback still counts its own)
    other.close()


def test_files_are_0600_whatever_the_umask(tmp_path):  # S-1202 amended
    old = os.umask(0o022)
    try:
        s = SqliteStore(str(tmp_path / "state"))
        assert s.reserve("alice", "messages", 10, 3600).counted
        s.failed("192.0.2.1", "alice")
        names = ["state.sqlite", "state.sqlite-wal", "state.sqlite-shm", "secret"]
        for name in names:
            path = tmp_path / "state" / name
            assert path.exists(), name
            assert path.stat().st_mode & 0o777 == 0o600, name
        assert (tmp_path / "state").stat().st_mode & 0o777 == 0o700
        s.close()
    finally:
        os.umask(old)


def test_an_older_store_readable_by_others_is_narrowed(tmp_path):  # S-1202 amended
    d = tmp_path / "state"
    s = SqliteStore(str(d))
    s.reserve("alice", "messages", 10, 3600)
    s.close()
    for name in ("state.sqlite", "state.sqlite-wal", "state.sqlite-shm"):
        if (d / name).exists():
            (d / name).chmod(0o644)
    s = SqliteStore(str(d))
    assert s.usage("alice", 3600, 3600).messages == 1
    assert all((d / n).stat().st_mode & 0o777 == 0o600 for n in ("state.sqlite",))
    s.close()


def test_a_symlinked_store_is_refused(tmp_path, capfd):  # S-1202 amended
    from util import maillog

    maillog.setup("stderr")
    d = tmp_path / "state"
    d.mkdir()
    target = tmp_path / "elsewhere.sqlite"
    (d / "state.sqlite").symlink_to(target)
    s = SqliteStore(str(d))
    assert not s.reserve("alice", "messages", 1, 3600).counted  # fails open
    assert not target.exists()  # nothing was written through the link
    assert "symbolic link" in capfd.readouterr().err
    assert "symbolic link" in open_problem(str(d))


def test_the_secret_is_made_once_and_outlives_a_broken_store(tmp_path):  # S-514 amended
    from state.sqlite import load_secret

    d = tmp_path / "state"
    a, b = SqliteStore(str(d)), SqliteStore(str(d))
    secret = a.secret()
    assert len(secret) == 32 and b.secret() == secret
    (d / "state.sqlite").write_bytes(b"junk" * 100)  # the database is broken ...
    assert SqliteStore(str(d)).secret() == secret  # ... the secret is not
    assert (d / "secret").stat().st_mode & 0o777 == 0o600
    (d / "secret").write_bytes(b"short")
    with pytest.raises(OSError):
        load_secret(str(d))  # a damaged secret is said, never replaced by a random one


def test_a_version_1_store_keeps_its_scram_secret_and_forgets_typed_names(tmp_path):  # S-514, S-1202
    import sqlite3

    d = tmp_path / "state"
    d.mkdir()
    old_secret = bytes(range(32))
    with sqlite3.connect(d / "state.sqlite") as db:
        db.executescript("""
            CREATE TABLE meta (key TEXT PRIMARY KEY, value BLOB NOT NULL);
            CREATE TABLE failures (client TEXT NOT NULL, name TEXT NOT NULL, count INTEGER NOT NULL,
                last REAL NOT NULL, PRIMARY KEY (client, name));
            PRAGMA user_version = 1;""")
        db.execute("INSERT INTO meta VALUES ('scram-unknown-user-salt', ?)", (old_secret,))
        db.execute("INSERT INTO failures VALUES ('192.0.2.1', 'hunter2', 1, 0)")
    s = SqliteStore(str(d))
    s.delay("192.0.2.1")  # opens (and so migrates) the database
    assert s.secret() == old_secret
    with sqlite3.connect(d / "state.sqlite") as db:
        assert db.execute("SELECT COUNT(*) FROM failures").fetchone()[0] == 0
        assert db.execute("PRAGMA user_version").fetchone()[0] == 2
    s.close()
