"""The sendmail hand-off (SPEC.md §8, CONTRACT.md "Handing mail to the MTA").

`<sendmail> -i -f SENDER -- RCPT...` with the fixed header and then the
body from the spool on standard input. No shell, close_fds, a new process
group, a reduced environment; the process group is killed at the timeout.
The exit status is mapped to a reply here; the caller removes the spool
file.
"""

from __future__ import annotations

import fcntl
import os
import signal
import subprocess
import tempfile
import threading
import time
from dataclasses import dataclass

from smtp_states import Reply
from smtp_states import replies as R

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


@dataclass(frozen=True, slots=True)
class HandOff:
    reply: Reply | None  # None: delivered (the caller sends "queued as")
    status: str  # "sent" | "deferred" | "bounced"
    detail: str  # for the log: "exit 0", "killed by signal 9", "timeout"...
    stderr: bytes = b""
    elapsed: float = 0.0


def argv_for(sendmail: tuple[str, ...], sender: str, recipients: tuple[str, ...]) -> list[str]:
    """S-801: `--` always before the recipients; `<>` for the null sender."""
    return [*sendmail, "-i", "-f", sender or "<>", "--", *recipients]


def _reply_for(status: int) -> tuple[Reply | None, str]:
    if status == 0:
        return None, "sent"
    if status in _PERMANENT:
        code, enhanced = _PERMANENT[status]
        return R.sendmail_rejected(code, enhanced, status), "bounced"
    return R.HANDOFF_TEMPFAIL, "deferred"  # 75, 71, anything else (S-803)


def hand_off(argv: list[str], header: bytes, spool_fd: int, body_offset: int, timeout: float) -> HandOff:
    start = time.monotonic()
    errf = tempfile.TemporaryFile()
    try:
        try:
            proc = subprocess.Popen(
                argv,
                stdin=subprocess.PIPE,
                stdout=subprocess.DEVNULL,
                stderr=errf,
                close_fds=True,
                start_new_session=True,
                env=ENV,
            )
        except OSError as e:  # S-804
            return HandOff(R.HANDOFF_TEMPFAIL, "deferred", f"cannot run {argv[0]}: {e.strerror or e}")
        timed_out = threading.Event()

        def kill() -> None:
            timed_out.set()
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except OSError:
                pass

        timer = threading.Timer(timeout, kill)
        timer.daemon = True
        timer.start()
        try:
            _feed(proc, header, spool_fd, body_offset)
            status = proc.wait()
        finally:
            timer.cancel()
            if proc.poll() is None:  # only if _feed raised unexpectedly
                kill()
                proc.wait()
        errf.seek(0)
        stderr = errf.read(STDERR_KEEP)
    finally:
        errf.close()
    elapsed = time.monotonic() - start
    if timed_out.is_set():
        return HandOff(R.HANDOFF_TEMPFAIL, "deferred", f"timeout after {timeout:g}s", stderr, elapsed)
    if status < 0:
        return HandOff(R.HANDOFF_TEMPFAIL, "deferred", f"killed by signal {-status}", stderr, elapsed)
    reply, kind = _reply_for(status)
    return HandOff(reply, kind, f"exit {status}", stderr, elapsed)


def _feed(proc: subprocess.Popen, header: bytes, spool_fd: int, offset: int) -> None:
    """Header, then the body straight from the spool file (sendfile)."""
    stdin = proc.stdin
    assert stdin is not None
    out = stdin.fileno()
    try:
        fcntl.fcntl(out, getattr(fcntl, "F_SETPIPE_SZ", 1031), CHUNK)
    except OSError:
        pass
    try:
        view = memoryview(header)
        while view:
            n = os.write(out, view)
            view = view[n:]
        while True:
            try:
                n = os.sendfile(out, spool_fd, offset, CHUNK)
            except OSError as e:
                if e.errno not in (22, 38):  # EINVAL/ENOSYS: no sendfile here
                    raise
                n = _copy(out, spool_fd, offset)
            if n == 0:
                break
            offset += n
    except (BrokenPipeError, ConnectionResetError):
        pass  # sendmail stopped reading; its exit status decides
    except OSError:
        pass
    finally:
        try:
            stdin.close()
        except OSError:
            pass


def _copy(out: int, fd: int, offset: int) -> int:
    data = os.pread(fd, CHUNK, offset)
    view = memoryview(data)
    while view:
        n = os.write(out, view)
        view = view[n:]
    return len(data)
