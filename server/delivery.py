"""The sendmail hand-off (SPEC.md §8, CONTRACT.md "Handing mail to the MTA").

`<sendmail> -i -f SENDER -- RCPT...` with the message's parts (the fixed
header, then the body from the spool) on standard input. No shell,
close_fds, a new process group, a reduced environment; the process group
is killed at the timeout. The exit status is mapped to a reply here; the
caller removes the spool file.
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
from typing import Any

from smtp_states import Reply
from smtp_states import replies as R

from .handoff import FileRange, HandOff, Outbound, Part

ENV = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "LANG": "C"}  # S-801
CHUNK = 1024 * 1024
STDERR_KEEP = 512

# S-803: sysexits that mean a permanent problem, as Postfix maps them.
_PERMANENT: dict[int, tuple[int, str]] = {
    67: (550, "5.1.1"),  # EX_NOUSER
    68: (550, "5.1.2"),  # EX_NOHOST
    65: (554, "5.6.0"),  # EX_DATAERR
    77: (550, "5.7.0"),  # EX_NOPERM
    78: (554, "5.3.5"),  # EX_CONFIG
    **{code: (554, "5.3.0") for code in (64, 66, 69, 70, 72, 73, 74, 76)},
}


class SendmailHandoff:
    """`handoff = sendmail` (the default): one process per message."""

    def __init__(self, sendmail: tuple[str, ...], affinity: Any = None) -> None:
        self.sendmail = sendmail
        self.affinity = affinity

    def deliver(self, out: Outbound, timeout: float) -> HandOff:
        env = out.envelope
        return hand_off(argv_for(self.sendmail, env.sender, env.recipients), out.parts, timeout, self.affinity)

    def close(self) -> None:
        pass


def argv_for(sendmail: tuple[str, ...], sender: str, recipients: tuple[str, ...]) -> list[str]:
    """S-801: `--` always before the recipients; `<>` for the null sender."""
    return [*sendmail, "-i", "-f", sender or "<>", "--", *recipients]


def _written(part: memoryview | list) -> bool:
    return len(part) == 0 if isinstance(part, memoryview) else part[2] == 0


def _range_size(part: FileRange) -> int:
    try:
        return part.size()
    except OSError:
        return 0


def _reply_for(status: int) -> tuple[Reply | None, str]:
    if status == 0:
        return None, "sent"
    if status in _PERMANENT:
        code, enhanced = _PERMANENT[status]
        return R.sendmail_rejected(code, enhanced, status), "bounced"
    return R.HANDOFF_TEMPFAIL, "deferred"  # 75, 71, anything else (S-803)


def hand_off(argv: list[str], parts: tuple[Part, ...], timeout: float, affinity: Any = None) -> HandOff:
    """Run sendmail, feed it the message's parts, collect its exit status
    and the start of its standard error, all within `timeout`.

    One poll loop, no helper thread: standard input is written as the pipe
    takes it (sendfile from the spool), standard error is read as it comes,
    and a pidfd says when the process has ended.
    """
    start = time.monotonic()
    deadline = start + timeout
    try:
        with affinity.wide() if affinity is not None else contextlib.nullcontext():  # the child may use every core
            proc = subprocess.Popen(
                argv,
                stdin=subprocess.PIPE,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.PIPE,
                close_fds=True,
                start_new_session=True,
                env=ENV,
            )
    except OSError as e:  # S-804
        return HandOff(R.HANDOFF_TEMPFAIL, "deferred", f"cannot run {argv[0]}: {e.strerror or e}")
    feeder = _Feeder(proc, parts)
    try:
        finished = feeder.run(deadline)
    finally:
        feeder.close()
    if not finished:
        try:
            os.killpg(proc.pid, signal.SIGKILL)  # S-803: the whole group
        except OSError:
            pass
    status = proc.wait()
    stderr = bytes(feeder.stderr)
    elapsed = time.monotonic() - start
    if not finished:
        return HandOff(R.HANDOFF_TEMPFAIL, "deferred", f"timeout after {timeout:g}s", stderr, elapsed)
    if status < 0:
        return HandOff(R.HANDOFF_TEMPFAIL, "deferred", f"killed by signal {-status}", stderr, elapsed)
    reply, kind = _reply_for(status)
    return HandOff(reply, kind, f"exit {status}", stderr, elapsed)


class _Feeder:
    """The poll loop of one hand-off."""

    def __init__(self, proc: subprocess.Popen, parts: tuple[Part, ...]) -> None:
        assert proc.stdin is not None and proc.stderr is not None
        self.proc = proc
        # What is left to write: memoryviews of bytes parts, and file ranges
        # as [fd, offset, octets left or None] (sendfile moves them).
        self.parts: deque[memoryview | list] = deque(
            memoryview(p) if isinstance(p, bytes) else [p.fd, p.offset, p.length] for p in parts
        )
        self.stdin: int | None = proc.stdin.fileno()
        self.err: int | None = proc.stderr.fileno()
        self.stderr = bytearray()
        os.set_blocking(self.stdin, False)
        os.set_blocking(self.err, False)
        big = sum(len(p) if isinstance(p, bytes) else _range_size(p) for p in parts) > 64 * 1024
        if big:  # a bigger pipe for big messages: fewer wake-ups
            try:
                fcntl.fcntl(self.stdin, getattr(fcntl, "F_SETPIPE_SZ", 1031), CHUNK)
            except OSError:
                pass
        try:
            self.pidfd: int | None = os.pidfd_open(proc.pid)
        except (AttributeError, OSError):
            self.pidfd = None  # no pidfd: poll the exit status every 10 ms
        self.exited = False

    def run(self, deadline: float) -> bool:
        """True once sendmail has exited and its input is done; False at the deadline."""
        poller = select.poll()
        poller.register(self.stdin, select.POLLOUT)
        poller.register(self.err, select.POLLIN)
        if self.pidfd is not None:
            poller.register(self.pidfd, select.POLLIN)
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
                elif fd == self.err:
                    if not self._read_stderr():
                        poller.unregister(fd)
                        self.proc.stderr.close()  # type: ignore[union-attr]
                        self.err = None
                elif fd == self.pidfd:
                    self.exited = True
                    poller.unregister(fd)
            if self.pidfd is None and self.proc.poll() is not None:
                self.exited = True
            if self.exited and self.stdin is not None:
                poller.unregister(self.stdin)
                self._close_stdin()  # it stopped reading: its status decides
        if self.err is not None:
            self._read_stderr()  # what is already in the pipe
        return True

    def _write(self) -> bool:
        """Write what the pipe takes; False when done or sendmail stopped reading."""
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

    def _read_stderr(self) -> bool:
        assert self.err is not None
        try:
            while True:
                data = os.read(self.err, 4096)
                if not data:
                    return False
                room = STDERR_KEEP - len(self.stderr)
                if room > 0:
                    self.stderr += data[:room]
        except BlockingIOError:
            return True
        except OSError:
            return False

    def _close_stdin(self) -> None:
        if self.stdin is not None:
            self.proc.stdin.close()  # type: ignore[union-attr]
            self.stdin = None

    def close(self) -> None:
        self._close_stdin()
        if self.err is not None:
            self.proc.stderr.close()  # type: ignore[union-attr]
            self.err = None
        if self.pidfd is not None:
            os.close(self.pidfd)
            self.pidfd = None
