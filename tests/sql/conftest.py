"""Fixtures of the SQL directory tests: ONE private PostgreSQL and ONE
private MariaDB per test session (started together, on first use, in
threads; stopped by pid at the end), and an SQLite file (``sqlservers``).

The tests that use them carry ``@pytest.mark.xdist_group("sql")``, so that
with ``pytest -n N --dist loadgroup`` (``make test``) one worker runs them
all and the servers start once. A test skips, saying why, only when a
server's program is not installed.
"""

from __future__ import annotations

from concurrent.futures import Future, ThreadPoolExecutor

import pytest
import sqlservers

KINDS = {"postgresql": sqlservers.Postgres, "mariadb": sqlservers.MariaDB, "sqlite": sqlservers.SQLite}


class Servers:
    """The session's servers, each started at most once. Asking for
    PostgreSQL or MariaDB starts both at once, in threads (together they
    take about as long as the slower one); SQLite starts alone."""

    SERVERS = ("postgresql", "mariadb")

    def __init__(self) -> None:
        self._pool = ThreadPoolExecutor(max_workers=len(KINDS), thread_name_prefix="sql-server")
        self._futures: dict[str, Future] = {}

    def get(self, kind: str) -> sqlservers.Server:
        for each in self.SERVERS if kind in self.SERVERS else (kind,):
            if each not in self._futures:
                self._futures[each] = self._pool.submit(KINDS[each])
        try:
            return self._futures[kind].result(timeout=sqlservers.START_SECONDS * 2)
        except sqlservers.ProgramMissing as missing:
            pytest.skip(str(missing))

    def stop_all(self) -> None:
        for future in self._futures.values():
            try:
                server = future.result(timeout=sqlservers.START_SECONDS * 2)
            except Exception:  # noqa: S110 - it failed to start; nothing to stop
                continue
            server.cleanup()
        self._pool.shutdown(wait=False)


@pytest.fixture(scope="session")
def sql_servers():
    servers = Servers()
    yield servers
    servers.stop_all()


def server(sql_servers: Servers, kind: str) -> sqlservers.Server:
    return sql_servers.get(kind)


@pytest.fixture(params=list(KINDS))
def db(request, sql_servers) -> sqlservers.Server:
    """Each kind of database in turn."""
    return server(sql_servers, request.param)


@pytest.fixture(params=["postgresql", "mariadb"])
def db_server(request, sql_servers) -> sqlservers.Server:
    """The databases that are servers (that can be stopped and started)."""
    return server(sql_servers, request.param)


@pytest.fixture
def postgres(sql_servers) -> sqlservers.Server:
    return server(sql_servers, "postgresql")


@pytest.fixture
def sqlite(sql_servers) -> sqlservers.Server:
    return server(sql_servers, "sqlite")


def pytest_configure(config) -> None:
    # pytest-xdist registers it; without xdist (-p no:xdist) it is just a label
    config.addinivalue_line("markers", "xdist_group(name): run in one xdist worker with --dist loadgroup")


@pytest.fixture
def sql_conf(tmp_path):
    """``sql_conf(server, **keys) -> path`` of an SQL file for ``server``;
    a key set to None is left out."""
    counter = iter(range(1000))

    def write(db: sqlservers.Server, **keys: object) -> str:
        values = {
            "dsn": db.dsn,
            "password": db.password,
            "password_query": "SELECT password FROM mailbox WHERE username = :login AND active AND smtp_active",
            "senders_query": "SELECT :login UNION SELECT address FROM alias WHERE goto = :login AND active",
            "timeout": 5,
        }
        values.update(keys)
        lines = ["[sql]", *(f"{key} = {value}" for key, value in values.items() if value is not None)]
        path = tmp_path / f"sql{next(counter)}.conf"
        path.write_text("\n".join(lines) + "\n")
        path.chmod(0o600)
        return str(path)

    return write
