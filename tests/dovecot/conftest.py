"""A private, real Dovecot auth service for directory/dovecot.py (SPEC.md
S-1302; DESIGN.md "Real outside components in the tests").

The recipe, as root in a container without systemd, with Debian's
dovecot-core installed (its /etc/dovecot untouched, the system instance
not running):

1. A fresh directory from `mkdtemp`, chmod 0755: the auth process runs as
   `default_internal_user` and must read the passwd-file and run the
   checkpassword script there (pytest's tmp_path is under a 0700 directory).
2. `dovecot.conf` written here: `base_dir`, `state_dir` and `log_path` in
   that directory, `protocols = none` (no IMAP/POP3, so no login processes
   and no certificates), `ssl = no`, the internal and login users set to
   users the package created (`dovecot`, `dovenull`; `nobody` otherwise).
3. `service auth` with a `unix_listener` and an `inet_listener` on a spare
   loopback port (127.0.0.1, and ::1 when the host has it). In 2.3 a
   listener's type comes from its name after the last `-` (`auth-msa` →
   `msa` → the `auth` type, what msa speaks; `-userdb`, `-login`, `-master`
   would be others); 2.4 wants `type = auth` on each (README).
4. Users in a passwd-file, hashed by `doveadm pw` at fixture time, one per
   scheme of S-1304; one renamed by its extra field `user=`; one with
   `nologin`. A second passdb (checkpassword, a script that exits 111,
   "temporary failure") answers `code=temp_fail` for one name only
   (`username_filter`).
5. `dovecot -F -c CONF` in the foreground and in a session of its own, so
   the test owns its pid and process group; ready when both listeners
   complete a handshake; stopped by SIGTERM to that pid, then (as systemd
   would) SIGTERM and SIGKILL to what is left of that group: a stopped
   master's auth process keeps serving its connected clients.

`auth_debug = yes` logs each request Dovecot receives ("client in: AUTH"),
with `resp=<hidden>`, so tests can show what it never saw.
"""

from __future__ import annotations

import grp
import os
import pwd
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest

DOVECOT = shutil.which("dovecot") or "/usr/sbin/dovecot"
DOVEADM = shutil.which("doveadm") or "/usr/bin/doveadm"
PASSWORD = "correct horse battery"
#: One user per scheme (S-1304), all with PASSWORD.
SCHEMES = {"ARGON2ID": "argon", "BLF-CRYPT": "bcrypt", "SHA512-CRYPT": "sha512", "SHA256-CRYPT": "sha256"}
DOMAIN = "example.org"
RENAMED = f"old.name@{DOMAIN}"  # its passdb line says user=New.Name@Example.ORG
CANONICAL = f"new.name@{DOMAIN}"  # ... which msa keeps in lower case
NOLOGIN = f"disabled@{DOMAIN}"
TEMPFAIL = f"tempfail@{DOMAIN}"


def user(scheme: str) -> str:
    return f"{SCHEMES[scheme]}@{DOMAIN}"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def has_ipv6_loopback() -> bool:
    try:
        with socket.socket(socket.AF_INET6) as s:
            s.bind(("::1", 0))
        return True
    except OSError:
        return False


def internal_users() -> tuple[str, str, str]:
    """default_internal_user, its group, default_login_user."""
    if os.getuid() != 0:
        me = pwd.getpwuid(os.getuid())
        return me.pw_name, grp.getgrgid(me.pw_gid).gr_name, me.pw_name

    def first(*names: str) -> pwd.struct_passwd:
        for name in names:
            try:
                return pwd.getpwnam(name)
            except KeyError:
                pass
        raise KeyError(names)

    internal = first("dovecot", "nobody")
    login = first("dovenull", "nobody")
    return internal.pw_name, grp.getgrgid(internal.pw_gid).gr_name, login.pw_name


def group_alive(pgid: int) -> bool:
    """Whether a process of group `pgid` runs (zombies do not count: in a
    container nobody may reap them)."""
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            after = stat.read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        if int(after[2]) == pgid and after[0] != "Z":
            return True
    return False


CONF = """\
base_dir = {root}/run
state_dir = {root}/state
log_path = {root}/dovecot.log
protocols = none
ssl = no
listen = {listen}
default_internal_user = {internal}
default_internal_group = {internal_group}
default_login_user = {login}
disable_plaintext_auth = no
auth_mechanisms = plain login
auth_debug = yes
auth_verbose = yes
passdb {{
  driver = passwd-file
  args = {root}/passwd
}}
passdb {{
  driver = checkpassword
  args = {root}/tempfail.sh
  username_filter = {tempfail}
}}
userdb {{
  driver = static
  args = uid={internal} gid={internal_group} home=/nonexistent allow_all_users=yes
}}
service auth {{
  unix_listener auth-msa {{
    mode = 0666
  }}
  inet_listener auth-msa {{
    address = {listen}
    port = {port}
  }}
}}
"""


