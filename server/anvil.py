"""Connection slots shared by serve's workers (SPEC.md S-1601, S-109).

With `workers` > 1, `max_connections` and `max_connections_per_ip` stay
totals for the host, so one process must count: the master, as Postfix's
anvil(8) counts for its smtpd processes. Each worker has its own socketpair
with the master and asks over it: "may this address have a slot?" when a
connection is accepted, "this address gave its slot back" when the session
ends. The master knows which worker holds which slots, so when a worker
dies (killed, crashed) every slot it held is given back at once: a dead
worker never leaks a slot.

`SlotsClient` (in a worker) has the interface of runtime.Slots, acquire and
release, so the listener does not know which one it has. `SlotKeeper` (in
the master) is runtime.Slots plus who holds what.

The wire: an AF_UNIX SOCK_SEQPACKET socketpair, so every message arrives
whole or not at all, each at most MAX_MESSAGE octets of ASCII:

    worker → master   A SEQ IP     may IP have a slot? (SEQ: 1, 2, 3...)
                      C SEQ        question SEQ was given up on (no answer)
                      R IP         IP gave one back (no answer)
                      U            this worker serves (its listeners run)
                      H            this worker finished a reload (SIGHUP)
    master → worker   Y SEQ        yes, counted
                      N SEQ        no: over a cap (the client gets 421)

Bounded: one question at a time per worker (a lock), each answered within
ANSWER_TIMEOUT or the connection is refused (fail closed, S-109's 421)
with one warning for the whole episode. A question given up on is followed
by its C: the master reads a channel in order, so by then it has answered
that question, and if the answer was yes it gives the slot back itself; the
late answer is skipped by the worker. No slot is left counted for a
connection that was refused.
"""

from __future__ import annotations

import re
import socket
import threading
import time
from collections import Counter
from collections.abc import Callable, Hashable

from . import maillog
from .runtime import Slots

#: Seconds a worker waits for the master's answer before refusing the
#: connection: the master answers from memory in microseconds, so this
#: passes only when it is stopped, hung or gone.
ANSWER_TIMEOUT = 2.0
#: Seconds to queue a cancellation (C) after a question was given up on:
#: the channel's buffer has room for thousands, so this rarely waits.
CANCEL_TIMEOUT = 0.1
#: The longest message either side sends ("A 2147483647 " and an address
#: as runtime.client_ip gives it); longer ones are cut by SOCK_SEQPACKET and
#: then refused as malformed.
MAX_MESSAGE = 96
#: Sequence numbers wrap here (they only need to tell recent questions apart).
MAX_SEQ = 2**31

UP = b"U"
RELOADED = b"H"

_ADDRESS = rb"[!-~]{1,64}"
_ACQUIRE = re.compile(rb"A (\d{1,10}) (" + _ADDRESS + rb")\Z")
_RELEASE = re.compile(rb"R (" + _ADDRESS + rb")\Z")
_CANCEL = re.compile(rb"C (\d{1,10})\Z")
_ANSWER = re.compile(rb"([YN]) (\d{1,10})\Z")


def channel() -> tuple[socket.socket, socket.socket]:
    """A (master's end, worker's end) pair; neither is inherited by exec."""
    return socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)


