"""Reading the files msa is configured with, whatever the path names.

Every file msa reads because its configuration (or the command line) names
it goes through ``read_regular``: the configuration itself, users.db, the
TLS certificate and key, the Dovecot passwd-files of ``user import``, and
the files features to come will read (app passwords, DKIM and PGP keys),
each with its bound below. A path may name anything: a FIFO (a plain
``open`` waits for a writer forever), ``/dev/zero`` or ``/dev/urandom`` (a
plain ``read()`` never ends, until memory does), a terminal, a directory.
So the file is ``stat``-ed first, and only a regular file is opened (no
device is ever opened, so none of their open side effects happen); it is
opened with ``O_NONBLOCK`` (a FIFO swapped in meanwhile cannot block the
open) and ``O_NOCTTY``, checked again with ``fstat`` on the descriptor, and
read with a size bound. Every failure is a ``FileProblem`` whose text,
``PATH: why``, is ready for the user; the caller adds the configuration key
it came from. Imports: the standard library only.
"""

from __future__ import annotations

import os
import stat

__all__ = [
    "CONFIG_MAX_OCTETS", "FileMissing", "FileProblem", "TLS_MAX_OCTETS", "USERS_MAX_OCTETS", "check_regular",
    "read_regular",
]  # fmt: skip

# --- bounds, each with its reason ---------------------------------------------

#: The configuration file: some twenty keys of one line each, a few KiB with
#: comments. 1 MiB is far beyond any real one and still cheap to read.
CONFIG_MAX_OCTETS = 1 << 20

#: users.db (and a Dovecot passwd-file being imported): a line is about
#: 100-300 octets (name, a ~100-character argon2id PHC string, 64 hex digits
#: of CRAM-MD5, senders), so 64 MiB holds several hundred thousand users,
#: more than one msa serves, while a reload still costs bounded memory.
USERS_MAX_OCTETS = 64 << 20

#: A PEM certificate chain or private key: a few KiB (a chain of four
#: RSA-4096 certificates is under 10 KiB). Also the bound for DKIM and PGP
#: key files when they come (CONTRACT.md "App passwords, keys and state").
TLS_MAX_OCTETS = 1 << 20

#: Read in pieces this large; a file that grows while it is read costs at
#: most the bound plus one octet, which is how its growth is noticed.
_READ_OCTETS = 1 << 20

_OPEN_FLAGS = os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC


class FileProblem(Exception):
    """A file msa cannot use; ``str()`` is ``PATH: why``, ready for the user."""

    def __init__(self, path: str, why: str) -> None:
        super().__init__(f"{path}: {why}")
        self.path = path
        self.why = why


class FileMissing(FileProblem):
    """The file does not exist (some callers treat that as empty)."""


def _kind(mode: int) -> str:
    """What a file that is not a regular one is, for the message."""
    for test, name in (
        (stat.S_ISDIR, "a directory"),
        (stat.S_ISFIFO, "a FIFO"),
        (stat.S_ISCHR, "a character device"),
        (stat.S_ISBLK, "a block device"),
        (stat.S_ISSOCK, "a socket"),
    ):
        if test(mode):
            return name
    return "not a plain file"


def _size(octets: int) -> str:
    return f"{octets >> 20} MiB" if octets % (1 << 20) == 0 else f"{octets} octets"


def _regular(path: str, st: os.stat_result) -> None:
    if not stat.S_ISREG(st.st_mode):
        raise FileProblem(path, f"not a regular file ({_kind(st.st_mode)})")


def _too_big(path: str, limit: int) -> FileProblem:
    return FileProblem(path, f"larger than {_size(limit)}, the most msa reads from such a file")


def _os_problem(path: str, error: OSError) -> FileProblem:
    if isinstance(error, FileNotFoundError):
        return FileMissing(path, "no such file")
    return FileProblem(path, f"cannot read: {error.strerror or error}")


def _open(path: str, limit: int) -> int:
    """A descriptor of the regular file ``path``, no larger than ``limit``."""
    try:
        _regular(path, os.stat(path))  # before open: a device is never opened
        fd = os.open(path, _OPEN_FLAGS)
    except OSError as error:
        raise _os_problem(path, error) from None
    except ValueError:  # an embedded NUL: no such path can exist
        raise FileProblem(path.replace("\0", "\\0"), "the path contains a NUL character") from None
    try:
        st = os.fstat(fd)
        _regular(path, st)  # what was opened, should the path have changed
        if st.st_size > limit:
            raise _too_big(path, limit)
    except OSError as error:
        os.close(fd)
        raise _os_problem(path, error) from None
    except FileProblem:
        os.close(fd)
        raise
    return fd


def check_regular(path: str, limit: int) -> None:
    """Raises what ``read_regular`` would before reading ``path``: it exists,
    is a regular file msa can open, no larger than ``limit``. Nothing is
    read (inetd mode checks so before its greeting, and reads after it)."""
    os.close(_open(path, limit))


def read_regular(path: str, limit: int) -> bytes:
    """The whole content of the regular file ``path``, at most ``limit`` octets.

    Raises ``FileMissing`` when it does not exist and ``FileProblem`` when it
    is not a regular file, cannot be opened or read, or is larger than
    ``limit``. Never blocks on a FIFO or device, never reads past the bound.
    """
    fd = _open(path, limit)
    try:
        pieces: list[bytes] = []
        total = 0
        while True:  # st_size can lie (a file still growing; /proc reports 0)
            piece = os.read(fd, min(_READ_OCTETS, limit + 1 - total))
            if not piece:
                return b"".join(pieces)
            pieces.append(piece)
            total += len(piece)
            if total > limit:
                raise _too_big(path, limit)
    except OSError as error:
        raise _os_problem(path, error) from None
    finally:
        os.close(fd)
