"""msa with `auth_dovecot`, over real SMTP sessions against the private
Dovecot of conftest.py (SPEC.md S-1301, S-1302, S-1305, S-1307; CONTRACT.md
"Directories"): every scheme logs in with PLAIN and LOGIN over both TLS
modes, the renamed user is the session's user, refusals, senders, a
Dovecot that goes away and comes back, the 2.4 handshake and silence."""

from __future__ import annotations

import subprocess
import time

import pytest

import msatest
from msatest import Wire, b64

pytestmark = pytest.mark.xdist_group("dovecot")

LOCAL = "local pw"
MESSAGE = b"Subject: dovecot\r\n\r\nhello\r\n.\r\n"


@pytest.fixture
def users_db(tmp_path):
    db = tmp_path / "users.db"
    msatest.add_user(db, "carol", LOCAL, ["carol@example.net"])
    return db


@pytest.fixture
def dmsa(start_msa, dovecot, users_db):
    return start_msa(users=users_db, trusted_networks="", auth_dovecot=dovecot.unix)


def session(m, mode: str = "tls") -> Wire:
    if mode == "tls":
        w = Wire.connect(m.ports["tls"], tls_ctx=m.client_ctx)
        w.reply()
    else:
        w = Wire.connect(m.ports["starttls"])
        w.reply()
        w.expect("EHLO laptop.example", 250)
        w.starttls(m.client_ctx)
    w.expect("EHLO laptop.example", 250)
    return w


def login(w: Wire, mechanism: str, name: str, password: str) -> tuple[int, str]:
    if mechanism == "PLAIN":
        return w.cmd("AUTH PLAIN " + b64(f"\0{name}\0{password}"))
    code, _ = w.cmd("AUTH LOGIN " + b64(name))
    assert code == 334
    return w.cmd(b64(password))


@pytest.mark.parametrize("mode", ["tls", "starttls"])
@pytest.mark.parametrize("mechanism", ["PLAIN", "LOGIN"])
def test_every_scheme_logs_in_through_dovecot(dmsa, dovecot, mechanism, mode):  # S-1302, S-1304
    for scheme in dovecot.SCHEMES:
        w = session(dmsa, mode)
        name = dovecot.user(scheme)
        code, text = login(w, mechanism, name, dovecot.PASSWORD)
        assert code == 235, (scheme, text)
        w.close()
        dmsa.wait_log(rf"client=\S+, sasl_method={mechanism}, sasl_username={name}, directory=dovecot")


def test_the_name_dovecot_returns_is_the_sessions_user(dmsa, dovecot):  # S-1301, S-1305
    w = session(dmsa)
    assert login(w, "PLAIN", dovecot.RENAMED, dovecot.PASSWORD)[0] == 235
    # Its senders: the canonical name, an address (S-1305); not the name typed.
    assert w.cmd(f"MAIL FROM:<{dovecot.RENAMED}>")[0] == 550
    w.expect(f"MAIL FROM:<{dovecot.CANONICAL}>", 250)
    w.expect("RCPT TO:<bob@example.net>", 250)
    w.expect("DATA", 354)
    w.send(f"From: {dovecot.CANONICAL}\r\n".encode() + MESSAGE)
    assert w.reply()[0] == 250
    w.close()
    dmsa.wait_log(rf"sasl_username={dovecot.CANONICAL}, directory=dovecot")
    [d] = dmsa.outbox.messages()
    assert d.sender == dovecot.CANONICAL


@pytest.mark.parametrize("who", ["wrong", "unknown", "nologin"])
def test_refusals_are_535_alike(dmsa, dovecot, who):  # S-1302, S-503
    name, password = {"wrong": (dovecot.user("ARGON2ID"), "not it"), "unknown": ("nobody@example.org", "x"),
                      "nologin": (dovecot.NOLOGIN, dovecot.PASSWORD)}[who]
    w = session(dmsa)
    assert login(w, "PLAIN", name, password) == (535, "535 5.7.8 Authentication credentials invalid")
    w.close()


def test_temp_fail_is_454(dmsa, dovecot):  # S-1302
    w = session(dmsa)
    assert login(w, "PLAIN", dovecot.TEMPFAIL, "anything")[0] == 454
    w.close()


def test_an_injection_never_reaches_dovecot(dmsa, dovecot):  # S-1302
    before = len(dovecot.requests())
    for name, password in (("alice\tmech=EXTERNAL", "x"), ("alice@example.org", "pw\nAUTH\t9\tPLAIN")):
        w = session(dmsa)
        assert login(w, "PLAIN", name, password)[0] == 535
        w.close()
    assert len(dovecot.requests()) == before


