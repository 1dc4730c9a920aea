"""End to end: real clients, a real `msa.py serve`, a recording sendmail."""

from __future__ import annotations


import pytest

from datatest import reference
from msatest import HDR, MESSAGE, Wire, smtp, strip_received


@pytest.mark.parametrize("mode", ["starttls", "tls"])
def test_smtplib_message_arrives_byte_exact(msa, mode):  # S-302, S-309, S-801, S-802
    with smtp(msa, mode) as s:
        refused = s.sendmail("alice@example.org", ["bob@example.net", "carol@example.com"], MESSAGE)
        assert refused == {}
    [d] = msa.outbox.messages()
    assert d.argv[-7:] == ["-i", "-f", "alice@example.org", "--", "bob@example.net", "carol@example.com"]
    assert strip_received(d.data) == MESSAGE
    assert msa.spool_files() == []


def test_queued_reply_names_the_queue_id(msa):  # S-309
    with smtp(msa) as s:
        s.ehlo()
        s.mail("alice@example.org")
        s.rcpt("bob@example.net")
        code, text = s.data(MESSAGE)
    assert code == 250
    qid = text.decode().split()[-1]
    assert text.decode().startswith("2.0.0 Ok: queued as ")
    msa.wait_log(rf"{qid}: to=<bob@example.net>, relay=sendmail, delay=[\d.]+, status=sent \(exit 0\)")


def test_two_messages_and_rset_in_one_session(msa):  # S-203, S-207
    with smtp(msa) as s:
        s.sendmail("alice@example.org", ["one@example.net"], HDR + b"Subject: 1\r\n\r\none\r\n")
        s.ehlo()
        s.mail("alice@example.org")
        s.rcpt("dropped@example.net")
        assert s.rset()[0] == 250
        s.sendmail("alice@example.org", ["two@example.net"], HDR + b"Subject: 2\r\n\r\ntwo\r\n")
    msgs = msa.outbox.messages()
    assert [m.recipients for m in msgs] == [["one@example.net"], ["two@example.net"]]
    assert strip_received(msgs[1].data) == HDR + b"Subject: 2\r\n\r\ntwo\r\n"


def test_pipelined_transaction_in_one_write(msa):  # S-105
    w = Wire.connect(msa.ports["tls"], tls_ctx=msa.client_ctx)
    assert w.reply()[0] == 220
    w.send(
        b"EHLO client.example\r\nMAIL FROM:<alice@example.org>\r\nRCPT TO:<bob@example.net>\r\n"
        b"RCPT TO:<carol@example.net>\r\nDATA\r\n" + HDR + b"Subject: p\r\n\r\nbody\r\n.\r\nQUIT\r\n"
    )
    codes = [w.reply()[0] for _ in range(7)]
    assert codes == [250, 250, 250, 250, 354, 250, 221]
    [d] = msa.outbox.messages()
    assert d.recipients == ["bob@example.net", "carol@example.net"]
    assert strip_received(d.data) == HDR + b"Subject: p\r\n\r\nbody\r\n"


def test_bare_lf_message_is_stored_with_crlf(msa):  # S-302
    w = Wire.connect(msa.ports["tls"], tls_ctx=msa.client_ctx)
    w.reply()
    w.expect("EHLO x.example", 250)
    w.transaction("alice@example.org", "bob@example.net")
    w.send(HDR + b"Subject: lf\n\nline one\n.dotted\nend\r\n.\r\n")
    assert w.reply()[0] == 250
    [d] = msa.outbox.messages()
    assert strip_received(d.data) == HDR + b"Subject: lf\r\n\r\nline one\r\ndotted\r\nend\r\n"


def test_thousands_of_dot_lines_arrive_byte_exact(msa):  # S-302, S-303
    body = (
        b"..x\r\n" * 5000  # stuffed CRLF lines
        + b"\n." * 5000  # dot lines after bare LFs, the last one ".\r\n"
        + b"\r\n"
        + b"..x\n" * 3000  # stuffed, with bare LFs
        + b"\r\n.." * 3000  # "." lines, stuffed
        + b"\r\nend\r\n"
    )
    stream = HDR + b"Subject: dots\r\n\r\n" + body + b".\r\n"
    expected, consumed, errors = reference(stream)
    assert (consumed, errors) == (len(stream), set())
    assert expected.count(b"\r\n.x") == 8000 and b"\n" not in expected.replace(b"\r\n", b"")
    w = Wire.connect(msa.ports["tls"], tls_ctx=msa.client_ctx)
    w.reply()
    w.expect("EHLO x.example", 250)
    w.transaction("alice@example.org", "bob@example.net")
    w.send(stream)
    assert w.reply()[0] == 250
    w.transaction("alice@example.org", "carol@example.net")  # the session goes on
    w.send(HDR + b"Subject: 2\r\n\r\n.\n..\r\n.\r\n")
    assert w.reply()[0] == 250
    first, second = msa.outbox.messages()
    assert strip_received(first.data) == expected
    assert strip_received(second.data) == HDR + b"Subject: 2\r\n\r\n\r\n.\r\n"
    assert second.recipients == ["carol@example.net"]


