"""The state store, ``state_dir/state.sqlite`` (SPEC.md S-1202, S-511, S-1201).

This module owns what msa keeps across restarts and shares between
``serve`` and every ``inetd`` process: login failures per client address
and user name (the S-511 delay), the messages and recipients each user sent
in the sliding windows of S-1201, when a limit refusal was last logged, and
one secret made once (the salt of unknown users' SCRAM challenges, S-514).

It is stdlib ``sqlite3`` in WAL mode: readers never wait for the writer,
and every write is one small statement in autocommit mode, so eight busy
sessions cost a few tens of microseconds each per message. Connections come
from a small pool shared by the session threads (an ``inetd`` process opens
one, and only when a session first needs it).

The store is never allowed to lose or refuse mail. Every operation catches
what sqlite3 and the file system raise; a failing store fails open (limits
not applied, login delays kept in this process only, by the ``fallback``
``sasl.Throttle``) and logs one warning per failure episode, and one line
when it works again. A store file removed while msa runs is noticed (its
inode changes) and made again, so counting resumes instead of going on in
an unlinked file nobody else sees.

Times are wall-clock seconds (``time.time``): they must mean the same in
another process and after a restart. Sending counts are kept per user in
steps (``SendingLimits`` asks for 1/120 of the shorter period), so reading a
window sums a bounded number of rows however much a user sends: a message
leaves its window up to one step early. Writes from the threads of one
process take turns on a lock, so they never meet in SQLite's busy handler,
whose sleeps are milliseconds long. Everything is bounded: old windows and
forgotten failures are pruned, and failures per address are capped as in
``sasl.throttle``.
"""

from __future__ import annotations

import os
import queue
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
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

from . import maillog

__all__ = ["FILENAME", "Store", "Usage", "open_problem"]

FILENAME = "state.sqlite"

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

#: The layout of the tables below, in PRAGMA user_version.
SCHEMA_VERSION = 1

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


@dataclass(frozen=True, slots=True)
class Usage:
    """What a user sent in the current windows (S-1201)."""

    messages: int
    recipients: int


class StoreError(Exception):
    """The store cannot be used; the text says why, for the one warning."""


def open_problem(directory: str) -> str | None:
    """Why the store in ``directory`` cannot be opened and written, or None
    (for ``check``, which exits 1 then; S-1202). Creates nothing but the
    file itself, as ``serve`` would."""
    if not os.path.isdir(directory):
        return f"{directory} is not a directory" if os.path.exists(directory) else f"{directory} does not exist"
    path = os.path.join(directory, FILENAME)
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


def _why(error: BaseException) -> str:
    text = str(error) or type(error).__name__
    return text.splitlines()[0][:200] if text else type(error).__name__


def _connect(path: str) -> sqlite3.Connection:
    db = sqlite3.connect(path, timeout=BUSY_TIMEOUT, isolation_level=None, check_same_thread=False)
    try:
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA synchronous=NORMAL")  # WAL: durable enough, no fsync per count
        db.executescript(_SCHEMA)
        if db.execute("PRAGMA user_version").fetchone()[0] == 0:
            db.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")  # what a later msa migrates from
    except BaseException:
        db.close()
        raise
    return db


