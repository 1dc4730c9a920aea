"""A scripted Dovecot auth service on a unix socket, standing in for the
real one (tests/dovecot) where it cannot be made to misbehave on cue:
2.4's handshake (VERSION first, the rest only after the client's VERSION),
silence, over-long or broken lines, `code=temp_fail`, `CONT`, `proxy`,
answers for another ID (SPEC.md S-1302).

`mode` picks the handshake; `answer(id, user, password)` returns the reply
line(s) for one AUTH (default: OK for PASSWORDS, FAIL otherwise), or None
to close the connection without an answer. Every
line received is recorded per connection.
"""

from __future__ import annotations

import base64
import socket
import threading
from collections.abc import Callable
from pathlib import Path

PASSWORDS = {"alice@example.org": b"right password"}

HANDSHAKE_23 = b"VERSION\t1\t2\nMECH\tPLAIN\tplaintext\nMECH\tLOGIN\tplaintext\nSPID\t42\nCUID\t1\nCOOKIE\t" + b"0" * 32 + b"\nDONE\n"
REST_24 = b"MECH\tPLAIN\tplaintext\nMECH\tLOGIN\tplaintext\nSPID\t42\nCUID\t1\nCOOKIE\t" + b"0" * 32 + b"\nDONE\n"


def default_answer(request_id: str, user: bytes, password: bytes) -> bytes:
    if PASSWORDS.get(user.decode("utf-8", "replace")) == password:
        return b"OK\t%s\tuser=%s\n" % (request_id.encode(), user)
    return b"FAIL\t%s\tuser=%s\n" % (request_id.encode(), user)


class FakeDovecot:
    """Modes: "2.3" (everything at once on connect), "2.4" (VERSION on
    connect, the rest after the client's VERSION and CPID), "silent" (reads,
    never writes), or bytes: sent on connect, then silence."""

    def __init__(self, directory: Path, mode: str | bytes = "2.4",
                 answer: Callable[[str, bytes, bytes], bytes | None] = default_answer,
                 name: str = "fake-auth") -> None:
        self.path = str(directory / name)
        self.mode = mode
        self.answer = answer
        self.connections: list[list[bytes]] = []  # the lines each connection sent
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.bind(self.path)
        self.sock.listen(64)
        self._stop = False
        self._clients: list[socket.socket] = []
        threading.Thread(target=self._serve, daemon=True).start()

    @property
    def address(self) -> str:
        return f"unix:{self.path}"

    def requests(self) -> list[bytes]:
        return [line for lines in self.connections for line in lines if line.startswith(b"AUTH\t")]

    def stop(self) -> None:
        self._stop = True
        self.sock.close()
        for c in list(self._clients):
            try:
                c.close()
            except OSError:
                pass

    def drop_connections(self) -> None:
        """Close every accepted connection (as a restarted Dovecot does)."""
        for c in list(self._clients):
            try:
                c.shutdown(socket.SHUT_RDWR)
                c.close()
            except OSError:
                pass

    def _serve(self) -> None:
        while not self._stop:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self._clients.append(conn)
            lines: list[bytes] = []
            self.connections.append(lines)
            threading.Thread(target=self._handle, args=(conn, lines), daemon=True).start()

    def _handle(self, conn: socket.socket, lines: list[bytes]) -> None:
        buf = b""

        def readline() -> bytes | None:
            nonlocal buf
            while b"\n" not in buf:
                try:
                    data = conn.recv(65536)
                except OSError:
                    return None
                if not data:
                    return None
                buf += data
            line, buf = buf.split(b"\n", 1)
            lines.append(line)
            return line

        try:
            if isinstance(self.mode, bytes):
                conn.sendall(self.mode)
                while readline() is not None:
                    pass
                return
            if self.mode == "silent":
                while readline() is not None:
                    pass
                return
            if self.mode == "2.3":
                conn.sendall(HANDSHAKE_23)
            else:
                conn.sendall(b"VERSION\t1\t3\n")
            version = readline()
            if version is None or not version.startswith(b"VERSION\t1\t"):
                return
            cpid = readline()
            if cpid is None or not cpid.startswith(b"CPID\t"):
                return
            if self.mode == "2.4":
                conn.sendall(REST_24)
            while (line := readline()) is not None:
                fields = line.split(b"\t")
                if fields[0] != b"AUTH" or not fields[-1].startswith(b"resp="):
                    return  # Dovecot drops a client that sends what it does not know
                _, user, password = base64.b64decode(fields[-1][5:]).split(b"\0")
                reply = self.answer(fields[1].decode(), user, password)
                if reply is None:
                    return  # close without an answer
                conn.sendall(reply)
        except OSError:
            pass
        finally:
            try:
                conn.close()
            except OSError:
                pass
