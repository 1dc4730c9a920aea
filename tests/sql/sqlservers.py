"""Private PostgreSQL and MariaDB servers for the SQL directory tests
(DESIGN.md "Real outside components in the tests"), and an SQLite file.

Each server is its own unprivileged instance: a data directory and a Unix
socket in a fresh directory under /tmp, no TCP port, run as ``nobody``
when the tests run as root (initdb and mariadbd refuse root, and CI runs
as root), stopped by its pid. Each loads PostfixAdmin's tables
(``sqlschema``) and a login ``msa`` with password ``DB_PASSWORD`` that owns
them, so a query that got injected could drop them.
"""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import signal
import sqlite3
import subprocess
import tempfile
import time
import urllib.parse
from dataclasses import dataclass, field
from pathlib import Path

import sqlschema as schema

DB_PASSWORD = "db secret/%?"  # needs escaping in a DSN, and never reaches a log
START_SECONDS = 60


class ProgramMissing(Exception):
    """The server's program is not installed (the tests skip, saying which)."""


def _postgres_bindir() -> str:
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=lambda p: int(p.split("/")[4]))
    if not found:
        raise ProgramMissing("PostgreSQL (Debian package postgresql) is not installed")
    return os.path.dirname(found[-1])


def _program(name: str, package: str) -> str:
    path = shutil.which(name) or shutil.which(name, path="/usr/sbin:/usr/bin:/sbin")
    if path is None:
        raise ProgramMissing(f"{name} (Debian package {package}) is not installed")
    return path


def _owner() -> tuple[int, int] | None:
    """uid and gid to run the servers as: nobody's when we are root."""
    if os.geteuid() != 0:
        return None
    entry = pwd.getpwnam("nobody")
    return entry.pw_uid, entry.pw_gid


def _workdir(prefix: str) -> Path:
    path = Path(tempfile.mkdtemp(prefix=prefix, dir="/tmp"))  # short: socket paths are ≤ 107 octets
    owner = _owner()
    if owner:
        os.chown(path, *owner)
    return path


def _run(argv: list[str], log: Path, **popen) -> None:
    owner = _owner()
    if owner:
        popen.update(user=owner[0], group=owner[1], extra_groups=[])
    with open(log, "ab") as out:
        done = subprocess.run(argv, stdin=subprocess.DEVNULL, stdout=out, stderr=out, timeout=START_SECONDS, **popen)
    if done.returncode != 0:
        raise RuntimeError(f"{argv[0]} exited {done.returncode}: {log.read_text(errors='replace')[-2000:]}")


def _wait_gone(pid: int, seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return True
        time.sleep(0.02)
    return False


def _stop_pid(pid: int, sig: int) -> None:
    try:
        os.kill(pid, sig)
    except ProcessLookupError:
        return
    if not _wait_gone(pid, 20):
        os.kill(pid, signal.SIGKILL)
        _wait_gone(pid, 5)


@dataclass
class Server:
    """One database the tests use: how msa reaches it (``dsn``, ``password``
    for the SQL file's key), a query that takes seconds, and an admin connection
    (``admin()``) for checking the tables."""

    kind: str
    dir: Path
    dsn: str
    password: str | None = None
    slow_query: str = ""  # a password_query that takes about 3 s
    startup_seconds: float = 0.0
    pid: int | None = field(default=None, repr=False)

    def stop(self) -> None:
        raise NotImplementedError

    def start(self) -> None:
        raise NotImplementedError

    def admin(self):  # noqa: ANN201 - a DB-API connection
        raise NotImplementedError

    def signal_all(self, sig: int) -> None:
        """Send ``sig`` to the server and its children (PostgreSQL's backends)."""
        if self.pid is None:
            return
        pids = [self.pid]
        for stat_file in glob.glob("/proc/[0-9]*/stat"):
            try:
                fields = Path(stat_file).read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[1]) == self.pid:  # the parent pid
                pids.append(int(stat_file.split("/")[2]))
        for pid in pids:
            try:
                os.kill(pid, sig)
            except ProcessLookupError:
                pass

    def counts(self) -> dict[str, int]:
        """Rows per table: the tables are intact when these are schema.EXPECTED_COUNTS."""
        conn = self.admin()
        try:
            cur = conn.cursor()
            out = {}
            for table in schema.EXPECTED_COUNTS:
                cur.execute(f"SELECT count(*) FROM {table}")
                out[table] = cur.fetchone()[0]
            return out
        finally:
            conn.close()

    def cleanup(self) -> None:
        self.stop()
        shutil.rmtree(self.dir, ignore_errors=True)


