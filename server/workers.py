"""serve's worker processes (SPEC.md S-1601): the master's side.

Python runs one thread at a time, so one process of msa keeps its session
threads on one core (server/affinity.py). With `workers = N` the process
that bound the listeners and dropped privileges (server/lifecycle.py)
becomes a master: it forks N workers, each serving every listener with
today's ThreadingTCPServer, and then only supervises them.

Why inherited sockets and not SO_REUSEPORT: the workers accept on the very
sockets the master bound (or systemd passed, LISTEN_FDS, where there is one
socket per port and no way to add more). Each listening socket is
non-blocking and every worker polls it; a connection wakes the idle
workers and whichever reaches accept() first takes it, so load goes to the
workers that have time for it (measured here: 40 sequential connections
split about 20/20, 80 from 8 threads about 40/40). SO_REUSEPORT also
spreads, but by a hash of the addresses, whatever each worker's load; it
needs a socket per worker bound before run_as, and a worker that dies
strands the connections hashed to its socket (or resets them when the
socket closes) until it is replaced. With inherited sockets a dying worker
takes only the sessions it was serving, and the others keep accepting.

The master stays single-threaded (so that forking a replacement later is
as safe as forking the first) and waits in poll(2) on: each worker's
channel (server/anvil.py: connection slots, host totals of S-109, and the
reports "up" and "reloaded"), and a pipe that signals write to
(signal.set_wakeup_fd). It forwards SIGHUP, SIGTERM and SIGINT to every
worker; each reloads or drains as a lone serve does (CONTRACT.md). A worker
that dies is logged (one line, its pid and its exit status or signal, as
Postfix's master says it) and replaced, no sooner than RESTART_INTERVAL
after that worker was last started; the slots it held are given back.
systemd hears READY=1 from the master once every worker is up (workers do
not see NOTIFY_SOCKET), RELOADING=1 and READY=1 around a reload, and
STOPPING=1.
"""

from __future__ import annotations

import contextlib
import errno
import os
import select
import signal
import socket
import threading
import time
from collections.abc import Callable
from typing import Any
from dataclasses import dataclass

from . import maillog
from .anvil import MAX_MESSAGE, RELOADED, UP, SlotKeeper, channel

#: A worker that dies is started again, but no sooner than this many
#: seconds after its previous start (S-1601: at most once a second).
RESTART_INTERVAL = 1.0
#: Beyond the workers' own drain bound, how long the master waits for
#: them before it kills what is left.
STOP_MARGIN = 5.0
#: How long the master waits for every worker's "reloaded" before it
#: tells systemd READY=1 anyway.
RELOAD_WAIT = 30.0
#: The signals the master handles; blocked around fork so that a worker
#: never runs the master's handlers.
SIGNALS = (signal.SIGHUP, signal.SIGTERM, signal.SIGINT, signal.SIGCHLD)

#: What a worker runs in the child: (its number from 1, its channel's end,
#: whether it replaces one that died) → its exit status.
StartWorker = Callable[[int, socket.socket, bool], int]


@dataclass
class _Worker:
    number: int  # 1..N, in the log and for the CPU it is pinned to
    pid: int = 0  # 0: not running
    sock: socket.socket | None = None
    started: float = 0.0  # time.monotonic() of its last fork
    up: bool = False
    restart_at: float | None = None


