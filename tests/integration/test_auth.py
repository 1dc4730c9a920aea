"""AUTH end to end (SPEC.md §5, §6): real clients, a real users database
made with `msa.py user`, over STARTTLS and implicit TLS."""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import signal
import smtplib
import statistics
import time

import pytest

import msatest
from msatest import HDR, Wire, b64, smtp

ALICE_PW = "alice's secret"
BOB_PW = "bob-pw-42"


@pytest.fixture
def users(tmp_path):
    path = tmp_path / "users.db"
    msatest.add_user(path, "alice", ALICE_PW, ["alice@example.org", "@alice.example"], cram=True)
    msatest.add_user(path, "bob", BOB_PW, ["bob@example.net"], cram=True)
    return path


@pytest.fixture
def amsa(start_msa, users):
    """msa with users and no trusted network: everyone must AUTH."""
    return start_msa(users=users, trusted_networks="")


def _tls(m) -> Wire:
    w = Wire.connect(m.ports["tls"], tls_ctx=m.client_ctx)
    assert w.reply()[0] == 220
    w.expect("EHLO client.example", 250)
    return w


def _send(s: smtplib.SMTP, sender="alice@example.org", body=b"Subject: hi\r\n\r\nhello\r\n"):
    return s.sendmail(sender, ["rcpt@example.net"], b"From: " + sender.encode() + b"\r\n" + body)


@pytest.mark.parametrize("mode", ["starttls", "tls"])
@pytest.mark.parametrize("mechanism", ["PLAIN", "LOGIN", "CRAM-MD5"])
def test_smtplib_login_then_delivery(amsa, mode, mechanism):  # S-505, S-506, S-507, S-309
    with smtp(amsa, mode) as s:
        s.ehlo()
        assert "CRAM-MD5" in s.esmtp_features["auth"]
        s.user, s.password = "alice", ALICE_PW
        method = {"PLAIN": s.auth_plain, "LOGIN": s.auth_login, "CRAM-MD5": s.auth_cram_md5}[mechanism]
        code, text = s.auth(mechanism, method, initial_response_ok=mechanism != "CRAM-MD5")
        assert (code, text) == (235, b"2.7.0 Authentication successful")
        assert _send(s) == {}
    [d] = amsa.outbox.messages()
    assert d.sender == "alice@example.org"
    assert b"with ESMTPSA id " in d.data.split(b"\r\n\r\n")[0]
    amsa.wait_log(rf"client=unknown\[127\.0\.0\.1\]:\d+, sasl_method={mechanism}, sasl_username=alice")


def test_plain_without_initial_response_and_with_empty_authzid(amsa):  # S-502, S-505
    w = _tls(amsa)
    assert w.cmd("AUTH PLAIN") == (334, "334 ")
    assert w.cmd(b64("\0alice\0" + ALICE_PW))[1] == "235 2.7.0 Authentication successful"
    w2 = _tls(amsa)
    assert w2.cmd("AUTH PLAIN " + b64("alice\0alice\0" + ALICE_PW))[0] == 235


def test_login_with_and_without_initial_response(amsa):  # S-506
    w = _tls(amsa)
    assert w.cmd("AUTH LOGIN")[1] == "334 VXNlcm5hbWU6"
    assert w.cmd(b64("alice"))[1] == "334 UGFzc3dvcmQ6"
    assert w.cmd(b64(ALICE_PW))[0] == 235
    w2 = _tls(amsa)
    assert w2.cmd("AUTH LOGIN " + b64("bob"))[1] == "334 UGFzc3dvcmQ6"
    assert w2.cmd(b64(BOB_PW))[0] == 235


