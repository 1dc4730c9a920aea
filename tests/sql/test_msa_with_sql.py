"""msa with `sql`, over real SMTP sessions against the private PostgreSQL,
MariaDB and SQLite of conftest.py holding PostfixAdmin's tables (SPEC.md
S-1301, S-1303, S-1304, S-1305, S-1307; CONTRACT.md "Directories"): each
scheme logs in, refusals, senders from the alias table at MAIL and in From:,
an injection that finds nothing, a database that stops and comes back,
limits for directory users, and `check`."""

from __future__ import annotations

import subprocess
import sys

import pytest
import sqlschema as schema

import msatest
from msatest import MSA, Wire, b64

pytestmark = pytest.mark.xdist_group("sql")

PASSWORD = schema.PASSWORD.decode()
LOCAL = "local pw"
_SOURCES = iter(f"127.1.{n // 250}.{n % 250 + 2}" for n in range(10**4))


@pytest.fixture
def users_db(tmp_path):
    db = tmp_path / "users.db"
    msatest.add_user(db, "carol", LOCAL, ["carol@example.net"])
    return db


def session(m, mode: str = "tls") -> Wire:
    # Each from an address of its own, so that S-511's delays stay apart.
    if mode == "tls":
        w = Wire.connect(m.ports["tls"], tls_ctx=m.client_ctx, source=next(_SOURCES))
        w.reply()
    else:
        w = Wire.connect(m.ports["starttls"], source=next(_SOURCES))
        w.reply()
        w.expect("EHLO laptop.example", 250)
        w.starttls(m.client_ctx)
    w.expect("EHLO laptop.example", 250)
    return w


def login(w: Wire, name: str, password: str, mechanism: str = "PLAIN") -> int:
    if mechanism == "PLAIN":
        return w.cmd("AUTH PLAIN " + b64(f"\0{name}\0{password}"))[0]
    w.expect("AUTH LOGIN " + b64(name), 334)
    return w.cmd(b64(password))[0]


def send(w: Wire, sender: str, header_from: str) -> int:
    code, _ = w.cmd(f"MAIL FROM:<{sender}>")
    if code != 250:
        return code
    w.expect("RCPT TO:<bob@example.com>", 250)
    w.expect("DATA", 354)
    w.send(f"From: {header_from}\r\nSubject: sql\r\n\r\nhello\r\n.\r\n".encode())
    return w.reply()[0]


@pytest.mark.parametrize("mode, mechanism", [("tls", "PLAIN"), ("starttls", "LOGIN")])
def test_every_scheme_logs_in_from_sql(start_msa, db, sql_conf, users_db, mode, mechanism):  # S-1303, S-1304
    m = start_msa(users=users_db, trusted_networks="", sql=sql_conf(db))
    for scheme, name in schema.GOOD.items():
        w = session(m, mode)
        assert login(w, name, PASSWORD, mechanism) == 235, (db.kind, scheme)
        w.close()
        m.wait_log(rf"sasl_method={mechanism}, sasl_username={name}, directory=sql")
    w = session(m, mode)
    assert login(w, "carol", LOCAL, mechanism) == 235  # users.db still first for its own
    w.close()


@pytest.mark.parametrize("name, password", [
    ("bcrypt@example.org", "wrong"), ("nobody@example.org", PASSWORD), ("inactive@example.org", PASSWORD),
    ("nosmtp@example.org", PASSWORD), ("md5@example.org", PASSWORD),
])
def test_refusals_are_535(start_msa, postgres, sql_conf, users_db, name, password):  # S-1303, S-1304
    m = start_msa(users=users_db, trusted_networks="", sql=sql_conf(postgres))
    w = session(m)
    assert login(w, name, password) == 535
    w.close()
    if name.startswith("md5"):  # a weak scheme is named in the log, once per user, never the hash
        w = session(m)
        assert login(w, name, password) == 535
        w.close()
        m.wait_log(r"unsupported scheme MD5-CRYPT")
        assert m.log().count("unsupported scheme MD5-CRYPT") == 1
        assert schema.HASHES["md5"].split("$")[-1] not in m.log()


