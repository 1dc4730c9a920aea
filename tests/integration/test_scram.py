"""SCRAM-SHA-256 over real sockets (SPEC.md S-514, S-202, S-510): the
advertising rule, msmtp and GNU SASL's gsasl as two independent real
clients over STARTTLS and implicit TLS, a Dovecot credential made by
`doveadm pw` imported and used, refusals (wrong password, unknown user,
`p=`), and no user enumeration."""

from __future__ import annotations

import base64
import os
import shutil
import socket
import subprocess
import sys
import time

import pytest

import msatest
import scramtest
from msatest import MSA, Wire, b64

MSMTP = shutil.which("msmtp")
GSASL = shutil.which("gsasl")
DOVEADM = shutil.which("doveadm")
PASSWORD = "pencil and paper"
MESSAGE = "From: alice@example.org\nTo: bob@example.net\nSubject: scram\n\nhello\n"


@pytest.fixture
def scram_msa(start_msa, tmp_path):
    users = tmp_path / "users.db"
    msatest.add_user(users, "alice", PASSWORD, ["alice@example.org"], scram=True)
    msatest.add_user(users, "bob", "bob's own", ["bob@example.org"], scram=True)
    return start_msa(users=users, trusted_networks="", auth_scram="yes")


def ehlo_auth(m, mode: str = "tls") -> str:
    w = Wire.connect(m.ports[mode], tls_ctx=m.client_ctx if mode == "tls" else None)
    w.reply()
    if mode == "starttls":
        w.expect("EHLO x.example", 250)
        w.starttls(m.client_ctx)
    text = w.expect("EHLO x.example", 250)
    w.close()
    return next((line[4:] for line in text.split("\n") if line[4:].startswith("AUTH ")), "")


def test_scram_is_offered_only_when_configured_and_every_user_has_it(start_msa, tmp_path):  # S-514, S-202
    users = tmp_path / "users.db"
    msatest.add_user(users, "alice", PASSWORD, ["alice@example.org"], scram=True)
    assert ehlo_auth(start_msa(users=users, trusted_networks="", auth_scram="yes")) == "AUTH PLAIN LOGIN SCRAM-SHA-256"
    assert ehlo_auth(start_msa(users=users, trusted_networks="")) == "AUTH PLAIN LOGIN"  # auth_scram = no
    msatest.add_user(users, "carol", "carol pw", ["carol@example.org"])  # no SCRAM credential
    m = start_msa(users=users, trusted_networks="", auth_scram="yes")
    assert ehlo_auth(m) == "AUTH PLAIN LOGIN"
    w = Wire.connect(m.ports["tls"], tls_ctx=m.client_ctx)
    w.reply()
    w.expect("EHLO x.example", 250)
    assert w.cmd("AUTH SCRAM-SHA-256")[1] == "504 5.5.4 Unrecognized authentication type"
    w.close()


def test_cram_md5_and_scram_both_offered_only_when_every_user_has_both(start_msa, tmp_path):  # S-202, S-514
    users = tmp_path / "users.db"
    msatest.add_user(users, "alice", PASSWORD, ["alice@example.org"], cram=True, scram=True)
    assert ehlo_auth(start_msa(users=users, trusted_networks="", auth_scram="yes")) == \
        "AUTH PLAIN LOGIN CRAM-MD5 SCRAM-SHA-256"
    msatest.add_user(users, "bob", "bob pw", ["bob@example.org"], cram=True)
    assert ehlo_auth(start_msa(users=users, trusted_networks="", auth_scram="yes"), "starttls") == \
        "AUTH PLAIN LOGIN CRAM-MD5"


def scram_login(m, name: str, password: str, *, gs2: bytes = b"n,,", source: str | None = None,
                final: bytes = b"") -> tuple[list[str], float, bytes]:
    """A SCRAM exchange by tests/scramtest.py; (reply lines, seconds from the
    client-final to its reply, the server-first message)."""
    sock = socket.create_connection(("127.0.0.1", m.ports["tls"]), timeout=30,
                                    source_address=(source, 0) if source else None)
    w = Wire(m.client_ctx.wrap_socket(sock, server_hostname="localhost"))
    w.reply()
    w.expect("EHLO x.example", 250)
    first, bare = scramtest.client_first(name, b"rOprNGfwEbeRWgbNEkqO", gs2)
    code, text = w.cmd("AUTH SCRAM-SHA-256 " + base64.b64encode(first).decode())
    lines = [text]
    if code != 334:
        w.close()
        return lines, 0.0, b""
    server_first = base64.b64decode(text[4:])
    client_final, expected = scramtest.client_final(password.encode(), bare, server_first, gs2)
    t0 = time.monotonic()
    code, text = w.cmd(base64.b64encode(client_final).decode())
    took = time.monotonic() - t0
    lines.append(text)
    if code == 334:
        assert base64.b64decode(text[4:]) == expected  # the server proved it knows the credential
        lines.append(w.cmd(base64.b64encode(final).decode() if final else "")[1])
    w.close()
    return lines, took, server_first