class Postgres(Server):
    """initdb + pg_ctl start -o "-k DIR -c listen_addresses=''" (DESIGN.md)."""

    def __init__(self) -> None:
        bindir = _postgres_bindir()
        started = time.monotonic()
        workdir = _workdir("msa-pg-")
        self.bindir = bindir
        pwfile = workdir / "pw"
        pwfile.write_text("admin secret\n")
        owner = _owner()
        if owner:
            os.chown(pwfile, *owner)
        _run(
            [f"{bindir}/initdb", "-D", str(workdir / "data"), "-U", "admin", f"--pwfile={pwfile}",
             "--auth=scram-sha-256", "-E", "UTF8", "--locale=C.UTF-8", "--no-sync", "--no-instructions"],
            workdir / "initdb.log",
        )  # fmt: skip
        super().__init__(
            kind="postgresql",
            dir=workdir,
            dsn=f"postgresql:///mail?host={urllib.parse.quote(str(workdir), safe='/')}&user=msa",
            password=DB_PASSWORD,
            slow_query="SELECT password FROM mailbox, pg_sleep(3) WHERE username = :login",
        )
        self.start()
        self._load()
        self.startup_seconds = time.monotonic() - started

    def start(self) -> None:
        _run(
            [f"{self.bindir}/pg_ctl", "start", "-w", "-t", str(START_SECONDS), "-D", str(self.dir / "data"),
             "-l", str(self.dir / "server.log"),
             "-o", f"-k {self.dir} -c listen_addresses='' -c fsync=off -c full_page_writes=off"],
            self.dir / "pg_ctl.log",
        )  # fmt: skip
        self.pid = int((self.dir / "data" / "postmaster.pid").read_text().split("\n", 1)[0])

    def stop(self) -> None:
        if self.pid is not None:
            _stop_pid(self.pid, signal.SIGQUIT)  # PostgreSQL's "immediate" shutdown: as if it died
            self.pid = None

    def _connect(self, dbname: str, user: str, password: str):  # noqa: ANN202
        import psycopg

        return psycopg.connect(host=str(self.dir), dbname=dbname, user=user, password=password, autocommit=True)

    def admin(self):  # noqa: ANN201
        return self._connect("mail", "admin", "admin secret")

    def _load(self) -> None:
        with self._connect("postgres", "admin", "admin secret") as conn:
            conn.execute(
                "CREATE ROLE msa LOGIN PASSWORD " + "'" + DB_PASSWORD.replace("'", "''") + "'"
            )
            conn.execute("CREATE DATABASE mail OWNER msa")
        with self._connect("mail", "msa", DB_PASSWORD) as conn:
            cur = conn.cursor()
            for statement in schema.statements(schema.POSTGRES_DDL):
                cur.execute(statement)
            schema.load(cur, "%s")


