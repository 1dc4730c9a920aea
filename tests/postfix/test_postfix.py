"""msa handing mail to a REAL Postfix (SPEC.md §8, CONTRACT.md "Handing mail
to the MTA"): a private instance (conftest.py) with virtual Maildirs for
example.test, reached through `/usr/sbin/sendmail -C DIR`."""

from __future__ import annotations

import re
import subprocess
import sys
import time


import msatest
from msatest import HDR, Wire

PASSWORD = "correct horse battery"

#: Dot lines (".x", "..x", a lone "."), a line after the lone dot (which a
#: sendmail without -i would take as the end), UTF-8 and a raw 8-bit octet.
BODY = (
    b"Hello Bob,\r\n"
    b".a line that starts with a dot\r\n"
    b"..two dots\r\n"
    b".\r\n"
    b"\r\n"
    b"Gr\xc3\xbc\xc3\x9fe aus K\xc3\xb6ln \xe2\x98\x83\r\n"
    b"latin-1 caf\xe9\r\n"
    b"bye\r\n"
)


def header(to: str, subject: str) -> bytes:
    return (
        b"From: Alice <alice@example.org>\r\n"
        + f"To: {to}\r\nSubject: {subject}\r\n".encode()
        + b"Date: Wed, 25 Nov 2026 18:48:03 +0100\r\n"
        + f"Message-ID: <{subject}@example.org>\r\n".encode()
        + b"MIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\n"
        b"Content-Transfer-Encoding: 8bit\r\n\r\n"
    )


def split_fields(delivered: bytes) -> tuple[list[bytes], bytes]:
    """A Maildir file (LF line ends) as its header fields (each with its
    continuation lines, LF kept) and its body."""
    head, sep, body = delivered.partition(b"\n\n")
    assert sep, delivered
    fields: list[bytes] = []
    for line in head.split(b"\n"):
        if line[:1] in (b" ", b"\t"):
            fields[-1] += b"\n" + line
        else:
            fields.append(line)
    return fields, body


def lf(data: bytes) -> bytes:
    return data.replace(b"\r\n", b"\n")


def submit(port: int, ctx, sender: str, rcpts: list[str], message: bytes, *, tls: bool = False,
           auth: str | None = None, helo: str = "client.example", source: str | None = None,
           mail_params: str = "", rcpt_params: str = "") -> tuple[int, str]:
    """One transaction on the raw wire; the reply to the final dot."""
    w = Wire.connect(port, tls_ctx=ctx if tls else None, timeout=30, source=source)
    try:
        assert w.reply()[0] == 220
        w.expect(f"EHLO {helo}", 250)
        if not tls:
            w.starttls(ctx)
            w.expect(f"EHLO {helo}", 250)
        if auth:
            w.expect("AUTH PLAIN " + msatest.b64("\0" + auth + "\0" + PASSWORD), 235)
        w.expect(f"MAIL FROM:<{sender}> BODY=8BITMIME{mail_params}", 250)
        for r in rcpts:
            w.expect(f"RCPT TO:<{r}>{rcpt_params}", 250)
        w.expect("DATA", 354)
        w.send(msatest.stuff(message) + b".\r\n")
        result = w.reply()
        w.cmd("QUIT")
        return result
    finally:
        w.close()


def queue_id(text: str) -> str:
    m = re.fullmatch(r"250 2\.0\.0 Ok: queued as (\S+)", text)
    assert m, text
    return m.group(1)


POSTFIX_RECEIVED = re.compile(
    rb"Received: by msa-postfix\.test \(Postfix, from userid 0\)\n\tid ([0-9A-F]+); [^\n]+"
)


