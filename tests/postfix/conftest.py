"""A private, real Postfix instance for the hand-off tests (SPEC.md §8).

The recipe that works as root in a container without systemd or syslog,
with Debian's postfix package installed "No configuration" (no
/etc/postfix/main.cf), and without touching /etc/postfix or the system
queue:

1. A fresh directory from `mkdtemp`, chmod 0755: the delivery agent runs as
   `nobody` and must traverse it to reach the mailboxes (pytest's own
   tmp_path lives under a 0700 directory, which it cannot).
2. `etc/main.cf` and `etc/master.cf` written here (below). main.cf names its
   own `queue_directory` and `data_directory`; only the queue directory
   itself has to exist (root-owned, 0755): `postfix start` runs
   `post-install create-missing`, which creates `maildrop` (postfix:postdrop
   0730), `public` (postfix:postdrop 0710), the other queue directories and
   `data_directory`, all with the right owners. No `set-permissions` needed.
3. `maillog_file` under the directory, and `maillog_file_prefixes` set to the
   directory: the default prefixes (`/var, /dev/stdout`) make every Postfix
   command die with a fatal error that goes to the missing syslog only.
   master.cf carries the `postlog` service so that the daemons (and
   sendmail/postdrop) log through postlogd into that file.
4. Mail for `example.test` goes to virtual(8) Maildirs `vmail/USER/`.
   virtual(8) refuses uid 0 ("invalid virtual_minimum_uid parameter value
   0 < 1"), and local(8) would need a real user, so the mailboxes belong to
   `nobody` (`virtual_uid_maps = static:UID`, and `vmail/` chowned to it).
5. `postfix -c DIR start`; `postfix -c DIR stop` waits until master has gone
   (it polls `master -t`); `postfix -c DIR abort` as fallback.
6. msa's `sendmail` is `/usr/sbin/sendmail -C DIR`: msa reduces the
   environment to PATH and LANG (S-801), so MAIL_CONFIG could not be used.
   As root, Postfix's sendmail honours -C and its setgid postdrop accepts
   the alternate directory (no alternate_config_directories needed), and
   writes into DIR's maildrop.

7. For `handoff = smtp:...` (S-806 to S-810), one smtpd on a spare
   loopback port configured exactly as the README's "The MTA" says
   (MSA_SERVICE below, with anvil, which smtpd asks about its clients).
   Mail for `hold.test` is held (`defer_transports`), so that its queue
   file can be read with postcat.

master.cf keeps pickup, cleanup, qmgr, the rewrite/bounce/defer/trace/error
services qmgr needs, virtual, postlog, and that one smtpd.
"""

from __future__ import annotations

import os
import pwd
import re
import shutil
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

POSTFIX = "/usr/sbin/postfix"
SENDMAIL = "/usr/sbin/sendmail"
POSTQUEUE = "/usr/sbin/postqueue"
DOMAIN = "example.test"
#: The mailboxes; any other address at DOMAIN is an unknown user.
USERS = ("bob", "carol", "dave", "erin", "frank", "grace", "heidi", "ivan",
         "judy", "ken", "liz", "mike", "nina")  # from judy on: test_smtp_handoff.py

MASTER_CF = """\
# service type  private unpriv  chroot  wakeup  maxproc command
pickup    unix  n       -       n       60      1       pickup
cleanup   unix  n       -       n       -       0       cleanup
qmgr      unix  n       -       n       300     1       qmgr
rewrite   unix  -       -       n       -       -       trivial-rewrite
bounce    unix  -       -       n       -       0       bounce
defer     unix  -       -       n       -       0       bounce
trace     unix  -       -       n       -       0       bounce
error     unix  -       -       n       -       -       error
retry     unix  -       -       n       -       -       error
virtual   unix  -       n       n       -       -       virtual
postlog   unix-dgram n  -       n       -       1       postlogd
anvil     unix  -       -       n       -       1       anvil
proxymap  unix  -       -       n       -       -       proxymap
"""

