"""The state store, ``state_dir/state.sqlite`` (SPEC.md S-1202, S-511, S-1201).

This module owns what msa keeps across restarts and shares between
``serve`` and every ``inetd`` process: login failures per client address
and user name (the S-511 delay), the messages and recipients each user
reserved and sent in the sliding windows of S-1201, and when a limit
refusal was last logged. Beside the database, in a file of its own
(state/secretfile.py), lies one secret made once (``state_dir/secret``):
the salt secret of unknown users' SCRAM challenges (S-514) and the key
under which failed login names are kept (S-1202: never the typed name
itself).

It is stdlib ``sqlite3`` in WAL mode: readers never wait for the writer,
and every write is one small transaction, so eight busy sessions cost a
few tens of microseconds each per message. Connections come from a small
pool shared by the session threads (an ``inetd`` process opens one, and
only when a session first needs it).

The store is never allowed to lose or refuse mail. Every operation catches
what sqlite3 and the file system raise; a failing store fails open (limits
not applied, login delays kept in this process only, by the ``fallback``
``sasl.Throttle``) and logs one warning per failure episode and one line
when it works again. While an episode lasts the store is tried again after
a growing pause (at most every RETRY_MAX seconds), never once per message,
so a locked file costs no session a busy wait. A store file removed while
msa runs is noticed (its inode changes) and made again, so counting
resumes instead of going on in an unlinked file nobody else sees.

Sending limits are reservations (S-1201 amended): the check and the count
are one write transaction, made at MAIL (one message) and at each RCPT (one
recipient), and given back when the message is not accepted; SQLite's
write lock makes them atomic across the threads of a process and across
processes. A reservation left by a process that died expires with its
window.

Times are wall-clock seconds (``time.time``): they must mean the same in
another process and after a restart. Counts are kept per user in steps
(``SendingLimits`` asks for 1/120 of the shorter period), so reading a
window sums a bounded number of rows however much a user sends. Writes
from the threads of one process take turns on a lock, so they never meet
in SQLite's busy handler, whose sleeps are milliseconds long. Everything is
bounded: old windows and forgotten failures are pruned, and failures per
address are capped as in ``sasl.throttle``.

The files are private (S-1202 amended): the database, its ``-wal`` and
``-shm`` files and the secret are mode 0600, and none of them is opened
through a symbolic link.
"""

from __future__ import annotations

import errno
import hashlib
import os
import queue
import sqlite3
import stat
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from typing import Any

from sasl import Throttle
from sasl.limits import (
    THROTTLE_FIRST_DELAY_SECONDS,
    THROTTLE_FORGET_SECONDS,
    THROTTLE_MAX_COUNTED_FAILURES,
    THROTTLE_MAX_DELAY_SECONDS,
    THROTTLE_MAX_ENTRIES,
    THROTTLE_MAX_NAMES,
    THROTTLE_OTHER_NAMES,
)

from util import maillog

from . import NOT_COUNTED, Hold, Usage
from .secretfile import SECRET_FILENAME, SECRET_OCTETS, load_secret, write_secret

__all__ = ["FILENAME", "FILES", "SECRET_FILENAME", "SqliteStore", "load_secret", "open_problem"]

FILENAME = "state.sqlite"
#: The database's own files, each kept at mode 0600.
FILES = (FILENAME, FILENAME + "-wal", FILENAME + "-shm")

#: sqlite's busy timeout: a store locked longer than this counts as failing
#: (S-1202: "locked past a second").
BUSY_TIMEOUT = 1.0

#: Connections kept for the session threads; more threads than this open
#: one of their own for the moment and close it.
POOL_SIZE = 8

#: Old rows are pruned at most this often per process (seconds).
PRUNE_INTERVAL = 60.0

#: The longest window kept (S-1201: CONTRACT.md allows periods like 24h;
#: config.py caps a period at 7 days).
MAX_WINDOW = 7 * 24 * 3600.0

