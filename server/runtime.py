"""Runtime and Server: the state sessions share, passed in, never global.

A `Runtime` is immutable and swapped whole on reload (SIGHUP or a changed
users.db); a session reads `server.runtime` when it needs it. The `Server`
holds the runtime, the connection slots, the session registry and the
shutdown flag (DESIGN.md "Threads and shared resources").
"""

from __future__ import annotations

import ipaddress
import os
import threading
from collections.abc import Callable
from dataclasses import dataclass, replace

from util import files

from . import maillog
from .affinity import CpuAffinity
from .config import Config

# inetd mode imports this module before its greeting: ssl, sasl/ and
# smtp_states/ are imported where they are used (after it), typing not at all
# (TYPE_CHECKING as a plain False, the idiom of PEP 781; type checkers read it as True).
TYPE_CHECKING = False
if TYPE_CHECKING:
    import ssl
    from typing import Any

    import sasl
    from smtp_states import Settings


@dataclass(frozen=True, slots=True)
class Runtime:
    """What sessions read of the configuration and the files it names,
    swapped whole on reload."""

    config: Config
    ssl_context: ssl.SSLContext | None
    users: Any  # sasl.UserDB (empty when the file is missing)
    dkim: Any = None  # delivery.dkim_keys.KeySet when dkim_keys is set
    apps: Any = None  # sasl.apppass.AppPasswords (empty when the file is missing)
    #: The directories in S-1301's order (directory/): users.db, then SQL and
    #: Dovecot when configured; () is users.db alone (made when asked).
    others: tuple[Any, ...] = ()

    @property
    def directories(self) -> tuple[Any, ...]:
        from directory.usersfile import UsersFile

        return (UsersFile(self.users), *self.others)

    def settings(self, mechanism_factory: Any = None, *, starttls: bool = True) -> Settings:
        from smtp_states import Settings

        c = self.config
        mechanisms: tuple[str, ...] = ()
        if mechanism_factory is not None:
            mechanisms = ("PLAIN", "LOGIN")
            if c.sql or c.auth_dovecot:
                pass  # S-1302: users elsewhere have no CRAM-MD5 or SCRAM credential here
            elif self.users is not None and getattr(self.users, "all_have_cram", False):
                mechanisms += ("CRAM-MD5",)  # S-202: only when every user can use it
            if c.auth_scram and not (c.sql or c.auth_dovecot) and getattr(self.users, "all_have_scram", False):
                mechanisms += ("SCRAM-SHA-256",)  # S-514: the same rule
        return Settings(
            hostname=c.hostname,
            max_message_size=c.max_message_size,
            max_recipients=c.max_recipients,
            starttls=starttls and self.ssl_context is not None,
            require_tls_for_auth=c.require_tls_for_auth,
            auth_mechanisms=mechanisms,
            new_mechanism=mechanism_factory,
            auth_failures=c.auth_failures,
            dsn=c.handoff is not None,  # S-202: DSN passes only through SMTP (S-809)
        )


class RandomPool:
    """Random octets from the OS, fetched 4 KiB at a time (Server.random):
    queue ids and Message-IDs need uniqueness, not secrecy, and one
    getrandom(2) per id was two system calls of each small message. Each
    octet is used once. Not for secrets: sasl draws those from os.urandom."""

    def __init__(self, size: int = 4096) -> None:
        self._size = size
        self._buf = b""
        self._pos = 0
        self._lock = threading.Lock()

    def take(self, n: int) -> bytes:
        with self._lock:
            if self._pos + n > len(self._buf):
                self._buf, self._pos = os.urandom(max(self._size, n)), 0
            out = self._buf[self._pos : self._pos + n]
            self._pos += n
            return out

    def new_id(self) -> str:
        """10 random upper-case hex digits: session and queue ids."""
        return self.take(5).hex().upper()


def new_id() -> str:
    """An id without a pool (tools and tests)."""
    import secrets  # not at start-up: it brings random

    return secrets.token_hex(5).upper()


def client_ip(ip: str) -> str:
    """S-109: ::ffff:a.b.c.d is the IPv4 address a.b.c.d."""
    try:
        addr = ipaddress.ip_address(ip.split("%", 1)[0])
    except ValueError:
        return ip
    if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped:
        return str(addr.ipv4_mapped)
    return str(addr)