#: The README's master.cf service for msa's SMTP hand-off ("The MTA"), word
#: for word but for the address: msa on this host is the only client; it may
#: relay (mynetworks), its XFORWARD is believed, and the public port's SASL,
#: TLS and milters do not apply to it.
MSA_SERVICE = """\
{listen} inet n - n - - smtpd
  -o syslog_name=postfix/msa
  -o mynetworks=127.0.0.0/8
  -o smtpd_authorized_xforward_hosts=127.0.0.0/8
  -o smtpd_client_restrictions=
  -o smtpd_helo_restrictions=
  -o smtpd_sender_restrictions=
  -o smtpd_relay_restrictions=permit_mynetworks,reject
  -o smtpd_recipient_restrictions=permit_mynetworks,reject
  -o smtpd_sasl_auth_enable=no
  -o smtpd_tls_security_level=none
  -o smtpd_milters=
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def main_cf(d: Path, uid: int, gid: int, queue: Path | None = None) -> str:
    return f"""\
compatibility_level = 3.6
queue_directory = {queue or d / "queue"}
data_directory = {d / "data"}
myhostname = msa-postfix.test
mydomain = msa-postfix.test
myorigin = $myhostname
inet_interfaces = loopback-only
inet_protocols = ipv4
mydestination =
relay_domains =
# Nothing leaves this instance: no smtp service exists in master.cf.
default_transport = error:no outbound mail from the test instance
relay_transport = error:no outbound mail from the test instance
virtual_mailbox_domains = {DOMAIN}
virtual_mailbox_base = {d / "vmail"}
virtual_mailbox_maps = texthash:{d / "etc" / "vmailbox"}
# hold.test: relayed (msa's smtpd service permits its network) but held in
# the deferred queue, never delivered, so postcat can read its queue file.
transport_maps = texthash:{d / "etc" / "transport"}
defer_transports = hold
virtual_uid_maps = static:{uid}
virtual_gid_maps = static:{gid}
virtual_minimum_uid = 1
# S-805: deliberately small, so that `msa.py check` has something to say.
message_size_limit = 1000000
maillog_file = {d / "postfix.log"}
maillog_file_prefixes = {d}
alias_maps =
alias_database =
biff = no
"""


@dataclass
class Postfix:
    root: Path
    smtp_port: int = 0  # the README's smtpd service for msa (MSA_SERVICE)

    @property
    def config_dir(self) -> Path:
        return self.root / "etc"

    @property
    def queue_dir(self) -> Path:
        return self.root / "queue"

    @property
    def vmail(self) -> Path:
        return self.root / "vmail"

    @property
    def log_path(self) -> Path:
        return self.root / "postfix.log"

    @property
    def sendmail(self) -> str:
        """msa's `sendmail` setting for this instance."""
        return f"{SENDMAIL} -C {self.config_dir}"

    def postfix(self, *args: str) -> subprocess.CompletedProcess:
        return subprocess.run([POSTFIX, "-c", str(self.config_dir), *args],
                              capture_output=True, text=True, timeout=30)

    def running(self) -> bool:
        return self.postfix("status").returncode == 0

    def start(self) -> None:
        p = self.postfix("start")
        if p.returncode != 0:
            raise RuntimeError(f"postfix start: exit {p.returncode}: {p.stderr}\n{self.log()}")

    def stop(self) -> None:
        if not self.running():
            return
        self.postfix("stop")
        deadline = time.monotonic() + 10
        while self.running() and time.monotonic() < deadline:
            time.sleep(0.1)
        if self.running():
            self.postfix("abort")

    def flush(self) -> None:
        subprocess.run([POSTQUEUE, "-c", str(self.config_dir), "-f"], capture_output=True, timeout=30)

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def wait_log(self, pattern: str, timeout: float = 15) -> re.Match:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            m = re.search(pattern, self.log())
            if m:
                return m
            time.sleep(0.05)
        raise AssertionError(f"Postfix log never matched {pattern!r}:\n{self.log()}")

    def maildrop(self) -> list[str]:
        return sorted(os.listdir(self.queue_dir / "maildrop"))

    def delivered(self, user: str) -> list[bytes]:
        """The messages in vmail/USER/new, oldest first."""
        new = self.vmail / user / "new"
        if not new.is_dir():
            return []
        files = sorted(new.iterdir(), key=lambda p: p.stat().st_mtime_ns)
        return [p.read_bytes() for p in files]

    def wait_delivered(self, user: str, count: int = 1, timeout: float = 15) -> list[bytes]:
        deadline = time.monotonic() + timeout
        flushed = False
        while time.monotonic() < deadline:
            got = self.delivered(user)
            if len(got) >= count:
                return got
            if not flushed and time.monotonic() > deadline - timeout / 2:
                self.flush()  # pickup is notified by postdrop; this is belt and braces
                flushed = True
            time.sleep(0.05)
        raise AssertionError(f"{count} message(s) for {user}@{DOMAIN} never arrived:\n{self.log()}")

    @property
    def handoff(self) -> str:
        """msa's `handoff` setting for this instance's smtpd service."""
        return f"smtp:127.0.0.1:{self.smtp_port}"

    def postcat(self, queue_id: str) -> str:
        p = subprocess.run(["/usr/sbin/postcat", "-c", str(self.config_dir), "-q", queue_id],
                           capture_output=True, text=True, timeout=30)
        return p.stdout + p.stderr

    def wait_message(self, user: str, needle: bytes, timeout: float = 15) -> bytes:
        """The message for `user` that holds `needle`, once it arrived (the
        instance is shared: the mailbox may hold earlier tests' messages)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for got in self.delivered(user):
                if needle in got:
                    return got
            time.sleep(0.05)
        raise AssertionError(f"no message with {needle!r} for {user}@{DOMAIN}:\n{self.log()}")

    def write_config(self, config_dir: Path, queue: Path | None = None) -> None:
        config_dir.mkdir(parents=True, exist_ok=True)
        nobody = pwd.getpwnam("nobody")
        (config_dir / "main.cf").write_text(main_cf(self.root, nobody.pw_uid, nobody.pw_gid, queue))
        service = MSA_SERVICE.format(listen=f"127.0.0.1:{self.smtp_port}") if self.smtp_port else ""
        (config_dir / "master.cf").write_text(MASTER_CF + service)
        (config_dir / "transport").write_text("hold.test hold:\n")


@pytest.fixture(scope="session")
def postfix():
    """A running private Postfix instance; stopped and removed afterwards."""
    for prog in (POSTFIX, SENDMAIL, POSTQUEUE, "/usr/sbin/postdrop"):
        if not os.access(prog, os.X_OK):
            pytest.skip(f"Postfix is not installed ({prog} missing)")
    if os.getuid() != 0:
        pytest.skip("the private Postfix instance needs root (master, -C for sendmail)")
    try:
        nobody = pwd.getpwnam("nobody")
    except KeyError:
        pytest.skip("no user nobody to own the virtual mailboxes")

    root = Path(tempfile.mkdtemp(prefix="msa-postfix-"))
    root.chmod(0o755)
    pf = Postfix(root, smtp_port=free_port())
    pf.write_config(pf.config_dir)
    # One Maildir per user, vmail/USER/ (texthash: no postmap needed; a
    # regexp table cannot be used, virtual(8) forbids $1 substitution there).
    (pf.config_dir / "vmailbox").write_text("".join(f"{u}@{DOMAIN} {u}/\n" for u in USERS))
    pf.queue_dir.mkdir(mode=0o755)
    pf.vmail.mkdir(mode=0o755)
    os.chown(pf.vmail, nobody.pw_uid, nobody.pw_gid)
    try:
        try:
            pf.start()
        except (RuntimeError, OSError, subprocess.SubprocessError) as e:
            pytest.skip(f"Postfix cannot start in this environment: {e}")
        yield pf
    finally:
        pf.stop()
        shutil.rmtree(root, ignore_errors=True)
