"""The daemon's life: build the runtime, bind, drop privileges, serve,
reload on SIGHUP or a changed users.db, drain on SIGTERM/SIGINT. With
`workers` > 1 (S-1601) the same process, once bound and unprivileged,
becomes the master of that many workers (server/workers.py), each of which
serves, reloads and drains as a lone serve does (`_run`).

Signal handlers only set flags; the main thread acts (socketserver's
`shutdown()` must not be called from the thread running serve_forever).
"""

from __future__ import annotations

import os
import signal
import socket
import sys
import threading
import time
from dataclasses import dataclass
from typing import Any

import sasl

from delivery import spool

from . import maillog
from .auth import Authenticator
from .config import Config, Listen
from .listener import Listener
from .runtime import Server, StartupError, build_runtime

DRAIN_GRACE = 10.0  # seconds beyond sendmail_timeout (DESIGN.md)
#: Session threads need little stack (no deep recursion; TLS and argon2 run
#: in C); 512 KiB instead of 8 MiB keeps 1000 idle sessions cheap.
THREAD_STACK = 512 * 1024
WATCH_INTERVAL = 1.0


def reload(server: Server) -> bool:
    """Swap in a new runtime if the users database, the certificate and the
    directories load; otherwise log why and keep the old one (DESIGN.md).
    The directory settings (`sql`, `auth_dovecot`) are read again from the
    configuration file (S-1307); the rest of it needs a restart."""
    old = server.runtime
    cfg = _directory_settings(old.config)
    try:
        new = build_runtime(cfg, old)
    except StartupError as e:
        for p in e.problems:
            maillog.error(f"reload failed, keeping the previous configuration: {p}")
        return False
    except Exception as e:  # noqa: BLE001 - a bug or an unreadable library: the daemon keeps serving
        maillog.internal_error("reload", "SIGHUP", e)
        maillog.error("reload failed, keeping the previous configuration")
        return False
    server.swap(new)
    for directory in old.others:
        if directory not in new.others:
            directory.close()
    apps = f", {len(new.apps)} app passwords" if new.apps else ""
    names = "".join(f", {d.name}" for d in new.others)
    maillog.info(f"reloaded: {len(new.users) if new.users is not None else 0} users{apps}{names}")
    return True


def _directory_settings(cfg: Config) -> Config:
    """`cfg` with the directory keys as the configuration file says now
    (S-1307); the same `cfg` when the file no longer parses (logged)."""
    import dataclasses

    from .config import ConfigError, load

    try:
        now = load(cfg.path)
    except ConfigError as e:
        for p in e.problems:
            maillog.error(f"reload: {p}; the directories stay as they were")
        return cfg
    return dataclasses.replace(cfg, sql=now.sql, auth_dovecot=now.auth_dovecot,
                               auth_dovecot_timeout=now.auth_dovecot_timeout, lines=now.lines)


def _systemd_sockets() -> list[tuple[socket.socket, str]]:
    """Sockets passed by systemd socket activation (sd_listen_fds(3)), with
    their FileDescriptorName ("" when unnamed)."""
    if os.environ.get("LISTEN_PID") != str(os.getpid()):
        return []
    try:
        n = int(os.environ.get("LISTEN_FDS", "0"))
    except ValueError:
        return []
    names = os.environ.get("LISTEN_FDNAMES", "").split(":")
    for name in ("LISTEN_PID", "LISTEN_FDS", "LISTEN_FDNAMES"):
        os.environ.pop(name, None)
    out = []
    for i in range(n):
        sock = socket.socket(fileno=3 + i)
        os.set_inheritable(sock.fileno(), False)
        out.append((sock, names[i] if i < len(names) else ""))
    return out


def _adopted_entry(cfg: Config, sock: socket.socket, name: str) -> Listen:
    """The mode of an adopted socket: its name (tls, submissions, 465 →
    implicit TLS; anything else → STARTTLS), else the `listen` entry with
    its port, else STARTTLS."""
    host, port = sock.getsockname()[:2]
    if name:
        mode = "tls" if name.lower() in ("tls", "submissions", "smtps", "465") else "starttls"
    else:
        entry = next((e for e in cfg.listen if e.port == port), None)
        mode = entry.mode if entry else "starttls"
    return Listen(host, port, mode)


def _notify(state: str) -> None:
    path = os.environ.get("NOTIFY_SOCKET")
    if not path:
        return
    if path.startswith("@"):
        path = "\0" + path[1:]
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as s:
            s.connect(path)
            s.send(state.encode())
    except OSError:
        pass