def test_cram_md5_raw_exchange(amsa):  # S-507, S-508
    w = _tls(amsa)
    code, text = w.cmd("AUTH CRAM-MD5")
    assert code == 334
    challenge = base64.b64decode(text[4:])
    assert challenge.startswith(b"<") and challenge.endswith(b"@msa.test>")
    digest = hmac.new(BOB_PW.encode(), challenge, hashlib.md5).hexdigest()
    assert w.cmd(b64(f"bob {digest.upper()}"))[0] == 235
    assert w.cmd("AUTH CRAM-MD5 " + b64("x"))[0] == 503  # S-501: already authenticated
    w2 = _tls(amsa)
    assert w2.cmd("AUTH CRAM-MD5 " + b64("bob 00"))[1] == "501 5.7.0 Initial response not allowed for this mechanism"


def test_cancel_bad_base64_unknown_mechanism(amsa):  # S-501, S-502
    w = _tls(amsa)
    w.cmd("AUTH LOGIN")
    assert w.cmd("*")[1] == "501 5.0.0 Authentication cancelled"
    assert w.cmd("AUTH PLAIN !!!notbase64")[1] == "501 5.5.2 Cannot decode response"
    w.cmd("AUTH PLAIN")
    assert w.cmd("abc")[1] == "501 5.5.2 Cannot decode response"
    assert w.cmd("AUTH DIGEST-MD5")[1] == "504 5.5.4 Unrecognized authentication type"
    assert w.cmd("AUTH PLAIN " + b64("\0alice\0" + ALICE_PW))[0] == 235


def test_authzid_of_another_user_is_refused(amsa):  # S-505
    w = _tls(amsa)
    assert w.cmd("AUTH PLAIN " + b64("bob\0alice\0" + ALICE_PW))[1] == "535 5.7.8 Authentication credentials invalid"


def test_auth_twice_and_in_transaction(amsa):  # S-501
    w = _tls(amsa)
    w.expect("AUTH PLAIN " + b64("\0alice\0" + ALICE_PW), 235)
    assert w.cmd("AUTH PLAIN " + b64("\0alice\0" + ALICE_PW))[1] == "503 5.5.1 Already authenticated"
    w2 = msatest.Wire.connect(amsa.ports["tls"], tls_ctx=amsa.client_ctx)
    w2.reply()
    w2.expect("HELO client.example", 250)
    assert w2.cmd("AUTH PLAIN " + b64("\0alice\0" + ALICE_PW))[1] == "503 5.5.1 Send EHLO first"


def test_no_auth_before_tls(amsa):  # S-202, S-501, S-1003
    w = Wire.connect(amsa.ports["starttls"])
    w.reply()
    ehlo = w.expect("EHLO client.example", 250)
    assert "AUTH" not in ehlo
    assert w.cmd("AUTH PLAIN " + b64("\0alice\0" + ALICE_PW))[1] == (
        "504 5.5.4 Encryption required for requested authentication mechanism")
    assert w.cmd("MAIL FROM:<alice@example.org>")[0] == 530
    w.starttls(amsa.client_ctx)
    assert "AUTH PLAIN LOGIN CRAM-MD5" in w.expect("EHLO client.example", 250)
    assert "sasl_username=alice" not in amsa.log()


def test_cram_md5_not_offered_when_a_user_lacks_it(start_msa, tmp_path):  # S-202
    db = tmp_path / "mixed.db"
    msatest.add_user(db, "alice", ALICE_PW, ["alice@example.org"], cram=True)
    msatest.add_user(db, "carol", "carol-pw", ["carol@example.org"], cram=False)
    m = start_msa(users=db, trusted_networks="")
    w = _tls(m)
    assert w.cmd("EHLO x.example")[1].splitlines()[-1] == "250 AUTH PLAIN LOGIN"
    assert w.cmd("AUTH CRAM-MD5")[1] == "504 5.5.4 Unrecognized authentication type"