#: While a failure episode lasts, the store is tried again after this pause,
#: doubled each time it still fails, up to RETRY_MAX (S-1402's bound).
RETRY_FIRST = 0.5
RETRY_MAX = 5.0

#: The layout of the tables below, in PRAGMA user_version. Version 2: the
#: failures table keeps a keyed hash of each name, never the name typed.
SCHEMA_VERSION = 2

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value BLOB NOT NULL);
CREATE TABLE IF NOT EXISTS failures (
    client TEXT NOT NULL, name TEXT NOT NULL, count INTEGER NOT NULL, last REAL NOT NULL,
    PRIMARY KEY (client, name));
CREATE INDEX IF NOT EXISTS failures_last ON failures (last);
CREATE TABLE IF NOT EXISTS sent (
    user TEXT NOT NULL, at REAL NOT NULL, messages INTEGER NOT NULL, recipients INTEGER NOT NULL,
    PRIMARY KEY (user, at)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS noted (user TEXT NOT NULL, kind TEXT NOT NULL, until REAL NOT NULL,
    PRIMARY KEY (user, kind));
"""

#: Where version 1 kept the SCRAM secret (now the file SECRET_FILENAME).
_OLD_SECRET_KEY = "scram-unknown-user-salt"


def _why(error: BaseException) -> str:
    text = str(error) or type(error).__name__
    return text.splitlines()[0][:200] if text else type(error).__name__


def _refuse_link(path: str) -> None:
    """S-1202: the store's files are never opened through a symbolic link
    (someone able to plant one could point msa's writes anywhere)."""
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return
    if stat.S_ISLNK(st.st_mode):
        raise OSError(errno.ELOOP, f"{path} is a symbolic link; msa does not follow it")


def _private(directory: str) -> None:
    """The database files at mode 0600: made so before SQLite opens the
    database (SQLite gives its -wal and -shm files the database's mode),
    narrowed where an older msa left them readable by others."""
    for name in FILES:
        path = os.path.join(directory, name)
        _refuse_link(path)
        try:
            st = os.stat(path)
        except FileNotFoundError:
            if name == FILENAME:
                fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
                os.close(fd)
            continue
        if stat.S_IMODE(st.st_mode) & 0o077:
            os.chmod(path, 0o600)


def _connect(path: str) -> sqlite3.Connection:
    directory = os.path.dirname(path)
    try:
        _private(directory)
    except FileExistsError:  # made by another process meanwhile
        pass
    _refuse_link(path)
    db = sqlite3.connect(path, timeout=BUSY_TIMEOUT, isolation_level=None, check_same_thread=False)
    try:
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA synchronous=NORMAL")  # WAL: durable enough, no fsync per count
        db.executescript(_SCHEMA)
        version = db.execute("PRAGMA user_version").fetchone()[0]
        if version < SCHEMA_VERSION:
            _migrate(db, directory, version)
        for name in FILES[1:]:  # made by the first WAL access, with the database's mode
            _refuse_link(os.path.join(directory, name))
    except BaseException:
        db.close()
        raise
    return db


def _migrate(db: sqlite3.Connection, directory: str, version: int) -> None:
    """From an older layout: version 1 kept failed login names as typed
    (forgotten: a password typed as a name must not stay on disk) and the
    SCRAM secret in the meta table (moved to the secret file, so that
    unknown users' salts do not change with the upgrade)."""
    db.execute("BEGIN IMMEDIATE")
    try:
        if version == 1:
            row = db.execute("SELECT value FROM meta WHERE key = ?", (_OLD_SECRET_KEY,)).fetchone()
            if row is not None and len(row[0]) == SECRET_OCTETS:
                write_secret(os.path.join(directory, SECRET_FILENAME), bytes(row[0]))
            db.execute("DELETE FROM failures")
            db.execute("DELETE FROM meta WHERE key = ?", (_OLD_SECRET_KEY,))
        db.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
        db.execute("COMMIT")
    except BaseException:
        db.execute("ROLLBACK")
        raise


def open_problem(directory: str) -> str | None:
    """Why the store in ``directory`` cannot be opened and written, or None
    (for ``check``, which exits 1 then; S-1202). Creates nothing but the
    file itself, as ``serve`` would."""
    if not os.path.isdir(directory):
        return f"{directory} is not a directory" if os.path.exists(directory) else f"{directory} does not exist"
    path = os.path.join(directory, FILENAME)
    if os.path.islink(path):
        return f"{path} is a symbolic link; msa does not follow it"
    if os.path.exists(path) and not os.path.isfile(path):
        return f"{path} is not a regular file"
    try:
        db = _connect(path)
        try:
            db.execute("BEGIN IMMEDIATE")  # proves it can be written, changes nothing
            db.execute("ROLLBACK")
        finally:
            db.close()
    except (sqlite3.Error, OSError) as e:
        return f"{path}: {_why(e)}"
    return None


class SqliteStore:
    """The state of one ``state_dir``; thread-safe; every method fails open
    (state.Store's interface)."""

    def __init__(self, directory: str, *, clock: Callable[[], float] = time.time) -> None:
        self.directory = directory
        self.path = os.path.join(directory, FILENAME)
        self._clock = clock
        self._pool: queue.SimpleQueue[sqlite3.Connection] = queue.SimpleQueue()
        self._lock = threading.Lock()
        self._inode: tuple[int, int] | None = None
        # The current failure episode (S-1202): its warning, whether a write
        # failed in it (then only a write ends it: reads of a locked or
        # read-only file still work), and when the store is tried again.
        self._failing: str | None = None
        self._failed_write = False
        self._retry_at = 0.0
        self._retry_pause = RETRY_FIRST
        self._pruned = 0.0
        self._writer = threading.Lock()  # one writer at a time in this process
        self._name_key: bytes | None = None
        self._secret: bytes | None = None
        #: S-1202: while the store fails, login delays still hold in this
        #: process (and a success forgets a name's failures in both).
        self.fallback = Throttle(clock=clock)

    # -- connections and failure episodes -------------------------------------------
    def _identity(self) -> tuple[int, int] | None:
        try:
            st = os.stat(self.path)
        except OSError:
            return None
        return st.st_dev, st.st_ino

    def _reopen_if_replaced(self) -> None:
        """A store file removed or replaced since it was opened: drop every
        pooled connection, so the next one makes or opens the new file."""
        identity = self._identity()
        if identity is not None and identity == self._inode:
            return
        with self._lock:
            if self._inode is not None and identity != self._inode:
                self._drain()
                if identity is None:
                    maillog.warning(f"state store {self.path} was removed; making a new one")
            self._inode = None

    def _drain(self) -> None:
        while True:
            try:
                self._pool.get_nowait().close()
            except queue.Empty:
                return

    @contextmanager
    def _db(self) -> Iterator[sqlite3.Connection]:
        self._reopen_if_replaced()
        try:
            db = self._pool.get_nowait()
        except queue.Empty:
            os.makedirs(self.directory, mode=0o700, exist_ok=True)
            db = _connect(self.path)
            if self._inode is None:
                self._inode = self._identity()
        try:
            yield db
        except BaseException:
            db.close()  # a connection that failed is not reused
            raise
        if self._pool.qsize() < POOL_SIZE:
            self._pool.put(db)
        else:
            db.close()

    def _run(self, what: str, action: Callable[[sqlite3.Connection], Any], default: Any,
             write: bool = False) -> Any:
        if self._failing is not None and time.monotonic() < self._retry_at:
            return default  # the episode's pause: fail open at once (S-1202)
        try:
            with self._db() as db:
                if write:
                    with self._writer:
                        result = action(db)
                else:
                    result = action(db)
        except (sqlite3.Error, OSError, ValueError) as e:
            self._failed(what, e, write)
            return default
        if self._failing is not None:
            self._worked(write)
        return result

    def _failed(self, what: str, error: BaseException, write: bool) -> None:
        with self._lock:
            now = time.monotonic()
            if self._failing is not None:  # one warning per episode (S-1202)
                self._failed_write = self._failed_write or write
                self._retry_pause = min(self._retry_pause * 2, RETRY_MAX)
                self._retry_at = now + self._retry_pause
                return
            self._failing = _why(error)
            self._failed_write = write
            self._retry_pause = RETRY_FIRST
            self._retry_at = now + RETRY_FIRST
        maillog.warning(
            f"state store {self.path}: cannot {what}: {self._failing}; until it works again sending "
            "limits are not applied and login delays hold in this process only"
        )

    def _worked(self, write: bool) -> None:
        """An operation worked: the episode ends, unless writes failed in it
        and this was a read (a write-locked or read-only file still reads)."""
        with self._lock:
            if self._failing is None or (self._failed_write and not write):
                return
            self._failing = None
            self._failed_write = False
            self._retry_at = 0.0
        maillog.info(f"state store {self.path} works again")

    def mark_failing(self, why: str) -> None:
        """Start an episode whose warning was already logged (serve's start-up
        check), so that the first failing operation does not warn again."""
        with self._lock:
            if self._failing is None:
                self._failing = why
                self._failed_write = True
                self._retry_at = 0.0  # try at once: it may work by the first message

    @property
    def failing(self) -> bool:
        return self._failing is not None

    def close(self) -> None:
        with self._lock:
            self._drain()

    # -- the secret -----------------------------------------------------------------
    def secret(self) -> bytes:
        """``state_dir/secret`` (S-514, S-1202; state/secretfile.py), read
        once; OSError when unusable."""
        if self._secret is None:
            self._secret = load_secret(self.directory)
        return self._secret

    def problem(self) -> str | None:
        """Why the store cannot be opened and written now, or None (serve's
        start-up check, S-1202)."""
        return open_problem(self.directory)

    def _hashed(self, name: str) -> str | None:
        """A failed login's name as the store keeps it: a keyed hash, so a
        password typed as a name never reaches the disk (S-1202); None when
        no key can be had (the store's directory is unusable)."""
        if name == THROTTLE_OTHER_NAMES:
            return name  # the bucket of folded names holds no name
        if self._name_key is None:
            try:
                secret = load_secret(self.directory)
            except OSError as e:
                self._failed("read its secret", e, True)
                return None
            self._name_key = hashlib.blake2b(secret, digest_size=32, person=b"msa-login-names").digest()
        return hashlib.blake2b(name.encode("utf-8", "surrogatepass"), key=self._name_key, digest_size=16).hexdigest()

    # -- login failures (S-511) -----------------------------------------------------
    def delay(self, client: str) -> float:
        """Seconds to wait before answering the next AUTH from ``client``."""
        now = self._clock()

        def read(db: sqlite3.Connection) -> int:
            row = db.execute(
                "SELECT COALESCE(SUM(count), 0), MAX(last) FROM failures WHERE client = ?", (client,)
            ).fetchone()
            if row[1] is None or now - row[1] >= THROTTLE_FORGET_SECONDS:
                return 0
            return int(row[0])

        stored = self._run("read login failures", read, 0)
        failures = min(max(stored, self.fallback.failures(client)), THROTTLE_MAX_COUNTED_FAILURES)
        if failures == 0:
            return 0.0
        return min(THROTTLE_FIRST_DELAY_SECONDS * 2 ** (failures - 1), THROTTLE_MAX_DELAY_SECONDS)

    def failed(self, client: str, name: str) -> None:
        """One failed AUTH from ``client`` for user ``name`` (S-511)."""
        now = self._clock()
        self.fallback.failed(client, name)
        hashed = self._hashed(name)
        if hashed is None:
            return

        def write(db: sqlite3.Connection) -> None:
            db.execute("BEGIN IMMEDIATE")
            try:
                # The whole address is forgotten 15 minutes after its last failure.
                db.execute(
                    "DELETE FROM failures WHERE client = ? AND "
                    "(SELECT MAX(last) FROM failures WHERE client = ?) <= ?",
                    (client, client, now - THROTTLE_FORGET_SECONDS),
                )
                names = db.execute(
                    "SELECT name FROM failures WHERE client = ? AND name != ? ORDER BY last", (client, hashed)
                ).fetchall()
                known = db.execute(
                    "SELECT 1 FROM failures WHERE client = ? AND name = ?", (client, hashed)
                ).fetchone()
                if known is None and len(names) >= THROTTLE_MAX_NAMES:
                    # Many names from one address: the oldest one's count
                    # moves to the bucket no success clears.
                    oldest = next(n for (n,) in names if n != THROTTLE_OTHER_NAMES)
                    db.execute(
                        "INSERT INTO failures VALUES (?, ?, (SELECT count FROM failures WHERE client = ? "
                        "AND name = ?), ?) ON CONFLICT (client, name) DO UPDATE SET count = "
                        "MIN(count + excluded.count, ?), last = excluded.last",
                        (client, THROTTLE_OTHER_NAMES, client, oldest, now, THROTTLE_MAX_COUNTED_FAILURES),
                    )
                    db.execute("DELETE FROM failures WHERE client = ? AND name = ?", (client, oldest))
                db.execute(
                    "INSERT INTO failures VALUES (?, ?, 1, ?) ON CONFLICT (client, name) DO UPDATE SET "
                    "count = MIN(count + 1, ?), last = excluded.last",
                    (client, hashed, now, THROTTLE_MAX_COUNTED_FAILURES),
                )
                db.execute("COMMIT")
            except BaseException:
                db.execute("ROLLBACK")
                raise
            self._prune(db, now)

        self._run("record a login failure", write, None, write=True)

    def succeeded(self, client: str, name: str) -> None:
        """A success forgets that name's failures from that address only."""
        self.fallback.succeeded(client, name)
        hashed = self._hashed(name)
        if hashed is None:
            return
        self._run(
            "forget login failures",
            lambda db: db.execute("DELETE FROM failures WHERE client = ? AND name = ?", (client, hashed)),
            None,
            write=True,
        )

    # -- sending reservations (S-1201) ----------------------------------------------
    def reserve(self, user: str, kind: str, limit: int, period: float, step: float = 1.0) -> Hold | None:
        """Count one message (``kind`` "messages") or one recipient
        ("recipients") for ``user`` if fewer than ``limit`` were counted in
        the last ``period`` seconds: check and count in one transaction.
        The hold; None when the limit is reached; NOT_COUNTED when the store
        fails (the limits fail open, S-1202)."""
        now = self._clock()
        at = now - now % step if step > 0 else now
        messages, recipients = (1, 0) if kind == "messages" else (0, 1)
        column = "messages" if kind == "messages" else "recipients"

        def write(db: sqlite3.Connection) -> Hold | None:
            db.execute("BEGIN IMMEDIATE")
            try:
                (used,) = db.execute(
                    f"SELECT COALESCE(SUM({column}), 0) FROM sent WHERE user = ? AND at > ?",
                    (user, now - period),
                ).fetchone()
                if used >= limit:
                    db.execute("ROLLBACK")
                    return None
                db.execute(
                    "INSERT INTO sent VALUES (?, ?, ?, ?) ON CONFLICT (user, at) DO UPDATE SET "
                    "messages = messages + excluded.messages, recipients = recipients + excluded.recipients",
                    (user, at, messages, recipients),
                )
                db.execute("COMMIT")
            except BaseException:
                db.execute("ROLLBACK")
                raise
            self._prune(db, now)
            return Hold(user, at, messages, recipients)

        return self._run("reserve sending counts", write, NOT_COUNTED, write=True)

    def release(self, holds: Iterable[Hold]) -> None:
        """Give reservations back (the message was not accepted)."""
        rows = [(h.messages, h.recipients, h.user, h.at) for h in holds if h.counted]
        if not rows:
            return

        def write(db: sqlite3.Connection) -> None:
            db.execute("BEGIN IMMEDIATE")
            try:
                db.executemany(
                    "UPDATE sent SET messages = MAX(messages - ?, 0), recipients = MAX(recipients - ?, 0) "
                    "WHERE user = ? AND at = ?",
                    rows,
                )
                db.execute("COMMIT")
            except BaseException:
                db.execute("ROLLBACK")
                raise

        self._run("give back sending counts", write, None, write=True)

    def usage(self, user: str, messages_period: float, recipients_period: float) -> Usage | None:
        """What ``user`` holds in the two windows, or None when the store fails."""
        now = self._clock()

        def read(db: sqlite3.Connection) -> Usage:
            row = db.execute(
                "SELECT COALESCE(SUM(CASE WHEN at > ? THEN messages END), 0), "
                "COALESCE(SUM(CASE WHEN at > ? THEN recipients END), 0) FROM sent WHERE user = ? AND at > ?",
                (now - messages_period, now - recipients_period, user, now - max(messages_period, recipients_period)),
            ).fetchone()
            return Usage(int(row[0]), int(row[1]))

        return self._run("read sending counts", read, None)

    def first_refusal(self, user: str, kind: str, period: float) -> bool:
        """True for the first limit refusal of ``user`` in a window of
        ``period`` seconds (S-1201: logged once); fails towards logging."""
        now = self._clock()

        def write(db: sqlite3.Connection) -> bool:
            row = db.execute(
                "INSERT INTO noted VALUES (?, ?, ?) ON CONFLICT (user, kind) DO UPDATE SET until = "
                "excluded.until WHERE until <= ? RETURNING until",
                (user, kind, now + period, now),
            ).fetchone()
            return row is not None

        return bool(self._run("note a limit refusal", write, True, write=True))

    def counts(self, user: str | None, periods: tuple[float, float]) -> dict[str, Usage]:
        """``msa.py limits``: every user's (or one user's) usage in the windows."""
        now = self._clock()
        since = now - max(periods)
        where, args = ("AND user = ?", (user,)) if user is not None else ("", ())

        def read(db: sqlite3.Connection) -> dict[str, Usage]:
            rows = db.execute(
                "SELECT user, COALESCE(SUM(CASE WHEN at > ? THEN messages END), 0), "
                "COALESCE(SUM(CASE WHEN at > ? THEN recipients END), 0) "
                f"FROM sent WHERE at > ? {where} GROUP BY user ORDER BY user",
                (now - periods[0], now - periods[1], since, *args),
            ).fetchall()
            return {name: Usage(int(m), int(r)) for name, m, r in rows if m or r}

        with self._db() as db:  # the admin command wants the error, not a fallback
            return read(db)

    def reset(self, user: str) -> int:
        """``msa.py limits reset USER``: forget the user's counts; how many messages."""
        with self._db() as db:
            (count,) = db.execute("SELECT COALESCE(SUM(messages), 0) FROM sent WHERE user = ?", (user,)).fetchone()
            db.execute("DELETE FROM sent WHERE user = ?", (user,))
            db.execute("DELETE FROM noted WHERE user = ?", (user,))
            return int(count)

    # -- bounds ---------------------------------------------------------------------
    def _prune(self, db: sqlite3.Connection, now: float) -> None:
        if now - self._pruned < PRUNE_INTERVAL:
            return
        self._pruned = now
        db.execute("DELETE FROM sent WHERE at <= ? OR (messages = 0 AND recipients = 0)", (now - MAX_WINDOW,))
        db.execute("DELETE FROM noted WHERE until <= ?", (now,))
        db.execute("DELETE FROM failures WHERE last <= ?", (now - THROTTLE_FORGET_SECONDS,))
        db.execute(
            "DELETE FROM failures WHERE client IN (SELECT client FROM failures GROUP BY client "
            "ORDER BY MAX(last) DESC LIMIT -1 OFFSET ?)",
            (THROTTLE_MAX_ENTRIES,),
        )