def drop_privileges(user: str, spool_dir: str, state_dir: str | None = None) -> None:
    """Become `user` after binding (DESIGN.md): the spool directory and the
    state directory with its files are handed to that user first, since it
    writes and removes the files."""
    import pwd

    try:
        pw = pwd.getpwnam(user)
    except (KeyError, ValueError):  # ValueError: a NUL (config refuses it first)
        raise StartupError([f"run_as: no such user {user!r}"]) from None
    if os.getuid() != 0:
        if os.getuid() == pw.pw_uid:
            return
        raise StartupError([f"run_as: switching to {user} needs root"])
    try:
        os.chown(spool_dir, pw.pw_uid, pw.pw_gid)
        if state_dir is not None and os.path.isdir(state_dir):
            from state.sqlite import FILES, SECRET_FILENAME

            os.chown(state_dir, pw.pw_uid, pw.pw_gid)
            for name in (*FILES, SECRET_FILENAME):
                path = os.path.join(state_dir, name)
                if os.path.isfile(path) and not os.path.islink(path):
                    os.chown(path, pw.pw_uid, pw.pw_gid)
        os.setgroups([])
        os.setgid(pw.pw_gid)
        os.setuid(pw.pw_uid)
    except OSError as e:
        raise StartupError([f"run_as: cannot switch to {user}: {e.strerror}"]) from None


#: msa's own packages, every module of which serve imports before run_as.
_PACKAGES = ("smtp_states", "sasl", "headers", "signing", "util", "state", "directory", "delivery")
#: Optional libraries a configured feature may load later (a hash scheme, an
#: SQL driver): imported now when installed.
_OPTIONAL = ("encodings.idna", "idna", "idna.uts46data", "bcrypt", "passlib.hash", "cryptography")


def _preload(cfg: Config) -> None:
    """Import now what sessions and reloads import lazily (inetd mode greets
    sooner without them): after run_as, the library may not be readable
    (a Python installed under root's home), and a module that cannot be
    loaded then would fail a login or a reload instead."""
    import importlib
    import pkgutil

    for name in _PACKAGES:
        package = importlib.import_module(name)
        for module in pkgutil.iter_modules(package.__path__):
            try:
                importlib.import_module(f"{name}.{module.name}")
            except ImportError:
                pass  # a module for a feature whose library is missing: check says so
    optional = list(_OPTIONAL)
    if cfg.sql:
        optional += ["psycopg", "pymysql"]
    if cfg.state != "sqlite":
        optional.append("redis")
    if cfg.metrics_listen is not None:  # in multiprocess mode: the directory is named before the import
        from .metrics import directory_of

        os.environ["PROMETHEUS_MULTIPROC_DIR"] = directory_of(cfg)
        optional += ["http.server", "prometheus_client", "prometheus_client.multiprocess",
                     "prometheus_client.process_collector"]
    for name in optional:
        try:
            importlib.import_module(name)
        except ImportError:
            pass


def _report_health(server: Server) -> None:
    """msa_store_up and msa_directory_up (S-1501), as this process sees
    them: the store once a session made it (else its start-up check's
    verdict), users.db always up, the other directories while they answer."""
    metrics = server.metrics
    if not metrics.enabled:
        return
    cfg = server.runtime.config
    store = (("sqlite" if cfg.state == "sqlite" else "redis"), not server.state.failing)
    directories = [("users.db", server.runtime.users is not None)]
    directories += [(d.name, not d.failing) for d in server.runtime.others]
    metrics.health(store, directories)


