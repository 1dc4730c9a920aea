"""The SQL directory (SPEC.md S-1303, S-1304, S-1305, S-510).

This module owns asking a database who a user is: a small pool of
connections shared by the threads of one process, re-opened after an
error; the ``password_query`` row checked with ``sasl.hashes`` (an unknown
login, a NULL or an unusable hash cost one check of ``default_scheme``'s
dummy, as a known one does); the ``senders_query`` rows as users.db
senders; telling an outage once (``warn``) and its end once (``info``);
and ``check``, which connects and runs each query with a name that cannot
exist. The file is ``sqlfile``'s, the drivers ``sqldrivers``'.

Any failure to get an answer in time (the database down, slow, refusing
the query, or answering with the wrong shape) is a temporary verdict from
``authenticate`` and ``Unavailable`` from ``senders``: never a crash,
never a success. It imports neither ``server/``, ``delivery/`` nor
``state/``; what it logs goes through the callbacks it is given.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable
from typing import Any

from sasl import hashes, limits
from sasl.userdb import check_sender

from . import UNKNOWN, Client, Unavailable, Verdict, Warn
from .sqldrivers import MAX_ROWS, Driver, DriverMissing, driver_for, error_text
from .sqlfile import SqlConfig, SqlConfigError, load

__all__ = ["CHECK_NAME", "SqlConfigError", "SqlDirectory", "check", "load"]

#: Connections kept open between queries, and the most open at once: a
#: process's AUTHs and sender checks share them; more wait (within the
#: timeout) for one to be free.
POOL_IDLE = 4
POOL_MAX = 8

#: Senders one user may have from ``senders_query`` (more is an error, as
#: a users.db line would be very long): real ones are a handful of aliases.
MAX_SENDERS = MAX_ROWS - 1

#: Bad sender values and names remembered, so each is logged once.
_MAX_REMEMBERED = 1000

#: What ``check`` asks for: no mailbox can be named so (``.invalid`` is
#: reserved, RFC 2606 §2).
CHECK_NAME = "msa-check-no-such-user@nonexistent.invalid"


def _name_problem(name: object) -> str | None:
    """Why ``name`` is not even sent to the database (S-509's bound, a NUL
    that no driver passes safely), or None."""
    if not isinstance(name, str) or not name:
        return "empty name"
    if "\0" in name:
        return "name contains NUL"
    try:
        if len(name.encode("utf-8")) > limits.MAX_USERNAME_OCTETS:
            return "name longer than 255 octets"
    except UnicodeEncodeError:
        return "name is not valid UTF-8"
    return None


class _Pool:
    """Up to POOL_MAX connections, POOL_IDLE of them kept between queries."""

    def __init__(self, driver: Driver) -> None:
        self._driver = driver
        self._idle: list[Any] = []
        self._lock = threading.Lock()
        self._slots = threading.BoundedSemaphore(POOL_MAX)
        self._pid = os.getpid()
        #: A forked child's copies of its parent's idle connections (serve's
        #: workers): never used, and never closed either, since closing one
        #: would end the session the parent still has on the same socket.
        self._inherited: list[Any] = []

    def take(self, deadline: float) -> tuple[Any, bool]:
        """A connection and whether it was reused; raises Unavailable."""
        if not self._slots.acquire(timeout=max(0.0, deadline - time.monotonic())):
            raise Unavailable(f"all {POOL_MAX} database connections are busy")
        with self._lock:
            if self._pid != os.getpid():  # a forked child never shares its parent's connections
                self._inherited, self._idle, self._pid = self._inherited + self._idle, [], os.getpid()
            if self._idle:
                return self._idle.pop(), True
        try:
            return self._driver.connect(), False
        except BaseException:
            self._slots.release()
            raise

    def give_back(self, conn: Any) -> None:
        with self._lock:
            keep = len(self._idle) < POOL_IDLE
            if keep:
                self._idle.append(conn)
        self._slots.release()
        if not keep:
            self._driver.close(conn)

    def drop(self, conn: Any) -> None:
        """Close a connection that failed, and the idle ones: after an error
        they are likely broken too (a restarted server), so all re-open."""
        with self._lock:
            idle, self._idle = self._idle, []
        self._slots.release()
        for each in (conn, *idle):
            self._driver.close(each)

    def close(self) -> None:
        with self._lock:
            idle, self._idle = self._idle, []
        for each in idle:
            self._driver.close(each)


class SqlDirectory:
    """Users, passwords and senders from an SQL database (S-1303).

    ``warn`` gets one line when the database stops answering, ``info`` one
    when it answers again; neither ever carries a password or a hash.
    Raises SqlConfigError when the driver or the hash package that
    ``default_scheme`` needs is missing (the problem names the package).
    """

    name = "sql"

    def __init__(self, config: SqlConfig, *, warn: Warn, info: Callable[[str], None] | None = None) -> None:
        self.config = config
        self._warn = warn
        self._info = info or (lambda _line: None)
        try:
            self._driver = driver_for(config)
        except DriverMissing as error:
            raise SqlConfigError([f"{config.where('dsn')}: {error}"]) from None
        try:
            hashes.dummy(config.default_scheme)  # made now: the first unknown costs no more (S-510)
        except LookupError as error:
            raise SqlConfigError([f"{config.where('default_scheme')}: {error}"]) from None
        self._pool = _Pool(self._driver)
        self._queries = {
            key: self._driver.translate(query)
            for key in ("password_query", "senders_query")
            if (query := getattr(config, key)) is not None
        }
        self._state = threading.Lock()
        self._failing: set[str] = set()  # the queries whose last run failed
        self._bad_senders: set[str] = set()
        self._bad_hashes: set[str] = set()

    # --- queries -----------------------------------------------------------------------

    # An episode starts when a query fails while none is failing, and ends
    # when every query that failed has answered again: one warning and one
    # info line each, however many AUTHs meanwhile, and no flapping when
    # one query is broken while the other works.

    @property
    def failing(self) -> bool:
        """Within an outage (msa_directory_up, S-1501)."""
        return bool(self._failing)

    def _outage(self, key: str, why: str) -> None:
        with self._state:
            first = not self._failing
            self._failing.add(key)
        if first:
            self._warn(f"sql: database unavailable: {why}")

    def _answered(self, key: str) -> None:
        with self._state:
            ended = key in self._failing and len(self._failing) == 1
            self._failing.discard(key)
        if ended:
            self._info("sql: database available again")

    def _run(self, key: str, login: str, rows: int) -> list[tuple]:
        """At most ``rows`` rows of one column from query ``key`` for ``login``;
        Unavailable (logged once per outage) when there is no good answer in
        time. A failure on a reused connection (one a restarted server
        closed) is tried once more on a new one, within the timeout."""
        deadline = time.monotonic() + self.config.timeout
        query = self._queries[key]
        while True:
            try:
                conn, reused = self._pool.take(deadline)
            except Unavailable as error:
                self._outage(key, str(error))
                raise
            except Exception as error:
                why = f"cannot connect: {error_text(error, (login,))}"
                self._outage(key, why)
                raise Unavailable(why) from None
            try:
                columns, found = self._driver.run(conn, query, login, rows + 1)
            except Exception as error:
                self._pool.drop(conn)
                if reused and time.monotonic() < deadline:
                    continue
                why = f"{key} failed: {error_text(error, (login,))}"
                self._outage(key, why)
                raise Unavailable(why) from None
            self._pool.give_back(conn)
            break
        if columns != 1 or len(found) > rows:
            why = f"{key} must return one column" if columns != 1 else f"{key} returned more than {rows} rows"
            self._outage(key, why)
            raise Unavailable(why)
        self._answered(key)
        return found

    # --- the Directory interface -----------------------------------------------------

    def authenticate(self, name: str, password: bytes, client: Client) -> Verdict:
        """The password_query's hash for ``name`` checked against ``password``.

        No row: the dummy of ``default_scheme`` is checked instead, so that an
        unknown name costs what a known one does, and the name is not known
        here (S-1301, S-510). An unusable hash (another scheme, out of bounds,
        NULL): a failure whose reason names why, at the same cost. The name
        is looked up in lower case (S-509), as msa keeps every user name."""
        name = name.lower()  # S-509: names are compared in lower case, as msa stores them
        scheme = self.config.default_scheme
        refused = _name_problem(name)
        if refused is not None or "password_query" not in self._queries:
            if refused is not None:
                hashes.verify_dummy(password, scheme)
            return Verdict(known=False, reason=refused or "")
        try:
            rows = self._run("password_query", name, 1)
        except Unavailable as error:
            return Verdict(known=False, temporary=True, reason=str(error))
        if not rows:
            hashes.verify_dummy(password, scheme)
            return UNKNOWN
        value = rows[0][0]
        if isinstance(value, (bytes, bytearray, memoryview)):
            value = bytes(value).decode("ascii", "replace")
        stored = hashes.describe(value if isinstance(value, str) else "")
        if stored.problem is not None:
            hashes.verify_dummy(password, scheme)
            self._unusable(name, stored.problem)
            return Verdict(known=True, ok=False, user=name, reason=stored.problem)
        result = hashes.verify(stored, password)
        if result.problem is not None:  # a missing package: cost as any failure
            hashes.verify_dummy(password, scheme)
            self._unusable(name, result.problem)
            return Verdict(known=True, ok=False, user=name, reason=result.problem)
        if not result.ok:
            return Verdict(known=True, ok=False, user=name, reason="password mismatch")
        return Verdict(known=True, ok=True, user=name)

    def _unusable(self, name: str, why: str) -> None:
        """S-1304: one log line per user whose hash can never authenticate
        (naming the scheme, never the hash)."""
        with self._state:
            if name in self._bad_hashes or len(self._bad_hashes) >= _MAX_REMEMBERED:
                return
            self._bad_hashes.add(name)
        self._warn(f"sql: the password hash of {name} cannot be used: {why}")

    def senders(self, user: str) -> tuple[str, ...] | None:
        """The senders_query's rows for ``user`` (S-1305), None when there is
        no senders_query. Rows that are not a users.db sender (``user@domain``
        or ``@domain``) are left out and logged once each. Unavailable when
        the database cannot answer now."""
        if "senders_query" not in self._queries:
            return None
        if _name_problem(user) is not None:
            return ()
        found: list[str] = []
        for (value, *_) in self._run("senders_query", user, MAX_SENDERS):
            if isinstance(value, (bytes, bytearray, memoryview)):
                value = bytes(value).decode("utf-8", "replace")
            if not isinstance(value, str):
                continue  # NULL
            value = value.strip()
            why = check_sender(value)
            if why is None:
                if value not in found:
                    found.append(value)
            elif value not in self._bad_senders and len(self._bad_senders) < _MAX_REMEMBERED:
                self._bad_senders.add(value)
                self._warn(f"sql: senders_query gave {value[:100]!r} for {user}, not a sender ({why}); ignored")
        return tuple(found)

    def check(self) -> list[str]:
        """Problems of this directory's file and database (see ``check``)."""
        return check(self.config)

    def close(self) -> None:
        self._pool.close()


