"""Child processes fed from the spool: sendmail, the SOP signer, the
Hashcash minter (SPEC.md S-801, S-1104, S-1106).

One poll loop per child, no helper thread: standard input is written as the
pipe takes it (bytes parts directly, spool ranges by sendfile), standard
output and standard error are read as they come, each kept up to a bound,
and a pidfd says when the process has ended. No shell, close_fds, a new
process group (killed whole at the deadline), a reduced environment, and
every core allowed (server/affinity.py).

A child can also be fed a spool file while it is still being written
(`Growing`, for signing a body as it arrives): the loop then runs in a
thread of its own and sleeps on a wake-up pipe while it has sent all there
is; the deadline may be set later (`Child.deadline`), once the end is known.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import math
import os
import select
import signal
import subprocess
import time
from collections import deque
from dataclasses import dataclass
from typing import Any

from .handoff import FileRange, Part

ENV = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "LANG": "C"}  # S-801
CHUNK = 1024 * 1024


class Growing:
    """A spool range that grows while the child runs: `extend` says how far
    the file may be read, `end` how far it will ever be and what follows it
    (then the child's input ends there), `cancel` stops the child. Called
    from the session thread; the child's loop reads it from its own."""

    def __init__(self, fd: int, offset: int) -> None:
        self.fd = fd
        self.sent = offset  # the next octet to send
        self.limit = offset  # what may be sent so far
        self.final = False
        self.tail = b""  # octets written after the range, once it is final
        self.cancelled = False
        self.starved = False  # the loop has sent all there is and sleeps
        self._wake_r, self._wake_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)

    def extend(self, limit: int) -> None:
        if limit > self.limit:
            self.limit = limit  # written before `starved` is read: no lost wake-up
            if self.starved:
                self._wake()

    def end(self, limit: int, tail: bytes = b"") -> None:
        self.limit = limit
        self.tail = tail  # set before `final`: the loop reads it once final
        self.final = True
        self._wake()

    def cancel(self) -> None:
        self.cancelled = True
        self._wake()

    def _wake(self) -> None:
        try:
            os.write(self._wake_w, b"w")
        except OSError:  # full (a wake-up is pending) or closed
            pass

    def drain(self) -> None:
        try:
            while os.read(self._wake_r, 4096):
                pass
        except OSError:
            pass

    def close(self) -> None:
        for fd in (self._wake_r, self._wake_w):
            try:
                os.close(fd)
            except OSError:
                pass
        self._wake_r = self._wake_w = -1


@dataclass(frozen=True, slots=True)
class Finished:
    status: int | None  # the exit status; negative: killed by that signal; None: timed out
    stdout: bytes  # at most the bound asked for
    stderr: bytes
    elapsed: float
    stdout_overflow: bool = False  # it wrote more than the bound