def serve(cfg: Config, version: str = "unknown") -> int:
    maillog.setup(cfg.log)
    try:
        runtime = build_runtime(cfg)
        removed = spool.prepare(cfg.spool)
    except StartupError as e:
        for p in e.problems:
            print(p, file=sys.stderr)
        return 1
    except spool.SpoolError as e:
        print(f"{cfg.where('spool')}: spool: {e}", file=sys.stderr)
        return 1
    if removed:
        maillog.warning(f"removed {removed} stale spool file(s) from {cfg.spool}")
    try:  # S-1202: made 0700 when missing; a problem is a warning, never a refusal to start
        os.makedirs(cfg.state_dir, mode=0o700, exist_ok=True)
    except OSError as e:
        maillog.warning(f"{cfg.where('state_dir')}: state_dir: cannot create {cfg.state_dir}: {e.strerror}")
    sasl.warm_up()  # S-510: the first unknown user costs what a known one does
    _preload(cfg)
    server = Server(runtime)
    server.auth = Authenticator(server, cfg.auth_cache_ttl)

    listeners: list[Listener] = []
    try:
        adopted = _systemd_sockets()
        if adopted:
            for sock, name in adopted:
                entry = _adopted_entry(cfg, sock, name)
                if entry.mode == "tls" and runtime.ssl_context is None:
                    print(f"{cfg.path}: socket {name or entry.port} is for implicit TLS but tls_cert/tls_key are not set", file=sys.stderr)
                    return 1
                listeners.append(Listener(server, entry, sock))
        else:
            for entry in cfg.listen:
                listeners.append(Listener(server, entry))
    except OSError as e:
        for lst in listeners:
            lst.server_close()
        print(f"{cfg.where('listen')}: cannot listen on {entry}: {e.strerror}", file=sys.stderr)
        return 1
    if cfg.metrics_listen is not None and cfg.run_as:
        from . import metrics

        try:
            metrics.clear(cfg)  # a root daemon's files: the daemon user could not remove them
        except metrics.MetricsError as e:
            print(f"{cfg.where('metrics_listen')}: metrics_listen: {e}", file=sys.stderr)
            for lst in listeners:
                lst.server_close()
            return 1
    if cfg.run_as:
        try:
            drop_privileges(cfg.run_as, cfg.spool, cfg.state_dir)
        except StartupError as e:
            for p in e.problems:
                print(f"{cfg.where('run_as')}: {p}", file=sys.stderr)
            return 1

    endpoint = None
    if cfg.metrics_listen is not None:  # S-1501: after run_as, the files are the daemon user's
        from . import metrics

        try:
            server.metrics = metrics.prepare(cfg, version)
            endpoint = metrics.Endpoint(cfg)
        except (metrics.MetricsError, OSError) as e:
            why = getattr(e, "strerror", None) or e
            print(f"{cfg.where('metrics_listen')}: metrics_listen: {why}", file=sys.stderr)
            for lst in listeners:
                lst.server_close()
            return 1

    store = server.state
    if problem := store.problem():  # as the user that will write it; Redis: PING (S-1402)
        key = "state_dir" if cfg.state == "sqlite" else "state"
        maillog.warning(f"{cfg.where(key)}: state store: {problem}; sending limits are not applied "
                        "and login delays hold in this process only until it works")  # fmt: skip
        store.mark_failing(problem)  # S-1202: that was the episode's one warning
    try:
        store.secret()  # made (or fetched) once, now, so that no session waits for it (S-514)
    except OSError:
        pass  # said when first needed (server/auth.py)

    count = cfg.worker_count()
    if count == 1:
        return _run(cfg, server, listeners, endpoint=endpoint)  # one process, as ever: no master, no workers
    return _master(cfg, server, listeners, count, endpoint)


@dataclass(frozen=True)
class _WorkerRole:
    """What a worker process knows of its place (S-1601)."""

    number: int  # 1..count
    count: int
    channel: Any  # anvil.SlotsClient: its slots, and its reports to the master
    master: int  # the master's pid: a worker whose parent changed stops


def _master(cfg: Config, server: Server, listeners: list[Listener], count: int, endpoint: Any = None) -> int:
    """S-1601: the bound, privilege-dropped process becomes the master of
    `count` workers (server/workers.py); each runs `_run` on every listener."""
    import gc

    from .anvil import SlotKeeper
    from .workers import Master

    server.state.close()  # the start-up checks' connection: no worker may share it (sqlite, S-1601)
    for lst in listeners:
        # Shared by every worker: whichever is idle takes the connection,
        # and the others' accept() must not block (server/workers.py).
        lst.socket.setblocking(False)
        _log_listening(lst)
    runtime = server.runtime
    users = len(runtime.users) if runtime.users is not None else 0

    def start_worker(number: int, chan: socket.socket, restarted: bool) -> int:
        return _worker(cfg, runtime, listeners, number, count, chan, restarted, server.metrics)

    master = Master(count, SlotKeeper(cfg.max_connections, cfg.max_connections_per_ip), start_worker,
                    drain_bound=cfg.sendmail_timeout + DRAIN_GRACE, listeners=[lst.socket for lst in listeners],
                    notify=_notify, ready_line=f"ready: {cfg.hostname}, {users} users, {count} workers")
    master.sweep = lambda: spool.sweep(cfg.spool)  # a killed worker's files go now, not at the next start
    if endpoint is not None:  # S-1501, S-1601: the master serves the sum over its workers
        from . import metrics

        endpoint.pids = master.pids
        master.endpoint = endpoint
        master.on_death = metrics.process_died
        _log_metrics(endpoint)
    gc.freeze()  # what the master holds stays shared with the workers (copy-on-write) rather than touched by gc
    return master.run()