def test_senders_from_the_alias_table_hold_at_mail_and_in_from(start_msa, db, sql_conf, users_db):  # S-1305
    m = start_msa(users=users_db, trusted_networks="", sql=sql_conf(db))
    w = session(m)
    assert login(w, "bcrypt@example.org", PASSWORD) == 235
    assert send(w, "postmaster@example.org", "Postmaster <postmaster@example.org>") == 250
    assert send(w, "bcrypt@example.org", "abuse@example.org") == 250
    assert send(w, "old@example.org", "old@example.org") == 550  # an inactive alias
    assert send(w, "sales@example.org", "sales@example.org") == 550  # someone else's
    assert send(w, "bcrypt@example.org", "sales@example.org") == 550  # in From: too (S-602)
    w.close()
    m.wait_log(r"reject: MAIL from .*<old@example\.org> not owned by user bcrypt@example\.org.*hint: senders from sql")


def test_an_injection_finds_nothing_and_drops_nothing(start_msa, db, sql_conf, users_db):  # S-1303
    before = db.counts()
    m = start_msa(users=users_db, trusted_networks="", sql=sql_conf(db))
    for name in ("x' OR '1'='1", "bcrypt@example.org' --", "'; DROP TABLE mailbox; --", "a\\' OR 1=1 #"):
        w = session(m)
        assert login(w, name, PASSWORD) == 535
        w.close()
    assert db.counts() == before


def test_a_stopped_database_is_454_then_works_again(start_msa, db_server, sql_conf, users_db):  # S-1303
    m = start_msa(users=users_db, trusted_networks="", sql=sql_conf(db_server, timeout=2))
    name = schema.GOOD["sha256"]
    db_server.stop()
    try:
        for _ in range(2):
            w = session(m)
            assert login(w, name, PASSWORD) == 454
            w.close()
        w = session(m)
        assert login(w, "carol", LOCAL) == 235  # users.db does not depend on the database
        w.close()
    finally:
        db_server.start()
    w = session(m)
    assert login(w, name, PASSWORD) == 235  # the same msa, not restarted
    w.close()
    log = m.log()
    assert log.count("warning: sql: database unavailable") == 1, log
    assert "sql: database available again" in log


def test_limits_hold_for_sql_users(start_msa, sqlite, sql_conf, users_db):  # S-1201
    m = start_msa(users=users_db, trusted_networks="", sql=sql_conf(sqlite), limit_messages="1/1h")
    name = schema.GOOD["argon2id"]
    for expected in (250, 450):
        w = session(m)
        assert login(w, name, PASSWORD) == 235
        assert send(w, name, name) == expected
        w.close()


def test_a_reload_reads_the_sql_file_again(start_msa, sqlite, sql_conf, users_db):  # S-1307
    path = sql_conf(sqlite)
    m = start_msa(users=users_db, trusted_networks="", sql=path)
    name = schema.GOOD["bcrypt"]
    w = session(m)
    assert login(w, name, PASSWORD) == 235
    w.close()
    good = open(path).read()
    # A broken file is logged and the previous one stays in force.
    with open(path, "a") as f:
        f.write("nosuchkey = x\n")
    m.wait_log(r"reload failed, keeping the previous configuration: .*unknown key")
    w = session(m)
    assert login(w, name, PASSWORD) == 235
    w.close()
    # A working one that refuses everyone is taken.
    with open(path, "w") as f:
        f.write(good.replace("AND active AND smtp_active", "AND 1 = 0"))
    msatest.wait_until(lambda: m.log().count("reloaded:") >= 1)
    m.wait_log(r"reloaded: .*sql")
    w = session(m)
    assert login(w, name, PASSWORD) == 535
    w.close()


def test_check_runs_each_query_and_warns_of_a_readable_file(postgres, sql_conf, users_db, tmp_path, certs):  # S-1303
    good = sql_conf(postgres)
    bad = sql_conf(postgres, senders_query="SELECT nope FROM nowhere WHERE x = :login")
    for path, code in ((good, 0), (bad, 1)):
        conf = msatest.write_config(tmp_path / f"c{code}", certs, users=users_db, sql=path)
        p = subprocess.run([sys.executable, MSA, "check", "-c", str(conf)], capture_output=True, text=True,
                           timeout=60)
        assert p.returncode == code, p.stdout
        assert ("senders_query failed" in p.stdout) == (code == 1)
    import os

    os.chmod(good, 0o644)
    conf = msatest.write_config(tmp_path / "c2", certs, users=users_db, sql=good)
    p = subprocess.run([sys.executable, MSA, "check", "-c", str(conf)], capture_output=True, text=True, timeout=60)
    assert p.returncode == 0 and "warning:" in p.stdout and good in p.stdout, p.stdout
