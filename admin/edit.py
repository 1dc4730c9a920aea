"""Editing msa's text files safely, for the admin commands (`user`, `app`):
a bounded read (util/files.py's bounds), an exclusive lock beside the file
so two commands never interleave, and an atomic replace (temporary file,
fsync, rename, directory fsync; S-1012's modes). `Fail` ends a command with
its messages and exit status.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import tempfile
import time

from sasl import UserDB, UserDBError, decode, parse
from util.files import USERS_MAX_OCTETS, FileMissing, FileProblem, read_regular

__all__ = ["EX_TEMPFAIL", "LOCK_WAIT_SECONDS", "Fail", "database", "lock", "read_users", "write"]

EX_TEMPFAIL = 75  # sysexits.h: try again later

#: How long an edit waits for another `msa.py user` or `app` to finish (then 75).
LOCK_WAIT_SECONDS = 10.0
_LOCK_POLL_SECONDS = 0.05


class Fail(Exception):
    """Ends a command: messages for stderr and the exit status."""

    def __init__(self, code: int, *messages: str) -> None:
        super().__init__(*messages)
        self.code = code
        self.messages = messages


def read_users(path: str, *, missing_ok: bool) -> str:
    """The text of ``path``, read with the daemon's bound (util/files.py)."""
    try:
        return decode(read_regular(path, USERS_MAX_OCTETS), path)
    except FileMissing:
        if missing_ok:
            return ""
        raise Fail(1, f"{path}: no such file") from None
    except FileProblem as error:
        raise Fail(1, str(error)) from None
    except UserDBError as error:
        raise Fail(1, *error.problems) from None


def database(path: str, *, missing_ok: bool = True) -> UserDB:
    try:
        return parse(read_users(path, missing_ok=missing_ok), path)
    except UserDBError as error:
        raise Fail(1, *error.problems) from None


def lock(path: str) -> int:
    """An open descriptor holding an exclusive flock on ``path + '.lock'``."""
    lock_path = path + ".lock"
    try:
        fd = os.open(lock_path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    except OSError as error:
        raise Fail(1, f"{lock_path}: cannot open the lock file: {error.strerror or error}") from None
    deadline = time.monotonic() + LOCK_WAIT_SECONDS
    while True:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return fd
        except BlockingIOError:
            if time.monotonic() >= deadline:
                os.close(fd)
                raise Fail(EX_TEMPFAIL, f"{path}: users.db is locked by another 'msa.py user'") from None
            time.sleep(_LOCK_POLL_SECONDS)


def write(real: str, data: bytes) -> None:
    """Replace ``real`` by ``data``: temporary file, fsync, rename (S-1012)."""
    directory = os.path.dirname(real) or "."
    old = os.stat(real) if os.path.exists(real) else None
    fd, temporary = tempfile.mkstemp(prefix=f".{os.path.basename(real)}.", suffix=".tmp", dir=directory)
    try:
        mode = 0o600  # mkstemp's mode; 0640 only if the old group can be kept
        if old is not None and old.st_mode & 0o040:
            with contextlib.suppress(OSError):
                os.fchown(fd, old.st_uid, old.st_gid)
                mode = 0o640
        os.fchmod(fd, mode)
        with os.fdopen(fd, "wb") as file:
            file.write(data)
            file.flush()
            os.fsync(file.fileno())
        os.replace(temporary, real)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temporary)
        raise
    directory_fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(directory_fd)  # the rename itself survives a crash
    finally:
        os.close(directory_fd)