class Slots:
    """Connection slots for all listeners together (S-109)."""

    def __init__(self, total: int, per_ip: int) -> None:
        self.total = total
        self.per_ip = per_ip
        self._used = 0
        self._by_ip: dict[str, int] = {}
        self._lock = threading.Lock()

    def acquire(self, ip: str) -> bool:
        from sasl.throttle import client_key as ip_key

        key = ip_key(ip)
        with self._lock:
            if self._used >= self.total or self._by_ip.get(key, 0) >= self.per_ip:
                return False
            self._used += 1
            self._by_ip[key] = self._by_ip.get(key, 0) + 1
            return True

    def release(self, ip: str) -> None:
        from sasl.throttle import client_key as ip_key

        key = ip_key(ip)
        with self._lock:
            self._used -= 1
            left = self._by_ip.get(key, 1) - 1
            if left:
                self._by_ip[key] = left
            else:
                self._by_ip.pop(key, None)

    @property
    def used(self) -> int:
        return self._used


class Server:
    def __init__(self, runtime: Runtime) -> None:
        self._runtime = runtime
        self._lock = threading.Lock()
        cfg = runtime.config
        self.slots = Slots(cfg.max_connections, cfg.max_connections_per_ip)
        self.sessions: set[Any] = set()
        self.stopping = threading.Event()
        # Readable once stopping: idle sessions poll it beside their socket.
        self.stop_fd, self._stop_w = os.pipe()
        self.argon2_slots = threading.BoundedSemaphore(os.cpu_count() or 1)
        self.tls_refusal_slots = threading.BoundedSemaphore(8)
        self.auth: Any = None  # server.auth.Authenticator, once built
        from .metrics import NULL

        self.metrics: Any = NULL  # server.metrics.Prometheus with metrics_listen (serve sets it)
        self._handoff: Any = None  # server.handoff.Kind, made on first use
        self._state: Any = None  # server.state.Store, made on first use
        self._limits: Any = None  # server.limits.SendingLimits, made on first use
        self.affinity = CpuAffinity()  # pinned by serve (server/affinity.py)
        self.random = RandomPool()  # ids and Message-IDs
        # S-1106: Hashcash minters and PGP signers, each at most one per core
        # on the host, whatever process starts them (server/slots.py).
        from delivery.slots import HostSlots, cores

        self.minting = HostSlots(cfg.spool, "hashcash", cores())
        self.signing = HostSlots(cfg.spool, "pgp", cores())

    @property
    def handoff(self) -> Any:
        """The hand-off `handoff` names (delivery/), made when the first
        message needs it: inetd mode greets before importing it."""
        if self._handoff is None:
            from delivery import make_handoff

            with self._lock:
                if self._handoff is None:
                    self._handoff = make_handoff(self._runtime.config, self.affinity)
        return self._handoff

    @property
    def state(self) -> Any:
        """The state store (state/) `state` names, made when first needed:
        an inetd session that never authenticates imports neither sqlite3
        nor redis-py."""
        if self._state is None:
            with self._lock:
                if self._state is None:
                    self._state = make_store(self._runtime.config)
        return self._state

    @property
    def limits(self) -> Any:
        """The sending limits (state/limits.py) over the state store."""
        if self._limits is None:
            from state.limits import SendingLimits

            store = self.state
            cfg = self._runtime.config
            with self._lock:
                if self._limits is None:
                    self._limits = SendingLimits(store, cfg.limit_messages, cfg.limit_recipients)
        return self._limits

    def services(self) -> Any:
        """What a message needs of the daemon (delivery/message.py), from
        the current runtime."""
        from delivery.message import Services

        runtime = self._runtime
        return Services(runtime.config, runtime.dkim, self.affinity, self.random, self.minting, self.signing,
                        lambda: self.handoff)

    def close(self) -> None:
        """At the end: kept connections to the MTA get QUIT, the
        directories' pooled connections are closed."""
        if self._handoff is not None:
            self._handoff.close()
        for directory in self._runtime.others:
            directory.close()

    def stop(self) -> None:
        if not self.stopping.is_set():
            self.stopping.set()
            os.write(self._stop_w, b"x")

    @property
    def runtime(self) -> Runtime:
        return self._runtime

    def swap(self, runtime: Runtime) -> None:
        with self._lock:
            self._runtime = runtime

    def register(self, session: Any) -> None:
        with self._lock:
            self.sessions.add(session)

    def unregister(self, session: Any) -> None:
        with self._lock:
            self.sessions.discard(session)

    def live_sessions(self) -> list[Any]:
        with self._lock:
            return list(self.sessions)