def test_scram_login_with_server_signature(scram_msa):  # S-514, RFC 5802 §5
    lines, _, server_first = scram_login(scram_msa, "alice", PASSWORD)
    assert lines[-1] == "235 2.7.0 Authentication successful"
    attrs = dict(part.split(b"=", 1) for part in server_first.split(b","))
    assert attrs[b"r"].startswith(b"rOprNGfwEbeRWgbNEkqO") and len(attrs[b"r"]) - 20 >= 24  # S-514: ≥18 octets
    assert attrs[b"i"] == b"4096"
    scram_msa.wait_log(r"client=\S+, sasl_method=SCRAM-SHA-256, sasl_username=alice")


def test_wrong_password_unknown_user_and_channel_binding_refused(scram_msa):  # S-514, S-503
    assert scram_login(scram_msa, "alice", "not it")[0][-1] == "535 5.7.8 Authentication credentials invalid"
    assert scram_login(scram_msa, "nobody", PASSWORD, source="127.0.0.2")[0][-1] == \
        "535 5.7.8 Authentication credentials invalid"
    lines, _, _ = scram_login(scram_msa, "alice", PASSWORD, gs2=b"p=tls-exporter,,", source="127.0.0.3")
    assert lines[-1] == "535 5.7.8 Authentication credentials invalid"
    # A non-empty last client message after the server signature is no success.
    lines, _, _ = scram_login(scram_msa, "alice", PASSWORD, source="127.0.0.4", final=b"x")
    assert lines[-1] == "535 5.7.8 Authentication credentials invalid"


def test_unknown_user_looks_like_a_known_one(scram_msa):  # S-514, S-510: no enumeration
    _, _, first_a = scram_login(scram_msa, "ghost", PASSWORD, source="127.0.1.1")
    _, _, first_b = scram_login(scram_msa, "ghost", "other", source="127.0.1.2")
    salt = lambda first: dict(p.split(b"=", 1) for p in first.split(b","))[b"s"]  # noqa: E731
    iters = lambda first: dict(p.split(b"=", 1) for p in first.split(b","))[b"i"]  # noqa: E731
    assert salt(first_a) == salt(first_b)  # stable, as a real user's salt is
    assert iters(first_a) == b"4096"  # what the users have
    _, _, first_alice = scram_login(scram_msa, "alice", PASSWORD, source="127.0.1.3")
    assert len(base64.b64decode(salt(first_a))) == len(base64.b64decode(salt(first_alice)))
    # Timing: wrong password for a known user against an unknown user, each
    # from a fresh source address so that no S-511 delay applies.
    known, unknown = [], []
    for i in range(16):
        known.append(scram_login(scram_msa, "alice", "wrong", source=f"127.0.2.{i + 1}")[1])
        unknown.append(scram_login(scram_msa, f"ghost{i}", "wrong", source=f"127.0.3.{i + 1}")[1])
    # The fastest of each: the work itself, without what a loaded machine's
    # scheduler adds to some runs (milliseconds here, as large as the work).
    ratio = min(unknown) / min(known)
    assert 1 / 1.5 < ratio < 1.5, (known, unknown)


def test_fake_salt_is_the_same_after_a_restart(start_msa, tmp_path):  # S-514: the secret is in the state store
    users = tmp_path / "users.db"
    msatest.add_user(users, "alice", PASSWORD, ["alice@example.org"], scram=True)
    state = tmp_path / "state"
    m = start_msa(users=users, trusted_networks="", auth_scram="yes", state_dir=state)
    _, _, before = scram_login(m, "ghost", "x")
    m.stop()
    m = start_msa(users=users, trusted_networks="", auth_scram="yes", state_dir=state)
    _, _, after = scram_login(m, "ghost", "x", source="127.0.0.2")
    assert before.split(b",")[1] == after.split(b",")[1]  # s=...


