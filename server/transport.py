"""Transports: how a Session reads and writes bytes.

SocketTransport wraps a (possibly TLS) socket; PipeTransport serves inetd
mode when standard input is not a socket. Both read with a timeout and never
buffer beyond one recv (no makefile(): a buffer msa does not control could
carry pipelined plaintext across STARTTLS, S-401).
"""

from __future__ import annotations

import os
import select
import socket
import ssl
import time

from util.wait import READABLE, Timeout, wait


#: S-111: how long a close may wait for the socket to take the close_notify
#: alert; the client's own alert is never waited for.
CLOSE_NOTIFY_WAIT = 1.0


def close_notify(tls: ssl.SSLSocket, wait: float = CLOSE_NOTIFY_WAIT) -> None:
    """Send the TLS close_notify alert before the TCP close (RFC 8446 §6.1,
    S-111): non-blocking, bounded by `wait`, and without waiting for the
    peer's alert. A peer already gone is no error."""
    deadline = time.monotonic() + wait
    try:
        tls.setblocking(False)
        while True:
            try:
                tls.unwrap()
                return
            except ssl.SSLWantReadError:
                return  # ours is sent; the client's reply is not awaited
            except ssl.SSLWantWriteError:
                wait(tls.fileno(), select.POLLOUT, deadline)
    except (OSError, ssl.SSLError, ValueError):
        return  # Timeout, a reset, a socket already closed


class SocketTransport:
    """A client socket, kept non-blocking: every wait is one poll() with
    the session's deadline, and no timeout is set or reset per call (each
    settimeout costs two fcntl calls)."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.tls: ssl.SSLSocket | None = None
        sock.setblocking(False)
        if sock.family in (socket.AF_INET, socket.AF_INET6):
            # Replies are small and final: without this, a reply written
            # right after a TLS record (session tickets) waits ~40 ms for
            # the client's delayed ACK (Nagle).
            try:
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            except OSError:
                pass

    @property
    def can_starttls(self) -> bool:
        return True

    def local_address(self) -> tuple[str | None, int | None]:
        """msa's own address and port of this connection (Dovecot's lip, lport)."""
        try:
            address = self.sock.getsockname()
        except OSError:
            return None, None
        if isinstance(address, tuple) and len(address) >= 2:
            return str(address[0]), int(address[1])
        return None, None

    def recv(self, size: int, timeout: float, wake_fd: int | None = None) -> bytes:
        sock = self.tls or self.sock
        deadline = time.monotonic() + timeout
        while True:
            if not (self.tls and self.tls.pending()):
                wait(sock.fileno(), READABLE, deadline, wake_fd)
            try:
                data = sock.recv(size)
            except (BlockingIOError, ssl.SSLWantReadError, ssl.SSLWantWriteError):
                if time.monotonic() >= deadline:
                    raise Timeout() from None
                continue  # woken without a whole TLS record
            except ssl.SSLError:
                return b""  # a broken TLS stream is a lost connection
            if self.tls is not None and data:
                data = self._more_records(data, size)
            return data

    def _more_records(self, data: bytes, size: int) -> bytes:
        """A TLS recv returns one record (16 KiB): take the ones already
        here too, up to `size`, so a big message costs fewer rounds."""
        assert self.tls is not None
        parts = [data]
        got = len(data)
        try:
            while got < size:
                more = self.tls.recv(size - got)
                if not more:
                    break
                parts.append(more)
                got += len(more)
        except (BlockingIOError, ssl.SSLWantReadError, ssl.SSLWantWriteError):
            pass
        except ssl.SSLError:
            pass  # the next read reports it
        return b"".join(parts) if len(parts) > 1 else data

    def send(self, data: bytes, timeout: float) -> None:
        if not data:
            return
        sock = self.tls or self.sock
        deadline = time.monotonic() + timeout
        view = memoryview(data)
        while view:
            try:
                n = sock.send(view)
                view = view[n:]
                continue
            except (BlockingIOError, ssl.SSLWantWriteError):
                events = select.POLLOUT
            except ssl.SSLWantReadError:
                events = select.POLLIN
            wait(sock.fileno(), events, deadline)

    def start_tls(self, ctx: ssl.SSLContext, timeout: float) -> ssl.SSLSocket:
        tls = ctx.wrap_socket(self.sock, server_side=True, do_handshake_on_connect=False)
        deadline = time.monotonic() + timeout
        while True:
            try:
                tls.do_handshake()
                break
            except ssl.SSLWantReadError:
                wait(tls.fileno(), select.POLLIN, deadline)
            except ssl.SSLWantWriteError:
                wait(tls.fileno(), select.POLLOUT, deadline)
        self.tls = tls
        return tls

    def peer_closed(self) -> bool:
        """Has the client closed its side (Linux POLLRDHUP)? No read needed."""
        poller = select.poll()
        poller.register((self.tls or self.sock).fileno(), getattr(select, "POLLRDHUP", 0x2000) | select.POLLHUP)
        return bool(poller.poll(0))

    def shutdown(self, how: int) -> None:
        """From another thread: make a blocked read return (drain, S-110).
        The base class method, so the TLS object is left alone."""
        try:
            socket.socket.shutdown(self.tls or self.sock, how)
        except OSError:
            pass

    def close(self) -> None:
        if self.tls is not None:
            close_notify(self.tls)  # S-111: after 221, 421, a timeout or an error
        sock = self.tls or self.sock
        try:
            sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        sock.close()


class PipeTransport:
    """inetd mode on pipes (fd 0 in, fd 1 out): no TLS possible."""

    def __init__(self, rfd: int = 0, wfd: int = 1) -> None:
        self.rfd = rfd
        self.wfd = wfd
        self.tls = None

    @property
    def can_starttls(self) -> bool:
        return False

    def local_address(self) -> tuple[str | None, int | None]:
        return None, None

    def recv(self, size: int, timeout: float, wake_fd: int | None = None) -> bytes:
        wait(self.rfd, READABLE, time.monotonic() + timeout, wake_fd)
        return os.read(self.rfd, size)

    def send(self, data: bytes, timeout: float) -> None:
        view = memoryview(data)
        deadline = time.monotonic() + timeout  # for the whole write, as on sockets
        while view:
            wait(self.wfd, select.POLLOUT, deadline)
            n = os.write(self.wfd, view)
            view = view[n:]

    def start_tls(self, ctx: ssl.SSLContext, timeout: float) -> ssl.SSLSocket:
        raise OSError("TLS is not possible on a pipe")

    def shutdown(self, how: int) -> None:
        pass

    def peer_closed(self) -> bool:
        return False

    def close(self) -> None:
        for fd in (self.rfd, self.wfd):
            try:
                os.close(fd)
            except OSError:
                pass
