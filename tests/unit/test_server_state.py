"""server/state.py, the state store, on a real SQLite file with a fake clock
(SPEC.md S-511, S-1201, S-1202): the login delay rules of S-511 as the
in-process throttle has them, the sliding windows, bounds, and failing open."""

from __future__ import annotations

import os

import pytest

from sasl.limits import THROTTLE_FORGET_SECONDS, THROTTLE_MAX_NAMES
from server.limits import SendingLimits
from server.state import Store, open_problem


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
    s = Store(str(tmp_path / "state"), clock=clock)
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
    other = Store(str(tmp_path / "state"), clock=clock)
    assert other.delay("192.0.2.1") == 1
    other.close()


def test_windows_slide(store, clock):  # S-1201
    store.record("alice", 3)
    clock.now += 1800
    store.record("alice", 2)
    assert store.usage("alice", 3600, 86400).messages == 2
    clock.now += 1801
    usage = store.usage("alice", 3600, 86400)
    assert (usage.messages, usage.recipients) == (1, 5)
    clock.now += 86400
    assert store.usage("alice", 3600, 86400).recipients == 0
    assert store.usage("bob", 3600, 86400).messages == 0


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
        store.record("alice", 1)
        store.failed("192.0.2.1", "alice")
    clock.now += 8 * 86400
    store.record("bob", 1)  # a write prunes, at most once a minute
    db = sqlite3.connect(store.path)
    assert db.execute("SELECT COUNT(*) FROM sent").fetchone()[0] == 1
    assert db.execute("SELECT COUNT(*) FROM failures").fetchone()[0] == 0
    db.close()


def test_quota_from_the_limits(store, tmp_path):  # S-1201
    from server import config

    cfg = config.parse("[msa]\nlisten = 127.0.0.1:0 starttls\nlimit_messages = 2/1h\nlimit_recipients = 5/1d\n",
                       str(tmp_path / "msa.conf"))
    limits = SendingLimits(store, cfg)
    assert limits.quota("alice").message_ok and limits.quota("alice").recipients_left == 5
    limits.record("alice", 4)
    limits.record("alice", 1)
    quota = limits.quota("alice")
    assert not quota.message_ok and quota.recipients_left == 0
    assert limits.first_refusal("alice", "messages") == "messages 2/1h"
    assert limits.first_refusal("alice", "messages") is None


def test_limits_off(store, tmp_path):  # CONTRACT: 0 turns a limit off
    from server import config

    cfg = config.parse("[msa]\nlisten = 127.0.0.1:0 starttls\nlimit_messages = 0\nlimit_recipients = 0\n",
                       str(tmp_path / "msa.conf"))
    limits = SendingLimits(store, cfg)
    limits.record("alice", 10**6)
    assert limits.quota("alice").message_ok and limits.quota("alice").recipients_left is None
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
    from server import maillog

    maillog.setup("stderr")
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    s = Store(str(blocker), clock=clock)
    assert s.usage("alice", 3600, 3600) is None  # the limits then fail open
    s.record("alice", 1)
    s.failed("192.0.2.1", "alice")
    assert s.delay("192.0.2.1") == 1  # the delay still holds in this process
    assert capfd.readouterr().err.count("until it works again") == 1
    assert open_problem(str(blocker)) is not None
    assert open_problem(str(tmp_path)) is None