@dataclass
class Dovecot:
    """The instance; its users are attributes, so tests need not import this
    conftest (tests/conftest.py has the same module name)."""

    PASSWORD = PASSWORD
    SCHEMES = tuple(SCHEMES)
    RENAMED = RENAMED
    CANONICAL = CANONICAL
    NOLOGIN = NOLOGIN
    TEMPFAIL = TEMPFAIL
    user = staticmethod(user)
    DOVEADM = DOVEADM
    #: for a test that wants an instance of its own (conftest modules share a
    #: name in sys.modules, so tests reach them through this class)
    free_port = staticmethod(lambda: free_port())
    write_files = staticmethod(lambda root, port, ipv6: write_files(root, port, ipv6))

    root: Path
    port: int
    ipv6: bool
    proc: subprocess.Popen | None = None
    startup_seconds: list[float] = field(default_factory=list)

    @property
    def conf(self) -> Path:
        return self.root / "dovecot.conf"

    @property
    def unix(self) -> str:
        """msa's `auth_dovecot` for the unix listener."""
        return f"unix:{self.root}/run/auth-msa"

    @property
    def inet(self) -> str:
        return f"inet:127.0.0.1:{self.port}"

    @property
    def inet6(self) -> str:
        return f"inet:[::1]:{self.port}"

    @property
    def log_path(self) -> Path:
        return self.root / "dovecot.log"

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def requests(self) -> list[str]:
        """The AUTH lines Dovecot received, as it logs them (resp hidden)."""
        return re.findall(r"client in: (AUTH\t[^\n]*)", self.log())

    def wait_log(self, pattern: str, timeout: float = 10) -> re.Match:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if m := re.search(pattern, self.log()):
                return m
            time.sleep(0.02)
        raise AssertionError(f"Dovecot's log never matched {pattern!r}:\n{self.log()[-3000:]}")

    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def start(self) -> None:
        began = time.monotonic()
        out = open(self.root / "dovecot.stderr", "ab")
        self.proc = subprocess.Popen([DOVECOT, "-F", "-c", str(self.conf)], stdin=subprocess.DEVNULL,
                                     stdout=out, stderr=out, start_new_session=True)
        out.close()
        deadline = time.monotonic() + 20
        ready = {"unix": False, "inet": False}
        while not all(ready.values()):
            if self.proc.poll() is not None:
                raise RuntimeError(f"dovecot exited {self.proc.returncode}: "
                                   f"{(self.root / 'dovecot.stderr').read_text(errors='replace')}{self.log()}")
            if time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"dovecot's listeners never answered:\n{self.log()}")
            ready["unix"] = ready["unix"] or self._handshakes(socket.AF_UNIX, f"{self.root}/run/auth-msa")
            ready["inet"] = ready["inet"] or self._handshakes(socket.AF_INET, ("127.0.0.1", self.port))
            time.sleep(0.02)
        self.startup_seconds.append(time.monotonic() - began)

    @staticmethod
    def _handshakes(family: int, addr: object) -> bool:
        try:
            with socket.socket(family, socket.SOCK_STREAM) as s:
                s.settimeout(2)
                s.connect(addr)
                s.sendall(b"VERSION\t1\t2\nCPID\t1\n")
                buf = b""
                while not buf.endswith(b"DONE\n"):
                    data = s.recv(4096)
                    if not data:
                        return False
                    buf += data
                return True
        except OSError:
            return False

    def stop(self) -> None:
        """Stop the master, then what it leaves behind, as `systemctl stop`
        does: a stopped master's auth process keeps serving the connections
        it has until they close. Everything is in the master's own process
        group (start_new_session)."""
        if self.proc is None:
            return
        pgid = self.proc.pid
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        for sig in (signal.SIGTERM, signal.SIGKILL):
            try:
                os.killpg(pgid, sig)
            except ProcessLookupError:
                return
            deadline = time.monotonic() + 5
            while time.monotonic() < deadline:
                if not group_alive(pgid):
                    return
                time.sleep(0.02)


def write_files(root: Path, port: int, ipv6: bool) -> None:
    def hash_of(scheme: str) -> str:
        p = subprocess.run([DOVEADM, "-c", str(root / "dovecot.conf"), "pw", "-s", scheme, "-p", PASSWORD],
                           capture_output=True, text=True, timeout=60)
        if p.returncode != 0 or not p.stdout.startswith("{" + scheme + "}"):
            raise RuntimeError(f"doveadm pw -s {scheme}: exit {p.returncode}: {p.stderr}")
        return p.stdout.strip()

    internal, internal_group, login = internal_users()
    (root / "run").mkdir()
    (root / "state").mkdir()
    (root / "dovecot.conf").write_text(CONF.format(
        root=root, port=port, listen="127.0.0.1, ::1" if ipv6 else "127.0.0.1",
        internal=internal, internal_group=internal_group, login=login, tempfail=TEMPFAIL))
    lines = [f"{user(scheme)}:{hash_of(scheme)}" for scheme in SCHEMES]
    sha = hash_of("SHA512-CRYPT")
    # passwd-file: user:password:uid:gid:gecos:home:shell:extra fields
    lines.append(f"{RENAMED}:{sha}::::::user=New.Name@Example.ORG")
    lines.append(f"{NOLOGIN}:{sha}::::::nologin reason=disabled-by-the-test")
    (root / "passwd").write_text("\n".join(lines) + "\n")
    (root / "passwd").chmod(0o644)
    # checkpassword: exit 111 is "temporary problem" (Dovecot: code=temp_fail).
    (root / "tempfail.sh").write_text("#!/bin/sh\nexit 111\n")
    (root / "tempfail.sh").chmod(0o755)


@pytest.fixture(scope="session")
def dovecot():
    """A running private Dovecot auth service; stopped by its pid and removed afterwards."""
    for prog in (DOVECOT, DOVEADM):
        if not os.access(prog, os.X_OK):
            pytest.skip(f"Dovecot is not installed ({prog} missing; Debian: dovecot-core)")
    root = Path(tempfile.mkdtemp(prefix="msa-dovecot-"))
    root.chmod(0o755)
    ipv6 = has_ipv6_loopback()
    dv = Dovecot(root, free_port(), ipv6)
    try:
        write_files(root, dv.port, ipv6)
        dv.start()
        yield dv
    finally:
        dv.stop()
        shutil.rmtree(root, ignore_errors=True)
