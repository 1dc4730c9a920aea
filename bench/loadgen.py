"""Load generators for `make bench`: raw-socket SMTP clients (plain,
STARTTLS, implicit TLS, AUTH PLAIN), thread and process pools that run a
client function for a fixed time, and spawn floors (the cost of starting a
sendmail-like process, which msa pays once per message).

Everything here talks to loopback only, and every loop is bounded in time.
"""

from __future__ import annotations

import base64
import concurrent.futures
import multiprocessing
import os
import socket
import ssl
import subprocess
import threading
import time
from dataclasses import dataclass, field
from collections.abc import Callable

SENDER = "bench@example.org"
RCPT = "sink@example.net"
HEADER = (
    b"From: Bench <bench@example.org>\r\n"
    b"To: sink@example.net\r\n"
    b"Subject: msa bench\r\n"
    b"Date: Wed, 25 Nov 2026 18:48:03 +0100\r\n"
    b"Message-ID: <bench.1@example.org>\r\n"
    b"MIME-Version: 1.0\r\n"
    b"Content-Type: application/octet-stream\r\n"
    b"Content-Transfer-Encoding: base64\r\n"
    b"\r\n"
)
LINE = 76  # base64 line length in MIME (RFC 2045), plus CRLF


def body_chunk(lines: int) -> bytes:
    """`lines` lines of 76 base64 characters and CRLF; no line starts with
    a dot, so the chunk needs no dot-stuffing and chunks can be repeated."""
    raw = os.urandom(57 * lines)
    text = base64.b64encode(raw)
    return b"".join(text[i : i + LINE] + b"\r\n" for i in range(0, len(text), LINE))


#: about 1 MiB of whole lines (13443 * 78 = 1048554 bytes)
CHUNK_LINES = 13443


