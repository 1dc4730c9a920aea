"""The SQL directory's drivers: one small adapter per kind of database
(SPEC.md S-1303).

This module owns, per kind, importing the driver only when the DSN names
it (PostgreSQL: psycopg 3; MySQL and MariaDB: PyMySQL; SQLite: the standard
library's sqlite3), naming the package when it is missing, connecting with
the file's ``timeout`` on the connection and on each statement, the
translation of ``:login`` into the driver's bound parameter, and running one
query for at most a given number of rows. It keeps no connection: the pool
in ``sql`` does. Imports: the standard library, ``sqlfile``, and the one
driver configured (lazily); never ``server/``, ``delivery/`` or ``state/``.

``:login`` is always a bound parameter, never pasted into the text, and is
typed as text. With PostgreSQL, psycopg's default string dumper sends it
untyped (oid 0, "unknown"), and the server then deduces a type per use: in
``SELECT :login UNION SELECT address FROM alias WHERE goto = :login``
(CONTRACT.md's example against PostfixAdmin's schema) the first use wants
text and the second varchar, which fails ("inconsistent types deduced for
parameter $1"). So each PostgreSQL connection binds ``str`` with psycopg's
``StrDumper``, whose oid is text: the query text stays as the file wrote it
(errors point at the columns the administrator wrote), and ``text`` compares
with varchar columns (and uses their indexes) as any literal would.
"""

from __future__ import annotations

import math
import os
import socket
import threading
import time
import urllib.parse
from collections.abc import Sequence
from typing import Any

from .sqlfile import PLACEHOLDER, SqlConfig

__all__ = ["Driver", "DriverMissing", "driver_for"]

#: Rows read of any one answer; a query that returns more is answered as
#: an error by the caller (it asked for fewer), and no more are fetched.
#: MySQL is told so too (``sql_select_limit``), so the server sends no more.
MAX_ROWS = 1001

#: Seconds past ``timeout`` after which a PostgreSQL query still waiting is
#: cut off by the client: statement_timeout is the server's, and a server
#: that hangs or a network that drops packets never sends its error.
_SEVER_GRACE = 1.0

#: How often (in SQLite virtual machine steps) the SQLite deadline is looked at.
_SQLITE_STEPS = 1000

_PACKAGES = {
    "postgresql": ("psycopg", "psycopg 3 (Debian: python3-psycopg; PyPI: psycopg)"),
    "mysql": ("pymysql", "PyMySQL (Debian: python3-pymysql; PyPI: PyMySQL)"),
    "sqlite": ("sqlite3", "the Python standard library's sqlite3 (Debian: libpython3-stdlib)"),
}


class DriverMissing(Exception):
    """The driver the DSN needs is not installed; str() names the package."""


def _pyformat(query: str) -> str:
    """``:login`` as ``%(login)s``, every other ``%`` doubled (psycopg and
    PyMySQL both read ``%%`` as one ``%``, in literals too)."""
    return PLACEHOLDER.sub("%(login)s", query.replace("%", "%%"))


class Driver:
    """One kind of database. ``connect()`` returns a new connection;
    ``run(conn, query, login, rows)`` returns ``(columns, rows)``, at most
    ``rows`` of them; both raise the driver's own exceptions."""

    kind = ""

    def __init__(self, config: SqlConfig, module: Any) -> None:
        self.config = config
        self.module = module

    def connect(self) -> Any:
        raise NotImplementedError

    def translate(self, query: str) -> str:
        return _pyformat(query)

    def run(self, conn: Any, query: str, login: str, rows: int) -> tuple[int, list[tuple]]:
        raise NotImplementedError

    def close(self, conn: Any) -> None:
        try:
            conn.close()
        except Exception:  # noqa: S110 - a broken connection is dropped either way
            pass


class _Postgres(Driver):
    kind = "postgresql"

    def connect(self) -> Any:
        from psycopg.types.string import StrDumper

        timeout = self.config.timeout
        extra: dict[str, Any] = {}
        if self.config.password is not None:
            extra["password"] = self.config.password
        conn = self.module.connect(
            self.config.dsn,
            # libpq counts whole seconds and takes 1 as 2
            connect_timeout=max(2, math.ceil(timeout)),
            options=f"-c statement_timeout={max(1, round(timeout * 1000))}",
            application_name="msa",
            autocommit=True,
            # no server-side prepared statements: a pooler (PgBouncer in
            # transaction mode) may hand each statement another backend
            prepare_threshold=None,
            **extra,
        )
        conn.adapters.register_dumper(str, StrDumper)  # :login typed as text (module docstring)
        return conn

    def run(self, conn: Any, query: str, login: str, rows: int) -> tuple[int, list[tuple]]:
        watchdog = threading.Timer(self.config.timeout + _SEVER_GRACE, _sever, (conn,))
        watchdog.daemon = True
        watchdog.start()
        try:
            # A server-side cursor, so that no more than ``rows`` rows are sent.
            with conn.transaction(), conn.cursor(name="msa_directory") as cur:
                cur.execute(query, {"login": login})
                columns = len(cur.description or ())
                return columns, cur.fetchmany(rows)
        finally:
            watchdog.cancel()