# -- 1. a message arrives, intact ---------------------------------------------------------
def test_message_is_delivered_by_postfix_intact(postfix, start_msa, tmp_path):
    # S-801 (-i -f SENDER -- RCPT, reduced environment: -C carries the config),
    # S-802 (CRLF, no dot-stuffing: Postfix's sendmail -i keeps every dot line
    # and turns CRLF into its own LF), S-706 (msa's Received: first), S-309.
    users = tmp_path / "users.db"
    msatest.add_user(users, "alice", PASSWORD, ["alice@example.org"])
    m = start_msa(sendmail=postfix.sendmail, users=users, trusted_networks="")
    message = header("bob@example.test", "intact") + BODY
    code, text = submit(m.ports["starttls"], m.client_ctx, "alice@example.org", ["bob@example.test"],
                        message, auth="alice")
    assert code == 250, text
    qid = queue_id(text)
    m.wait_log(rf"{qid}: to=<bob@example\.test>, relay=sendmail, delay=[\d.]+, status=sent \(exit 0\)")

    [got] = postfix.wait_delivered("bob")
    fields, body = split_fields(got)
    # What Postfix prepends at delivery, in its order, then its own Received:
    # (pickup, from the uid msa ran sendmail as) ABOVE msa's.
    assert fields[0] == b"Return-Path: <alice@example.org>"  # the envelope sender, -f
    assert fields[1] == b"X-Original-To: bob@example.test"
    assert fields[2] == b"Delivered-To: bob@example.test"
    pf = POSTFIX_RECEIVED.fullmatch(fields[3])
    assert pf, fields[3]
    postfix.wait_log(rf"postfix/pickup\[\d+\]: {pf.group(1).decode()}: uid=0 from=<alice@example\.org>")
    postfix.wait_log(rf"postfix/virtual\[\d+\]: {pf.group(1).decode()}: to=<bob@example\.test>, "
                     r"relay=virtual, .*status=sent \(delivered to maildir\)")
    # msa's Received: (S-706), byte for byte but for the cipher and the date.
    assert re.fullmatch(
        rb"Received: from client\.example \(\[127\.0\.0\.1\]\)\n"
        rb"\t\(using TLSv1\.[23] with cipher [A-Z0-9_-]+\)\n"
        rb"\tby msa\.test \(msa\) with ESMTPSA id " + qid.encode() + rb"\n"
        rb"\tfor <bob@example\.test>; [A-Z][a-z]{2}, \d{1,2} [A-Z][a-z]{2} \d{4} \d\d:\d\d:\d\d [+-]\d{4}",
        fields[4],
    ), fields[4]
    # Everything after the two Received: fields is what the client sent
    # (S-704, S-708), header and body, dot lines and 8-bit octets intact.
    assert b"\n".join(fields[5:]) + b"\n\n" + body == lf(message)
    assert b"\n.\n\nGr\xc3\xbc\xc3\x9fe aus K\xc3\xb6ln \xe2\x98\x83\nlatin-1 caf\xe9\nbye\n" in body
    assert m.spool_files() == []  # S-803: removed in every case


def test_two_recipients_one_hand_off(postfix, start_msa):
    # S-801: one sendmail run with both recipients after "--"; S-706: no
    # "for" clause with more than one recipient. Trusted network: ESMTPS.
    m = start_msa(sendmail=postfix.sendmail)
    message = HDR + b"Subject: two\r\n\r\nfor both\r\n"
    code, text = submit(m.ports["tls"], m.client_ctx, "alice@example.org",
                        ["carol@example.test", "dave@example.test"], message, tls=True)
    assert code == 250, text
    qid = queue_id(text)
    for user in ("carol", "dave"):
        [got] = postfix.wait_delivered(user)
        fields, body = split_fields(got)
        assert fields[0] == b"Return-Path: <alice@example.org>"
        assert fields[1] == f"X-Original-To: {user}@example.test".encode()
        assert POSTFIX_RECEIVED.fullmatch(fields[3]), fields[3]
        assert re.fullmatch(
            rb"Received: from client\.example \(\[127\.0\.0\.1\]\)\n"
            rb"\t\(using TLSv1\.[23] with cipher [A-Z0-9_-]+\)\n"
            rb"\tby msa\.test \(msa\) with ESMTPS id " + qid.encode() + rb";\n"
            rb"\t[A-Z][a-z]{2}, \d{1,2} [A-Z][a-z]{2} \d{4} \d\d:\d\d:\d\d [+-]\d{4}",
            fields[4],
        ), fields[4]
        assert b"\n".join(fields[5:]) + b"\n\n" + body == lf(message)