class Master:
    """The master of `count` workers, started and supervised by run()."""

    def __init__(self, count: int, keeper: SlotKeeper, start_worker: StartWorker, *, drain_bound: float,
                 listeners: list[socket.socket], notify: Callable[[str], None], ready_line: str) -> None:
        self.count = count
        self.keeper = keeper
        self._start_worker = start_worker
        self._drain_bound = drain_bound
        self._listeners = listeners
        self._notify = notify
        self._ready_line = ready_line
        self._workers = [_Worker(n) for n in range(1, count + 1)]
        self._by_fd: dict[int, _Worker] = {}
        self._poll = select.poll()
        self._wake_r = self._wake_w = -1
        self._stop = self._hup = self._child = False
        self._ready = False
        self._reloading: set[int] = set()  # pids whose "reloaded" is awaited
        self._reload_until: float | None = None  # while systemd waits for READY=1 after RELOADING=1
        #: S-1501: the /metrics endpoint (server/metrics.py), started once the
        #: first workers are forked; None without metrics_listen.
        self.endpoint: Any = None
        self.on_death: Callable[[int], None] = lambda pid: None  # metrics.process_died
        #: Removes what a worker that did not exit cleanly left in the spool
        #: (delivery/spool.py sweep: the files no live process holds); how many.
        self.sweep: Callable[[], int] = lambda: 0

    def pids(self) -> list[int]:
        """The pids of the workers running now (for /metrics, S-1601)."""
        return [w.pid for w in self._workers if w.pid]

    # -- the loop ---------------------------------------------------------------------------
    def run(self) -> int:
        """Start the workers, supervise them until SIGTERM/SIGINT, drain; the
        exit status (1 when a worker died before all were up)."""
        if threading.active_count() > 1:  # fork copies only the calling thread
            maillog.warning(f"workers: {threading.active_count() - 1} other thread(s) exist before the first fork")
        self._wake_r, self._wake_w = os.pipe()
        for fd in (self._wake_r, self._wake_w):
            os.set_blocking(fd, False)
        signal.set_wakeup_fd(self._wake_w, warn_on_full_buffer=False)
        signal.signal(signal.SIGTERM, self._on_stop)
        signal.signal(signal.SIGINT, self._on_stop)
        signal.signal(signal.SIGHUP, self._on_hup)
        signal.signal(signal.SIGCHLD, self._on_child)
        self._poll.register(self._wake_r, select.POLLIN)

        # The metrics' files and PROMETHEUS_MULTIPROC_DIR were made by serve
        # before this (server/metrics.py prepare): each worker writes its own
        # files there, and the endpoint sums them.
        for w in self._workers:
            self._spawn(w, restarted=False)
        if self.endpoint is not None:
            # S-1501: /metrics in a thread of the master, started after the
            # first forks. A later fork (a replaced worker) copies only the
            # forking thread: the endpoint's thread holds no lock a worker
            # takes (it never logs nor counts; its modules are imported
            # before it starts; a scrape reads files), and a scrape that is
            # slow to send its request never delays this loop, which
            # answers the workers' connection slots.
            self.endpoint.start()

        status = 0
        while not self._stop:
            self._wait(self._timeout())
            if self._child:
                self._child = False
                if self._reap() and not self._ready:
                    status = 1  # S-1601: a start that cannot work fails (systemd sees it)
                    break
            if self._hup:
                self._hup = False
                self._forward_hup()
            self._restart_due()
            self._reload_done()
            if not self._ready and all(w.up for w in self._workers):
                self._ready = True
                maillog.info(self._ready_line)
                self._notify("READY=1")
        self._drain()
        return status

    def _timeout(self) -> float:
        """Seconds until the next restart or reload bound; a minute when
        none is due (signals and the channels wake the poll anyway)."""
        now = time.monotonic()
        timers = [w.restart_at for w in self._workers if w.restart_at is not None]
        if self._reload_until is not None:
            timers.append(self._reload_until)
        return max(0.0, min(timers) - now) if timers else 60.0

    def _wait(self, timeout: float) -> None:
        """Poll once; answer what the workers sent; empty the wakeup pipe."""
        try:
            events = self._poll.poll(int(timeout * 1000) + 1)
        except InterruptedError:  # PEP 475 retries; kept for safety
            return
        for fd, _mask in events:
            if fd == self._wake_r:
                try:
                    while os.read(self._wake_r, 512):
                        pass
                except BlockingIOError:
                    pass
                continue
            w = self._by_fd.get(fd)
            if w is not None:
                self._serve_channel(w)

    def _serve_channel(self, w: _Worker) -> None:
        """Every message waiting on `w`'s channel, answered; at its end of
        file (the worker exits) the channel is closed."""
        sock = w.sock
        while sock is not None:
            try:
                message = sock.recv(MAX_MESSAGE)
            except BlockingIOError:
                return
            except OSError:
                message = b""
            if not message:
                self._close_channel(w)
                return
            if message == UP:
                w.up = True
            elif message == RELOADED:
                self._reloading.discard(w.pid)
            else:
                answer = self.keeper.handle(w.pid, message)
                if answer is not None:
                    try:
                        sock.send(answer)
                    except OSError:
                        pass  # the worker gives up after its timeout: fail closed there

    def _close_channel(self, w: _Worker) -> None:
        if w.sock is not None:
            fd = w.sock.fileno()
            self._poll.unregister(fd)
            self._by_fd.pop(fd, None)
            w.sock.close()
            w.sock = None

    # -- signals --------------------------------------------------------------------------
    def _on_stop(self, signum: int, frame: object) -> None:
        self._stop = True

    def _on_hup(self, signum: int, frame: object) -> None:
        self._hup = True

    def _on_child(self, signum: int, frame: object) -> None:
        self._child = True

    def _forward_hup(self) -> None:
        """SIGHUP reaches every worker; each reloads (lifecycle.reload)."""
        pids = self.pids()
        if not pids:
            return
        self._notify("RELOADING=1")
        self._reloading = set(pids)
        self._reload_until = time.monotonic() + RELOAD_WAIT
        for pid in pids:
            self._kill(pid, signal.SIGHUP)

    def _reload_done(self) -> None:
        """READY=1 once every worker signalled has reloaded (or died), or
        RELOAD_WAIT passed."""
        if self._reload_until is None:
            return
        if not self._reloading & set(self.pids()) or time.monotonic() >= self._reload_until:
            self._reloading, self._reload_until = set(), None
            self._notify("READY=1")

    @staticmethod
    def _kill(pid: int, signum: int) -> None:
        try:
            os.kill(pid, signum)
        except ProcessLookupError:
            pass  # already gone: reaped on its SIGCHLD

    # -- starting and reaping -------------------------------------------------------------
    def _spawn(self, w: _Worker, restarted: bool) -> None:
        """Fork worker `w`. Signals stay blocked across the fork, so the
        child runs none of the master's handlers; the worker installs its
        own, then unblocks them."""
        mine, theirs = channel()
        w.restart_at = None
        old = signal.pthread_sigmask(signal.SIG_BLOCK, SIGNALS)
        try:
            pid = os.fork()
        except OSError as e:
            signal.pthread_sigmask(signal.SIG_SETMASK, old)
            mine.close()
            theirs.close()
            maillog.error(f"worker {w.number}: cannot fork: {e.strerror}; trying again")
            w.started, w.restart_at = time.monotonic(), time.monotonic() + RESTART_INTERVAL
            return
        if pid == 0:  # the worker
            status = 1
            try:
                mine.close()
                self._forget_in_child()
                status = self._start_worker(w.number, theirs, restarted)
            except BaseException as e:  # noqa: BLE001 - the child must never return into the master's loop
                with contextlib.suppress(BaseException):
                    maillog.internal_error(f"worker {w.number}", "start", e)
            finally:
                os._exit(status)
        signal.pthread_sigmask(signal.SIG_SETMASK, old)
        theirs.close()
        mine.setblocking(False)
        w.pid, w.sock, w.started, w.up = pid, mine, time.monotonic(), False
        self._by_fd[mine.fileno()] = w
        self._poll.register(mine, select.POLLIN)

    def _forget_in_child(self) -> None:
        """In a new worker: drop what is the master's (the other workers'
        channels, the wakeup pipe and its signal handlers, NOTIFY_SOCKET)."""
        signal.set_wakeup_fd(-1)
        for fd in (self._wake_r, self._wake_w):
            os.close(fd)
        for other in self._workers:
            if other.sock is not None:
                other.sock.close()
        signal.signal(signal.SIGCHLD, signal.SIG_DFL)  # its own children (sendmail) are waited for as before
        os.environ.pop("NOTIFY_SOCKET", None)  # only the master speaks to systemd

    def _reap(self) -> bool:
        """Wait for every worker that exited; log each, give its slots back,
        and plan its replacement. Whether any died (not while stopping)."""
        died = False
        for w in self._workers:
            if not w.pid:
                continue
            try:
                pid, status = os.waitpid(w.pid, os.WNOHANG)
            except ChildProcessError:
                pid, status = w.pid, 0
            if pid == 0:
                continue
            if w.sock is not None:
                self._serve_channel(w)  # its last releases, then its end of file
                self._close_channel(w)
            freed = self.keeper.forget(pid)
            self.on_death(pid)  # its live gauges leave /metrics' sums (S-1501)
            w.pid, w.up = 0, False
            self._reloading.discard(pid)
            how = _status(status)
            left = self.sweep() if status else 0  # a clean exit removed its own
            spooled = f", {left} spool file(s) it left removed" if left else ""
            if self._stop:  # the drain counts what is left; a clean exit is the rule then
                if status:
                    maillog.warning(f"worker {w.number} pid {pid} {how} while stopping{spooled}")
                continue
            died = True
            slots = f", {freed} connection slot(s) given back{spooled}" if freed else spooled
            if not self._ready:
                maillog.error(f"worker {w.number} pid {pid} {how} before every worker was up; stopping")
                continue
            w.restart_at = max(time.monotonic(), w.started + RESTART_INTERVAL)
            maillog.warning(f"worker {w.number} pid {pid} {how}{slots}; starting another")
        return died

    def _restart_due(self) -> None:
        now = time.monotonic()
        for w in self._workers:
            if w.restart_at is not None and w.restart_at <= now and not self._stop:
                self._spawn(w, restarted=True)

    # -- stopping -------------------------------------------------------------------------
    def _drain(self) -> None:
        """SIGTERM to every worker; each drains as a lone serve does. The
        master closes its copies of the listening sockets (so the port
        closes when the workers close theirs) and waits within the drain
        bound; a worker still there after it is killed."""
        self._stop = True
        self._notify("STOPPING=1")
        pids = self.pids()
        maillog.info(f"stopping: asking {len(pids)} worker(s) to finish their sessions")
        for pid in pids:
            self._kill(pid, signal.SIGTERM)
        for sock in self._listeners:
            try:
                sock.close()
            except OSError:
                pass
        deadline = time.monotonic() + self._drain_bound + STOP_MARGIN
        while self.pids() and time.monotonic() < deadline:
            self._wait(min(0.5, max(0.0, deadline - time.monotonic())))
            self._reap()
        killed = False
        for w in self._workers:
            if w.pid:
                maillog.warning(f"worker {w.number} pid {w.pid} still running after {self._drain_bound:g} s; killing it")
                self._kill(w.pid, signal.SIGKILL)
                try:
                    os.waitpid(w.pid, 0)
                except ChildProcessError:
                    pass
                w.pid = 0
                killed = True
        # Whatever a worker left (killed, or a session that closed after its
        # drain): no process of this daemon holds a spool file now.
        if (left := self.sweep()) and killed:
            maillog.warning(f"removed {left} spool file(s) the killed worker(s) left")
        signal.set_wakeup_fd(-1)
        for fd in (self._wake_r, self._wake_w):
            try:
                os.close(fd)
            except OSError as e:
                if e.errno != errno.EBADF:
                    raise
        maillog.info("stopped")


def _status(status: int) -> str:
    """A wait status as Postfix's master words it."""
    if os.WIFSIGNALED(status):
        sig = os.WTERMSIG(status)
        try:
            name = f" ({signal.Signals(sig).name})"
        except ValueError:
            name = ""
        return f"killed by signal {sig}{name}"
    return f"exit status {os.waitstatus_to_exitcode(status)}"
