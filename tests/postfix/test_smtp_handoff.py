"""msa handing mail to a REAL Postfix over SMTP (SPEC.md S-806 to S-810):
the private instance's smtpd service, configured exactly as the README's
"The MTA" says (conftest.MSA_SERVICE). What Postfix cannot be made to do on
cue (close after the dot, stall, lack SMTPUTF8) is tested against a scripted
MTA in tests/integration/test_smtp_handoff_faults.py."""

from __future__ import annotations

import re
import shutil
import signal
import subprocess
import sys
import time

import pytest

import msatest
from msatest import HDR, Wire
from test_postfix import BODY, header, lf, queue_id, split_fields
from test_postfix import submit as postfix_submit

PASSWORD = "correct horse battery"


def submit(m, sender: str, rcpts: list[str], message: bytes, *, auth: str | None = None,
           source: str = "127.0.0.1", mail_params: str = "", rcpt_params: str = "") -> tuple[int, str]:
    """test_postfix's submit over implicit TLS, as a laptop."""
    return postfix_submit(m.ports["tls"], m.client_ctx, sender, rcpts, message, tls=True, auth=auth,
                          helo="laptop.example", source=source, mail_params=mail_params, rcpt_params=rcpt_params)


def postfix_qid(text: str) -> str:
    m = re.search(r"queued as ([0-9A-F]+)\)", text)
    assert m, text
    return m.group(1)


def test_delivered_byte_exact_with_the_real_client_in_postfixs_log(postfix, start_msa, tmp_path):
    # S-806: XFORWARD carries the real client (orig_client=, from the msa
    # client's own address 127.0.0.2) and msa's queue id (orig_queue_id=);
    # S-808: 250 only after Postfix's 250, whose queue id msa logs; the
    # message arrives byte for byte below Postfix's own Received:.
    users = tmp_path / "users.db"
    msatest.add_user(users, "alice", PASSWORD, ["alice@example.org"])
    m = start_msa(handoff=postfix.handoff, users=users, trusted_networks="")
    message = header("judy@example.test", "smtp-intact") + BODY
    code, text = submit(m, "alice@example.org", ["judy@example.test"], message, auth="alice", source="127.0.0.2")
    assert code == 250, text
    qid = queue_id(text)
    line = m.wait_log(rf"{qid}: to=<judy@example\.test>, relay=127\.0\.0\.1\[127\.0\.0\.1\]:{postfix.smtp_port}, "
                      rf"delay=[\d.]+, status=sent \(250 2\.0\.0 Ok: queued as ([0-9A-F]+)\)")
    pf = line.group(1)
    postfix.wait_log(rf"postfix/msa/smtpd\[\d+\]: {pf}: client=localhost\[127\.0\.0\.1\], "
                     rf"orig_queue_id={qid}, orig_client=unknown\[127\.0\.0\.2\]")
    got = postfix.wait_message("judy", b"smtp-intact")
    fields, body = split_fields(got)
    assert fields[0] == b"Return-Path: <alice@example.org>"
    assert fields[1] == b"X-Original-To: judy@example.test"
    assert re.fullmatch(rb"Received: from msa\.test \(localhost \[127\.0\.0\.1\]\)\n"
                        rb"\tby msa-postfix\.test \(Postfix\) with ESMTP id " + pf.encode() + rb"\n"
                        rb"\tfor <judy@example\.test>; .*", fields[3]), fields[3]
    assert fields[4].startswith(b"Received: from laptop.example ([127.0.0.2])\n")
    assert b"with ESMTPSA id " + qid.encode() in fields[4]
    assert b"\n".join(fields[5:]) + b"\n\n" + body == lf(message)  # dot lines and 8-bit intact
    assert m.spool_files() == []