# -- 2. Postfix stopped; Postfix's queue unusable -----------------------------------------
def test_postfix_stopped_message_waits_in_maildrop(postfix, start_msa):
    # What Postfix's sendmail does when the instance is stopped: postdrop
    # still writes the message into the queue's maildrop/ directory (it only
    # fails to wake pickup) and sendmail exits 0. The message is then queued
    # durably, so msa rightly answers 250 (S-309, S-803: exit 0), and it is
    # delivered when Postfix starts again: nothing is lost.
    m = start_msa(sendmail=postfix.sendmail)
    message = HDR + b"Subject: stopped\r\n\r\nqueued while Postfix was down\r\n.\r\nstill here\r\n"
    postfix.stop()
    try:
        assert not postfix.running()
        code, text = submit(m.ports["tls"], m.client_ctx, "alice@example.org", ["erin@example.test"],
                            message, tls=True)
        assert code == 250, text
        qid = queue_id(text)
        m.wait_log(rf"{qid}: to=<erin@example\.test>, relay=sendmail, delay=[\d.]+, status=sent \(exit 0\)")
        assert len(postfix.maildrop()) == 1  # held by Postfix, not by msa
        assert m.spool_files() == []
        assert postfix.delivered("erin") == []
    finally:
        postfix.start()
    [got] = postfix.wait_delivered("erin")
    fields, body = split_fields(got)
    assert fields[0] == b"Return-Path: <alice@example.org>"
    assert b"by msa.test (msa) with ESMTPS id " + qid.encode() in fields[4]
    assert body == b"queued while Postfix was down\n.\nstill here\n"
    assert postfix.maildrop() == []


def test_postfix_queue_missing_is_a_temporary_failure(postfix, start_msa, tmp_path):
    # Postfix's sendmail with a config whose queue_directory does not exist:
    # "fatal: chdir ...: No such file or directory", exit 75 (EX_TEMPFAIL),
    # which S-803 maps to 451 4.3.0. Nothing is delivered, msa's spool is
    # empty (S-803), and the message never reached the real queue.
    broken = tmp_path / "broken-etc"
    postfix.write_config(broken, queue=postfix.root / "no-such-queue")
    m = start_msa(sendmail=f"/usr/sbin/sendmail -C {broken}")
    message = HDR + b"Subject: broken\r\n\r\nmust not arrive\r\n"
    code, text = submit(m.ports["tls"], m.client_ctx, "alice@example.org", ["frank@example.test"],
                        message, tls=True)
    assert (code, text) == (451, "451 4.3.0 Temporary failure handing the message on; try again later")
    m.wait_log(r"to=<frank@example\.test>, relay=sendmail, delay=[\d.]+, status=deferred \(exit 75\)")
    m.wait_log(r"sendmail said: .*chdir.*no-such-queue")
    assert m.spool_files() == []
    postfix.flush()
    time.sleep(0.5)
    assert postfix.delivered("frank") == []
    assert postfix.maildrop() == []
    assert "frank@example.test" not in postfix.log()


# -- 3. the null sender --------------------------------------------------------------------
def test_null_sender_reaches_postfix_as_null_sender(postfix, start_msa):
    # S-801: msa runs `sendmail ... -f <> -- RCPT`; Postfix's sendmail reads
    # "<>" as the null sender, so the delivered message has Return-Path: <>.
    m = start_msa(sendmail=postfix.sendmail)
    message = HDR + b"Subject: read receipt\r\n\r\nyour message was read\r\n"
    code, text = submit(m.ports["tls"], m.client_ctx, "", ["grace@example.test"], message, tls=True)
    assert code == 250, text
    qid = queue_id(text)
    [got] = postfix.wait_delivered("grace")
    fields, body = split_fields(got)
    assert fields[0] == b"Return-Path: <>"
    pf = POSTFIX_RECEIVED.fullmatch(fields[3])
    assert pf, fields[3]
    postfix.wait_log(rf"postfix/qmgr\[\d+\]: {pf.group(1).decode()}: from=<>, size=\d+, nrcpt=1")
    assert b"by msa.test (msa) with ESMTPS id " + qid.encode() in fields[4]
    assert b"\n".join(fields[5:]) + b"\n\n" + body == lf(message)


# -- 4. what Postfix refuses ---------------------------------------------------------------
def test_unknown_recipient_is_refused_later_as_a_bounce(postfix, start_msa):
    # Postfix's sendmail cannot refuse a recipient synchronously: it only
    # queues (postdrop); recipients are judged after pickup. So an address
    # Postfix does not know (no Maildir in virtual_mailbox_maps) gets 250
    # from msa (sendmail exit 0, S-803), and Postfix bounces it to the
    # envelope sender. A synchronous 5xx for a recipient (S-803's 67
    # EX_NOUSER) cannot be provoked with Postfix; the recording sendmail of
    # the integration tests covers that mapping.
    m = start_msa(sendmail=postfix.sendmail)
    message = HDR + b"Subject: nobody home\r\n\r\nto an unknown user\r\n"
    code, text = submit(m.ports["tls"], m.client_ctx, "heidi@example.test", ["no.such.user@example.test"],
                        message, tls=True)
    assert code == 250, text
    [bounce] = postfix.wait_delivered("heidi")
    fields, body = split_fields(bounce)
    assert fields[0] == b"Return-Path: <>"
    assert b"Subject: Undelivered Mail Returned to Sender" in fields
    assert b"<no.such.user@example.test>: unknown user" in body
    assert b"Subject: nobody home" in body  # the returned message