def small_message(size: int = 4096) -> bytes:
    """A complete message (header + body) of about `size` bytes, CRLF."""
    body_lines = max(1, (size - len(HEADER)) // (LINE + 2))
    return HEADER + body_chunk(body_lines)


def lf_message_file(path: str, size: int = 4096) -> int:
    """The same message with LF line ends, for smtp-source -F (it appends
    CRLF to each line itself)."""
    msg = small_message(size).replace(b"\r\n", b"\n")
    with open(path, "wb") as f:
        f.write(msg)
    return len(msg)


# -- a small SMTP client ------------------------------------------------------------------
class SmtpError(Exception):
    pass


class Client:
    """Synchronous SMTP client on a raw socket: whole replies, no makefile."""

    def __init__(self, port: int, *, host: str = "127.0.0.1", source: str | None = None,
                 implicit_tls: ssl.SSLContext | None = None, timeout: float = 120) -> None:
        s = socket.create_connection((host, port), timeout=timeout,
                                     source_address=(source, 0) if source else None)
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        if implicit_tls is not None:
            try:
                s = implicit_tls.wrap_socket(s, server_hostname="localhost")
            except BaseException:
                s.close()
                raise
        self.sock = s
        self.buf = b""

    def reply(self) -> tuple[int, bytes]:
        lines = []
        while True:
            i = self.buf.find(b"\r\n")
            while i < 0:
                chunk = self.sock.recv(65536)
                if not chunk:
                    raise SmtpError(f"connection closed after {lines!r} {self.buf!r}")
                self.buf += chunk
                i = self.buf.find(b"\r\n")
            line, self.buf = self.buf[:i], self.buf[i + 2 :]
            lines.append(line)
            if len(line) < 4 or line[3:4] == b" ":
                return int(line[:3]), b"\n".join(lines)

    def expect(self, code: int, what: str = "") -> bytes:
        got, text = self.reply()
        if got != code:
            raise SmtpError(f"{what}: expected {code}, got {text[:300]!r}")
        return text

    def cmd(self, line: str, code: int) -> bytes:
        self.sock.sendall(line.encode() + b"\r\n")
        return self.expect(code, line.split(" ", 1)[0])

    def starttls(self, ctx: ssl.SSLContext) -> None:
        self.cmd("STARTTLS", 220)
        self.sock = ctx.wrap_socket(self.sock, server_hostname="localhost")
        self.buf = b""

    def auth_plain(self, user: str, password: str) -> None:
        token = base64.b64encode(f"\0{user}\0{password}".encode()).decode()
        self.cmd(f"AUTH PLAIN {token}", 235)

    def envelope(self, sender: str = SENDER, rcpt: str = RCPT) -> None:
        # pipelined, as msa advertises PIPELINING (RFC 2920)
        self.sock.sendall(f"MAIL FROM:<{sender}>\r\nRCPT TO:<{rcpt}>\r\nDATA\r\n".encode())
        self.expect(250, "MAIL")
        self.expect(250, "RCPT")
        self.expect(354, "DATA")

    def quit(self) -> None:
        try:
            self.sock.sendall(b"QUIT\r\n")
            self.reply()
        except (OSError, SmtpError):
            pass
        self.close()

    def close(self) -> None:
        try:
            self.sock.close()
        except OSError:
            pass


def open_session(port: int, *, tls: ssl.SSLContext | None, mode: str, user: str | None,
                 password: str | None, source: str | None = None, ehlo: str = "bench.client") -> Client:
    """mode: "plain", "starttls" or "implicit"; AUTH PLAIN when `user`."""
    c = Client(port, source=source, implicit_tls=tls if mode == "implicit" else None)
    try:
        c.expect(220, "greeting")
        c.cmd(f"EHLO {ehlo}", 250)
        if mode == "starttls":
            assert tls is not None
            c.starttls(tls)
            c.cmd(f"EHLO {ehlo}", 250)
        if user is not None:
            c.auth_plain(user, password or "")
    except BaseException:
        c.close()
        raise
    return c


@dataclass
class BigResult:
    size: int
    seconds: float  # from the first body byte to the final reply
    reply: bytes


def send_big(client: Client, size: int, chunk: bytes) -> BigResult:
    """One message of about `size` bytes: HEADER, then repeated `chunk`,
    then the end of data. Timed from the first DATA byte to the reply."""
    client.envelope()
    n = max(1, (size - len(HEADER)) // len(chunk))
    sock = client.sock
    t0 = time.perf_counter()
    sock.sendall(HEADER)
    for _ in range(n):
        sock.sendall(chunk)
    sock.sendall(b".\r\n")
    code, text = client.reply()
    dt = time.perf_counter() - t0
    if code != 250:
        raise SmtpError(f"end of data: {text[:300]!r}")
    return BigResult(len(HEADER) + n * len(chunk), dt, text)


# -- running a client function for a while ------------------------------------------------
@dataclass
class LoadResult:
    count: int = 0
    errors: int = 0
    seconds: float = 0.0
    first_error: str = ""
    latencies: list[float] = field(default_factory=list)

    @property
    def rate(self) -> float:
        return self.count / self.seconds if self.seconds > 0 else 0.0

    def merge(self, other: LoadResult) -> None:
        self.count += other.count
        self.errors += other.errors
        self.seconds = max(self.seconds, other.seconds)
        if other.first_error and not self.first_error:
            self.first_error = other.first_error


def source_address(n: int) -> str:
    """127.0.X.Y, X and Y from 1 to 250, never 127.0.0.1: one address per
    connection keeps per-IP limits and throttles out of the picture."""
    n %= 250 * 250
    return f"127.0.{1 + n // 250}.{1 + n % 250}"


def run_threads(step: Callable[[int, int], None], threads: int, duration: float,
                max_errors: int = 50) -> LoadResult:
    """Call step(thread_index, iteration) in `threads` threads until
    `duration` seconds pass; count successes and errors."""
    deadline = time.perf_counter() + duration
    results = [LoadResult() for _ in range(threads)]
    stop = threading.Event()

    def worker(i: int) -> None:
        r = results[i]
        it = 0
        while not stop.is_set() and time.perf_counter() < deadline:
            try:
                step(i, it)
                r.count += 1
            except Exception as e:  # noqa: BLE001 - counted and reported
                r.errors += 1
                if not r.first_error:
                    r.first_error = f"{type(e).__name__}: {e}"[:300]
                if r.errors >= max_errors:
                    stop.set()
                time.sleep(0.01)
            it += 1

    t0 = time.perf_counter()
    ts = [threading.Thread(target=worker, args=(i,), daemon=True) for i in range(threads)]
    for t in ts:
        t.start()
    for t in ts:
        t.join(duration + 120)
    total = LoadResult(seconds=time.perf_counter() - t0)
    for r in results:
        total.merge(r)
    total.seconds = time.perf_counter() - t0
    return total


def _proc_worker(args: tuple) -> LoadResult:
    fn_name, kwargs, proc_index, threads, duration = args
    fn = globals()[fn_name]
    step = fn(proc_index=proc_index, **kwargs)
    return run_threads(step, threads, duration)


def run_processes(fn_name: str, kwargs: dict, procs: int, threads: int, duration: float) -> LoadResult:
    """Like run_threads, in `procs` forked processes so that the client's
    own GIL does not limit the load. `fn_name` names a factory in this
    module returning a step function."""
    ctx = multiprocessing.get_context("fork")
    t0 = time.perf_counter()
    with concurrent.futures.ProcessPoolExecutor(procs, mp_context=ctx) as ex:
        futs = [ex.submit(_proc_worker, (fn_name, kwargs, p, threads, duration)) for p in range(procs)]
        total = LoadResult()
        for f in futs:
            total.merge(f.result(timeout=duration + 180))
    total.seconds = time.perf_counter() - t0 if total.seconds == 0 else total.seconds
    return total


# step factories (picklable by name for run_processes)
def auth_session_step(*, proc_index: int, port: int, ca: str, user: str, password: str,
                      mode: str = "implicit") -> Callable[[int, int], None]:
    """One whole session per call: TCP, TLS, greeting, EHLO, AUTH PLAIN, QUIT."""
    ctx = ssl.create_default_context(cafile=ca)
    ctx.options |= ssl.OP_NO_TICKET  # full handshakes only: no resumption

    def step(thread: int, it: int) -> None:
        src = source_address(proc_index * 100003 + thread * 10007 + it)
        c = open_session(port, tls=ctx, mode=mode, user=user, password=password, source=src)
        c.quit()

    return step


def message_session_step(*, proc_index: int, port: int, ca: str | None, user: str | None,
                         password: str | None, mode: str, message: bytes, per_session: int
                         ) -> Callable[[int, int], None]:
    """Many messages over one session per thread; one message per call.
    A session is replaced after `per_session` messages (msa's bound is
    1000 per session)."""
    ctx = ssl.create_default_context(cafile=ca) if ca else None
    sessions: dict[int, tuple[Client, int]] = {}
    data = message + b".\r\n"

    def step(thread: int, it: int) -> None:
        entry = sessions.get(thread)
        if entry is None or entry[1] >= per_session:
            if entry is not None:
                entry[0].quit()
            src = source_address(proc_index * 1009 + thread * 101 + it)
            entry = (open_session(port, tls=ctx, mode=mode, user=user, password=password, source=src), 0)
        c, n = entry
        sessions[thread] = (c, n + 1)
        try:
            c.envelope()
            c.sock.sendall(data)
            c.expect(250, "end of data")
        except BaseException:
            sessions.pop(thread, None)
            c.close()
            raise

    return step


# -- spawn floors ----------------------------------------------------------------------------
SPAWN_ENV = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "LANG": "C"}  # what msa passes


def spawn_floor(argv: list[str], stdin: bytes, threads: int, duration: float) -> LoadResult:
    """Start `argv` with `stdin` on its standard input, in `threads`
    threads, as fast as possible: starts per second. The process is
    started the way a careful Python program starts it (pipes, close_fds,
    a new session, a small environment) and must exit 0."""

    def step(thread: int, it: int) -> None:
        p = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.DEVNULL,
                             stderr=subprocess.DEVNULL, close_fds=True, start_new_session=True,
                             env=SPAWN_ENV)
        assert p.stdin is not None
        try:
            p.stdin.write(stdin)
        finally:
            p.stdin.close()
        rc = p.wait()
        if rc != 0:
            raise RuntimeError(f"{argv[0]} exited {rc}")

    return run_threads(step, threads, duration)


def argon2_floor(phc_hash: str, password: str, threads: int, duration: float) -> LoadResult:
    """argon2-cffi PasswordHasher().verify throughput, the hash msa stores."""
    from argon2 import PasswordHasher

    ph = PasswordHasher()

    def step(thread: int, it: int) -> None:
        if not ph.verify(phc_hash, password):
            raise RuntimeError("verify returned false")

    return run_threads(step, threads, duration)
