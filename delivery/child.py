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
        # The pipes are made here and handed to Popen as descriptors: no
        # file objects around them (each costs an fstat, an ioctl and an
        # lseek), and standard output goes to one /dev/null kept open.
        stdin_r, stdin_w = os.pipe2(os.O_CLOEXEC)
        err_r, err_w = os.pipe2(os.O_CLOEXEC)
        out_r, out_w = os.pipe2(os.O_CLOEXEC) if stdout_limit else (None, None)
        ours = [fd for fd in (stdin_w, err_r, out_r) if fd is not None]
        try:
            with affinity.wide() if affinity is not None else contextlib.nullcontext():
                self.proc = subprocess.Popen(
                    argv,
                    stdin=stdin_r,
                    stdout=out_w if out_w is not None else _devnull(),
                    stderr=err_w,
                    close_fds=True,
                    start_new_session=True,
                    env=ENV if env is None else env,
                    cwd=cwd,
                )
        except BaseException:
            _close_all(ours)
            raise
        finally:
            _close_all(fd for fd in (stdin_r, err_w, out_w) if fd is not None)  # the child's ends
        proc = self.proc
        # What is left to write: memoryviews of bytes parts, and file ranges
        # as [fd, offset, octets left or None] (sendfile moves them).
        self.parts: deque[memoryview | list | Growing] = deque(
            p if isinstance(p, Growing) else memoryview(p) if isinstance(p, bytes) else [p.fd, p.offset, p.length]
            for p in parts
        )
        self.growing = next((p for p in parts if isinstance(p, Growing)), None)
        self.deadline = math.inf  # run() sets it; for a Growing input, maybe later
        self.stdin: int | None = stdin_w
        self.err_fd = err_r
        self.outputs: dict[int, tuple[bytearray, int]] = {self.err_fd: (bytearray(), stderr_limit)}
        self.out_fd = out_r
        if self.out_fd is not None:
            self.outputs[self.out_fd] = (bytearray(), stdout_limit)
        self.outputs_open = True
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
        if self.deadline > time.monotonic() and not (growing is not None and growing.cancelled):
            self._wrote(poller, self._write())  # the pipe starts empty: no poll before the first write
        while not (self.exited and self.stdin is None):
            if growing is not None and growing.cancelled:
                return False
            remaining = self.deadline - time.monotonic()
            if remaining <= 0:
                return False
            wait = remaining if self.pidfd is not None else min(remaining, 0.01)
            for fd, event in poller.poll(None if wait == math.inf else wait * 1000):
                if fd == self.stdin:
                    self._wrote(poller, False if event & (select.POLLERR | select.POLLHUP) else self._write())
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
            elif not reading and self.stdin is None and not self.exited and self.proc.poll() is not None:
                # Its input is done and its output has ended: it has most
                # likely exited, and asking costs less than another poll.
                self.exited = True
                poller.unregister(self.pidfd)
            if self.exited and self.stdin is not None:
                poller.unregister(self.stdin)
                self._close_stdin()  # it stopped reading: its status decides
        for fd in reading:
            self._read(fd)  # what is already in the pipes
        return True

    def _wrote(self, poller: Any, more: bool | None) -> None:
        """Act on what _write said."""
        if more is None:  # a Growing input waits for the file to grow
            poller.modify(self.stdin, 0)
        elif not more:
            poller.unregister(self.stdin)
            self._close_stdin()

    def _write(self) -> bool | None:
        """Write what the pipe takes, part after part: True when it is full
        (wait for room), False when all is written or the child stopped
        reading, None when a Growing input has sent all there is so far."""
        assert self.stdin is not None
        parts = self.parts
        try:
            while True:
                while parts and _written(parts[0]):
                    parts.popleft()
                if not parts:
                    return False
                part = parts[0]
                if isinstance(part, Growing):
                    more = self._write_growing(part)
                    if more is not True:
                        return more
                    continue
                if isinstance(part, memoryview):
                    n = os.write(self.stdin, part)
                    parts[0] = part[n:]
                    if n < len(part):
                        return True  # the pipe is full
                    continue
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
                    continue
                part[1] += n
                if left is not None:
                    part[2] = left - n
                if n < count:
                    return True  # the pipe is full (or the file ends: the next call finds out)
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
            _close_all((self.stdin,))
            self.stdin = None

    def _close(self) -> None:
        self._close_stdin()
        if self.outputs_open:
            self.outputs_open = False
            _close_all(self.outputs)  # their buffers stay, for run()'s result
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


def _close_all(fds: Any) -> None:
    for fd in fds:
        try:
            os.close(fd)
        except OSError:
            pass


_devnull_fd: int | None = None


def _devnull() -> int:
    """/dev/null, opened once for every child's standard output (a
    descriptor kept open for the process's life, close-on-exec here and
    duplicated onto the child's fd 1 by Popen)."""
    global _devnull_fd
    if _devnull_fd is None:
        fd = os.open(os.devnull, os.O_RDWR | os.O_CLOEXEC)
        if _devnull_fd is None:
            _devnull_fd = fd
        else:  # another thread was first
            os.close(fd)
    return _devnull_fd


def _written(part: memoryview | list | Growing) -> bool:
    if isinstance(part, Growing):
        return False  # it ends itself, in _write_growing
    return len(part) == 0 if isinstance(part, memoryview) else part[2] == 0


def _range_size(part: FileRange) -> int:
    try:
        return part.size()
    except OSError:
        return 0
