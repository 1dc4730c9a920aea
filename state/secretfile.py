"""``state_dir/secret``: the 32 octets behind unknown users' SCRAM salts
(S-514) and the key under which failed login names are hashed (S-1202).

This module owns the file: made once (0600, never over an existing one,
never through a symbolic link), read back whole, and, with a shared store
(state/redis.py), replaced atomically by the secret every host shares, so
that a store outage cannot change the salts of a host that already had it.
Standard library only.
"""

from __future__ import annotations

import errno
import os
import stat
from collections.abc import Callable

__all__ = ["SECRET_FILENAME", "SECRET_OCTETS", "load_secret", "read_secret", "replace_secret", "write_secret"]

#: The secret's file in state_dir.
SECRET_FILENAME = "secret"
SECRET_OCTETS = 32


def write_secret(path: str, value: bytes) -> bool:
    """Write the secret file once (0600, never over an existing one, never
    through a link); False when another process made it first."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
    except FileExistsError:
        return False
    try:
        os.write(fd, value)
        os.fsync(fd)
    except BaseException:
        os.close(fd)
        os.unlink(path)
        raise
    os.close(fd)
    return True


def read_secret(directory: str) -> bytes | None:
    """The secret in ``directory``, None when there is no file yet; OSError
    when the file cannot be read or holds no secret (never replaced then:
    a damaged secret is said, not papered over)."""
    path = os.path.join(directory, SECRET_FILENAME)
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except FileNotFoundError:
        return None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise OSError(errno.EINVAL, f"{path} is not a regular file")
        value = os.read(fd, SECRET_OCTETS + 1)
    finally:
        os.close(fd)
    if len(value) != SECRET_OCTETS:
        raise OSError(errno.EINVAL, f"{path} does not hold a {SECRET_OCTETS}-octet secret; remove it "
                                    "(msa makes a new one)")
    if stat.S_IMODE(st.st_mode) & 0o077:
        try:
            os.chmod(path, 0o600)
        except OSError:
            pass
    return value


def load_secret(directory: str, make: Callable[[int], bytes] = os.urandom) -> bytes:
    """``state_dir/secret``, made once (0600) with ``make`` when missing: the
    same value in every process and after every restart, whatever the
    database's health. OSError when it can be neither read nor made."""
    path = os.path.join(directory, SECRET_FILENAME)
    for _ in range(3):  # made by another process between the read and the write: read it again
        value = read_secret(directory)
        if value is not None:
            return value
        os.makedirs(directory, mode=0o700, exist_ok=True)
        value = make(SECRET_OCTETS)
        if write_secret(path, value):
            return value
    raise OSError(errno.EAGAIN, f"{path} keeps changing")


def replace_secret(directory: str, value: bytes) -> None:
    """Put ``value`` in ``state_dir/secret`` whatever was there: written
    beside it (0600, fsync) and renamed over it, so a reader sees the old
    secret or the new one, never half of either. OSError when it cannot."""
    os.makedirs(directory, mode=0o700, exist_ok=True)
    path = os.path.join(directory, SECRET_FILENAME)
    temporary = f"{path}.{os.getpid()}.new"
    try:
        os.unlink(temporary)  # left by a process of this pid that died
    except FileNotFoundError:
        pass
    if not write_secret(temporary, value):
        raise OSError(errno.EEXIST, f"{temporary} is in the way")
    try:
        os.replace(temporary, path)  # rename(2) replaces a link itself, never its target
    except BaseException:
        os.unlink(temporary)
        raise