def test_dsn_parameters_reach_postfixs_queue_file(postfix, start_msa):  # S-809, S-202
    # What Thunderbird sends once DSN is offered: RET=FULL ENVID=<message-id>
    # on MAIL, NOTIFY=SUCCESS,FAILURE,DELAY on RCPT; ORCPT too. hold.test
    # keeps the message in the deferred queue, where postcat reads it.
    m = start_msa(handoff=postfix.handoff)
    w = Wire.connect(m.ports["tls"], tls_ctx=m.client_ctx)
    w.reply()
    assert "DSN" in w.cmd("EHLO laptop.example")[1].splitlines()[-1]  # advertised with this hand-off
    w.close()
    message = HDR + b"Subject: dsn\r\n\r\nplease tell me\r\n"
    code, text = submit(m, "alice@example.org", ["dsn@hold.test"], message,
                        mail_params=" RET=FULL ENVID=<m.dsn.1@example.org>",
                        rcpt_params=" NOTIFY=SUCCESS,FAILURE,DELAY ORCPT=rfc822;dsn@hold.test")
    assert code == 250, text
    qid = queue_id(text)
    pf = postfix_qid(m.wait_log(rf"{qid}: to=<dsn@hold\.test>, .*status=sent \(.*\)").group(0))
    postfix.wait_log(rf"{pf}: to=<dsn@hold\.test>, .*status=deferred")
    dump = postfix.postcat(pf)
    # Postfix's dsn.h: RET FULL 1, HDRS 2; NOTIFY NEVER 1, SUCCESS 2, DELAY 4, FAILURE 8.
    assert "named_attribute: envelope_id=<m.dsn.1@example.org>\n" in dump, dump
    assert "named_attribute: ret_flags=1\n" in dump, dump
    assert "named_attribute: notify_flags=14\n" in dump, dump
    assert "named_attribute: dsn_orig_rcpt=rfc822;dsn@hold.test\n" in dump, dump


def test_one_refused_recipient_of_three_queues_nothing(postfix, start_msa):  # S-807
    # Postfix refuses a user its virtual table does not know, at RCPT: msa
    # refuses the whole message (554 and Postfix's 5.1.1), sends no DATA,
    # resets, and the two valid recipients get nothing.
    m = start_msa(handoff=postfix.handoff)
    message = HDR + b"Subject: all-or-nothing\r\n\r\nto three\r\n"
    code, text = submit(m, "alice@example.org", ["ken@example.test", "no.one@example.test", "liz@example.test"],
                        message)
    assert (code, text) == (554, "554 5.1.1 Rejected by the mail system")
    qid = m.wait_log(r"([0-9A-F]{10}): to=<ken@example\.test>, .*status=bounced").group(1)
    m.wait_log(rf"{qid}: to=<no\.one@example\.test>, .*status=bounced \(host 127\.0\.0\.1\[127\.0\.0\.1\]:\d+ said: "
               r"550 5\.1\.1 <no\.one@example\.test>: Recipient address rejected: User unknown in virtual "
               r"mailbox table \(in reply to RCPT TO command\)\)")
    # smtpd opened a queue file at the first accepted RCPT and dropped it at
    # msa's RSET: it never reached qmgr.
    pf = postfix.wait_log(r"postfix/msa/smtpd\[\d+\]: ([0-9A-F]+): reject: RCPT from localhost\[127\.0\.0\.1\]: "
                          r"550 5\.1\.1 <no\.one@example\.test>").group(1)
    postfix.wait_log(rf"{pf}: client=localhost\[127\.0\.0\.1\], orig_queue_id={qid}, orig_client=unknown")
    time.sleep(1)
    assert "qmgr" not in "".join(line for line in postfix.log().splitlines() if pf in line)
    for user in ("ken", "liz"):
        assert not any(b"all-or-nothing" in got for got in postfix.delivered(user))
    assert submit(m, "alice@example.org", ["ken@example.test"], HDR + b"Subject: after\r\n\r\nx\r\n")[0] == 250


def test_connection_is_kept_for_the_next_message_and_quit_at_shutdown(postfix, start_msa):  # S-808
    m = start_msa(handoff=postfix.handoff)
    before = postfix.log().count("postfix/msa/smtpd")
    connects = len(re.findall(r"postfix/msa/smtpd\[\d+\]: connect from", postfix.log()))
    for n in range(3):
        assert submit(m, "alice@example.org", ["mike@example.test"], HDR + b"Subject: kept %d\r\n\r\nx\r\n" % n)[0] == 250
    assert len(re.findall(r"postfix/msa/smtpd\[\d+\]: connect from", postfix.log())) == connects + 1
    assert m.stop(signal.SIGTERM) == 0
    postfix.wait_log(r"postfix/msa/smtpd\[\d+\]: disconnect from localhost\[127\.0\.0\.1\] ehlo=1 xforward=3 "
                     r"mail=3 rcpt=3 data=3 quit=1 commands=14")
    assert postfix.log().count("postfix/msa/smtpd") > before


