"""A private Postfix instance for `make bench`.

Its own config_directory, queue_directory and data_directory in a
temporary directory; a master.cf with only an smtpd on a spare loopback
port and the services that smtpd, sendmail/postdrop and delivery need;
every message is discarded (`default_transport = discard`). It never
touches /etc/postfix, port 25 or the system's queue. Started with
`postfix -c DIR start`, stopped with `postfix -c DIR stop` (and its own
master killed by pid if that does not work).
"""

from __future__ import annotations

import os
import pwd
import shutil
import signal
import socket
import subprocess
import tempfile
import time

POSTFIX = "/usr/sbin/postfix"
SMTP_SOURCE = "/usr/sbin/smtp-source"
SENDMAIL = "/usr/sbin/sendmail"
DAEMON_DIR = "/usr/lib/postfix/sbin"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def unavailable() -> str | None:
    """Why a private Postfix cannot run here, or None."""
    for path in (POSTFIX, DAEMON_DIR + "/master", DAEMON_DIR + "/smtpd"):
        if not os.access(path, os.X_OK):
            return f"{path} is not installed"
    if os.geteuid() != 0:
        return "a Postfix master must be started as root"
    try:
        pwd.getpwnam("postfix")
    except KeyError:
        return "no 'postfix' user"
    return None


def version() -> str:
    try:
        out = subprocess.run(["/usr/sbin/postconf", "-d", "-h", "mail_version"], capture_output=True,
                             text=True, timeout=10)
        return out.stdout.strip() or "?"
    except (OSError, subprocess.SubprocessError):
        return "?"


class PrivatePostfix:
    def __init__(self) -> None:
        self.dir = tempfile.mkdtemp(prefix="msabench-postfix.")
        os.chmod(self.dir, 0o755)  # the postfix user must reach its queue
        self.conf = os.path.join(self.dir, "conf")
        self.queue = os.path.join(self.dir, "queue")
        self.data = os.path.join(self.dir, "data")
        self.maillog = os.path.join(self.dir, "maillog")
        self.port = free_port()
        self.started = False

    # sendmail for msa's `sendmail =` and for the floor
    @property
    def sendmail(self) -> list[str]:
        return [SENDMAIL, "-C", self.conf]

    def _write_config(self) -> None:
        for d in (self.conf, self.queue, self.data):
            os.makedirs(d, exist_ok=True)
        pw = pwd.getpwnam("postfix")
        os.chown(self.data, pw.pw_uid, pw.pw_gid)
        main = {
            "compatibility_level": "3.6",
            "queue_directory": self.queue,
            "data_directory": self.data,
            "daemon_directory": DAEMON_DIR,
            "command_directory": "/usr/sbin",
            "shlib_directory": "/usr/lib/postfix",
            "meta_directory": "/etc/postfix",
            "mail_owner": "postfix",
            "setgid_group": "postdrop",
            "myhostname": "postfix.bench.invalid",
            "mydestination": "",
            "inet_interfaces": "loopback-only",
            "inet_protocols": "ipv4",
            "mynetworks": "127.0.0.0/8",
            "smtpd_authorized_xforward_hosts": "127.0.0.0/8",  # msa's handoff = smtp (cases 9, 11)
            "smtpd_relay_restrictions": "permit_mynetworks, reject",
            "default_transport": "discard",
            "local_transport": "discard",
            "relay_transport": "discard",
            "virtual_transport": "discard",
            "message_size_limit": str(200 * 1024 * 1024),
            "maillog_file": self.maillog,
            "maillog_file_prefixes": self.dir,
            "biff": "no",
            "alias_maps": "",
            "alias_database": "",
        }
        with open(os.path.join(self.conf, "main.cf"), "w") as f:
            f.write("# private instance for msa's `make bench`\n")
            for k, v in main.items():
                f.write(f"{k} = {v}\n")
        services = [
            f"127.0.0.1:{self.port} inet n - n - 50 smtpd",
            "pickup unix n - n 60 1 pickup",
            "cleanup unix n - n - 0 cleanup",
            "qmgr unix n - n 300 1 qmgr",
            "rewrite unix - - n - - trivial-rewrite",
            "bounce unix - - n - 0 bounce",
            "defer unix - - n - 0 bounce",
            "trace unix - - n - 0 bounce",
            "verify unix - - n - 1 verify",
            "flush unix n - n 1000? 0 flush",
            "proxymap unix - - n - - proxymap",
            "anvil unix - - n - 1 anvil",
            "scache unix - - n - 1 scache",
            "discard unix - - n - - discard",
            "postlog unix-dgram n - n - 1 postlogd",
        ]
        with open(os.path.join(self.conf, "master.cf"), "w") as f:
            f.write("\n".join(services) + "\n")

    def _log_tail(self, n: int = 3) -> str:
        try:
            with open(self.maillog, errors="replace") as f:
                lines = [ln.strip() for ln in f if "fatal" in ln or "error" in ln or "warning" in ln]
            return " | ".join(lines[-n:])
        except OSError:
            return ""

    def start(self, timeout: float = 30) -> None:
        self._write_config()
        p = subprocess.run([POSTFIX, "-c", self.conf, "start"], capture_output=True, text=True,
                           timeout=timeout, stdin=subprocess.DEVNULL)
        self.started = True
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=2) as s:
                    s.settimeout(5)
                    if s.recv(512).startswith(b"220"):
                        s.sendall(b"QUIT\r\n")
                        return
            except OSError:
                pass
            time.sleep(0.2)
        raise RuntimeError(f"postfix did not start (exit {p.returncode}): "
                           f"{(p.stderr or p.stdout).strip()[:200]} {self._log_tail()}")

    def master_pid(self) -> int | None:
        try:
            with open(os.path.join(self.queue, "pid", "master.pid")) as f:
                return int(f.read().strip())
        except (OSError, ValueError):
            return None

    def delivered(self) -> int:
        try:
            with open(self.maillog, errors="replace") as f:
                return sum(1 for ln in f if "status=sent" in ln)
        except OSError:
            return 0

    def stop(self) -> None:
        if self.started:
            pid = self.master_pid()
            try:
                subprocess.run([POSTFIX, "-c", self.conf, "stop"], capture_output=True, timeout=30,
                               stdin=subprocess.DEVNULL)
            except (OSError, subprocess.SubprocessError):
                pass
            if pid is not None:
                deadline = time.monotonic() + 10
                while time.monotonic() < deadline and _alive(pid):
                    time.sleep(0.1)
                if _alive(pid):
                    try:
                        os.kill(pid, signal.SIGKILL)  # our own master only
                    except OSError:
                        pass
            self.started = False
        shutil.rmtree(self.dir, ignore_errors=True)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except OSError:
        return False
    try:  # a zombie is not alive
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(") ", 1)[1][:1] != "Z"
    except OSError:
        return False