def test_message_over_postfix_size_limit_is_a_temporary_failure(postfix, start_msa):
    # The one thing Postfix's sendmail refuses synchronously here: more than
    # message_size_limit (1000000 in the private main.cf) octets. postdrop
    # hits its file size limit ("File too large"), sendmail says "message
    # file too big" and exits 75, so msa answers 451 4.3.0 (S-803) although
    # its own max_message_size (default 25 MiB) allows the message. The
    # client would retry in vain: exactly what S-805's check warns about.
    # Postfix's maildrop keeps no partial file; msa's spool is empty.
    m = start_msa(sendmail=postfix.sendmail)
    message = HDR + b"Subject: big\r\n\r\n" + b"x" * 998 + b"\r\n" + (b"y" * 76 + b"\r\n") * 14000
    assert 1_000_000 < len(message) < 26214400
    code, text = submit(m.ports["tls"], m.client_ctx, "alice@example.org", ["ivan@example.test"],
                        message, tls=True)
    assert (code, text) == (451, "451 4.3.0 Temporary failure handing the message on; try again later")
    m.wait_log(r"to=<ivan@example\.test>, relay=sendmail, delay=[\d.]+, status=deferred \(exit 75\)")
    m.wait_log(r"sendmail said: .*message file too big")
    assert m.spool_files() == []
    postfix.flush()
    time.sleep(0.3)
    assert postfix.maildrop() == []
    assert postfix.delivered("ivan") == []


# -- 5. msa.py check and Postfix's message_size_limit --------------------------------------
def test_check_warns_about_postfix_message_size_limit(postfix, certs, tmp_path):
    # S-805: Postfix's message_size_limit (1000000) is below max_message_size
    # (2000000, chosen below Postfix's built-in default 10240000 so that only
    # the private instance's value can cause the warning).
    conf = msatest.write_config(tmp_path / "msa", certs, sendmail=postfix.sendmail,
                                max_message_size=2000000, run_as=None)
    p = subprocess.run([sys.executable, msatest.MSA, "check", "-c", str(conf)],
                       capture_output=True, text=True, timeout=60)
    out = p.stdout + p.stderr
    assert p.returncode == 0, out
    assert re.search(r"warning: .*Postfix's message_size_limit is 1000000, below max_message_size 2000000",
                     out), out


# -- 6. one accepted RCPT is one recipient at the MTA ---------------------------------------
#: Recipients msa's grammar accepts (S-206) whose text holds what an address
#: list parser could split on: Postfix's sendmail parses each command-line
#: argument as an RFC 822 address list (tok822), so any of these reaching
#: it as more than one mailbox would deliver to addresses msa never
#: accepted and never logged.
HOSTILE_RECIPIENTS = [
    '"a,b"@example.test',
    '"a;b"@example.test',
    '"a(b"@example.test',
    '"a)b"@example.test',
    '"a<b"@example.test',
    '"a>b"@example.test',
    '"a b, c d"@example.test',
    '"a:b"@example.test',
    '"a@b,c@d"@example.test',
    '"a\\"b,c"@example.test',
    '"a\\\\,b"@example.test',
    '"\\,"@example.test',
    '""@example.test',
    '" "@example.test',
    '"[x]"@example.test',
    '"bob@example.test,carol@example.test"@example.test',
    'a!carol@example.test',
    'a%carol@example.test',
    "a|b@example.test",
    "#a@example.test",
    "{a}=b'c@example.test",
    "a/b?c^d`e~f@example.test",
    "bob@[127.0.0.1]",
    "bob@[IPv6:::1]",
    "@relay.example,@other.example:dave@example.test",
    '"' + ",(" * 31 + '"@example.test',  # 64 octets: the longest local part
    "l" * 64 + "@example.test",
]
HOSTILE_UTF8_RECIPIENTS = [
    '"ü,ö;(x)"@example.test',
    "用户,@example.test".replace(",", ""),  # a plain UTF-8 dot-string
    '"用户, 其他"@example.test',
    "ü!carol@example.test",
]