def test_users_db_users_and_cram_md5(dmsa, dovecot):  # S-1301, S-1302
    w = session(dmsa)
    text = w.expect("EHLO laptop.example", 250)
    assert "AUTH PLAIN LOGIN\n" in text + "\n" and "CRAM-MD5" not in text  # PLAIN and LOGIN only
    assert login(w, "PLAIN", "carol", LOCAL)[0] == 235
    w.close()
    dmsa.wait_log(r"sasl_username=carol, directory=users\.db")


def test_a_senders_only_line_gives_a_dovecot_user_its_senders(start_msa, dovecot, tmp_path):  # S-1305
    db = tmp_path / "users.db"
    name = dovecot.user("BLF-CRYPT")
    db.write_text(f"{name}:::{name},@team.example.org\n")
    m = start_msa(users=db, trusted_networks="", auth_dovecot=dovecot.unix)
    w = session(m)
    assert login(w, "PLAIN", name, dovecot.PASSWORD)[0] == 235
    w.expect("MAIL FROM:<anyone@team.example.org>", 250)
    w.expect("RSET", 250)
    assert w.cmd("MAIL FROM:<other@example.org>")[0] == 550
    w.close()
    m.wait_log(r"reject: MAIL from .*not owned by user bcrypt@example\.org.*senders from users\.db")


def test_limits_hold_for_dovecot_users(start_msa, dovecot, users_db):  # S-1201
    m = start_msa(users=users_db, trusted_networks="", auth_dovecot=dovecot.unix, limit_messages="1/1h")
    name = dovecot.user("SHA256-CRYPT")
    for expected in (250, 450):
        w = session(m)
        assert login(w, "PLAIN", name, dovecot.PASSWORD)[0] == 235
        code, _ = w.cmd(f"MAIL FROM:<{name}>")
        assert code == expected
        if code == 250:
            w.expect("RCPT TO:<bob@example.net>", 250)
            w.expect("DATA", 354)
            w.send(f"From: {name}\r\n".encode() + MESSAGE)
            assert w.reply()[0] == 250
        w.close()


def test_dovecot_gone_is_454_and_users_db_still_works(start_msa, dovecot, users_db, tmp_path):  # S-1302

    dc = type(dovecot)  # tests/dovecot/conftest.py's Dovecot: a second, private instance

    import shutil
    import tempfile
    from pathlib import Path

    root = Path(tempfile.mkdtemp(prefix="msa-dovecot-"))  # readable by Dovecot's auth user, unlike tmp_path
    root.chmod(0o755)
    own = dc(root, dc.free_port(), False)
    dc.write_files(root, own.port, False)
    own.start()
    try:
        m = start_msa(users=users_db, trusted_networks="", auth_dovecot=own.inet, auth_dovecot_timeout=2)
        name = own.user("ARGON2ID")
        w = session(m)
        assert login(w, "PLAIN", name, own.PASSWORD)[0] == 235
        w.close()
        own.stop()
        for _ in range(2):
            w = session(m)
            t0 = time.monotonic()
            assert login(w, "PLAIN", name, own.PASSWORD)[0] == 454
            assert time.monotonic() - t0 < 5
            w.close()
        w = session(m)
        assert login(w, "PLAIN", "carol", LOCAL)[0] == 235  # users.db does not depend on Dovecot
        w.close()
        assert m.log().count("warning: dovecot") == 1, m.log()  # one warning per outage
        own.start()  # the same msa, not restarted
        w = session(m)
        assert login(w, "PLAIN", name, own.PASSWORD)[0] == 235
        w.close()
    finally:
        own.stop()
        shutil.rmtree(root, ignore_errors=True)


def test_a_24_style_dovecot_works_and_a_silent_one_is_454_in_time(start_msa, users_db, tmp_path):  # S-1302
    from helpers.fake_dovecot import FakeDovecot

    late = FakeDovecot(tmp_path, mode="2.4", name="late")
    silent = FakeDovecot(tmp_path, mode="silent", name="silent")
    try:
        m = start_msa(users=users_db, trusted_networks="", auth_dovecot=late.address)
        w = session(m)
        assert login(w, "PLAIN", "alice@example.org", "right password")[0] == 235
        w.close()
        m2 = start_msa(users=users_db, trusted_networks="", auth_dovecot=silent.address, auth_dovecot_timeout=1)
        w = session(m2)
        t0 = time.monotonic()
        assert login(w, "PLAIN", "alice@example.org", "right password")[0] == 454
        assert time.monotonic() - t0 < 4
        w.close()
    finally:
        late.stop()
        silent.stop()


