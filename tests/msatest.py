"""Test support: a real `msa.py serve` on loopback, a recording sendmail,
certificates made per run, and small raw-socket SMTP clients."""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import ssl
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
MSA = str(ROOT / "msa.py")
RECORDER = str(ROOT / "tests" / "helpers" / "recording_sendmail.py")


@dataclass
class Delivered:
    argv: list[str]
    data: bytes

    @property
    def sender(self) -> str:
        return self.argv[self.argv.index("-f") + 1]

    @property
    def recipients(self) -> list[str]:
        return self.argv[self.argv.index("--") + 1 :]


class Outbox:
    """What the recording sendmail received (exit 0 only)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        path.mkdir(parents=True, exist_ok=True)

    def set(self, name: str, value: object) -> None:
        (self.path / name).write_text(str(value))

    def clear_setting(self, name: str) -> None:
        try:
            (self.path / name).unlink()
        except FileNotFoundError:
            pass

    def messages(self) -> list[Delivered]:
        out = []
        for n in sorted(int(p.stem) for p in self.path.glob("*.msg")):
            argv = json.loads((self.path / f"{n}.argv").read_text())
            out.append(Delivered(argv, (self.path / f"{n}.msg").read_bytes()))
        return out


def wait_until(predicate, timeout: float = 10.0) -> bool:
    """Poll `predicate` until it holds or `timeout` passes; whether it held."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.02)
    return bool(predicate())