def _inetd_salt(conf, name: str) -> bytes:
    """The salt one `msa.py inetd` process (on pipes) gives `name`."""
    first, _ = scramtest.client_first(name, b"rOprNGfwEbeRWgbNEkqO", b"n,,")
    script = b"EHLO x.example\r\nAUTH SCRAM-SHA-256 " + base64.b64encode(first) + b"\r\n"
    p = subprocess.run([sys.executable, MSA, "inetd", "-c", str(conf)], input=script, capture_output=True,
                       timeout=60)
    line = next(x for x in p.stdout.split(b"\r\n") if x.startswith(b"334 "))
    return dict(x.split(b"=", 1) for x in base64.b64decode(line[4:]).split(b","))[b"s"]


@pytest.mark.parametrize("fault", ["junk", "locked"])
def test_fake_salts_hold_across_processes_while_the_store_fails(tmp_path, fault):  # S-514 amended, S-1202
    # Under inetd every connection is a new process: a salt made from a
    # per-process random secret would differ on each one, while a real
    # user's never changes, and so tell unknown names from known ones.
    import sqlite3

    users = tmp_path / "users.db"
    msatest.add_user(users, "alice", PASSWORD, ["alice@example.org"], scram=True)
    state = tmp_path / "state"
    conf = msatest.write_config(tmp_path, None, users=users, trusted_networks="", auth_scram="yes",
                                require_tls_for_auth="no", state_dir=state)
    before = _inetd_salt(conf, "ghost")
    locker = None
    if fault == "junk":
        (state / "state.sqlite").write_bytes(b"not a database\n" * 100)
        for name in ("state.sqlite-wal", "state.sqlite-shm"):
            (state / name).unlink(missing_ok=True)
    else:
        locker = sqlite3.connect(state / "state.sqlite", isolation_level=None)
        locker.execute("BEGIN EXCLUSIVE")
    try:
        salts = {_inetd_salt(conf, "ghost") for _ in range(3)}
    finally:
        if locker is not None:
            locker.execute("ROLLBACK")
            locker.close()
    assert salts == {before}


def test_fake_salts_hold_across_processes_with_an_unusable_state_dir(tmp_path, certs):  # S-514 amended
    # No secret file can be made at all: the salts then come from a secret
    # derived from the TLS key, the same in every process, never a random one.
    users = tmp_path / "users.db"
    msatest.add_user(users, "alice", PASSWORD, ["alice@example.org"], scram=True)
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("x")
    conf = msatest.write_config(tmp_path, certs, users=users, trusted_networks="", auth_scram="yes",
                                require_tls_for_auth="no", state_dir=blocker, listen="127.0.0.1:0 starttls")
    salts = {_inetd_salt(conf, "ghost") for _ in range(3)}
    assert len(salts) == 1


def msmtp(m, mode: str, user: str, password: str, tmp_path, certs) -> subprocess.CompletedProcess:
    args = [MSMTP, "--host=localhost", f"--port={m.ports[mode]}", "--tls=on",
            f"--tls-starttls={'on' if mode == 'starttls' else 'off'}", f"--tls-trust-file={certs.cert}",
            "--auth=scram-sha-256", f"--user={user}", f"--passwordeval=cat {tmp_path / 'pw'}",
            "--from=alice@example.org", "bob@example.net"]
    (tmp_path / "pw").write_text(password + "\n")
    return subprocess.run(args, input=MESSAGE, capture_output=True, text=True, timeout=60)


@pytest.mark.skipif(MSMTP is None, reason="msmtp is not installed (apt install msmtp)")
@pytest.mark.parametrize("mode", ["starttls", "tls"])
def test_msmtp_scram_sends(scram_msa, tmp_path, certs, mode):  # S-514: a real client
    p = msmtp(scram_msa, mode, "alice", PASSWORD, tmp_path, certs)
    assert p.returncode == 0, p.stderr
    [d] = scram_msa.outbox.messages()
    assert d.recipients == ["bob@example.net"] and b"with ESMTPSA" in d.data
    scram_msa.wait_log(r"sasl_method=SCRAM-SHA-256, sasl_username=alice")


@pytest.mark.skipif(MSMTP is None, reason="msmtp is not installed (apt install msmtp)")
def test_msmtp_scram_wrong_password_fails(scram_msa, tmp_path, certs):  # S-514
    p = msmtp(scram_msa, "tls", "alice", "wrong", tmp_path, certs)
    assert p.returncode != 0 and "535" in p.stderr
    assert scram_msa.outbox.messages() == []