def test_msmtp_with_dsn_notify_works_through_msa(postfix, start_msa, certs, tmp_path):  # S-809, S-202
    # msmtp aborts with "the server does not support DSN" against msa with
    # the sendmail hand-off; with the SMTP hand-off DSN is offered and its
    # NOTIFY reaches Postfix.
    msmtp = shutil.which("msmtp")
    if msmtp is None:
        pytest.skip("msmtp is not installed")
    m = start_msa(handoff=postfix.handoff)
    rc = tmp_path / "msmtprc"
    rc.write_text(f"account default\nhost localhost\nport {m.ports['starttls']}\ntls on\ntls_starttls on\n"
                  f"tls_trust_file {certs.ca}\nauth off\nfrom alice@example.org\ndsn_notify failure,delay\n"
                  "dsn_return headers\n")
    rc.chmod(0o600)
    message = HDR + b"Subject: msmtp dsn\r\n\r\nfrom msmtp\r\n"
    p = subprocess.run([msmtp, "-C", str(rc), "dsn2@hold.test"], input=message, capture_output=True, timeout=60)
    assert p.returncode == 0, p.stderr
    qid = m.wait_log(r"([0-9A-F]{10}): to=<dsn2@hold\.test>, .*status=sent").group(1)
    pf = postfix_qid(m.wait_log(rf"{qid}: to=<dsn2@hold\.test>, .*").group(0))
    postfix.wait_log(rf"{pf}: to=<dsn2@hold\.test>, .*status=deferred")
    dump = postfix.postcat(pf)
    assert "named_attribute: notify_flags=12\n" in dump, dump  # FAILURE | DELAY
    assert "named_attribute: ret_flags=2\n" in dump, dump  # HDRS


def test_check_reports_what_the_mta_lacks(postfix, certs, tmp_path, fake_mta):  # S-810
    conf = msatest.write_config(tmp_path / "msa", certs, handoff=postfix.handoff, run_as=None)
    p = subprocess.run([sys.executable, msatest.MSA, "check", "-c", str(conf)], capture_output=True, text=True,
                       timeout=60)
    out = p.stdout + p.stderr
    assert p.returncode == 0, out
    # The private Postfix offers XFORWARD, DSN and SMTPUTF8; its SIZE is 1000000.
    assert re.search(r"warning: .*:\d+: handoff: 127\.0\.0\.1:\d+ offers SIZE 1000000, below max_message_size "
                     r"26214400", out), out
    assert "XFORWARD" not in out and "DSN" not in out and "SMTPUTF8" not in out
    fake_mta.extensions = ["PIPELINING"]
    conf = msatest.write_config(tmp_path / "msa2", certs, handoff=fake_mta.handoff, run_as=None)
    out = subprocess.run([sys.executable, msatest.MSA, "check", "-c", str(conf)], capture_output=True, text=True,
                         timeout=60).stdout
    for lacking in ("XFORWARD", "DSN", "SMTPUTF8"):
        assert re.search(rf"warning: .*handoff: 127\.0\.0\.1:\d+ does not offer {lacking}", out), out
    assert not any(c.startswith(("MAIL", "RCPT", "DATA")) for conn in fake_mta.connections for c in conn.commands)


def test_dkim_signed_message_through_postfix_verifies(postfix, start_msa, tmp_path):  # S-1103, S-1105
    # Both hand-offs carry the signed message: here the SMTP one, into the
    # real Postfix, whose own additions (Return-Path, Delivered-To, its
    # Received:) are not signed; the Maildir copy verifies with dkimpy.
    dkim = pytest.importorskip("dkim")
    keys = tmp_path / "keys"
    conf = msatest.write_config(tmp_path / "keyconf", None, dkim_keys=keys)
    p = subprocess.run([sys.executable, msatest.MSA, "dkim", "keygen", "example.org", "--selector", "pf",
                        "-c", str(conf)], capture_output=True, text=True, timeout=60)
    assert p.returncode == 0, p.stderr
    record = "".join(re.findall(r'"([^"]*)"', p.stdout))
    m = start_msa(handoff=postfix.handoff, dkim_keys=keys)
    message = header("nina@example.test", "dkim-through-postfix") + BODY
    code, text = submit(m, "alice@example.org", ["nina@example.test"], message)
    assert code == 250, text
    got = postfix.wait_message("nina", b"dkim-through-postfix")
    crlf = got.replace(b"\n", b"\r\n")

    def dnsfunc(name: bytes, timeout: int = 5) -> bytes:
        return record.encode() if name.decode().rstrip(".") == "pf._domainkey.example.org" else b""

    assert dkim.verify(crlf, dnsfunc=dnsfunc)
    assert not dkim.verify(crlf.replace(b"Hello Bob", b"Hello Rob"), dnsfunc=dnsfunc)
