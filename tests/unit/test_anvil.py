"""server/anvil.py: the connection slots serve's workers share through the
master (SPEC.md S-1601, S-109), over a real socketpair: host totals, what a
dead worker held given back, malformed messages dropped, and a master that
does not answer meaning a refusal (fail closed) that leaks no slot."""

from __future__ import annotations

import threading
import time

from server.anvil import SlotKeeper, SlotsClient, channel


def test_the_keeper_counts_host_totals_by_worker():  # S-109
    keeper = SlotKeeper(total=3, per_ip=2)
    assert keeper.handle(1, b"A 1 192.0.2.1") == b"Y 1"
    assert keeper.handle(2, b"A 1 192.0.2.1") == b"Y 1"
    assert keeper.handle(2, b"A 2 192.0.2.1") == b"N 2"  # per address, whichever worker asks
    assert keeper.handle(2, b"A 3 192.0.2.2") == b"Y 3"
    assert keeper.handle(1, b"A 2 192.0.2.3") == b"N 2"  # the host's total
    assert keeper.handle(1, b"R 192.0.2.1") is None
    assert keeper.used == 2
    assert keeper.handle(1, b"R 192.0.2.1") is None  # never more than a worker took
    assert keeper.handle(1, b"R 192.0.2.2") is None  # nor another worker's slot
    assert keeper.used == 2
    assert keeper.handle(1, b"A 3 192.0.2.3") == b"Y 3"


def test_a_dead_workers_slots_are_given_back():  # S-1601
    keeper = SlotKeeper(total=4, per_ip=4)
    for seq in range(1, 4):
        assert keeper.handle(7, b"A %d 2001:db8::%d" % (seq, seq)) == b"Y %d" % seq
    assert keeper.handle(8, b"A 1 2001:db8::9") == b"Y 1"
    assert keeper.held(7) == 3
    assert keeper.forget(7) == 3
    assert keeper.used == 1 and keeper.held(7) == 0
    assert keeper.forget(7) == 0


def test_malformed_messages_are_dropped():
    keeper = SlotKeeper(total=1, per_ip=1)
    for junk in (b"", b"A", b"A x 192.0.2.1", b"A 1 192.0.2.1 more", b"A 1 " + b"9" * 65, b"Z 1",
                 b"A 12345678901 192.0.2.1", b"R", b"C x", b"A 1 \xff"):
        assert keeper.handle(1, junk) is None
    assert keeper.used == 0


def test_a_cancelled_question_gives_its_slot_back():  # S-109: refused connections hold nothing
    keeper = SlotKeeper(total=1, per_ip=1)
    assert keeper.handle(1, b"A 5 192.0.2.1") == b"Y 5"
    assert keeper.handle(1, b"C 4") is None  # not the question answered yes
    assert keeper.used == 1
    assert keeper.handle(1, b"C 5") is None
    assert keeper.used == 0
    assert keeper.handle(1, b"C 5") is None  # once
    assert keeper.used == 0


def _master(sock, keeper: SlotKeeper, delay: float = 0.0, stop: threading.Event | None = None) -> threading.Thread:
    def run() -> None:
        while stop is None or not stop.is_set():
            try:
                message = sock.recv(96)
            except OSError:
                return
            if not message:
                return
            time.sleep(delay)
            answer = keeper.handle("w", message)
            if answer is not None:
                sock.send(answer)

    t = threading.Thread(target=run, daemon=True)
    t.start()
    return t


def test_the_client_asks_and_gives_back():
    mine, theirs = channel()
    keeper = SlotKeeper(total=2, per_ip=2)
    _master(mine, keeper)
    client = SlotsClient(theirs, timeout=2, warn=lambda _: None, info=lambda _: None)
    assert client.acquire("192.0.2.1") and client.acquire("192.0.2.1")
    assert not client.acquire("192.0.2.1")
    client.release("192.0.2.1")
    deadline = time.monotonic() + 5
    while keeper.used != 1 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert keeper.used == 1
    assert client.acquire("192.0.2.2")
    theirs.close()
    mine.close()


def test_a_slow_master_means_a_refusal_and_no_leaked_slot():  # S-109: fail closed, never hang
    mine, theirs = channel()
    keeper = SlotKeeper(total=1, per_ip=1)
    warned: list[str] = []
    informed: list[str] = []
    client = SlotsClient(theirs, timeout=0.2, warn=warned.append, info=informed.append)
    t0 = time.monotonic()
    assert not client.acquire("192.0.2.1")  # nobody answers
    assert not client.acquire("192.0.2.1")
    assert time.monotonic() - t0 < 2
    assert warned == ["connection slots: the master process does not answer (no answer within 0.2 s); "
                      "refusing new connections until it does (S-109)"]
    # The master wakes up: it says yes to the first question, then reads
    # its cancellation and gives the slot back; the late answers are skipped.
    _master(mine, keeper)
    assert client.acquire("192.0.2.1")
    assert keeper.used == 1
    assert informed == ["connection slots: the master process answers again"]
    client.release("192.0.2.1")
    deadline = time.monotonic() + 5
    while keeper.used and time.monotonic() < deadline:
        time.sleep(0.01)
    assert keeper.used == 0


def test_a_gone_master_means_a_refusal():
    mine, theirs = channel()
    mine.close()
    client = SlotsClient(theirs, timeout=1, warn=lambda _: None, info=lambda _: None)
    t0 = time.monotonic()
    assert not client.acquire("192.0.2.1")
    assert time.monotonic() - t0 < 1
    client.release("192.0.2.1")  # no exception