def test_unknown_user_and_wrong_password_look_the_same(amsa):  # S-510, S-1006
    def attempt(user: str, source: str) -> tuple[str, float]:
        w = Wire.connect(amsa.ports["tls"], tls_ctx=amsa.client_ctx, source=source)
        w.reply()
        w.expect("EHLO client.example", 250)
        t0 = time.perf_counter()
        text = w.cmd("AUTH PLAIN " + b64(f"\0{user}\0wrong password"))[1]
        elapsed = time.perf_counter() - t0
        w.close()
        return text, elapsed

    unknown, wrong = [], []
    for i in range(12):  # a fresh source address each time: no throttle delay
        t1, e1 = attempt("nosuchuser", f"127.0.1.{i + 1}")
        t2, e2 = attempt("alice", f"127.0.2.{i + 1}")
        assert t1 == t2 == "535 5.7.8 Authentication credentials invalid"
        unknown.append(e1)
        wrong.append(e2)
    a, b = statistics.median(unknown), statistics.median(wrong)
    assert max(a, b) / min(a, b) < 1.5, (unknown, wrong)
    amsa.wait_log(r"SASL PLAIN authentication failed: authentication failure, sasl_username=\(unknown\)")
    amsa.wait_log(r"SASL PLAIN authentication failed: authentication failure, sasl_username=alice")


def test_brute_force_cut_off_and_next_session_slowed(amsa):  # S-511, S-1007
    w = _tls(amsa)
    for _ in range(2):
        assert w.cmd("AUTH PLAIN " + b64("\0alice\0guess"))[0] == 535
    w.send("AUTH PLAIN " + b64("\0alice\0guess") + "\r\n")
    assert w.reply()[0] == 535
    assert w.reply()[1] == "421 4.7.0 msa.test Error: too many failed authentications"
    assert w.closed()
    w2 = _tls(amsa)
    t0 = time.monotonic()
    assert w2.cmd("AUTH PLAIN " + b64("\0alice\0" + ALICE_PW))[0] == 235
    assert time.monotonic() - t0 >= 3.5  # 1, 2, 4 seconds after three failures
    other = Wire.connect(amsa.ports["tls"], tls_ctx=amsa.client_ctx, source="127.0.0.9")
    other.reply()
    other.expect("EHLO client.example", 250)
    t0 = time.monotonic()
    assert other.cmd("AUTH PLAIN " + b64("\0bob\0" + BOB_PW))[0] == 235
    assert time.monotonic() - t0 < 3  # another client is not slowed


def test_own_login_does_not_reset_the_delay_for_guesses_at_others(amsa):  # S-511, S-1007
    # Issue 11: guess at bob, log in as oneself (alice), guess at bob again:
    # the success forgets alice's failures only, so every guess at bob from
    # this address still waits 1, 2, 4 ... seconds. The source address is
    # fresh so that no other test's failures count.
    def attempt(user: str, password: str) -> tuple[int, float]:
        w = Wire.connect(amsa.ports["tls"], tls_ctx=amsa.client_ctx, source="127.0.3.1")
        w.reply()
        w.expect("EHLO client.example", 250)
        t0 = time.monotonic()
        code = w.cmd("AUTH PLAIN " + b64(f"\0{user}\0{password}"))[0]
        elapsed = time.monotonic() - t0
        w.close()
        return code, elapsed

    assert attempt("bob", "guess 1")[0] == 535
    code, waited = attempt("alice", ALICE_PW)
    assert code == 235 and waited >= 0.9  # delayed by bob's failure
    code, waited = attempt("bob", "guess 2")
    assert code == 535 and waited >= 0.9  # still delayed: alice's success did not forget bob's
    code, waited = attempt("alice", ALICE_PW)
    assert code == 235 and waited >= 1.9  # two failures for bob: 2 seconds
    code, waited = attempt("bob", BOB_PW)
    assert code == 235 and waited >= 1.9
    code, waited = attempt("alice", ALICE_PW)
    assert code == 235 and waited < 0.9  # bob's own success forgot bob's failures