def _sever(conn: Any) -> None:
    """Shut a connection's socket down, so that a query waiting on it ends
    with an error now (psycopg has no client-side query timeout). The
    connection is dropped by the pool after that error."""
    try:
        with socket.socket(fileno=os.dup(conn.fileno())) as sock:
            sock.shutdown(socket.SHUT_RDWR)
    except Exception:  # noqa: S110 - already closed: nothing is waiting on it
        pass


class _MySQL(Driver):
    kind = "mysql"

    def connect(self) -> Any:
        timeout = self.config.timeout
        conn = self.module.connect(
            **self.config.mysql_params(),
            connect_timeout=timeout,
            read_timeout=timeout,
            write_timeout=timeout,
            charset="utf8mb4",
            autocommit=True,
        )
        # Best effort, each: the server sends at most MAX_ROWS rows, and stops
        # a slow query itself (read_timeout only stops waiting for it).
        # MariaDB and MySQL name the second differently; an old server or
        # a proxy without them still works, bounded by read_timeout.
        if "mariadb" in conn.get_server_info().lower():
            statement_bound = ("SET SESSION max_statement_time = %s", timeout)
        else:
            statement_bound = ("SET SESSION max_execution_time = %s", max(1, round(timeout * 1000)))
        for statement, value in (("SET SESSION sql_select_limit = %s", MAX_ROWS), statement_bound):
            try:
                with conn.cursor() as cur:
                    cur.execute(statement, (value,))
            except self.module.err.MySQLError:
                pass
        return conn

    def run(self, conn: Any, query: str, login: str, rows: int) -> tuple[int, list[tuple]]:
        with conn.cursor() as cur:
            cur.execute(query, {"login": login})
            columns = len(cur.description or ())
            return columns, list(cur.fetchmany(rows))


class _SQLiteConnection:
    """A sqlite3 connection with a deadline its progress handler enforces:
    sqlite3's ``timeout`` only bounds waiting for a lock, not a slow query."""

    def __init__(self, conn: Any) -> None:
        self.conn = conn
        self.deadline = math.inf
        conn.set_progress_handler(self._late, _SQLITE_STEPS)

    def _late(self) -> int:
        return 1 if time.monotonic() > self.deadline else 0  # nonzero interrupts the query

    def close(self) -> None:
        self.conn.close()


class _SQLite(Driver):
    kind = "sqlite"

    def connect(self) -> Any:
        # read-only: msa never writes the directory
        uri = f"file:{urllib.parse.quote(self.config.sqlite_path())}?mode=ro"
        conn = self.module.connect(
            uri, uri=True, timeout=self.config.timeout, check_same_thread=False, isolation_level=None
        )
        return _SQLiteConnection(conn)

    def translate(self, query: str) -> str:
        return query  # sqlite3's own named style is :login

    def run(self, conn: Any, query: str, login: str, rows: int) -> tuple[int, list[tuple]]:
        conn.deadline = time.monotonic() + self.config.timeout
        try:
            cur = conn.conn.execute(query, {"login": login})
            try:
                return len(cur.description or ()), cur.fetchmany(rows)
            finally:
                cur.close()
        finally:
            conn.deadline = math.inf


_DRIVERS: dict[str, type[Driver]] = {"postgresql": _Postgres, "mysql": _MySQL, "sqlite": _SQLite}


def driver_for(config: SqlConfig) -> Driver:
    """The driver the DSN names, imported now; DriverMissing names the package."""
    module_name, package = _PACKAGES[config.kind]
    try:
        module = __import__(module_name)
    except ImportError:
        raise DriverMissing(f"a {config.kind} dsn needs the Python package {package}") from None
    return _DRIVERS[config.kind](config, module)


def error_text(error: BaseException, secrets: Sequence[str] = ()) -> str:
    """One bounded log line about a driver's exception: its class and the
    first line of its message, with ``secrets`` (the login, which may be a
    password typed into the user field, S-902) blanked."""
    text = str(error).strip().splitlines()[0] if str(error).strip() else ""
    for secret in secrets:
        if len(secret) >= 3:  # shorter: blanking would garble the message, and hides nothing
            text = text.replace(secret, "…")
    text = "".join(ch if ch.isprintable() else "?" for ch in text)
    name = type(error).__name__
    text = f"{name}: {text}" if text else name
    return text[:300]
