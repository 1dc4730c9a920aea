"""Child processes fed from the spool: sendmail, the SOP signer, the
Hashcash minter (SPEC.md S-801, S-1104, S-1106).

One poll loop per child, no helper thread: standard input is written as the
pipe takes it (bytes parts directly, spool ranges by sendfile), standard
output and standard error are read as they come, each kept up to a bound,
and a pidfd says when the process has ended. No shell, close_fds, a new
process group (killed whole at the deadline), a reduced environment, and
every core allowed (server/affinity.py).
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
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
        self.parts: deque[memoryview | list] = deque(
            memoryview(p) if isinstance(p, bytes) else [p.fd, p.offset, p.length] for p in parts
        )
        self.stdin: int | None = proc.stdin.fileno()
        self.err_fd = proc.stderr.fileno()
        self.outputs: dict[int, tuple[bytearray, int]] = {self.err_fd: (bytearray(), stderr_limit)}
        self.out_fd = proc.stdout.fileno() if proc.stdout is not None else None
        if self.out_fd is not None:
            self.outputs[self.out_fd] = (bytearray(), stdout_limit)
        self.overflow = False
        for fd in (self.stdin, *self.outputs):
            os.set_blocking(fd, False)
        if sum(len(p) if isinstance(p, bytes) else _range_size(p) for p in parts) > 64 * 1024:
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
        the process group is killed); always reaped."""
        try:
            finished = self._loop(deadline)
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

    def _loop(self, deadline: float) -> bool:
        poller = select.poll()
        poller.register(self.stdin, select.POLLOUT)
        for fd in self.outputs:
            poller.register(fd, select.POLLIN)
        if self.pidfd is not None:
            poller.register(self.pidfd, select.POLLIN)
        reading = set(self.outputs)
        while not (self.exited and self.stdin is None):
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return False
            wait = remaining if self.pidfd is not None else min(remaining, 0.01)
            for fd, _ in poller.poll(wait * 1000):
                if fd == self.stdin:
                    if not self._write():
                        poller.unregister(fd)
                        self._close_stdin()
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

    def _write(self) -> bool:
        """Write what the pipe takes; False when done or the child stopped reading."""
        assert self.stdin is not None
        parts = self.parts
        try:
            while parts and _written(parts[0]):
                parts.popleft()
            if not parts:
                return False
            part = parts[0]
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


def _written(part: memoryview | list) -> bool:
    return len(part) == 0 if isinstance(part, memoryview) else part[2] == 0


def _range_size(part: FileRange) -> int:
    try:
        return part.size()
    except OSError:
        return 0