def test_sender_policy(amsa):  # S-601, S-603, S-1010
    w = _tls(amsa)
    w.expect("AUTH PLAIN " + b64("\0alice\0" + ALICE_PW), 235)
    assert w.cmd("MAIL FROM:<bob@example.net>")[1] == "550 5.7.1 Sender address <bob@example.net> not owned by user alice"
    for ok in ("alice@example.org", "Alice+lists@EXAMPLE.org", "anyone@alice.example", ""):
        w.expect(f"MAIL FROM:<{ok}>", 250)
        w.expect("RSET", 250)
    assert w.cmd("MAIL FROM:<alice@sub.alice.example.com>")[0] == 550
    assert w.cmd("MAIL FROM:<alice@localhost>")[1] == "554 5.1.8 Sender domain must be fully qualified"


def test_null_sender_delivers_with_a_from_header(amsa):  # S-601, S-801
    w = _tls(amsa)
    w.expect("AUTH PLAIN " + b64("\0alice\0" + ALICE_PW), 235)
    w.transaction("", "someone@example.net")
    w.send(b"From: alice@example.org\r\nSubject: read receipt\r\n\r\nread\r\n.\r\n")
    assert w.reply()[0] == 250
    [d] = amsa.outbox.messages()
    assert d.argv[d.argv.index("-f") + 1] == "<>"


BOUNCE = (b"From: Mail Delivery System <MAILER-DAEMON@nas.home.example>\r\n"
          b"Subject: Undelivered Mail Returned to Sender\r\n\r\nThis is the mail system at host nas.\r\n")


def test_satellite_mta_bounce_is_refused_with_a_hint_until_its_sender_is_added(amsa, users):  # S-602
    # A home server relaying through msa as alice sends its own bounces as
    # MAIL FROM:<> with From: MAILER-DAEMON@its-host. The rule stays (else
    # forging MAILER-DAEMON would be free); the log says what to add.
    w = _tls(amsa)
    w.expect("AUTH PLAIN " + b64("\0alice\0" + ALICE_PW), 235)
    w.transaction("", "sender@example.net")
    w.send(BOUNCE + b".\r\n")
    assert w.reply() == (550, "550 5.7.1 From: address <MAILER-DAEMON@nas.home.example> not owned by user alice")
    line = amsa.wait_log(r"reject: END-OF-MESSAGE .*").group(0)
    assert line.endswith("from=<> helo=<client.example>; hint: a bounce from an MTA relaying as alice? "
                         "add <MAILER-DAEMON@nas.home.example> to alice's senders"), line
    # The README's remedy: the address among alice's senders.
    import subprocess
    import sys

    p = subprocess.run([sys.executable, msatest.MSA, "user", "--users", str(users), "senders", "alice",
                        "alice@example.org", "@alice.example", "MAILER-DAEMON@nas.home.example"],
                       capture_output=True, text=True, timeout=30)
    assert p.returncode == 0, p.stderr
    amsa.wait_log(r"reloaded: 2 users")
    w = _tls(amsa)
    w.expect("AUTH PLAIN " + b64("\0alice\0" + ALICE_PW), 235)
    w.transaction("", "sender@example.net")
    w.send(BOUNCE + b".\r\n")
    assert w.reply()[0] == 250
    [d] = amsa.outbox.messages()
    assert d.sender == "<>" and b"MAILER-DAEMON@nas.home.example" in d.data


def test_forged_from_with_a_real_sender_gets_no_bounce_hint(amsa):  # S-602
    w = _tls(amsa)
    w.expect("AUTH PLAIN " + b64("\0alice\0" + ALICE_PW), 235)
    w.transaction("alice@example.org", "victim@example.net")
    w.send(b"From: ceo@bank.example\r\n\r\npay now\r\n.\r\n")
    assert w.reply()[0] == 550
    line = amsa.wait_log(r"reject: END-OF-MESSAGE .*").group(0)
    assert "hint" not in line