SOCAT = shutil.which("socat")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.skipif(GSASL is None, reason="gsasl is not installed (apt install gsasl)")
@pytest.mark.parametrize("mode", ["starttls", "tls"])
def test_gsasl_scram_login(scram_msa, tmp_path, certs, mode):  # S-514: GNU SASL, an independent implementation
    # gsasl 2.2.0's command line, holding TLS channel-binding data, stops
    # before its first SCRAM message when the server offers no -PLUS (which
    # msa never does, S-514); --no-cb makes it send the "n,," header.
    tunnel = None
    if mode == "starttls":
        target = ["--connect", f"localhost:{scram_msa.ports['starttls']}", "--starttls",
                  f"--x509-ca-file={certs.cert}", "--no-cb"]
    else:
        # gsasl speaks only STARTTLS: socat makes the implicit-TLS connection for it.
        if SOCAT is None:
            pytest.skip("socat is not installed (apt install socat)")
        port = _free_port()
        tunnel = subprocess.Popen([SOCAT, f"TCP-LISTEN:{port},bind=127.0.0.1,reuseaddr,fork",
                                   f"OPENSSL:localhost:{scram_msa.ports['tls']},cafile={certs.ca}"],
                                  stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

        def listening() -> bool:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                return True
            except OSError:
                return False

        assert msatest.wait_until(listening, 10)
        target = ["--connect", f"127.0.0.1:{port}", "--no-starttls"]
    args = [GSASL, "--client", "--smtp", *target, "-m", "SCRAM-SHA-256", "-a", "alice"]
    try:
        p = subprocess.run([*args, "-p", PASSWORD], capture_output=True, text=True, timeout=60,
                           stdin=subprocess.DEVNULL)
        assert "235 2.7.0 Authentication successful" in p.stdout + p.stderr, p.stdout + p.stderr
        if mode == "starttls":
            bad = subprocess.run([*args, "-p", "wrong"], capture_output=True, text=True, timeout=60,
                                 stdin=subprocess.DEVNULL)
            assert "535 5.7.8" in bad.stdout + bad.stderr
    finally:
        if tunnel is not None:
            tunnel.kill()
            tunnel.wait()
    scram_msa.wait_log(r"sasl_method=SCRAM-SHA-256, sasl_username=alice")


@pytest.mark.skipif(DOVEADM is None or MSMTP is None, reason="needs doveadm (dovecot-core) and msmtp")
def test_dovecot_scram_credential_imported_and_used(start_msa, tmp_path, certs):  # S-514, CONTRACT user import
    line = subprocess.run([DOVEADM, "pw", "-s", "SCRAM-SHA-256", "-p", PASSWORD], capture_output=True, text=True,
                          timeout=60, check=True).stdout.strip()
    assert line.startswith("{SCRAM-SHA-256}4096,")
    passwd = tmp_path / "dovecot.passwd"
    passwd.write_text(f"alice:{line}::::::\n")
    users = tmp_path / "users.db"
    run = lambda *a: subprocess.run([sys.executable, MSA, "user", "--users", str(users), *a],  # noqa: E731
                                    capture_output=True, text=True, timeout=60, input=PASSWORD + "\n")
    p = run("import", str(passwd))
    assert p.returncode == 0, p.stderr
    assert run("senders", "alice", "alice@example.org").returncode == 0
    assert "[scram-sha-256]  [no argon2id hash]" in run("list").stdout
    m = start_msa(users=users, trusted_networks="", auth_scram="yes")
    p = msmtp(m, "starttls", "alice", PASSWORD, tmp_path, certs)
    assert p.returncode == 0, p.stderr
    # PLAIN verifies against the SCRAM-only credential too (S-514).
    w = Wire.connect(m.ports["tls"], tls_ctx=m.client_ctx)
    w.reply()
    w.expect("EHLO x.example", 250)
    w.expect("AUTH PLAIN " + b64("\0alice\0" + PASSWORD), 235)
    w.close()
    # user passwd gives the user an argon2id hash again and keeps SCRAM.
    p = run("passwd", "alice", "--password-stdin")
    assert p.returncode == 0 and "SCRAM-SHA-256" in p.stdout, p.stderr
    listed = run("list").stdout
    assert "[scram-sha-256]" in listed and "no argon2id" not in listed
    assert os.stat(users).st_mode & 0o077 == 0