def make_store(cfg: Config) -> Any:
    """The state store of `state` (SPEC.md S-1202, S-1401): SQLite in
    state_dir, or Redis (with its secret's local copy in state_dir)."""
    if cfg.state == "sqlite":
        from state.sqlite import SqliteStore

        return SqliteStore(cfg.state_dir)
    from state.redis import RedisStore

    return RedisStore(cfg.state, cfg.state_prefix, cfg.state_timeout, cfg.state_dir)


class StartupError(Exception):
    def __init__(self, problems: list[str]) -> None:
        super().__init__("\n".join(problems))
        self.problems = problems


def load_users(cfg: Config, warn: Callable[[str], None] = maillog.warning) -> sasl.UserDB:
    """The users database `users` names (directory/usersfile.py)."""
    from directory.usersfile import load_users as load

    return load(cfg.users, cfg.where("users"), warn, senders_only=bool(cfg.sql or cfg.auth_dovecot))


def load_apps(cfg: Config) -> Any:
    """The app passwords `app_passwords` names (directory/usersfile.py)."""
    from directory.usersfile import load_apps as load

    return load(cfg.app_passwords, cfg.where("app_passwords"))


def tls_context(cfg: Config) -> ssl.SSLContext | None:
    """The server context from tls_cert and tls_key, None when they are not
    set; StartupError lists the problems. Both files pass
    files.read_regular first: load_cert_chain opens them with a plain,
    blocking open and read, which a FIFO would hang and /dev/zero exhaust."""
    if not (cfg.tls_cert and cfg.tls_key):
        return None
    problems = []
    for key in ("tls_cert", "tls_key"):
        try:
            files.read_regular(getattr(cfg, key), files.TLS_MAX_OCTETS)
        except files.FileProblem as e:
            problems.append(f"{cfg.where(key)}: {key}: {e}")
    if problems:
        raise StartupError(problems)
    import ssl

    from . import tls

    try:
        return tls.server_context(cfg.tls_cert, cfg.tls_key)
    except (OSError, ssl.SSLError) as e:
        why = getattr(e, "strerror", None) or e
        raise StartupError([f"{cfg.where('tls_cert')}: cannot load {cfg.tls_cert} / {cfg.tls_key}: {why}"]) from None


def load_dkim(cfg: Config, previous: Any = None, warn: Callable[[str], None] = maillog.error,
              lazy: bool = False) -> Any:
    """The DKIM keys (S-1103), or None without dkim_keys. A key that cannot
    sign is reported through `warn` and skipped (its previous version, on
    reload, stays); only a missing `cryptography` stops the start. `lazy`
    (inetd mode): loaded when a message first needs them."""
    if cfg.dkim_keys is None:
        return None
    from delivery import dkim_keys

    if lazy:
        found, _ = dkim_keys.key_files(cfg.dkim_keys)
        if found and (missing := dkim_keys.cryptography_problem()):
            raise StartupError([f"{cfg.where('dkim_keys')}: dkim_keys: {cfg.dkim_keys}: {missing}"])
        return dkim_keys.LazyKeySet(cfg.dkim_keys, warn)

    try:
        keys, problems = dkim_keys.load(cfg.dkim_keys, previous)
    except dkim_keys.CryptographyMissing as e:
        raise StartupError([f"{cfg.where('dkim_keys')}: dkim_keys: {e}"]) from None
    for p in problems:
        warn(f"dkim: {p}")
    return keys


