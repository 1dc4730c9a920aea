"""inetd mode: exactly one session on standard input/output (CONTRACT.md).

Same Runtime and Session as the daemon, in the main thread. If fd 0 is a
socket, STARTTLS is offered when TLS is configured and `--tls` handshakes at
start; on pipes there is no TLS and `--tls` is refused clearly. When stderr
is the socket (classic inetd), logs go to syslog so they never reach the
client.

inetd starts one process per connection, so the greeting comes as soon as
what decides whether msa can serve at all has passed: the configuration,
the spool, the directories configured, and users.db, the app passwords and
the TLS files as files (`runtime.check_files`). Then, while the client
reads the greeting, the rest is loaded: the contents of those files (the
TLS context among them), the SMTP core, the session. Should a content be
unusable, the log says why, as it would have before the greeting, and the
client gets `421 4.3.0`. Without `--tls` nothing of ssl is imported
before the greeting; with it, the handshake comes first, as before.
"""

from __future__ import annotations

import os
import select
import stat
import sys
import time

from delivery import spool
from util.wait import wait

from . import maillog
from .config import Config
from .runtime import StartupError, build_runtime, load_files


def _is_socket(fd: int) -> bool:
    try:
        return stat.S_ISSOCK(os.fstat(fd).st_mode)
    except OSError:
        return False


def _setup_log(kind: str) -> None:
    """Log to `kind`, or to syslog when stderr is the client's socket."""
    stderr_is_stdin = _is_socket(0) and _is_socket(2) and os.path.sameopenfile(0, 2)
    maillog.setup("syslog" if stderr_is_stdin else kind)


def config_failed(problems: list[str]) -> int:
    """A configuration that cannot be used: its problems go to the log (on
    classic inetd stderr is the client, which must not read them); 1."""
    _setup_log("stderr")
    for p in problems:
        maillog.error(p)
    return 1


def _write(fd: int, data: bytes, timeout: float) -> None:
    """`data` on `fd` before the session's transport exists, within
    `timeout`; an OSError when the client is gone or does not read."""
    deadline = time.monotonic() + timeout
    view = memoryview(data)
    while view:
        wait(fd, select.POLLOUT, deadline)
        view = view[os.write(fd, view) :]


def run(cfg: Config, implicit_tls: bool) -> int:
    stdin_socket = _is_socket(0)
    _setup_log(cfg.log)
    early = not implicit_tls  # an implicit TLS session is greeted after its handshake
    try:
        runtime = build_runtime(cfg, lazy=True, files_only=early)
        spool.prepare(cfg.spool, clean=False)
    except StartupError as e:
        for p in e.problems:
            maillog.error(p)
        return 1
    except spool.SpoolError as e:
        maillog.error(f"{cfg.where('spool')}: spool: {e}")
        return 1
    if implicit_tls and runtime.ssl_context is None:
        maillog.error("inetd --tls needs tls_cert and tls_key")
        return 1
    if implicit_tls and not stdin_socket:
        print("msa: inetd --tls needs a socket on standard input", file=sys.stderr)
        return 2
    if early:
        from smtp_states import replies as R

        out = 0 if stdin_socket else 1  # where the session's transport writes
        try:
            _write(out, R.greeting(cfg.hostname).to_bytes(), cfg.timeout)  # S-201
        except OSError:
            pass  # the client is gone: the session finds it so and logs it as usual
        try:
            runtime = load_files(runtime)
        except StartupError as e:
            for p in e.problems:
                maillog.error(p)
            try:
                _write(out, R.INTERNAL_ERROR.to_bytes(), cfg.timeout)
            except OSError:
                pass
            return 1
    return _serve(cfg, runtime, stdin_socket, implicit_tls, early)


def _serve(cfg: Config, runtime: object, stdin_socket: bool, implicit_tls: bool, greeted: bool) -> int:
    """The session itself, on fd 0's socket or on the pipes 0 and 1."""
    import signal
    import socket

    from .auth import Authenticator
    from .runtime import Server
    from .session import Session
    from .transport import PipeTransport, SocketTransport

    # Where the client is when fd 0 is not its TCP socket: ucspi-tcp's
    # tcpserver, systemd's Accept=yes, socat's EXEC.
    ip = next((os.environ[k] for k in ("TCPREMOTEIP", "REMOTE_ADDR", "SOCAT_PEERADDR") if os.environ.get(k)), "unknown")
    port = None
    if stdin_socket:
        sock = socket.socket(fileno=os.dup(0))
        try:
            peer = sock.getpeername()
            if isinstance(peer, tuple) and peer:
                ip, port = peer[0], peer[1]
        except OSError:
            pass
        transport: SocketTransport | PipeTransport = SocketTransport(sock)
    else:
        transport = PipeTransport(0, 1)
    for key in ("TCPREMOTEPORT", "REMOTE_PORT", "SOCAT_PEERPORT"):
        if port is None and os.environ.get(key, "").isdigit():
            port = int(os.environ[key])
    if hasattr(signal, "SIGXFSZ"):
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # EFBIG instead of death (S-307)
    server = Server(runtime)  # type: ignore[arg-type]
    server.auth = Authenticator(server, cfg.auth_cache_ttl)
    Session(server, transport, ip, port, implicit_tls, greeted=greeted).run()
    server.close()
    return 0