SMUGGLING = [b"\n.\n", b"\r\n.\n", b"\n.\r\n", b"\r.\r\n", b"\r\n.\r", b"\r.\r", b"\r.\n", b"\n.\r",
             b"\r\n\x00.\r\n", b"\r\n.\x00\r\n", b"\r\n.\r\r\n"]


@pytest.mark.parametrize("payload", SMUGGLING, ids=[p.hex() for p in SMUGGLING])
def test_smuggling_payload_delivers_at_most_one_message(msa, payload):  # S-1001, S-301, S-302, S-305, S-306
    w = Wire.connect(msa.ports["tls"], tls_ctx=msa.client_ctx)
    w.reply()
    w.expect("EHLO x.example", 250)
    w.transaction("alice@example.org", "bob@example.net")
    w.send(HDR + b"Subject: first\r\n\r\nfirst body" + payload
           + b"MAIL FROM:<alice@example.org>\r\nRCPT TO:<smuggled@evil.example>\r\nDATA\r\n"
           + HDR + b"Subject: smuggled\r\n\r\nsmuggled\r\n.\r\n")
    replies = [w.reply()]
    w.send(b"QUIT\r\n")
    while True:
        try:
            code, text = w.reply()
        except EOFError:
            break
        replies.append((code, text))
        if code == 221:
            break
    assert all(code != 354 for code, _ in replies)
    delivered = msa.outbox.messages()
    assert len(delivered) <= 1
    for d in delivered:
        assert d.recipients == ["bob@example.net"]
        assert b"smuggled@evil.example" not in " ".join(d.argv).encode()
    assert msa.spool_files() == []


def test_starttls_injection_is_discarded(msa):  # S-1002, S-401
    w = Wire.connect(msa.ports["starttls"])
    w.reply()
    w.expect("EHLO x.example", 250)
    w.send(b"STARTTLS\r\nRSET\r\n")
    code, _ = w.reply()
    assert code == 220
    w.sock = msa.client_ctx.wrap_socket(w.sock, server_hostname="localhost")
    # The RSET was never answered: the next reply is for our NOOP.
    assert w.cmd("NOOP")[1] == "250 2.0.0 Ok"
    # S-402: fresh state after TLS; MAIL needs a new EHLO.
    assert w.cmd("MAIL FROM:<alice@example.org>")[0] == 503
    msa.wait_log(r"discarded 6 bytes pipelined after STARTTLS")


def test_starttls_advertised_only_before_tls(msa):  # S-202, S-403
    w = Wire.connect(msa.ports["starttls"])
    w.reply()
    assert "STARTTLS" in w.expect("EHLO x.example", 250)
    w.starttls(msa.client_ctx)
    ehlo = w.expect("EHLO x.example", 250)
    assert "STARTTLS" not in ehlo
    assert w.cmd("STARTTLS")[1] == "503 5.5.1 TLS already active"
    t = Wire.connect(msa.ports["tls"], tls_ctx=msa.client_ctx)
    t.reply()
    assert "STARTTLS" not in t.expect("EHLO x.example", 250)


def test_recipient_starting_with_dash_is_refused(msa):  # S-206, S-1004
    w = Wire.connect(msa.ports["tls"], tls_ctx=msa.client_ctx)
    w.reply()
    w.expect("EHLO x.example", 250)
    assert w.cmd("MAIL FROM:<-oQ/tmp@example.org>")[1] == "501 5.1.7 Bad sender address syntax"
    w.expect("MAIL FROM:<alice@example.org>", 250)
    assert w.cmd("RCPT TO:<-X/tmp/log@example.net>")[1] == "501 5.1.3 Bad recipient address syntax"
    assert w.cmd("RCPT TO:<-bob@example.net>")[0] == 501
    w.expect("RCPT TO:<bob@example.net>", 250)
    w.expect("DATA", 354)
    w.send(HDR + b"Subject: x\r\n\r\nx\r\n.\r\n")
    assert w.reply()[0] == 250
    [d] = msa.outbox.messages()
    assert d.argv[d.argv.index("--") :] == ["--", "bob@example.net"]  # S-801