def _worker(cfg: Config, runtime: Any, bound: list[Listener], number: int, count: int, chan: socket.socket,
            restarted: bool, metrics: Any = None) -> int:
    """In a forked worker: a Server of its own (nothing of the master's
    state store, hand-off connections, random pool or caches is shared),
    its connection slots counted by the master, the listeners' sockets."""
    from .anvil import SlotsClient

    server = Server(runtime)
    if metrics is not None:  # S-1501: its own files in the same directory (multiprocess mode)
        server.metrics = metrics
    slots = SlotsClient(chan)
    server.slots = slots  # type: ignore[assignment]  # runtime.Slots' interface, host totals (S-109)
    # argon2 verifications on the host stay about one per core in all (DESIGN.md).
    server.argon2_slots = threading.BoundedSemaphore(max(1, -(-(os.cpu_count() or 1) // count)))
    server.auth = Authenticator(server, cfg.auth_cache_ttl)
    listeners = [Listener(server, lst.entry, lst.socket) for lst in bound]
    if restarted:  # the master's runtime is the one it started with: read what is current
        reload(server)
    return _run(cfg, server, listeners, _WorkerRole(number, count, slots, os.getppid()))


def _log_listening(lst: Listener) -> None:
    host, port = lst.server_address[:2]
    shown = f"[{host}]" if ":" in host else host
    maillog.info(f"listening on {shown}:{port} ({lst.entry.mode})")


def _log_metrics(endpoint: Any) -> None:
    host, port = endpoint.address
    maillog.info(f"metrics on http://{f'[{host}]' if ':' in host else host}:{port}/metrics")


def _run(cfg: Config, server: Server, listeners: list[Listener], worker: _WorkerRole | None = None,
         endpoint: Any = None) -> int:
    """Serve until SIGTERM/SIGINT, reloading on SIGHUP or a changed file,
    then drain: `serve` itself, or one of its workers (`worker`)."""
    runtime = server.runtime
    stop = threading.Event()
    hup = threading.Event()

    def on_stop(signum: int, frame: object) -> None:
        stop.set()

    def on_hup(signum: int, frame: object) -> None:
        hup.set()

    signal.signal(signal.SIGTERM, on_stop)
    signal.signal(signal.SIGINT, on_stop)
    signal.signal(signal.SIGHUP, on_hup)
    if hasattr(signal, "SIGXFSZ"):
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # EFBIG instead of death (S-307)
    if worker is not None:  # blocked by the master across fork (server/workers.py)
        from .workers import SIGNALS

        signal.pthread_sigmask(signal.SIG_UNBLOCK, SIGNALS)

    # Before any thread starts: they inherit it (server/affinity.py).
    pinned = server.affinity.pin(worker.number - 1 if worker is not None else 0)
    threading.stack_size(THREAD_STACK)
    threads = []
    for lst in listeners:
        t = threading.Thread(target=lst.serve_forever, kwargs={"poll_interval": 0.5}, daemon=True)
        t.start()
        threads.append(t)
        if worker is None:
            _log_listening(lst)
    if endpoint is not None:  # one process: it serves /metrics itself (S-1501)
        endpoint.start()
        _log_metrics(endpoint)
    if worker is None:
        maillog.info(f"ready: {cfg.hostname}, {len(runtime.users) if runtime.users is not None else 0} users"
                     + (", session threads on one CPU" if pinned else ""))
        _notify("READY=1")
    else:  # S-1601: one line each, under its own pid
        maillog.info(f"worker {worker.number} of {worker.count} started"
                     + (f", session threads on CPU {server.affinity.core}" if pinned else ""))
        from .anvil import RELOADED, UP

        worker.channel.tell(UP)

    from directory.usersfile import Watch

    watch = Watch([cfg.users, cfg.app_passwords, cfg.sql or ""])
    while not stop.is_set():
        _report_health(server)
        stop.wait(WATCH_INTERVAL)
        if worker is not None and os.getppid() != worker.master:
            maillog.warning(f"worker {worker.number}: the master process is gone; stopping")
            break
        if watch.changed() | hup.is_set():  # both looked at: a change seen now is not seen again
            hup.clear()
            _notify("RELOADING=1")  # a worker has no NOTIFY_SOCKET: the master tells systemd
            reload(server)
            _notify("READY=1")
            if worker is not None:
                worker.channel.tell(RELOADED)

    _notify("STOPPING=1")
    maillog.info("stopping: no new connections; letting sessions finish")
    server.stop()
    # Each listener's loop notices the request within its poll interval:
    # asked all at once, they stop together, not one interval after another.
    stoppers = [threading.Thread(target=lst.shutdown, daemon=True) for lst in listeners]
    for t in stoppers:
        t.start()
    for t in stoppers:
        t.join()
    for lst in listeners:
        lst.server_close()
    deadline = time.monotonic() + cfg.sendmail_timeout + DRAIN_GRACE
    while time.monotonic() < deadline:
        live = server.live_sessions()
        if not live:
            break
        time.sleep(0.1)
    left = server.live_sessions()
    if left:
        maillog.warning(f"stopping with {len(left)} session(s) still open")
        for s in left:
            s.force_close()
    server.close()
    spool.release_idle()  # the emptied files kept for reuse (a worker ends by os._exit: no atexit)
    if endpoint is not None:
        endpoint.close()
    maillog.info("stopped" if worker is None else f"worker {worker.number} stopped")
    return 0