@dataclass
class MsaProcess:
    proc: subprocess.Popen
    dir: Path
    conf: Path
    log_path: Path
    outbox: Outbox
    ports: dict[str, int] = field(default_factory=dict)  # "starttls", "tls", "starttls6"...
    client_ctx: ssl.SSLContext | None = None

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def wait_log(self, pattern: str, timeout: float = 10.0) -> re.Match:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            m = re.search(pattern, self.log())
            if m:
                return m
            if self.proc.poll() is not None:
                break
            time.sleep(0.01)
        raise AssertionError(f"log never matched {pattern!r}:\n{self.log()}")

    @property
    def spool(self) -> Path:
        return self.dir / "spool"

    def children(self) -> list[str]:
        """The command lines of msa's running child processes (signers,
        minters, sendmail), from /proc."""
        found = []
        for task in Path(f"/proc/{self.proc.pid}/task").iterdir():
            try:
                pids = (task / "children").read_text().split()
            except OSError:
                continue
            for pid in pids:
                try:
                    found.append(Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace"))
                except OSError:
                    pass
        return found

    def spool_files(self) -> list[str]:
        """The spool's message files (its slot-* lock files, server/slots.py,
        stay; so do the emptied idle-* files kept for reuse, delivery/spool.py)."""
        if not self.spool.exists():
            return []
        return sorted(n for n in os.listdir(self.spool) if not n.startswith(("slot-", "idle-")))

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 30) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            raise

    def rss_kib(self) -> int:
        with open(f"/proc/{self.proc.pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
        return 0

    def hwm_kib(self) -> int:
        with open(f"/proc/{self.proc.pid}/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1])
        return 0

    def reset_hwm(self) -> None:
        reset_hwm(self.proc.pid)


def reset_hwm(pid: int) -> None:
    """Reset a process's peak RSS counter (Linux: write 5 to clear_refs)."""
    with open(f"/proc/{pid}/clear_refs", "w") as f:
        f.write("5")


def write_config(directory: Path, certs: Certs | None, **overrides: object) -> Path:
    outbox = directory / "outbox"
    outbox.mkdir(parents=True, exist_ok=True)
    values: dict[str, object] = {
        "hostname": "msa.test",
        "listen": "127.0.0.1:0 starttls, 127.0.0.1:0 tls" if certs else "127.0.0.1:0 starttls",
        "spool": str(directory / "spool"),
        "users": str(directory / "users.db"),
        "state_dir": str(directory / "state"),
        "sendmail": f"{sys.executable} {RECORDER} {outbox}",
        "trusted_networks": "127.0.0.0/8, ::1/128",
        "timeout": 30,
        "sendmail_timeout": 20,
    }
    if certs:
        values["tls_cert"] = certs.cert
        values["tls_key"] = certs.key
    values.update(overrides)
    conf = directory / "msa.conf"
    lines = ["[msa]"] + [f"{k} = {v}" for k, v in values.items() if v is not None]
    conf.write_text("\n".join(lines) + "\n")
    return conf


def start(directory: Path, certs: Certs | None, *, conf: Path | None = None, env: dict | None = None,
          preexec=None, argv: list[str] | None = None, **overrides: object) -> MsaProcess:
    directory.mkdir(parents=True, exist_ok=True)
    conf = conf or write_config(directory, certs, **overrides)
    log_path = directory / "msa.log"
    logf = open(log_path, "wb")
    proc = subprocess.Popen(
        [*(argv or [sys.executable, MSA]), "serve", "-c", str(conf)],
        stdin=subprocess.DEVNULL, stdout=logf, stderr=logf, cwd=directory,
        env={**os.environ, **(env or {})}, preexec_fn=preexec,
    )
    logf.close()
    m = MsaProcess(proc, directory, conf, log_path, Outbox(directory / "outbox"),
                   client_ctx=certs.client_context() if certs else None)
    m.wait_log(r"ready: ")
    for host, port, mode in re.findall(r"listening on (\S+):(\d+) \((\w+)\)", m.log()):
        key = mode + ("6" if host.startswith("[") else "")
        m.ports.setdefault(key, int(port))
    return m


@dataclass
class Certs:
    cert: str
    key: str
    ca: str

    def client_context(self) -> ssl.SSLContext:
        ctx = ssl.create_default_context(cafile=self.ca)
        return ctx


def make_certs(directory: Path) -> Certs:
    import trustme

    ca = trustme.CA()
    server = ca.issue_cert("localhost", "msa.test", "127.0.0.1", "::1")
    directory.mkdir(parents=True, exist_ok=True)
    cert, key, cafile = directory / "cert.pem", directory / "key.pem", directory / "ca.pem"
    server.private_key_and_cert_chain_pem.write_to_path(str(cert))
    server.private_key_pem.write_to_path(str(key))
    ca.cert_pem.write_to_path(str(cafile))
    return Certs(str(cert), str(key), str(cafile))


# -- raw wire clients ---------------------------------------------------------------------
class Wire:
    """A raw SMTP client: send bytes, read whole replies."""

    def __init__(self, sock: socket.socket, timeout: float = 10) -> None:
        self.sock = sock
        self.sock.settimeout(timeout)
        self.buf = b""

    @classmethod
    def connect(cls, port: int, host: str = "127.0.0.1", tls_ctx: ssl.SSLContext | None = None,
                timeout: float = 10, source: str | None = None) -> Wire:
        s = socket.create_connection((host, port), timeout=timeout,
                                     source_address=(source, 0) if source else None)
        if tls_ctx is not None:
            s = tls_ctx.wrap_socket(s, server_hostname="localhost")
        return cls(s, timeout)

    def send(self, data: bytes | str) -> None:
        if isinstance(data, str):
            data = data.encode()
        self.sock.sendall(data)

    def _fill(self) -> bool:
        chunk = self.sock.recv(65536)
        if not chunk:
            return False
        self.buf += chunk
        return True

    def reply(self) -> tuple[int, str]:
        """One whole reply (all its lines): (code, text of all lines)."""
        lines = []
        while True:
            while b"\r\n" not in self.buf:
                if not self._fill():
                    raise EOFError(f"connection closed; got {self.buf!r} after {lines!r}")
            line, self.buf = self.buf.split(b"\r\n", 1)
            text = line.decode("utf-8", "replace")
            assert re.match(r"^\d{3}[ -]", text) or text[:3].isdigit() and len(text) == 3, text
            lines.append(text)
            if len(text) == 3 or text[3] == " ":
                return int(text[:3]), "\n".join(lines)

    def cmd(self, line: str | bytes) -> tuple[int, str]:
        if isinstance(line, str):
            line = line.encode()
        self.send(line + b"\r\n")
        return self.reply()

    def expect(self, line: str | bytes, code: int) -> str:
        got, text = self.cmd(line)
        assert got == code, f"{line!r}: expected {code}, got {text!r}"
        return text

    def closed(self, timeout: float = 5) -> bool:
        """True when the server closes the connection (after any data)."""
        self.sock.settimeout(timeout)
        try:
            while True:
                chunk = self.sock.recv(65536)
                if not chunk:
                    return True
                self.buf += chunk
        except (ConnectionResetError, BrokenPipeError, ssl.SSLError):
            return True
        except TimeoutError:
            return False

    def transaction(self, sender: str, *recipients: str) -> None:
        """MAIL, RCPT for each recipient, DATA: each must be accepted."""
        self.expect(f"MAIL FROM:<{sender}>", 250)
        for rcpt in recipients:
            self.expect(f"RCPT TO:<{rcpt}>", 250)
        self.expect("DATA", 354)

    def starttls(self, ctx: ssl.SSLContext) -> None:
        code, text = self.cmd("STARTTLS")
        assert code == 220, text
        self.sock = ctx.wrap_socket(self.sock, server_hostname="localhost")

    def close(self) -> None:
        try:
            self.sock.close()
        except OSError:
            pass


def strip_received(data: bytes) -> bytes:
    """The delivered message without the Received: field msa prepends
    (first field, with its folded continuation lines)."""
    if not data.startswith(b"Received:"):
        return data
    end = 0
    while True:
        nl = data.index(b"\r\n", end) + 2
        end = nl
        if data[end : end + 1] not in (b" ", b"\t"):
            return data[end:]


def smtp(m: MsaProcess, mode: str = "starttls"):
    """An smtplib client on `mode` ("starttls" after STARTTLS, "tls", "plain")."""
    import smtplib

    if mode == "tls":
        return smtplib.SMTP_SSL("localhost", m.ports["tls"], context=m.client_ctx, timeout=30)
    s = smtplib.SMTP("localhost", m.ports["starttls"], timeout=30)
    if mode == "starttls":
        s.starttls(context=m.client_ctx)
    return s


MESSAGE = (
    b"From: Alice <alice@example.org>\r\n"
    b"To: bob@example.net\r\n"
    b"Subject: test\r\n"
    b"Date: Wed, 25 Nov 2026 18:48:03 +0100\r\n"
    b"Message-ID: <test.1@example.org>\r\n"
    b"\r\n"
    b"Hello Bob,\r\n"
    b".a line that starts with a dot\r\n"
    b"..two dots\r\n"
    b".\r\n"
    b"\r\n"
    b"bye\r\n"
)

#: A complete header start, so that msa adds nothing but Received: (S-705).
HDR = b"From: alice@example.org\r\nDate: Wed, 25 Nov 2026 18:48:03 +0100\r\nMessage-ID: <t.1@example.org>\r\n"


#: Lines `msa.py user add` wrote, by its arguments: the same user in another
#: test's database is that line again (an argon2 hash and a Python start
#: cost about 0.3 s; the command itself is tested where it is the subject).
_USER_LINES: dict[tuple, str] = {}


def add_user(users_db: Path | str, name: str, password: str, senders: list[str] = (), cram: bool = False,
             scram: bool = False) -> None:
    """Add a user with the real `msa.py user add` command (made once per
    distinct user in a scratch file, then appended as that command wrote it)."""
    key = (name, password, tuple(senders), cram, scram)
    if key not in _USER_LINES:
        import tempfile

        with tempfile.TemporaryDirectory() as scratch:
            db = Path(scratch) / "users.db"
            args = [sys.executable, MSA, "user", "--users", str(db), "add", name, "--password-stdin"]
            for s in senders:
                args += ["--sender", s]
            if cram:
                args.append("--cram-md5")
            if scram:
                args.append("--scram")
            p = subprocess.run(args, input=password + "\n", capture_output=True, text=True, timeout=60)
            assert p.returncode == 0, p.stderr
            _USER_LINES[key] = db.read_text()
    path = Path(users_db)
    old = path.read_text() if path.exists() else ""
    assert f"\n{name.lower()}:" not in "\n" + old, f"user {name} already in {path}"
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(old + _USER_LINES[key])
    tmp.chmod(0o600)
    os.replace(tmp, path)  # whole, as the command writes it: a running msa may be watching


def send_large_body(m: MsaProcess, w: Wire, header: bytes, mib: int = 50) -> tuple[int, float]:
    """After DATA's 354: ``header`` (with its blank line), ``mib`` MiB of
    printable lines, the final dot; (the reply's code, msa's peak RSS growth
    in MiB meanwhile)."""
    line = b"0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789ab\r\n"
    before = m.rss_kib()
    m.reset_hwm()
    w.send(header)
    block = line * (1024 * 1024 // len(line))
    for _ in range(mib):
        w.send(block)
    w.send(b".\r\n")
    code = w.reply()[0]
    return code, (m.hwm_kib() - before) / 1024


def b64(data: bytes | str) -> str:
    import base64

    if isinstance(data, str):
        data = data.encode()
    return base64.b64encode(data).decode()


def stuff(data: bytes) -> bytes:
    """Dot-stuff a CRLF message for DATA, as RFC 5321 §4.5.2 says."""
    return re.sub(rb"(?m)^\.", b"..", data)


def run_as_scratch() -> tuple[Path, Path]:
    """A directory outside pytest's 0700 tree that `nobody` can reach (for
    run_as tests), with a world-writable `outbox` in it; the caller removes
    it (shutil.rmtree)."""
    import tempfile

    base = Path(tempfile.mkdtemp(prefix="msa-run-as-"))
    os.chmod(base, 0o755)
    outbox = base / "outbox"
    outbox.mkdir()
    os.chmod(outbox, 0o777)
    return base, outbox