def _submit_many(port: int, ctx, sender: str, rcpts: list[str], message: bytes, *, smtputf8: bool) -> tuple[int, int, str]:
    """One transaction over implicit TLS from the trusted network: how many
    RCPTs got 250, and the reply to the final dot."""
    w = Wire.connect(port, tls_ctx=ctx, timeout=30)
    try:
        assert w.reply()[0] == 220
        w.expect("EHLO client.example", 250)
        w.expect(f"MAIL FROM:<{sender}>" + (" SMTPUTF8" if smtputf8 else ""), 250)
        accepted = 0
        for r in rcpts:
            code, text = w.cmd(f"RCPT TO:<{r}>".encode())
            assert code == 250, (r, text)  # each is syntactically valid (S-206)
            accepted += 1
        w.expect("DATA", 354)
        w.send(msatest.stuff(message) + b".\r\n")
        code, text = w.reply()
        w.cmd("QUIT")
        return accepted, code, text
    finally:
        w.close()


def test_one_accepted_rcpt_is_one_recipient_at_postfix(postfix, start_msa):
    # S-206, S-1004: for every hostile but accepted recipient, the number of
    # recipients Postfix queued (qmgr's nrcpt=) equals the number msa
    # accepted, and each is handed on as one argument after "--".
    # The sender, on the command line after -f, is hostile too: Postfix must
    # log it as msa accepted it.
    m = start_msa(sendmail=postfix.sendmail, max_recipients=100)
    cases = [(HOSTILE_RECIPIENTS, False, '"invariant0,x;y(z)<w> v"@example.org'),
             (HOSTILE_UTF8_RECIPIENTS, True, '"invariant1\\"q,ü"@example.org')]
    for n, (rcpts, utf8, sender) in enumerate(cases):
        message = HDR + f"Subject: invariant {n}\r\n\r\nhostile recipients\r\n".encode()
        accepted, code, text = _submit_many(m.ports["tls"], m.client_ctx, sender, rcpts, message, smtputf8=utf8)
        assert code == 250, text
        qid = queue_id(text)
        assert accepted == len(set(rcpts))
        m.wait_log(rf"{qid}: from=<{re.escape(sender)}>, size=\d+, nrcpt={accepted}\b")
        pickup = postfix.wait_log(rf"postfix/pickup\[\d+\]: ([0-9A-F]+): uid=0 from=<{re.escape(sender)}>")
        pf_qid = pickup.group(1)
        queued = postfix.wait_log(rf"postfix/qmgr\[\d+\]: {pf_qid}: from=<{re.escape(sender)}>, size=\d+, nrcpt=(\d+)")
        assert int(queued.group(1)) == accepted, postfix.log()


def test_zone_id_and_general_literals_are_refused(postfix, start_msa):
    # S-206: the recipient of the issue ("x@[IPv6:::1%x],example.test!bob,...")
    # is refused with 501 5.1.3, so nothing reaches Postfix for it; the
    # message still goes to the other, valid recipient.
    m = start_msa(sendmail=postfix.sendmail)
    w = Wire.connect(m.ports["tls"], tls_ctx=m.client_ctx, timeout=30)
    try:
        assert w.reply()[0] == 220
        w.expect("EHLO client.example", 250)
        w.expect("MAIL FROM:<zone@example.org>", 250)
        for bad in ("x@[IPv6:::1%x],example.test!bob,carol@example.test", "x@[IPv6:fe80::1%eth0]",
                    "x@[tag:bob@example.test,carol@example.test]"):
            assert w.cmd(f"RCPT TO:<{bad}>") == (501, "501 5.1.3 Bad recipient address syntax")
        w.expect("RCPT TO:<dave@example.test>", 250)
        w.expect("DATA", 354)
        w.send(HDR + b"Subject: zone\r\n\r\nonly dave\r\n.\r\n")
        code, text = w.reply()
        assert code == 250, text
    finally:
        w.close()
    pickup = postfix.wait_log(r"postfix/pickup\[\d+\]: ([0-9A-F]+): uid=0 from=<zone@example\.org>")
    postfix.wait_log(rf"postfix/qmgr\[\d+\]: {pickup.group(1)}: from=<zone@example\.org>, size=\d+, nrcpt=1 ")
    deadline = time.monotonic() + 15
    while not any(b"only dave" in got for got in postfix.delivered("dave")):
        assert time.monotonic() < deadline, postfix.log()
        time.sleep(0.05)
    for other in ("bob", "carol"):
        assert not any(b"only dave" in got for got in postfix.delivered(other))
