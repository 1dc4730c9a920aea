"""The message msa hands on (SPEC.md §6-§7), over the wire: From:/Sender:
checks for authenticated users, Date/Message-ID/From added, Bcc dropped,
Received prepended, everything else byte-exact."""

from __future__ import annotations

import email
import email.policy
import email.utils
import re

import pytest

import msatest
from msatest import Wire, b64, strip_received

PW = "alice pw"


@pytest.fixture
def users(tmp_path):
    path = tmp_path / "users.db"
    msatest.add_user(path, "alice", PW, ["alice@example.org"])
    return path


@pytest.fixture
def amsa(start_msa, users):
    return start_msa(users=users, trusted_networks="")


def _session(m, login=True, helo="client.example", source=None) -> Wire:
    w = Wire.connect(m.ports["tls"], tls_ctx=m.client_ctx, source=source)
    w.reply()
    w.expect(f"EHLO {helo}", 250)
    if login:
        w.expect("AUTH PLAIN " + b64("\0alice\0" + PW), 235)
    return w


def _submit(w: Wire, message: bytes, rcpts=("bob@example.net",), sender="alice@example.org", params="") -> tuple[int, str]:
    w.expect(f"MAIL FROM:<{sender}>{params}", 250)
    for r in rcpts:
        w.expect(f"RCPT TO:<{r}>", 250)
    w.expect("DATA", 354)
    w.send(msatest.stuff(message) + b".\r\n")
    return w.reply()


def _header(data: bytes) -> bytes:
    return data.split(b"\r\n\r\n", 1)[0] + b"\r\n"


def test_client_without_date_and_message_id_gets_both(amsa):  # S-705, S-706, S-704
    msg = (b"From: Alice <alice@example.org>\r\nTo: bob@example.net\r\nCc: carol@example.net\r\n"
           b"Bcc: secret@example.net,\r\n hidden@example.net\r\nSubject: hi\r\n\r\nbody\r\n")
    code, text = _submit(_session(amsa), msg)
    assert code == 250
    qid = text.split()[-1]
    [d] = amsa.outbox.messages()
    header = _header(d.data)
    assert b"Bcc" not in header and b"hidden@" not in header
    parsed = email.message_from_bytes(d.data, policy=email.policy.default)
    assert email.utils.parsedate_to_datetime(parsed["Date"]).tzinfo is not None
    assert re.fullmatch(rf"<\d{{14}}\.{qid}\.[A-Za-z0-9]+@msa\.test>", parsed["Message-ID"])
    assert parsed["To"] == "bob@example.net" and parsed["Cc"] == "carol@example.net"
    first = d.data.split(b"\r\n")
    assert first[0] == b"Received: from client.example ([127.0.0.1])"
    assert first[1].startswith(b"\t(using TLSv1.")
    assert first[2] == f"\tby msa.test (msa) with ESMTPSA id {qid}".encode()
    assert first[3].startswith(b"\tfor <bob@example.net>; ")
    assert d.data.endswith(b"\r\n\r\nbody\r\n")


def test_existing_fields_are_kept_byte_exact(amsa):  # S-704, S-708
    msg = msatest.MESSAGE.replace(b"From: Alice <alice@example.org>", b"From:   Alice   <alice@example.org>  ")
    _submit(_session(amsa), msg)
    [d] = amsa.outbox.messages()
    assert strip_received(d.data) == msg


@pytest.mark.parametrize(
    "header, reply",
    [
        (b"From: ceo@bank.example\r\n", "550 5.7.1 From: address <ceo@bank.example> not owned by user alice"),
        (b"From: \"alice@example.org\" <ceo@bank.example>\r\n", "550 5.7.1 From: address <ceo@bank.example> not owned by user alice"),
        (b"From: alice@example.org, ceo@bank.example\r\n", "550 5.7.1 From: address <ceo@bank.example> not owned by user alice"),
        (b"From: alice@example.org\r\nSender: ceo@bank.example\r\n", "550 5.7.1 From: address <ceo@bank.example> not owned by user alice"),
        (b"From: alice@example.org\r\nResent-From: ceo@bank.example\r\n", "550 5.7.1 From: address <ceo@bank.example> not owned by user alice"),
        (b"From: alice@example.org\r\nFrom: ceo@bank.example\r\n", "554 5.6.0 Cannot verify From: header"),
        (b"From: alice@example.org)<ceo@bank.example>\r\n", "554 5.6.0 Cannot verify From: header"),
        (b"From: ceo@bank.example <alice@example.org>\r\n", "554 5.6.0 Cannot verify From: header"),
        (b"From: Team:;\r\n", "554 5.6.0 Cannot verify From: header"),
    ],
)
def test_header_sender_not_owned_is_refused(amsa, header, reply):  # S-602, S-702, S-1010
    code, text = _submit(_session(amsa), header + b"Subject: x\r\n\r\nbody\r\n")
    assert text == reply
    assert amsa.outbox.messages() == []
    assert amsa.spool_files() == []