def test_too_many_recipients(start_msa):  # S-205
    m = start_msa(max_recipients=3)
    w = Wire.connect(m.ports["tls"], tls_ctx=m.client_ctx)
    w.reply()
    w.expect("EHLO x.example", 250)
    w.expect("MAIL FROM:<alice@example.org>", 250)
    for i in range(3):
        w.expect(f"RCPT TO:<r{i}@example.net>", 250)
    w.expect("RCPT TO:<r0@EXAMPLE.NET>", 250)  # a duplicate: accepted, passed once
    assert w.cmd("RCPT TO:<r3@example.net>")[1] == "452 4.5.3 Too many recipients"
    w.expect("DATA", 354)
    w.send(HDR + b"Subject: x\r\n\r\nx\r\n.\r\n")
    assert w.reply()[0] == 250
    [d] = m.outbox.messages()
    assert d.recipients == ["r0@example.net", "r1@example.net", "r2@example.net"]
    m.wait_log(r"reject: RCPT from unknown\[127\.0\.0\.1\]:\d+: 452 4\.5\.3 Too many recipients; "
               r"from=<alice@example\.org> to=<r3@example\.net> helo=<x\.example>")


def test_size_refused_at_mail_and_after_data(start_msa):  # S-204, S-304
    m = start_msa(max_message_size=2000)
    w = Wire.connect(m.ports["tls"], tls_ctx=m.client_ctx)
    w.reply()
    assert "SIZE 2000" in w.expect("EHLO x.example", 250)
    assert w.cmd("MAIL FROM:<alice@example.org> SIZE=2001")[1] == "552 5.3.4 Message size exceeds fixed limit"
    w.expect("MAIL FROM:<alice@example.org> SIZE=1000", 250)
    w.expect("RCPT TO:<bob@example.net>", 250)
    w.expect("DATA", 354)
    w.send(HDR + b"Subject: big\r\n\r\n" + b"x" * 78 + b"\r\n")
    w.send((b"y" * 78 + b"\r\n") * 100 + b".\r\n")
    assert w.reply()[1] == "552 5.3.4 Message size exceeds fixed limit"
    w.expect("NOOP", 250)  # the rest was read, not taken as commands
    assert m.outbox.messages() == []
    assert m.spool_files() == []


def test_too_long_command_line(msa):  # S-102
    w = Wire.connect(msa.ports["starttls"])
    w.reply()
    w.send(b"NOOP " + b"a" * 5000 + b"\r\n")
    assert w.reply()[1] == "500 5.5.2 Line too long"
    w.send(b"NOOP " + b"a" * 2041 + b"\r\n")  # 2048 with CRLF: allowed
    assert w.reply()[0] == 250
    w.send(b"NOOP " + b"a" * 2042 + b"\r\n")
    assert w.reply()[1] == "500 5.5.2 Line too long"


def test_line_of_64_mib_without_newline_keeps_memory_bounded(msa):  # S-102, S-1008
    w = Wire.connect(msa.ports["starttls"])
    w.reply()
    before = msa.rss_kib()
    msa.reset_hwm()
    block = b"A" * (1 << 20)
    for _ in range(64):
        w.send(block)
    w.send(b"\r\n")
    assert w.reply()[1] == "500 5.5.2 Line too long"
    assert w.cmd("NOOP")[0] == 250
    assert msa.hwm_kib() - before < 16 * 1024


def test_too_many_errors_closes(msa):  # S-106
    w = Wire.connect(msa.ports["starttls"])
    w.reply()
    for _ in range(9):
        assert w.cmd("BOGUS")[1] == "500 5.5.2 Command unrecognized"
    w.send(b"BOGUS\r\n")
    assert w.reply()[0] == 500
    assert w.reply()[1] == "421 4.7.0 msa.test Error: too many errors"
    assert w.closed()


def test_http_request_is_cut(msa):  # S-107, S-1014
    w = Wire.connect(msa.ports["starttls"])
    w.reply()
    w.send(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
    assert w.reply()[1] == "421 4.7.0 msa.test Not an SMTP client"
    assert w.closed()


def test_untrusted_client_needs_auth(start_msa):  # S-204, S-1011
    m = start_msa(trusted_networks="")
    w = Wire.connect(m.ports["tls"], tls_ctx=m.client_ctx)
    w.reply()
    w.expect("EHLO x.example", 250)
    assert w.cmd("MAIL FROM:<alice@example.org>")[1] == "530 5.7.0 Authentication required"
    assert w.cmd("RCPT TO:<bob@example.net>")[0] == 503
    assert w.cmd("DATA")[0] == 503
    w.send(HDR + b"Subject: x\r\n\r\nx\r\n.\r\n")
    assert w.reply()[0] == 500
    assert m.outbox.messages() == []