def test_auth_with_initial_response_pipelined_with_the_transaction(amsa):  # S-513
    w = _tls(amsa)
    w.send(("AUTH PLAIN " + b64("\0alice\0" + ALICE_PW) + "\r\n").encode()
           + b"MAIL FROM:<alice@example.org>\r\nRCPT TO:<x@example.net>\r\nDATA\r\n")
    assert [w.reply()[0] for _ in range(4)] == [235, 250, 250, 354]
    w.send(HDR + b"Subject: piped\r\n\r\nok\r\n.\r\n")
    assert w.reply()[0] == 250


def test_reload_adds_a_user_without_dropping_sessions(amsa, users):  # CONTRACT serve SIGHUP
    held = _tls(amsa)
    msatest.add_user(users, "dave", "dave-pw", ["dave@example.com"], cram=True)
    amsa.proc.send_signal(signal.SIGHUP)
    amsa.wait_log(r"reloaded: 3 users")
    w = _tls(amsa)
    assert w.cmd("AUTH PLAIN " + b64("\0dave\0dave-pw"))[0] == 235
    assert held.cmd("NOOP")[0] == 250  # the older session is still there
    assert held.cmd("AUTH PLAIN " + b64("\0dave\0dave-pw"))[0] == 235


def test_broken_users_db_on_reload_keeps_the_old_one(amsa, users):  # CONTRACT users database
    text = users.read_text()
    users.write_text(text + "broken line without fields\n")
    amsa.proc.send_signal(signal.SIGHUP)
    amsa.wait_log(r"reload failed, keeping the previous configuration: .*users\.db:\d+: ")
    w = _tls(amsa)
    assert w.cmd("AUTH PLAIN " + b64("\0alice\0" + ALICE_PW))[0] == 235


@pytest.mark.parametrize("replacement", ["FIFO", "/dev/zero"])
def test_users_db_replaced_by_a_fifo_or_device_on_reload_keeps_the_old_one(amsa, users, replacement):
    # CONTRACT users database; a plain open() of a FIFO blocked the main
    # thread for good (no more reloads, no SIGTERM), /dev/zero ate memory.
    users.unlink()
    if replacement == "FIFO":
        os.mkfifo(users)
    else:
        users.symlink_to("/dev/zero")
    amsa.proc.send_signal(signal.SIGHUP)
    amsa.wait_log(r"reload failed, keeping the previous configuration: .*users: .*users\.db: not a regular file")
    w = _tls(amsa)
    assert w.cmd("AUTH PLAIN " + b64("\0alice\0" + ALICE_PW))[0] == 235
    assert amsa.stop() == 0  # the main thread still handles signals


def test_serve_refuses_a_broken_users_db(tmp_path, certs):  # CONTRACT users database
    import subprocess
    import sys

    db = tmp_path / "users.db"
    db.write_text("# comment\nalice:not-a-hash::\n")
    conf = msatest.write_config(tmp_path, certs, users=db)
    p = subprocess.run([sys.executable, msatest.MSA, "serve", "-c", str(conf)], capture_output=True, text=True, timeout=30)
    assert p.returncode == 1
    assert "users.db:2: " in p.stderr and "Traceback" not in p.stderr
    c = subprocess.run([sys.executable, msatest.MSA, "check", "-c", str(conf)], capture_output=True, text=True, timeout=30)
    assert c.returncode == 1 and "users.db:2: " in c.stdout


def test_no_secret_reaches_the_log(amsa):  # S-903
    w = _tls(amsa)
    w.cmd("AUTH PLAIN " + b64("\0alice\0" + "wrong-secret-1"))
    w.cmd("AUTH LOGIN")
    w.cmd(b64("typed-password-as-user"))
    w.cmd(b64("wrong-secret-2"))
    w.cmd("AUTH PLAIN " + b64("\0alice\0" + ALICE_PW))
    w.cmd("QUIT")
    amsa.wait_log(r"disconnect from")
    log = amsa.log()
    for secret in ("wrong-secret-1", "typed-password-as-user", "wrong-secret-2", ALICE_PW):
        assert secret not in log
        assert b64(secret) not in log
        assert b64("\0alice\0" + secret) not in log
    assert "$argon2id$" not in log