@pytest.mark.parametrize(
    "header",
    [
        b"From: =?utf-8?q?Al=C3=AFce?= <alice@example.org>\r\n",
        b"From: alice@example.org (Alice)\r\n",
        b"From: Team: alice@example.org;\r\n",
        b"From: \"Alice, Ops\" <ALICE@Example.ORG>\r\n",
    ],
)
def test_header_sender_owned_forms_pass(amsa, header):  # S-602, S-702
    code, text = _submit(_session(amsa), header + b"Subject: x\r\n\r\nbody\r\n")
    assert code == 250, text


def test_trusted_clients_are_not_checked(start_msa, users):  # S-602, S-706
    m = start_msa(users=users, trusted_networks="127.0.0.1/32")
    w = _session(m, login=False)
    code, _ = _submit(w, b"From: ceo@bank.example\r\nSubject: cron\r\n\r\nok\r\n", sender="root@localhost")
    assert code == 250
    [d] = m.outbox.messages()
    assert b"with ESMTPS id" in d.data.split(b"\r\n\r\n")[0]


def test_received_client_no_hides_the_client(start_msa, users):  # S-706, CONTRACT received_client
    m = start_msa(users=users, trusted_networks="", received_client="no")
    _, text = _submit(_session(m), msatest.MESSAGE)
    [d] = m.outbox.messages()
    lines = d.data.split(b"\r\n")
    assert lines[0] == f"Received: by msa.test (msa) with ESMTPSA id {text.split()[-1]}".encode()
    assert lines[1].startswith(b"\t(using TLSv1.")
    assert b"127.0.0.1" not in _header(d.data)


def test_utf8_and_8bit_pass_byte_exact(amsa):  # S-703, S-706, S-708
    msg = ("From: Alice <alice@example.org>\r\nSubject: Grüße aus Köln\r\nDate: Wed, 25 Nov 2026 18:48:03 +0100\r\n"
           "Message-ID: <u@example.org>\r\n\r\n").encode() + b"8-bit body \xe4\xf6\xfc \xff\r\n"
    code, _ = _submit(_session(amsa), msg, rcpts=("bøb@exämple.net",), params=" BODY=8BITMIME SMTPUTF8")
    assert code == 250
    [d] = amsa.outbox.messages()
    assert strip_received(d.data) == msg
    assert b"with UTF8SMTPSA id" in d.data
    assert d.recipients == ["bøb@exämple.net"]


def test_hostile_helo_never_makes_a_header_line(amsa):  # S-707, S-1005
    w = _session(amsa, helo="evil](x)Bcc:everyone@example.org")
    _submit(w, msatest.MESSAGE, rcpts=("a@example.net", "b@example.net"))
    [d] = amsa.outbox.messages()
    header = _header(d.data)
    assert header.split(b"\r\n")[0] == b"Received: from [127.0.0.1] (helo=evil??x?Bcc:everyone?example.org)"
    # Every header line is a field or a continuation, and nothing new but Received.
    names = [line.split(b":")[0] for line in header.split(b"\r\n") if line and line[:1] not in b" \t"]
    assert names == [b"Received", b"From", b"To", b"Subject", b"Date", b"Message-ID"]
    assert b"for <" not in header  # two recipients: no for clause


def test_header_too_large(amsa):  # S-703
    msg = b"From: alice@example.org\r\n" + b"X-Filler: a\r\n" * 2000 + b"\r\nbody\r\n"
    assert _submit(_session(amsa), msg)[1] == "552 5.3.4 Message header too large"
    assert amsa.outbox.messages() == []


def test_message_without_separator_gets_one(amsa):  # S-701
    msg = b"From: alice@example.org\r\nSubject: x\r\nthis line is body, not a field\r\nmore\r\n"
    assert _submit(_session(amsa), msg)[0] == 250
    [d] = amsa.outbox.messages()
    assert d.data.endswith(b"\r\n\r\nthis line is body, not a field\r\nmore\r\n")


def test_missing_from_is_added_from_the_envelope(amsa):  # S-705
    assert _submit(_session(amsa), b"Subject: no from\r\n\r\nx\r\n")[0] == 250
    [d] = amsa.outbox.messages()
    assert b"\r\nFrom: <alice@example.org>\r\n" in _header(d.data) or b"\r\nFrom: alice@example.org\r\n" in _header(d.data)
    w = _session(amsa)
    assert _submit(w, b"Subject: no from\r\n\r\nx\r\n", sender="")[1] == "554 5.6.0 Message has no From: header"


@pytest.mark.parametrize("bad", [b"\x00", b"a\rb"], ids=["nul", "bare-cr"])
def test_nul_or_bare_cr_in_a_header_line_refuses_the_message(amsa, bad):  # S-306, S-305, S-701
    # The header layer reads what DATA stored; a NUL or a bare CR anywhere in
    # DATA, the header included, refuses the whole message at its end, so no
    # such header line is ever fixed, signed or handed on.
    msg = b"From: alice@example.org\r\n\t" + bad + b"\r\nSubject: x\r\n\r\nbody\r\n"
    code, text = _submit(_session(amsa), msg)
    assert code == 554 and "5.6.0" in text, text
    assert amsa.outbox.messages() == []