def test_check_performs_the_handshake(dovecot, users_db, tmp_path, certs):  # S-1302, CONTRACT check
    import subprocess
    import sys

    good = msatest.write_config(tmp_path / "good", certs, users=users_db, auth_dovecot=dovecot.unix)
    bad = msatest.write_config(tmp_path / "bad", certs, users=users_db,
                               auth_dovecot=f"unix:{tmp_path}/no-such-socket")
    for conf, code in ((good, 0), (bad, 1)):
        p = subprocess.run([sys.executable, msatest.MSA, "check", "-c", str(conf)], capture_output=True, text=True,
                           timeout=60)
        assert p.returncode == code, p.stdout + p.stderr
        assert ("auth_dovecot" in p.stdout) == (code == 1)


def test_no_reply_time_tells_which_directory_holds_a_name(start_msa, dovecot, users_db, tmp_path):  # S-1306
    # users.db, SQL (an SQLite file with PostfixAdmin's mailbox table) and
    # Dovecot in one msa: a wrong password for a name in each, and an unknown
    # name, answered after about the same time (the median of 12 each).
    import shutil
    import sqlite3
    import statistics
    import tempfile
    from pathlib import Path

    dc = type(dovecot)
    root = Path(tempfile.mkdtemp(prefix="msa-dovecot-"))
    root.chmod(0o755)
    own = dc(root, dc.free_port(), False)
    dc.write_files(root, own.port, False)
    with open(own.conf, "a") as f:  # no failure delay of its own: a Dovecot failure is the fastest path
        f.write("auth_failure_delay = 0\n")
    own.start()
    try:
        db = tmp_path / "mail.sqlite"
        with sqlite3.connect(db) as c:
            c.execute("CREATE TABLE mailbox (username TEXT PRIMARY KEY, password TEXT, active INTEGER)")
            hashed = subprocess.run([dc.DOVEADM, "pw", "-s", "BLF-CRYPT", "-p", "sql pw"], capture_output=True,
                                    text=True, timeout=60).stdout.strip()
            c.execute("INSERT INTO mailbox VALUES ('sqluser@example.org', ?, 1)", (hashed,))
        sql = tmp_path / "sql.conf"
        sql.write_text(f"[sql]\ndsn = sqlite:///{db}\n"
                       "password_query = SELECT password FROM mailbox WHERE username = :login AND active\n")
        sql.chmod(0o600)
        m = start_msa(users=users_db, trusted_networks="", sql=sql, auth_dovecot=own.unix)
        names = {"users.db": "carol", "sql": "sqluser@example.org", "dovecot": own.user("BLF-CRYPT"),
                 "unknown": None}
        took: dict[str, list[float]] = {kind: [] for kind in names}
        n = 0
        for i in range(12):
            for kind, name in names.items():
                n += 1
                w = Wire.connect(m.ports["tls"], tls_ctx=m.client_ctx, source=f"127.3.{n // 250}.{n % 250 + 2}")
                w.reply()
                w.expect("EHLO x.example", 250)
                t0 = time.monotonic()
                code = login(w, "PLAIN", name or f"ghost{i}@example.org", "wrong")[0]
                assert code == 535, (kind, m.log()[-2000:])
                took[kind].append(time.monotonic() - t0)
                w.close()
        medians = {kind: statistics.median(t) for kind, t in took.items()}
        assert max(medians.values()) / min(medians.values()) < 1.5, medians
    finally:
        own.stop()
        shutil.rmtree(root, ignore_errors=True)


def test_app_passwords_work_for_dovecot_users(start_msa, dovecot, users_db):  # S-1305, S-515
    import sys

    m = start_msa(users=users_db, trusted_networks="", auth_dovecot=dovecot.unix)
    name = dovecot.user("SHA512-CRYPT")
    made = subprocess.run([sys.executable, msatest.MSA, "app", "add", name, "phone", "-c", str(m.conf)],
                          capture_output=True, text=True, timeout=60)
    assert made.returncode == 0, made.stderr
    secret = made.stdout.strip()
    refused = subprocess.run([sys.executable, msatest.MSA, "app", "add", name, "tablet", "--sender",
                              "someone@else.example", "-c", str(m.conf)], capture_output=True, text=True, timeout=60)
    assert refused.returncode == 1  # narrowing stays within the user's senders: its own address here
    m.wait_log(r"reloaded: .*1 app passwords")
    w = session(m)
    assert login(w, "PLAIN", name, secret)[0] == 235
    w.expect(f"MAIL FROM:<{name}>", 250)
    w.close()
    m.wait_log(rf"sasl_username={name}, app=phone, directory=dovecot")
