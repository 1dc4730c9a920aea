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

Files are reused. Making a file is the costliest step of a small message on
ext4: a new inode is looked for past every inode freed in the last seconds,
and at hundreds of messages a second that was a third of msa's own CPU per
message (`perf record` of bench/cpu_per_message.py: __ext4_new_inode). So a
finished message's file is emptied (ftruncate) and renamed `idle-PID-N`, and
the next message takes it by link(2) to its own name, which like O_EXCL
never replaces another file. At most IDLE_MAX wait per process; they are
locked like the rest, and removed when the process stops (`release_idle`),
or by `sweep` after it died.
"""

from __future__ import annotations

import atexit
import contextlib
import errno
import fcntl
import itertools
import os
import re
import stat
import threading

PREFIX = "msa-"
SUFFIX = ".msg"
_NAME = re.compile(r"msa-[0-9A-F]{10,32}\.msg\Z")
IDLE_PREFIX = "idle-"
_IDLE_NAME = re.compile(r"idle-\d+-\d+\Z")
#: Emptied files kept for reuse, per process: about the sessions in DATA at once.
IDLE_MAX = 32

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
    """Remove the spool files no live process holds (see above); how many
    held a message (an idle file held none)."""
    removed = 0
    try:
        names = os.listdir(directory)
    except OSError:
        return 0
    for name in names:
        message = _NAME.match(name) is not None
        if not message and not _IDLE_NAME.match(name):
            continue
        path = os.path.join(directory, name)
        if _unowned(path, at_start):
            with contextlib.suppress(OSError):
                os.unlink(path)
                removed += message
    return removed


def _unowned(path: str, at_start: bool) -> bool:
    """Whether no live process holds `path` (its lock can be taken). Where
    that cannot be told (no flock here, or no plain file: a symlink), it is
    stale only `at_start` (S-1015, as before locks), never later."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError:
        return at_start
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        return True
    except OSError as e:
        return at_start and e.errno not in (errno.EWOULDBLOCK, errno.EAGAIN)
    finally:
        os.close(fd)


class _IdleFiles:
    """This process's emptied spool files, waiting for the next message."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.files: list[tuple[int, str, str]] = []  # (fd, path, directory)
        self.names = itertools.count()
        self.closed = False  # released: a session closed late removes its file as ever

    def take(self, directory: str, path: str) -> int | None:
        """A descriptor now named `path`, or None (none waits, or the name
        is taken: the caller's O_EXCL open then says so)."""
        while True:
            with self.lock:
                if not self.files:
                    return None
                fd, idle, where = self.files.pop()
            if where != directory:  # the spool moved on a reload
                _discard(fd, idle)
                continue
            try:
                os.link(idle, path)
            except OSError as e:
                _discard(fd, idle)
                if e.errno not in (errno.EEXIST, errno.ENOENT):  # ENOENT: swept by another process
                    self.closed = True  # no hard links here: files are made and removed as before
                return None
            with contextlib.suppress(OSError):
                os.unlink(idle)
            return fd

    def keep(self, fd: int, path: str, directory: str) -> bool:
        """Empty the file and keep it, renamed; False when it cannot be
        kept (the caller closes and unlinks it as before)."""
        with self.lock:
            if self.closed or len(self.files) >= IDLE_MAX:
                return False
        idle = os.path.join(directory, f"{IDLE_PREFIX}{os.getpid()}-{next(self.names)}")
        try:
            os.ftruncate(fd, 0)
            os.lseek(fd, 0, os.SEEK_SET)
            os.rename(path, idle)  # fails when the name was already removed (abandon)
        except OSError:
            return False
        with self.lock:
            if not self.closed:
                self.files.append((fd, idle, directory))
                return True
        _discard(fd, idle)  # released meanwhile; the message's name is gone already
        return True

    def release(self) -> None:
        with self.lock:
            self.closed = True
            files, self.files = self.files, []
        for fd, idle, _ in files:
            _discard(fd, idle)

    def forget(self) -> None:
        """In a forked child: the parent's files are the parent's."""
        for fd, _, _ in self.files:
            with contextlib.suppress(OSError):
                os.close(fd)
        self.files = []
        self.lock = threading.Lock()
        self.closed = False


def _discard(fd: int, path: str) -> None:
    with contextlib.suppress(OSError):
        os.unlink(path)
    with contextlib.suppress(OSError):
        os.close(fd)


_idle = _IdleFiles()
release_idle = _idle.release  # at the end of serve and of each worker; atexit too
atexit.register(release_idle)
os.register_at_fork(after_in_child=_idle.forget)


class SpoolFile:
    """A message being received. `failed` is set, and writing stops, when
    the disk refuses a write; the session replies 452 4.3.1 at the end."""

    __slots__ = ("path", "directory", "fd", "size", "failed", "reason")

    def __init__(self, directory: str, queue_id: str) -> None:
        self.directory = directory
        self.path = os.path.join(directory, f"{PREFIX}{queue_id}{SUFFIX}")
        fd = _idle.take(directory, self.path)  # empty, at offset 0, locked
        if fd is None:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)  # "mine while I live": see sweep
            except OSError:
                pass  # a file system without flock: the file is removed as ever, only not swept
        self.fd = fd
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
        """The message's bytes and its name go; the file itself may wait,
        emptied, for the next message (see above)."""
        if self.fd >= 0 and not self.failed and _idle.keep(self.fd, self.path, self.directory):
            self.fd = -1
            return
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