def smtp_source(port: int, message_file: str, sessions: int, messages: int, timeout: float
                ) -> tuple[float, int, str]:
    """Postfix's smtp-source: `sessions` parallel sessions, each sending
    many messages (-d), `messages` in all. Returns (seconds, exit status,
    stderr)."""
    argv = [SMTP_SOURCE, "-d", "-s", str(sessions), "-m", str(messages), "-F", message_file,
            "-f", "bench@example.org", "-t", "sink@example.net", "-M", "bench.client",
            f"127.0.0.1:{port}"]
    t0 = time.perf_counter()
    try:
        p = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL)
        rc, err = p.returncode, (p.stderr or p.stdout).strip()
    except subprocess.TimeoutExpired:
        rc, err = -1, f"timeout after {timeout:g}s"
    return time.perf_counter() - t0, rc, err


SMTP_SINK = "/usr/sbin/smtp-sink"


class SmtpSink:
    """Postfix's smtp-sink on a spare loopback port: accepts and discards
    (a null MTA for the SMTP hand-off's small-message case)."""

    def __init__(self) -> None:
        self.port = free_port()
        self.proc: subprocess.Popen | None = None

    def start(self) -> str | None:
        """None once listening, else why not."""
        if not os.access(SMTP_SINK, os.X_OK):
            return f"{SMTP_SINK} is not installed"
        argv = [SMTP_SINK]
        if os.geteuid() == 0:
            argv += ["-u", "postfix" if _has_user("postfix") else "nobody"]
        self.proc = subprocess.Popen([*argv, "-4", f"127.0.0.1:{self.port}", "256"],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                err = self.proc.stderr.read().decode(errors="replace") if self.proc.stderr else ""
                return f"smtp-sink exited: {err.strip()[:200]}"
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
                return None
            except OSError:
                time.sleep(0.05)
        return "smtp-sink did not listen"

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()


def _has_user(name: str) -> bool:
    try:
        pwd.getpwnam(name)
    except KeyError:
        return False
    return True