class SlotsClient:
    """A worker's connection slots, counted by the master (runtime.Slots'
    interface). Thread-safe: the accept threads and the session threads
    take turns on one lock, so one question is on the wire at a time."""

    def __init__(self, sock: socket.socket, timeout: float = ANSWER_TIMEOUT,
                 warn: Callable[[str], None] = maillog.warning, info: Callable[[str], None] = maillog.info) -> None:
        self._sock = sock
        self._timeout = timeout
        self._warn = warn
        self._info = info
        self._lock = threading.Lock()
        self._seq = 0
        self._failing: str | None = None  # why, while the master does not answer

    def acquire(self, ip: str) -> bool:
        with self._lock:
            self._seq = self._seq % MAX_SEQ + 1
            seq = self._seq
            deadline = time.monotonic() + self._timeout
            try:
                self._send(b"A %d %s" % (seq, ip.encode("ascii", "replace")), deadline)
                while True:
                    yes, answered = self._answer(deadline)
                    if answered == seq:
                        break  # an older SEQ is the late answer to a question given up on: skipped
            except TimeoutError:
                self._failed(f"no answer within {self._timeout:g} s")
                self._cancel(seq)
                return False
            except (OSError, EOFError) as e:
                self._failed(str(e) or type(e).__name__)
                self._cancel(seq)
                return False
            self._worked()
            return yes

    def _cancel(self, seq: int) -> None:
        try:  # the master gives the slot back if it said yes meanwhile
            self._send(b"C %d" % seq, time.monotonic() + CANCEL_TIMEOUT)
        except OSError:
            pass

    def release(self, ip: str) -> None:
        with self._lock:
            try:
                self._send(b"R " + ip.encode("ascii", "replace"), time.monotonic() + self._timeout)
            except OSError as e:
                self._failed(str(e) or type(e).__name__)  # the master gives back what a dead worker held; a hung one, nothing

    def tell(self, what: bytes) -> None:
        """A report to the master (UP, RELOADED); lost when it does not listen."""
        with self._lock:
            try:
                self._send(what, time.monotonic() + self._timeout)
            except OSError:
                pass

    def _send(self, message: bytes, deadline: float) -> None:
        self._sock.settimeout(max(0.001, deadline - time.monotonic()))
        self._sock.send(message)

    def _answer(self, deadline: float) -> tuple[bool, int]:
        """The next well-formed answer: (yes, its SEQ)."""
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError
            self._sock.settimeout(left)
            data = self._sock.recv(MAX_MESSAGE)
            if not data:
                raise EOFError("the master closed the channel")
            m = _ANSWER.match(data)
            if m:
                return m.group(1) == b"Y", int(m.group(2))

    def _failed(self, why: str) -> None:
        if self._failing is None:
            self._failing = why
            self._warn(f"connection slots: the master process does not answer ({self._failing}); "
                       "refusing new connections until it does (S-109)")  # fmt: skip

    def _worked(self) -> None:
        if self._failing is not None:
            self._failing = None
            self._info("connection slots: the master process answers again")


class SlotKeeper:
    """The master's count of every worker's slots (S-109 totals), by worker."""

    def __init__(self, total: int, per_ip: int) -> None:
        self._slots = Slots(total, per_ip)
        self._held: dict[Hashable, Counter[str]] = {}
        self._last_yes: dict[Hashable, tuple[bytes, str]] = {}  # a worker's last question answered yes

    def handle(self, worker: Hashable, message: bytes) -> bytes | None:
        """The answer to a worker's A or R message (None for R, and for
        anything malformed, which is dropped)."""
        m = _ACQUIRE.match(message)
        if m:
            ip = m.group(2).decode("ascii")
            if not self._slots.acquire(ip):
                return b"N " + m.group(1)
            self._held.setdefault(worker, Counter())[ip] += 1
            self._last_yes[worker] = (m.group(1), ip)
            return b"Y " + m.group(1)
        m = _RELEASE.match(message)
        if m:
            self._release(worker, m.group(1).decode("ascii"))
            return None
        m = _CANCEL.match(message)
        if m:
            last = self._last_yes.get(worker)
            if last is not None and last[0] == m.group(1):  # said yes to a question the worker gave up on
                del self._last_yes[worker]
                self._release(worker, last[1])
        return None

    def _release(self, worker: Hashable, ip: str) -> None:
        held = self._held.get(worker)
        if held is not None and held[ip] > 0:  # never more than it took
            held[ip] -= 1
            if not held[ip]:
                del held[ip]
            self._slots.release(ip)

    def forget(self, worker: Hashable) -> int:
        """Give back every slot `worker` held (it died); how many."""
        self._last_yes.pop(worker, None)
        held = self._held.pop(worker, Counter())
        for ip, n in held.items():
            for _ in range(n):
                self._slots.release(ip)
        return sum(held.values())

    def held(self, worker: Hashable) -> int:
        return sum(self._held.get(worker, Counter()).values())

    @property
    def used(self) -> int:
        return self._slots.used
