"""Test support: a private `redis-server` (Debian package redis-server)
started by the tests, on a Unix socket in its own directory and a loopback
TCP port, without persistence, stopped by its pid (SPEC.md §14)."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

REDIS_SERVER = shutil.which("redis-server")


def _command(*words: bytes) -> bytes:
    """One command in RESP (a password may hold spaces)."""
    return b"*%d\r\n" % len(words) + b"".join(b"$%d\r\n%s\r\n" % (len(w), w) for w in words)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class RedisServer:
    """One redis-server process: `unix_url(db)` and `tcp_url(db)` name it
    the way msa's `state` does."""

    def __init__(self, directory: Path, password: str | None = None) -> None:
        self.dir = directory
        self.dir.mkdir(parents=True, exist_ok=True)
        self.socket = str(directory / "r.sock")
        self.port = free_port()
        self.password = password
        self.proc: subprocess.Popen | None = None

    def start(self, timeout: float = 10.0) -> RedisServer:
        assert REDIS_SERVER is not None, "redis-server is not installed (apt install redis-server)"
        args = [REDIS_SERVER, "--port", str(self.port), "--bind", "127.0.0.1", "--unixsocket", self.socket,
                "--unixsocketperm", "700", "--save", "", "--appendonly", "no", "--dir", str(self.dir),
                "--daemonize", "no", "--logfile", str(self.dir / "redis.log")]
        if self.password:
            args += ["--requirepass", self.password]
        self.proc = subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                     stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"redis-server exited {self.proc.returncode}: "
                                   f"{(self.dir / 'redis.log').read_text(errors='replace')[-500:]}")
            if self.answers():
                return self
            time.sleep(0.02)
        self.stop()
        raise RuntimeError("redis-server did not answer PING")

    def answers(self) -> bool:
        """PING over the Unix socket (raw RESP, no client library)."""
        try:
            with socket.socket(socket.AF_UNIX) as s:
                s.settimeout(1)
                s.connect(self.socket)
                s.sendall((_command(b"AUTH", self.password.encode()) if self.password else b"")
                          + _command(b"PING"))
                got = b""
                while b"+PONG" not in got:
                    chunk = s.recv(100)
                    if not chunk:
                        break
                    got += chunk
                return b"+PONG" in got
        except OSError:
            return False

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None
        try:
            os.unlink(self.socket)
        except FileNotFoundError:
            pass

    def _auth(self) -> str:
        return f":{self.password}@" if self.password else ""

    def unix_url(self, db: int = 0) -> str:
        return f"unix://{self._auth()}{self.socket}?db={db}"

    def tcp_url(self, db: int = 0) -> str:
        return f"redis://{self._auth()}127.0.0.1:{self.port}/{db}"

    def client(self, db: int = 0):
        """A redis-py client of this server (the tests' own view of it)."""
        import redis

        return redis.Redis(unix_socket_path=self.socket, db=db, password=self.password)


def unused_prefix(name: str) -> str:
    """A state_prefix of its own for one test, so that tests sharing the
    server never see each other's keys."""
    return f"t{os.getpid()}-{name[:40]}-{os.urandom(3).hex()}:"
