"""inetd mode: exactly one session on standard input/output (CONTRACT.md).

Same Runtime and Session as the daemon, in the main thread. If fd 0 is a
socket, STARTTLS is offered when TLS is configured and `--tls` handshakes at
start; on pipes there is no TLS and `--tls` is refused clearly. When stderr
is the socket (classic inetd), logs go to syslog so they never reach the
client.
"""

from __future__ import annotations

import os
import signal
import socket
import stat
import sys

from delivery import spool

from . import maillog
from .auth import Authenticator
from .config import Config
from .runtime import Server, StartupError, build_runtime
from .session import Session
from .transport import PipeTransport, SocketTransport


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


def run(cfg: Config, implicit_tls: bool) -> int:
    stdin_socket = _is_socket(0)
    _setup_log(cfg.log)
    if hasattr(signal, "SIGXFSZ"):
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    try:
        runtime = build_runtime(cfg, lazy=True)
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
        if implicit_tls:
            print("msa: inetd --tls needs a socket on standard input", file=sys.stderr)
            return 2
        transport = PipeTransport(0, 1)
    for key in ("TCPREMOTEPORT", "REMOTE_PORT", "SOCAT_PEERPORT"):
        if port is None and os.environ.get(key, "").isdigit():
            port = int(os.environ[key])
    server = Server(runtime)
    server.auth = Authenticator(server, cfg.auth_cache_ttl)
    Session(server, transport, ip, port, implicit_tls).run()
    server.close()
    return 0
