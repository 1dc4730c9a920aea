"""Listeners: ThreadingTCPServer subclasses, one per `listen` entry.

Extends socketserver's documented hooks only: `process_request` takes a
connection slot (S-109) before a thread is started, `finish_request` runs a
Session, `handle_error` logs one line. Refusals never block the accept
thread: on a starttls listener the 421 is written non-blocking; on an
implicit-TLS listener a small pool handshakes first, else the socket is
just closed.
"""

from __future__ import annotations

import socket
import socketserver
import ssl
import threading
import sys
from typing import Any

from smtp_states import replies as R

from . import maillog
from .config import Listen
from .runtime import Server, client_ip
from .session import Session
from .transport import SocketTransport, close_notify


class _Handler(socketserver.BaseRequestHandler):
    pass  # unused: finish_request runs the Session directly


class Listener(socketserver.ThreadingTCPServer):
    daemon_threads = True
    block_on_close = False  # the drain has its own deadline (lifecycle.py)
    allow_reuse_address = True
    request_queue_size = 128

    def __init__(self, server: Server, entry: Listen, sock: socket.socket | None = None) -> None:
        self.msa = server
        self.entry = entry
        self.implicit_tls = entry.mode == "tls"
        self.address_family = socket.AF_INET6 if ":" in entry.host else socket.AF_INET
        if sock is None:
            super().__init__((entry.host, entry.port), _Handler, bind_and_activate=False)
            if self.address_family == socket.AF_INET6:
                self.socket.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            try:
                self.server_bind()
                self.server_activate()
            except OSError:
                self.server_close()
                raise
        else:  # adopted from systemd (LISTEN_FDS)
            self.address_family = sock.family
            super().__init__(sock.getsockname()[:2], _Handler, bind_and_activate=False)
            self.socket.close()
            self.socket = sock
        # msa_connections_total's listener: its port and mode, no address (S-1501)
        self.label = f"{self.server_address[1]}/{entry.mode}"

    def process_request(self, request: socket.socket, client_address: Any) -> None:
        ip = client_ip(client_address[0])
        metrics = self.msa.metrics
        metrics.connection(self.label)
        if not self.msa.slots.acquire(ip):
            if metrics.enabled:  # S-1501: which cap, as the slots stand now
                slots = self.msa.slots
                metrics.connection_refused("max_connections" if slots.used >= slots.total
                                           else "max_connections_per_ip")
            self._refuse(request)
            return
        try:  # the session gets the address in its S-109 form
            super().process_request(request, (ip, client_address[1]))
        except RuntimeError:  # can't start a thread
            self.msa.slots.release(ip)
            self.shutdown_request(request)

    def finish_request(self, request: socket.socket, client_address: Any) -> None:
        ip = client_address[0]  # normalised by process_request
        try:
            session = Session(
                self.msa, SocketTransport(request), ip, client_address[1], self.implicit_tls
            )
            session.run()
        finally:
            self.msa.slots.release(ip)

    def shutdown_request(self, request: socket.socket) -> None:
        try:
            request.close()
        except OSError:
            pass

    def handle_error(self, request: Any, client_address: Any) -> None:
        """One log line instead of socketserver's traceback on stderr."""
        exc = sys.exc_info()[1]
        if exc is not None:
            maillog.internal_error("listener", str(client_address[0]), exc)

    def _refuse(self, request: socket.socket) -> None:
        """S-109: 421 and close, without blocking the accept thread."""
        host = self.msa.runtime.config.hostname
        reply = R.too_many_connections(host).to_bytes()
        try:
            peer = client_ip(request.getpeername()[0])
        except OSError:
            peer = "?"
        maillog.warning(f"too many connections from {peer}")
        if not self.implicit_tls:
            try:
                request.setblocking(False)
                request.send(reply)
            except OSError:
                pass
            self.shutdown_request(request)
            return
        ctx = self.msa.runtime.ssl_context
        if ctx is None or not self.msa.tls_refusal_slots.acquire(blocking=False):
            self.shutdown_request(request)
            return

        def refuse_after_handshake() -> None:
            try:
                request.settimeout(10)
                with ctx.wrap_socket(request, server_side=True) as tls_sock:
                    tls_sock.sendall(reply)
                    close_notify(tls_sock)  # S-111
            except (OSError, ssl.SSLError):
                pass
            finally:
                self.msa.tls_refusal_slots.release()
                self.shutdown_request(request)

        threading.Thread(target=refuse_after_handshake, daemon=True).start()