def build_runtime(cfg: Config, previous: Runtime | None = None, lazy: bool = False,
                  files_only: bool = False) -> Runtime:
    """Everything a reload may change; `previous` lends the DKIM keys that
    fail to load now (CONTRACT.md: the last good set stays); `lazy`: what
    inetd mode need not load before the greeting is loaded when used;
    `files_only` (inetd mode before its greeting): users.db, the app
    passwords and the TLS files are only checked as files (`check_files`)
    and left out (None), for `load_files` to complete after the greeting."""
    problems: list[str] = []
    if files_only:
        problems.extend(check_files(cfg))
        ctx = users = apps = None
    else:
        ctx, users, apps = _load_files(cfg, problems)
    dkim = None
    try:
        dkim = load_dkim(cfg, previous.dkim if previous is not None else None, lazy=lazy)
    except StartupError as e:
        problems.extend(e.problems)
    others: list[Any] = []
    try:
        others = load_directories(cfg, previous)
    except StartupError as e:
        problems.extend(e.problems)
    if cfg.state != "sqlite":  # S-1403: redis-py, imported only when configured, must be there
        from state.redis import module_problem

        if why := module_problem():
            problems.append(f"{cfg.where('state')}: state: {why}")
    if problems:
        raise StartupError(problems)
    return Runtime(cfg, ctx, users, dkim, apps, tuple(others))


def load_files(runtime: Runtime) -> Runtime:
    """`runtime`, built with `files_only`, with users.db, the app passwords
    and the TLS context loaded; StartupError lists what their contents
    have wrong, as build_runtime would have."""
    problems: list[str] = []
    ctx, users, apps = _load_files(runtime.config, problems)
    if problems:
        raise StartupError(problems)
    return replace(runtime, ssl_context=ctx, users=users, apps=apps)


def _load_files(cfg: Config, problems: list[str]) -> tuple[ssl.SSLContext | None, Any, Any]:
    """The TLS context, users.db and the app passwords; problems appended."""
    import sasl
    from sasl import apppass

    ctx = users = apps = None
    try:
        ctx = tls_context(cfg)
    except StartupError as e:
        problems.extend(e.problems)
    try:
        users = load_users(cfg)
    except sasl.UserDBError as e:
        problems.extend(e.problems)
    try:
        apps = load_apps(cfg)
    except apppass.AppPasswordError as e:
        problems.extend(e.problems)
    return ctx, users, apps


def check_files(cfg: Config) -> list[str]:
    """What loading the TLS files, users.db and the app passwords would
    find wrong with the files themselves (not a regular file, unreadable,
    too large; a TLS file missing), in the same words, without reading or
    parsing them: no ssl and no sasl/ imported. A missing users.db or app
    passwords file is no problem (the loaders warn of the first)."""
    problems: list[str] = []
    checks = [("tls_cert", files.TLS_MAX_OCTETS), ("tls_key", files.TLS_MAX_OCTETS)] if cfg.tls_cert and cfg.tls_key else []
    checks.append(("users", files.USERS_MAX_OCTETS))
    if cfg.app_passwords:
        checks.append(("app_passwords", files.USERS_MAX_OCTETS))
    for key, limit in checks:
        try:
            files.check_regular(getattr(cfg, key), limit)
        except files.FileMissing as e:
            if key.startswith("tls_"):
                problems.append(f"{cfg.where(key)}: {key}: {e}")
        except files.FileProblem as e:
            problems.append(f"{cfg.where(key)}: {key}: {e}")
    return problems


def load_directories(cfg: Config, previous: Runtime | None = None) -> list[Any]:
    """SQL and Dovecot in S-1301's order, when configured (S-1302, S-1303).
    A directory the previous runtime had with the same settings is kept,
    with its pooled connections (S-1307: a reload re-reads the SQL file);
    the caller closes the ones no longer used once the new runtime is in."""
    kept = {d.name: d for d in (previous.others if previous is not None else ())}
    out: list[Any] = []
    if cfg.sql:
        from directory import sql

        try:
            settings = sql.load(cfg.sql)
            old = kept.get("sql")
            if old is not None and old.config == settings:
                out.append(old)
            else:
                out.append(sql.SqlDirectory(settings, warn=maillog.warning, info=maillog.info))
        except sql.SqlConfigError as e:
            raise StartupError([*e.problems]) from None
    if cfg.auth_dovecot:
        from directory.dovecot import DovecotDirectory

        old = kept.get("dovecot")
        if old is not None and (old.address, old.timeout) == (cfg.auth_dovecot, cfg.auth_dovecot_timeout):
            out.append(old)
        else:
            out.append(DovecotDirectory(cfg.auth_dovecot, warn=maillog.warning, info=maillog.info,
                                        timeout=cfg.auth_dovecot_timeout))
    return out