class MariaDB(Server):
    """mariadb-install-db + mariadbd --skip-networking (DESIGN.md)."""

    def __init__(self) -> None:
        self.mariadbd = _program("mariadbd", "mariadb-server")
        install = _program("mariadb-install-db", "mariadb-server")
        started = time.monotonic()
        workdir = _workdir("msa-my-")
        (workdir / "tmp").mkdir()
        owner = _owner()
        if owner:
            os.chown(workdir / "tmp", *owner)
        self.proc: subprocess.Popen | None = None
        # A tmpdir of its own: in the shared /tmp, another MariaDB's temporary
        # tables (named by pid) could meet this one's.
        _run(
            [install, "--no-defaults", f"--datadir={workdir / 'data'}", f"--tmpdir={workdir / 'tmp'}",
             "--auth-root-authentication-method=normal",
             "--skip-test-db", "--skip-name-resolve", "--innodb-log-file-size=8M",
             "--innodb-buffer-pool-size=16M"],
            workdir / "install.log",
        )  # fmt: skip
        socket = workdir / "s"
        super().__init__(
            kind="mysql",
            dir=workdir,
            dsn=f"mysql://msa:{urllib.parse.quote(DB_PASSWORD, safe='')}@localhost/mail?unix_socket={socket}",
            slow_query="SELECT password FROM mailbox WHERE username = :login AND SLEEP(3) = 0",
        )
        self.start()
        self._load()
        self.startup_seconds = time.monotonic() - started

    def start(self) -> None:
        owner = _owner()
        extra = {"user": owner[0], "group": owner[1], "extra_groups": []} if owner else {}
        log = open(self.dir / "server.log", "ab")  # noqa: SIM115 - the child keeps it
        socket = self.dir / "s"
        self.proc = subprocess.Popen(
            [self.mariadbd, "--no-defaults", f"--datadir={self.dir / 'data'}", f"--socket={socket}",
             f"--tmpdir={self.dir / 'tmp'}",
             "--skip-networking", f"--pid-file={self.dir / 'pid'}", f"--log-error={self.dir / 'error.log'}",
             "--innodb-buffer-pool-size=16M", "--innodb-flush-log-at-trx-commit=0", "--skip-log-bin"],
            stdin=subprocess.DEVNULL, stdout=log, stderr=log, **extra,
        )  # fmt: skip
        log.close()
        self.pid = self.proc.pid
        deadline = time.monotonic() + START_SECONDS
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(f"mariadbd exited {self.proc.returncode}: {self._errors()}")
            try:
                self._root().close()
                return
            except Exception:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)

    def _errors(self) -> str:
        try:
            return (self.dir / "error.log").read_text(errors="replace")[-2000:]
        except OSError:
            return ""

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.terminate()
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
            self.proc = None
            self.pid = None

    def _root(self, database: str | None = None):  # noqa: ANN202
        import pymysql

        return pymysql.connect(unix_socket=str(self.dir / "s"), user="root", password="", database=database,
                               autocommit=True, connect_timeout=5)  # fmt: skip

    def admin(self):  # noqa: ANN201
        return self._root("mail")

    def _load(self) -> None:
        conn = self._root()
        try:
            cur = conn.cursor()
            cur.execute("CREATE DATABASE mail CHARACTER SET utf8mb4")
            cur.execute("CREATE USER 'msa'@'localhost' IDENTIFIED BY %s", (DB_PASSWORD,))
            cur.execute("GRANT ALL PRIVILEGES ON mail.* TO 'msa'@'localhost'")
            cur.execute("USE mail")
            for statement in schema.statements(schema.MARIADB_DDL):
                cur.execute(statement)
            schema.load(cur, "%s")
        finally:
            conn.close()


class SQLite(Server):
    """A file; "stopping" it is not a thing, so the outage tests skip it."""

    def __init__(self) -> None:
        started = time.monotonic()
        workdir = Path(tempfile.mkdtemp(prefix="msa-lite-", dir="/tmp"))
        path = workdir / "mail.sqlite"
        conn = sqlite3.connect(path)
        try:
            conn.executescript(schema.SQLITE_DDL)
            schema.load(conn.cursor(), "?")
            conn.commit()
        finally:
            conn.close()
        super().__init__(
            kind="sqlite",
            dir=workdir,
            dsn=f"sqlite://{path}",
            # no sleep(): a recursive count that takes seconds (about 1 s per 10 million here)
            slow_query="SELECT password FROM mailbox WHERE username = :login AND (WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c WHERE x < 300000000)"
            " SELECT max(x) FROM c) > 0",
        )
        self.startup_seconds = time.monotonic() - started

    def stop(self) -> None:
        pass

    def start(self) -> None:
        pass

    def admin(self):  # noqa: ANN201
        return sqlite3.connect(self.dir / "mail.sqlite")