class Child:
    """A running child and its poll loop (`run`)."""

    def __init__(self, argv: list[str], parts: tuple[Part, ...], *, stdout_limit: int = 0, stderr_limit: int = 512,
                 affinity: Any = None, env: dict[str, str] | None = None, cwd: str | None = None) -> None:
        """Start it; OSError when it cannot be started (S-804)."""
        self.start = time.monotonic()
        with affinity.wide() if affinity is not None else contextlib.nullcontext():
            self.proc = subprocess.Popen(
                argv,
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE if stdout_limit else subprocess.DEVNULL,
                stderr=subprocess.PIPE,
                close_fds=True,
                start_new_session=True,
                env=ENV if env is None else env,
                cwd=cwd,
            )
        proc = self.proc
        assert proc.stdin is not None and proc.stderr is not None
        # What is left to write: memoryviews of bytes parts, and file ranges
        # as [fd, offset, octets left or None] (sendfile moves them).
        self.parts: deque[memoryview | list | Growing] = deque(
            p if isinstance(p, Growing) else memoryview(p) if isinstance(p, bytes) else [p.fd, p.offset, p.length]
            for p in parts
        )
        self.growing = next((p for p in parts if isinstance(p, Growing)), None)
        self.deadline = math.inf  # run() sets it; for a Growing input, maybe later
        self.stdin: int | None = proc.stdin.fileno()
        self.err_fd = proc.stderr.fileno()
        self.outputs: dict[int, tuple[bytearray, int]] = {self.err_fd: (bytearray(), stderr_limit)}
        self.out_fd = proc.stdout.fileno() if proc.stdout is not None else None
        if self.out_fd is not None:
            self.outputs[self.out_fd] = (bytearray(), stdout_limit)
        self.overflow = False
        for fd in (self.stdin, *self.outputs):
            os.set_blocking(fd, False)
        if self.growing is not None or sum(
                len(p) if isinstance(p, bytes) else _range_size(p) for p in parts) > 64 * 1024:
            try:  # a bigger pipe for big messages: fewer wake-ups
                fcntl.fcntl(self.stdin, getattr(fcntl, "F_SETPIPE_SZ", 1031), CHUNK)
            except OSError:
                pass
        try:
            self.pidfd: int | None = os.pidfd_open(proc.pid)
        except (AttributeError, OSError):
            self.pidfd = None  # no pidfd: poll the exit status every 10 ms
        self.exited = False

    def run(self, deadline: float) -> Finished:
        """Until it has exited and its input is done, or the deadline (then
        the process group is killed), or its Growing input is cancelled;
        always reaped."""
        self.deadline = min(self.deadline, deadline)
        try:
            finished = self._loop()
        finally:
            self._close()
        if not finished:
            try:
                os.killpg(self.proc.pid, signal.SIGKILL)  # the whole group
            except OSError:
                pass
        status = self.proc.wait()
        out = bytes(self.outputs[self.out_fd][0]) if self.out_fd is not None else b""
        err = bytes(self.outputs[self.err_fd][0])
        return Finished(status if finished else None, out, err, time.monotonic() - self.start, self.overflow)

    def _loop(self) -> bool:
        poller = select.poll()
        poller.register(self.stdin, select.POLLOUT)
        for fd in self.outputs:
            poller.register(fd, select.POLLIN)
        if self.pidfd is not None:
            poller.register(self.pidfd, select.POLLIN)
        growing = self.growing
        if growing is not None:
            poller.register(growing._wake_r, select.POLLIN)
        reading = set(self.outputs)
        while not (self.exited and self.stdin is None):
            if growing is not None and growing.cancelled:
                return False
            remaining = self.deadline - time.monotonic()
            if remaining <= 0:
                return False
            wait = remaining if self.pidfd is not None else min(remaining, 0.01)
            for fd, event in poller.poll(None if wait == math.inf else wait * 1000):
                if fd == self.stdin:
                    more = False if event & (select.POLLERR | select.POLLHUP) else self._write()
                    if more is None:  # a Growing input waits for the file to grow
                        poller.modify(fd, 0)
                    elif not more:
                        poller.unregister(fd)
                        self._close_stdin()
                elif growing is not None and fd == growing._wake_r:
                    growing.drain()
                    if growing.starved and (growing.limit > growing.sent or growing.final):
                        growing.starved = False
                        if self.stdin is not None:
                            poller.modify(self.stdin, select.POLLOUT)
                elif fd in reading:
                    if not self._read(fd):
                        poller.unregister(fd)
                        reading.discard(fd)
                elif fd == self.pidfd:
                    self.exited = True
                    poller.unregister(fd)
            if self.pidfd is None and self.proc.poll() is not None:
                self.exited = True
            if self.exited and self.stdin is not None:
                poller.unregister(self.stdin)
                self._close_stdin()  # it stopped reading: its status decides
        for fd in reading:
            self._read(fd)  # what is already in the pipes
        return True

    def _write(self) -> bool | None:
        """Write what the pipe takes; False when done or the child stopped
        reading; None when a Growing input has sent all there is so far."""
        assert self.stdin is not None
        parts = self.parts
        try:
            while parts and _written(parts[0]):
                parts.popleft()
            if not parts:
                return False
            part = parts[0]
            if isinstance(part, Growing):
                return self._write_growing(part)
            if isinstance(part, memoryview):
                n = os.write(self.stdin, part)
                parts[0] = part[n:]
                return True
            fd, offset, left = part
            count = CHUNK if left is None else min(CHUNK, left)
            try:
                n = os.sendfile(self.stdin, fd, offset, count)
            except OSError as e:
                if e.errno not in (errno.EINVAL, errno.ENOSYS):
                    raise
                data = os.pread(fd, count, offset)
                n = os.write(self.stdin, data) if data else 0
            if n == 0:  # the end of the file
                parts.popleft()
                return bool(parts)
            part[1] += n
            if left is not None:
                part[2] = left - n
            return True
        except BlockingIOError:
            return True
        except OSError:  # EPIPE and friends
            return False

    def _write_growing(self, part: Growing) -> bool | None:
        left = part.limit - part.sent
        if left <= 0:
            part.starved = True  # set before `limit` is read again: see Growing.extend
            left = part.limit - part.sent
            if left <= 0:
                if part.final:
                    self.parts.popleft()
                    if part.tail:
                        self.parts.appendleft(memoryview(part.tail))
                    return bool(self.parts)
                return None
            part.starved = False
        n = os.sendfile(self.stdin, part.fd, part.sent, min(CHUNK, left))  # type: ignore[arg-type]
        if n == 0:  # the file is shorter than it was said to be: end here
            self.parts.popleft()
            return bool(self.parts)
        part.sent += n
        return True

    def _read(self, fd: int) -> bool:
        buf, limit = self.outputs[fd]
        try:
            while True:
                data = os.read(fd, 65536)
                if not data:
                    return False
                room = limit - len(buf)
                if len(data) > room and fd == self.out_fd:
                    self.overflow = True
                if room > 0:
                    buf += data[:room]
        except BlockingIOError:
            return True
        except OSError:
            return False

    def _close_stdin(self) -> None:
        if self.stdin is not None:
            self.proc.stdin.close()  # type: ignore[union-attr]
            self.stdin = None

    def _close(self) -> None:
        self._close_stdin()
        for stream in (self.proc.stdout, self.proc.stderr):
            if stream is not None:
                stream.close()
        if self.pidfd is not None:
            os.close(self.pidfd)
            self.pidfd = None


def run(argv: list[str], parts: tuple[Part, ...], timeout: float, **kw: Any) -> Finished | OSError:
    """Start a child, feed it `parts`, wait for it within `timeout`."""
    try:
        child = Child(argv, parts, **kw)
    except OSError as e:
        return e
    return child.run(child.start + timeout)


def _written(part: memoryview | list | Growing) -> bool:
    if isinstance(part, Growing):
        return False  # it ends itself, in _write_growing
    return len(part) == 0 if isinstance(part, memoryview) else part[2] == 0


def _range_size(part: FileRange) -> int:
    try:
        return part.size()
    except OSError:
        return 0