def check(config: SqlConfig) -> list[str]:
    """Connect, run each query once with CHECK_NAME, and say what is wrong:
    ``FILE:LINE: why`` for a key, ``sql: why`` for the database (S-1303).
    A missing driver or hash package is named. Opens one connection of its
    own and closes it."""
    problems: list[str] = []
    missing = hashes.missing_package(config.default_scheme)
    if missing:
        problems.append(f"{config.where('default_scheme')}: {missing}")
    try:
        driver = driver_for(config)
    except DriverMissing as error:
        return [*problems, f"{config.where('dsn')}: {error}"]
    try:
        conn = driver.connect()
    except Exception as error:
        return [*problems, f"sql: cannot connect to the database: {error_text(error)}"]
    try:
        for key in ("password_query", "senders_query"):
            query = getattr(config, key)
            if query is None:
                continue
            try:
                columns, rows = driver.run(conn, driver.translate(query), CHECK_NAME, 2)
            except Exception as error:
                problems.append(f"{config.where(key)}: {key} failed: {error_text(error)}")
                driver.close(conn)
                try:
                    conn = driver.connect()
                except Exception as again:
                    problems.append(f"sql: cannot connect to the database: {error_text(again)}")
                    return problems
                continue
            if columns != 1:
                problems.append(f"{config.where(key)}: {key} returns {columns} columns; it must return one")
            elif key == "password_query" and rows:
                problems.append(
                    f"{config.where(key)}: password_query returned a row for {CHECK_NAME!r}, "
                    "a name that cannot exist (does it compare with :login?)"
                )
    finally:
        driver.close(conn)
    return problems