class Store:
    """The state of one ``state_dir``; thread-safe; every method fails open."""

    def __init__(self, directory: str, *, clock: Callable[[], float] = time.time) -> None:
        self.directory = directory
        self.path = os.path.join(directory, FILENAME)
        self._clock = clock
        self._pool: queue.SimpleQueue[sqlite3.Connection] = queue.SimpleQueue()
        self._lock = threading.Lock()
        self._inode: tuple[int, int] | None = None
        self._failing: str | None = None  # the warning of the current episode
        self._pruned = 0.0
        self._writer = threading.Lock()  # one writer at a time in this process
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
        try:
            with self._db() as db:
                if write:
                    with self._writer:
                        result = action(db)
                else:
                    result = action(db)
        except (sqlite3.Error, OSError, ValueError) as e:
            self._failed(what, e)
            return default
        if self._failing is not None:
            with self._lock:
                if self._failing is not None:
                    self._failing = None
                    maillog.info(f"state store {self.path} works again")
        return result

    def _failed(self, what: str, error: BaseException) -> None:
        with self._lock:
            if self._failing is not None:
                return  # one warning per episode (S-1202)
            self._failing = _why(error)
        maillog.warning(
            f"state store {self.path}: cannot {what}: {self._failing}; until it works again sending "
            "limits are not applied and login delays hold in this process only"
        )

    @property
    def failing(self) -> bool:
        return self._failing is not None

    def close(self) -> None:
        with self._lock:
            self._drain()

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
                    "SELECT name FROM failures WHERE client = ? AND name != ? ORDER BY last", (client, name)
                ).fetchall()
                known = db.execute(
                    "SELECT 1 FROM failures WHERE client = ? AND name = ?", (client, name)
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
                    (client, name, now, THROTTLE_MAX_COUNTED_FAILURES),
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
        self._run(
            "forget login failures",
            lambda db: db.execute("DELETE FROM failures WHERE client = ? AND name = ?", (client, name)),
            None,
            write=True,
        )

    # -- sending counts (S-1201) ----------------------------------------------------
    def usage(self, user: str, messages_period: float, recipients_period: float) -> Usage | None:
        """What ``user`` sent in the two windows, or None when the store fails
        (the limits then fail open)."""
        now = self._clock()

        def read(db: sqlite3.Connection) -> Usage:
            row = db.execute(
                "SELECT COALESCE(SUM(CASE WHEN at > ? THEN messages END), 0), "
                "COALESCE(SUM(CASE WHEN at > ? THEN recipients END), 0) FROM sent WHERE user = ? AND at > ?",
                (now - messages_period, now - recipients_period, user, now - max(messages_period, recipients_period)),
            ).fetchone()
            return Usage(int(row[0]), int(row[1]))

        return self._run("read sending counts", read, None)

    def record(self, user: str, recipients: int, step: float = 1.0) -> None:
        """One message the MTA accepted, for ``recipients`` recipients,
        counted in the step of ``step`` seconds it falls in."""
        now = self._clock()
        at = now - now % step if step > 0 else now

        def write(db: sqlite3.Connection) -> None:
            db.execute(
                "INSERT INTO sent VALUES (?, ?, 1, ?) ON CONFLICT (user, at) DO UPDATE SET "
                "messages = messages + 1, recipients = recipients + excluded.recipients",
                (user, at, recipients),
            )
            self._prune(db, now)

        self._run("record a sent message", write, None, write=True)

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
            return {name: Usage(int(m), int(r)) for name, m, r in rows}

        with self._db() as db:  # the admin command wants the error, not a fallback
            return read(db)

    def reset(self, user: str) -> int:
        """``msa.py limits reset USER``: forget the user's counts; how many messages."""
        with self._db() as db:
            (count,) = db.execute("SELECT COALESCE(SUM(messages), 0) FROM sent WHERE user = ?", (user,)).fetchone()
            db.execute("DELETE FROM sent WHERE user = ?", (user,))
            db.execute("DELETE FROM noted WHERE user = ?", (user,))
            return int(count)

    # -- the SCRAM secret (S-514) ----------------------------------------------------
    def secret(self, name: str, make: Callable[[], bytes]) -> bytes | None:
        """The value ``name``, made with ``make`` the first time in any
        process (the first writer wins); None when the store fails."""

        def get(db: sqlite3.Connection) -> bytes:
            db.execute("INSERT INTO meta VALUES (?, ?) ON CONFLICT (key) DO NOTHING", (name, make()))
            return bytes(db.execute("SELECT value FROM meta WHERE key = ?", (name,)).fetchone()[0])

        return self._run("read its secret", get, None, write=True)

    # -- bounds ---------------------------------------------------------------------
    def _prune(self, db: sqlite3.Connection, now: float) -> None:
        if now - self._pruned < PRUNE_INTERVAL:
            return
        self._pruned = now
        db.execute("DELETE FROM sent WHERE at <= ?", (now - MAX_WINDOW,))
        db.execute("DELETE FROM noted WHERE until <= ?", (now,))
        db.execute("DELETE FROM failures WHERE last <= ?", (now - THROTTLE_FORGET_SECONDS,))
        db.execute(
            "DELETE FROM failures WHERE client IN (SELECT client FROM failures GROUP BY client "
            "ORDER BY MAX(last) DESC LIMIT -1 OFFSET ?)",
            (THROTTLE_MAX_ENTRIES,),
        )
