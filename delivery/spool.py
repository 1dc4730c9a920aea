"""The spool: one file per message in transit (DESIGN.md "DATA, spool").

Files are created O_EXCL, mode 0600, in a 0700 directory, named from the
queue id only (never from client input, S-1012), written without fsync (the
MTA's queue is the durable store), and removed in every case. At start, any
file left by a crash is removed (S-1015).

Each file is held under an exclusive flock(2) by the process that made it,
which the kernel drops when that process ends however it ends. A file whose
lock can be taken is therefore nobody's: `sweep` removes those, at start
and when a worker (S-1601) dies, and leaves alone the files of every live
session, of this process or another (inetd sessions sharing the directory).
Removing a live file's name would do no harm either: its owner reads and
writes it only through its descriptor.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import re
import stat

PREFIX = "msa-"
SUFFIX = ".msg"
_NAME = re.compile(r"msa-[0-9A-F]{10,32}\.msg\Z")

#: Errors that mean "no room", answered 452 4.3.1 (S-307).
_NO_ROOM = {errno.ENOSPC, errno.EDQUOT, errno.EFBIG}


class SpoolError(Exception):
    pass


def problem(directory: str) -> str | None:
    """Why `check` refuses `directory` as the spool: it must be a directory,
    or not exist yet in an existing directory (`serve` creates it)."""
    if os.path.lexists(directory) and not os.path.isdir(directory):
        return f"{directory}: not a directory"
    if not os.path.isdir(directory) and not os.path.isdir(os.path.dirname(directory)):
        return f"{directory}: neither it nor its parent directory exists"
    return None


def prepare(directory: str, clean: bool = True) -> int:
    """Create the directory (0700) if needed and, with `clean`, remove
    stale files (not in inetd mode: other sessions share the directory).
    Returns how many were removed."""
    try:
        os.makedirs(directory, mode=0o700, exist_ok=True)
        st = os.stat(directory)
    except FileExistsError:  # exist_ok: something that is no directory
        raise SpoolError(f"{directory}: not a directory") from None
    except OSError as e:
        raise SpoolError(f"{directory}: {e.strerror}") from None
    if not stat.S_ISDIR(st.st_mode):
        raise SpoolError(f"{directory}: not a directory")
    if stat.S_IMODE(st.st_mode) & 0o077:
        try:
            os.chmod(directory, 0o700)
        except OSError as e:
            raise SpoolError(f"{directory}: mode {stat.S_IMODE(st.st_mode):o} and chmod failed: {e.strerror}") from None
    return sweep(directory, at_start=True) if clean else 0


def sweep(directory: str, at_start: bool = False) -> int:
    """Remove the spool files no live process holds (see above); how many.
    Where flock(2) does not work, nothing can be told: then every file goes
    `at_start` (S-1015, as before locks) and none later."""
    removed = 0
    try:
        names = os.listdir(directory)
    except OSError:
        return 0
    for name in names:
        if not _NAME.match(name):
            continue
        path = os.path.join(directory, name)
        try:
            fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
        except OSError:  # gone meanwhile, or no plain file (a symlink): a live session's never
            if at_start:
                with contextlib.suppress(OSError):
                    os.unlink(path)
                    removed += 1
            continue
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError as e:
                if e.errno in (errno.EWOULDBLOCK, errno.EAGAIN) or not at_start:
                    continue  # held: a live session's
            try:
                os.unlink(path)
                removed += 1
            except OSError:
                pass
        finally:
            os.close(fd)
    return removed


class SpoolFile:
    """A message being received. `failed` is set, and writing stops, when
    the disk refuses a write; the session replies 452 4.3.1 at the end."""

    __slots__ = ("path", "fd", "size", "failed", "reason")

    def __init__(self, directory: str, queue_id: str) -> None:
        self.path = os.path.join(directory, f"{PREFIX}{queue_id}{SUFFIX}")
        self.fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(self.fd, fcntl.LOCK_EX | fcntl.LOCK_NB)  # "mine while I live": see sweep
        except OSError:
            pass  # a file system without flock: the file is removed as ever, only not swept
        self.size = 0
        self.failed = False
        self.reason = ""

    def write(self, data: bytes) -> None:
        if self.failed or self.fd < 0:
            return
        view = memoryview(data)
        try:
            while view:
                n = os.write(self.fd, view)
                view = view[n:]
                self.size += n
        except OSError as e:
            self.failed = True
            self.reason = e.strerror or str(e)
            if e.errno not in _NO_ROOM:
                self.reason = f"write error: {self.reason}"

    def unlink(self) -> None:
        """Remove the file's name only (from another thread: the descriptor
        stays with its owner, who closes it)."""
        try:
            os.unlink(self.path)
        except OSError:
            pass

    def remove(self) -> None:
        if self.fd >= 0:
            try:
                os.close(self.fd)
            except OSError:
                pass
            self.fd = -1
        try:
            os.unlink(self.path)
        except FileNotFoundError:
            pass
        except OSError:
            pass
