"""The SMTP client core against a scripted MTA, in memory (SPEC.md S-806 to S-809)."""

from __future__ import annotations

import pytest

from smtp_states import replies as R
from smtp_states.client import (
    Client,
    ClientState,
    Closed,
    Delivered,
    Extensions,
    Lost,
    MtaReply,
    Note,
    Outgoing,
    Ready,
    Rejected,
    SendBody,
    Unavailable,
    client_reply,
    xtext,
)

POSTFIX_EHLO = (
    b"250-mta.test\r\n250-PIPELINING\r\n250-SIZE 10240000\r\n250-VRFY\r\n250-ETRN\r\n"
    b"250-XFORWARD NAME ADDR PROTO HELO SOURCE PORT IDENT\r\n250-ENHANCEDSTATUSCODES\r\n"
    b"250-8BITMIME\r\n250-DSN\r\n250-SMTPUTF8\r\n250 CHUNKING\r\n"
)
PLAIN_EHLO = b"250-mta.test\r\n250 8BITMIME\r\n"


def ready(ehlo: bytes = POSTFIX_EHLO) -> Client:
    c = Client("msa.test")
    assert c.receive(b"220 mta.test ESMTP Postfix\r\n") == []
    assert c.data_to_send() == b"EHLO msa.test\r\n"
    [ev] = c.receive(ehlo)
    assert isinstance(ev, Ready) and c.state is ClientState.READY
    return c


def out(**kw) -> Outgoing:
    base = dict(sender="alice@example.org", recipients=("bob@example.net", "carol@example.net"), size=1234)
    base.update(kw)
    return Outgoing(**base)


def test_extensions_of_a_postfix_ehlo():  # S-806
    c = ready()
    assert c.extensions == Extensions(
        pipelining=True, size=10240000, eightbitmime=True, smtputf8=True, dsn=True,
        xforward=frozenset({"NAME", "ADDR", "PROTO", "HELO", "SOURCE", "PORT", "IDENT"}),
    )


def test_pipelined_transaction_byte_for_byte():  # S-806, S-807: DATA only after every RCPT
    c = ready()
    xf = (("NAME", "[UNAVAILABLE]"), ("ADDR", "192.0.2.7"), ("PORT", "51234"), ("PROTO", "ESMTPSA"),
          ("HELO", "laptop.example"), ("IDENT", "AB12CD34EF"), ("SOURCE", "REMOTE"))
    assert c.start(out(eightbit=True, xforward=xf)) == []
    assert c.data_to_send() == (
        b"XFORWARD NAME=[UNAVAILABLE] ADDR=192.0.2.7 PORT=51234 PROTO=ESMTPSA HELO=laptop.example"
        b" IDENT=AB12CD34EF SOURCE=REMOTE\r\n"
        b"MAIL FROM:<alice@example.org> SIZE=1234 BODY=8BITMIME\r\n"
        b"RCPT TO:<bob@example.net>\r\nRCPT TO:<carol@example.net>\r\n"
    )
    assert c.receive(b"250 2.0.0 Ok\r\n250 2.1.0 Ok\r\n250 2.1.5 Ok\r\n") == []
    assert c.data_to_send() == b""  # one RCPT reply still missing: no DATA yet
    assert c.receive(b"250 2.1.5 Ok\r\n") == []
    assert c.data_to_send() == b"DATA\r\n"
    assert c.receive(b"354 End data with <CR><LF>.<CR><LF>\r\n") == [SendBody()]
    assert c.stuff(b"Subject: x\r\n\r\n.a dot line\r\n") == b"Subject: x\r\n\r\n..a dot line\r\n"
    c.end_body()
    assert c.data_to_send() == b".\r\n"
    [ev] = c.receive(b"250 2.0.0 Ok: queued as 4ZxK9\r\n")
    assert ev == Delivered(MtaReply(250, ("2.0.0 Ok: queued as 4ZxK9",)))
    assert str(ev.reply) == "250 2.0.0 Ok: queued as 4ZxK9" and c.reusable


def test_without_pipelining_one_command_per_reply():  # RFC 2920: only when offered
    c = ready(PLAIN_EHLO)
    c.start(out(eightbit=True))
    assert c.data_to_send() == b"MAIL FROM:<alice@example.org> BODY=8BITMIME\r\n"  # no SIZE offered
    c.receive(b"250 ok\r\n")
    assert c.data_to_send() == b"RCPT TO:<bob@example.net>\r\n"
    c.receive(b"250 ok\r\n")
    assert c.data_to_send() == b"RCPT TO:<carol@example.net>\r\n"
    c.receive(b"250 ok\r\n")
    assert c.data_to_send() == b"DATA\r\n"


def test_a_refused_recipient_refuses_the_message_and_resets():  # S-807
    c = ready()
    c.start(out(recipients=("a@x.example", "b@x.example", "c@x.example")))
    c.data_to_send()
    [ev] = c.receive(b"250 2.1.0 Ok\r\n250 2.1.5 Ok\r\n550 5.1.1 <b@x.example>: Recipient address rejected\r\n"
                     b"250 2.1.5 Ok\r\n")
    assert isinstance(ev, Rejected) and ev.stage == "RCPT" and ev.reply.enhanced == "5.1.1"
    assert c.data_to_send() == b""  # never DATA after a refused RCPT
    assert client_reply(ev) == R.mta_rejected("5.1.1")
    assert c.state is ClientState.REFUSED and not c.reusable
    c.reset()
    assert c.data_to_send() == b"RSET\r\n"
    assert isinstance(c.receive(b"250 2.0.0 Ok\r\n")[0], Ready) and c.reusable


def test_without_pipelining_the_rest_is_not_sent_after_a_refusal():  # S-807
    c = ready(PLAIN_EHLO)
    c.start(out())
    c.data_to_send()
    c.receive(b"250 ok\r\n")
    assert c.data_to_send() == b"RCPT TO:<bob@example.net>\r\n"
    [ev] = c.receive(b"450 4.2.0 try later\r\n")
    assert ev.stage == "RCPT" and client_reply(ev) == R.HANDOFF_TEMPFAIL
    assert c.data_to_send() == b""


@pytest.mark.parametrize(("reply", "answer"), [(b"553 5.7.1 <alice@example.org>: Sender address rejected\r\n",
                                                 R.mta_rejected("5.7.1")),
                                                (b"451 4.3.0 Error: queue file write error\r\n", R.HANDOFF_TEMPFAIL)])
def test_a_refused_mail_is_followed_by_rset(reply, answer):  # S-807: "If the MTA refuses MAIL, ... msa sends RSET"
    c = ready()
    c.start(out())
    c.data_to_send()
    [ev] = c.receive(reply + b"503 5.5.1 Error: need MAIL command\r\n503 5.5.1 Error: need MAIL command\r\n")
    assert ev.stage == "MAIL" and client_reply(ev) == answer
    assert c.data_to_send() == b"" and c.state is ClientState.REFUSED and not c.reusable
    c.reset()
    assert c.data_to_send() == b"RSET\r\n"
    assert c.receive(b"250 2.0.0 Ok\r\n") == [Ready(c.extensions)] and c.reusable


def test_a_refused_mail_without_pipelining_is_followed_by_rset():  # S-807
    c = ready(PLAIN_EHLO)
    c.start(out())
    assert c.data_to_send() == b"MAIL FROM:<alice@example.org>\r\n"
    [ev] = c.receive(b"550 5.7.1 no\r\n")
    assert ev.stage == "MAIL" and c.data_to_send() == b""  # no RCPT
    c.reset()
    assert c.data_to_send() == b"RSET\r\n"


def test_a_refused_final_dot_is_followed_by_rset():  # S-807: "... or the final dot, msa sends RSET"
    c = ready()
    c.start(out(recipients=("b@x.example",)))
    c.receive(b"250 Ok\r\n250 Ok\r\n354 go\r\n")
    c.end_body()
    c.data_to_send()
    [ev] = c.receive(b"554 5.7.1 Error: content rejected\r\n")
    assert ev == Rejected("DOT", MtaReply(554, ("5.7.1 Error: content rejected",)))
    assert c.state is ClientState.REFUSED and not c.reusable
    c.quit()  # or QUIT, on a connection that will not be used again
    assert c.data_to_send() == b"QUIT\r\n"
    assert c.receive(b"221 2.0.0 Bye\r\n") == [Closed()]


@pytest.mark.parametrize(
    ("reply", "expected"),
    [
        (b"550 5.7.1 policy\r\n", R.mta_rejected("5.7.1")),
        (b"554 5.6.0 bad content\r\n", R.mta_rejected("5.6.0")),
        (b"552 5.3.4 Message size exceeds fixed limit\r\n", R.mta_rejected("5.3.0")),
        (b"554 Transaction failed\r\n", R.mta_rejected("5.3.0")),  # no enhanced code
        (b"554 4.7.1 mismatched class\r\n", R.mta_rejected("5.3.0")),  # an enhanced code of another class
        (b"451 4.3.0 Error: queue file write error\r\n", R.HANDOFF_TEMPFAIL),
        (b"421 4.3.2 shutting down\r\n", R.HANDOFF_TEMPFAIL),
    ],
)
def test_refusal_after_the_dot_is_mapped(reply, expected):  # S-807
    c = ready()
    c.start(out(recipients=("b@x.example",)))
    c.receive(b"250 Ok\r\n250 Ok\r\n")
    c.receive(b"354 go\r\n")
    c.end_body()
    [ev] = c.receive(reply)
    assert isinstance(ev, Rejected) and ev.stage == "DOT"
    assert client_reply(ev) == expected


def test_refused_data_needs_a_reset():  # S-807
    c = ready()
    c.start(out(recipients=("b@x.example",)))
    c.receive(b"250 Ok\r\n250 Ok\r\n")
    [ev] = c.receive(b"554 5.5.1 Error: no valid recipients\r\n")
    assert ev.stage == "DATA" and c.state is ClientState.REFUSED


def test_smtputf8_without_support_sends_nothing():  # S-807, RFC 6531 §3.2
    c = ready(PLAIN_EHLO)
    [ev] = c.start(out(smtputf8=True))
    assert ev == Rejected("SMTPUTF8", None)
    assert client_reply(ev) == R.SMTPUTF8_UNSUPPORTED
    assert c.data_to_send() == b"" and c.reusable


def test_smtputf8_is_passed_on_when_offered():  # S-806
    c = ready()
    c.start(out(smtputf8=True, recipients=("bø@x.example",)))
    assert c.data_to_send().splitlines()[:2] == [
        b"MAIL FROM:<alice@example.org> SIZE=1234 SMTPUTF8", "RCPT TO:<bø@x.example>".encode()]


def test_dsn_parameters_pass_when_offered():  # S-809
    c = ready()
    c.start(out(ret="FULL", envid="<id.1@example.org>", rcpt_dsn=(("SUCCESS,FAILURE,DELAY", None),
                                                                   ("NEVER", "rfc822;carol@example.net"))))
    assert c.data_to_send().splitlines() == [
        b"MAIL FROM:<alice@example.org> SIZE=1234 RET=FULL ENVID=<id.1@example.org>",
        b"RCPT TO:<bob@example.net> NOTIFY=SUCCESS,FAILURE,DELAY",
        b"RCPT TO:<carol@example.net> NOTIFY=NEVER ORCPT=rfc822;carol@example.net",
    ]


def test_dsn_parameters_are_dropped_with_a_note_when_not_offered():  # S-809
    c = ready(PLAIN_EHLO)
    events = c.start(out(ret="HDRS", rcpt_dsn=(("NEVER", None), (None, None))))
    assert events == [Note("the MTA does not offer DSN: RET, ENVID, NOTIFY and ORCPT were dropped")]
    assert c.data_to_send() == b"MAIL FROM:<alice@example.org>\r\n"


def test_xforward_only_offered_attributes_xtext_and_split():  # S-806
    c = ready(b"250-mta\r\n250-PIPELINING\r\n250 XFORWARD NAME ADDR HELO\r\n")
    name, helo = "n" * 300, "h" * 240 + " +"
    c.start(out(xforward=(("NAME", name), ("ADDR", "2001:db8::1"), ("PORT", "25"),
                          ("HELO", helo), ("IDENT", "Q1"))))
    lines = c.data_to_send().split(b"\r\n")
    xf = [line for line in lines if line.startswith(b"XFORWARD")]
    assert xf == [  # no PORT, no IDENT (not offered); values cut to 255; lines within 512
        b"XFORWARD NAME=" + b"n" * 255 + b" ADDR=2001:db8::1",
        b"XFORWARD HELO=" + b"h" * 240 + b"+20+2B",
    ]
    assert all(len(line) + 2 <= 512 for line in xf)


def test_xtext():  # RFC 3461 §4
    assert xtext("a+b=c d\x01~!") == "a+2Bb+3Dc+20d+01~!"
    assert xtext("ab cd", 4) == "ab"  # never half a +HH
    assert xtext("ab cd", 5) == "ab+20"


def test_a_refused_xforward_is_noted_and_the_mail_goes_on():  # S-806
    c = ready()
    c.start(out(recipients=("b@x.example",), xforward=(("ADDR", "192.0.2.1"),)))
    c.data_to_send()
    events = c.receive(b"550 5.7.0 Error: insufficient authorization\r\n250 Ok\r\n250 Ok\r\n")
    assert events == [Note("XFORWARD refused: 550 5.7.0 Error: insufficient authorization")]
    assert c.data_to_send() == b"DATA\r\n"


def test_connection_lost_before_and_after_the_dot():  # S-808
    c = ready()
    c.start(out())
    [ev] = c.receive(b"")
    assert ev == Lost("connection closed by the MTA", after_dot=False, mail_answered=False)
    assert client_reply(ev) == R.MTA_UNAVAILABLE
    c = ready()
    c.start(out(recipients=("b@x.example",)))
    c.receive(b"250 Ok\r\n250 Ok\r\n354 go\r\n")
    c.end_body()
    [ev] = c.receive(b"")
    assert ev.after_dot and ev.mail_answered
    assert client_reply(ev) == R.MTA_LOST_AFTER_DOT


def test_greeting_refused_and_helo_fallback():  # S-808, RFC 5321 §3.2
    c = Client("msa.test")
    [ev] = c.receive(b"554 5.3.2 no service\r\n")
    assert isinstance(ev, Unavailable) and client_reply(ev) == R.MTA_UNAVAILABLE
    c = Client("msa.test")
    c.receive(b"220 old smtp\r\n")
    c.data_to_send()
    assert c.receive(b"502 what is EHLO\r\n") == []
    assert c.data_to_send() == b"HELO msa.test\r\n"
    [ev] = c.receive(b"250 hi\r\n")
    assert ev == Ready(Extensions())


@pytest.mark.parametrize(
    "garbage",
    [
        b"hello there\r\n",
        b"250-first\r\n354 second\r\n",  # codes differ within one reply
        b"2500 Ok\r\n",
        b"199 too low\r\n",
        b"x" * 5000,
        b"250-a\r\n" * 300,
        b"\x00\xff\r\n",
    ],
)
def test_protocol_violations_are_a_lost_connection(garbage):  # S-808: a defined outcome
    c = ready()
    c.start(out())
    events = c.receive(garbage)
    assert len(events) == 1 and isinstance(events[0], Lost) and events[0].reason.startswith("protocol error")
    assert c.state is ClientState.CLOSED and c.receive(b"250 Ok\r\n") == []


@pytest.mark.parametrize(
    ("size", "limit"),
    [(b"SIZE", 0), (b"SIZE 0", 0), (b"SIZE 10240000", 10240000), (b"size 00123", 123),
     (b"SIZE " + b"9" * 20, 10**20 - 1)],
)
def test_size_in_the_ehlo_reply(size, limit):  # RFC 1870 §4: size-param ::= [1*20DIGIT]; none or 0: no limit
    assert ready(b"250-mta.test\r\n250 " + size + b"\r\n").extensions.size == limit


@pytest.mark.parametrize(
    ("size", "shown"),
    [
        ("SIZE \u00b2", r"'\xb2'"),  # "²": str.isdigit() says yes, and int() raised
        ("SIZE \u0661\u0660\u0660", r"'\u0661\u0660\u0660'"),  # Arabic-Indic digits: int() takes them
        ("SIZE 1\uff10", r"'1\uff10'"),  # a fullwidth zero
        ("SIZE 12x", "'12x'"),
        ("SIZE -1", "'-1'"),
        ("SIZE 1 2", "'1 2'"),
        ("SIZE " + "9" * 21, "'" + "9" * 21 + "'"),
    ],
)
def test_a_malformed_size_in_the_ehlo_reply_is_a_protocol_error(size, shown):  # S-808, RFC 1870 §4
    c = Client("msa.test")
    c.receive(b"220 mta.test ESMTP\r\n")
    c.data_to_send()
    [ev] = c.receive(f"250-mta.test\r\n250-PIPELINING\r\n250 {size}\r\n".encode())
    assert ev == Lost(f"protocol error: SIZE {shown} in the EHLO reply is not a number (RFC 1870)",
                      after_dot=False, mail_answered=False)
    assert client_reply(ev) == R.MTA_UNAVAILABLE and c.state is ClientState.CLOSED
    assert c.data_to_send() == b""


def test_extension_keywords_are_ascii():  # RFC 5321 §4.1.1.1: ehlo-keyword is ALPHA / DIGIT / "-"
    # "pıpelınıng".upper() == "PIPELINING" in Python; it is no keyword.
    c = ready("250-mta.test\r\n250-p\u0131pel\u0131n\u0131ng\r\n250 XFORWARD NAME \u0131DENT\r\n".encode())
    assert c.extensions == Extensions(xforward=frozenset({"NAME"}))


def test_a_reply_after_the_ehlo_reply_breaks_the_connection():  # S-808
    # The batch says both: the shell must not take Ready as the last word.
    c = Client("msa.test")
    c.receive(b"220 mta.test ESMTP\r\n")
    c.data_to_send()
    ready_, lost = c.receive(POSTFIX_EHLO + b"250 2.0.0 surplus\r\n")
    assert isinstance(ready_, Ready)
    assert lost == Lost("protocol error: a reply nobody asked for: 250 2.0.0 surplus", False, False)
    assert client_reply(lost) == R.MTA_UNAVAILABLE and not c.reusable


@pytest.mark.parametrize("second", [b"354 go\r\n", b"250 2.0.0 Ok: queued as EARLY\r\n"])
def test_a_doubled_354_or_a_reply_after_it_breaks_the_connection_before_the_message(second):  # S-808
    c = ready()
    c.start(out(recipients=("b@x.example",)))
    c.data_to_send()
    send_body, lost = c.receive(b"250 Ok\r\n250 Ok\r\n354 go\r\n" + second)
    assert send_body == SendBody() and isinstance(lost, Lost) and not lost.after_dot
    assert client_reply(lost) == R.MTA_UNAVAILABLE and c.state is ClientState.CLOSED


@pytest.mark.parametrize(
    ("replies", "stage_after_dot"),
    [
        (b"354 go\r\n", False),  # to XFORWARD
        (b"250 Ok\r\n354 go\r\n", False),  # to MAIL
        (b"250 Ok\r\n250 Ok\r\n334 VXNlcm5hbWU6\r\n", False),  # to RCPT
        (b"250 Ok\r\n250 Ok\r\n250 Ok\r\n250 2.0.0 Ok\r\n", False),  # to DATA: a 2yz, not 354
        (b"250 Ok\r\n250 Ok\r\n250 Ok\r\n354 go\r\n", True),  # to the final dot: a late doubled 354
    ],
)
def test_a_reply_of_the_wrong_class_is_a_protocol_error(replies, stage_after_dot):  # S-808, RFC 5321 §4.2.1, §4.3.2
    # The first digit says what a reply means; 3yz answers only DATA, and DATA
    # only 3yz or a refusal. Anything else is no refusal to log and reuse
    # the connection after: the MTA and msa disagree on where they are.
    c = ready()
    c.start(out(recipients=("b@x.example",), xforward=(("ADDR", "192.0.2.1"),)))
    c.data_to_send()
    events = c.receive(replies)
    if events == [SendBody()]:
        c.end_body()
        events = c.receive(b"354 go\r\n")
    [ev] = events
    assert isinstance(ev, Lost) and ev.reason.startswith("protocol error: ") and ev.after_dot is stage_after_dot
    assert client_reply(ev) == (R.MTA_LOST_AFTER_DOT if stage_after_dot else R.MTA_UNAVAILABLE)
    assert c.state is ClientState.CLOSED and not c.reusable


def test_a_reply_of_the_wrong_class_to_rset_or_the_greeting_is_a_protocol_error():  # S-808
    c = Client("msa.test")
    [ev] = c.receive(b"354 hello\r\n")
    assert isinstance(ev, Lost) and ev.reason.startswith("protocol error: ")
    c = ready()
    c.start(out(recipients=("b@x.example",)))
    c.receive(b"250 Ok\r\n550 5.1.1 no\r\n")
    c.reset()
    [ev] = c.receive(b"354 go\r\n")
    assert isinstance(ev, Lost) and not c.reusable


def test_bytes_while_the_mta_should_wait_are_a_protocol_error():  # S-808
    # Half a line after 354 (the rest may be on its way): the shell asks
    # before it streams the message, and gives up instead.
    c = ready()
    c.start(out(recipients=("b@x.example",)))
    c.data_to_send()
    assert c.receive(b"250 Ok\r\n250 Ok\r\n354 go\r\n250 2.0") == [SendBody()]
    assert c.check_silence() == [Lost("protocol error: data while the MTA should wait", False, True)]
    assert c.state is ClientState.CLOSED


def test_check_silence_when_all_is_quiet_changes_nothing():  # S-808
    c = ready()
    assert c.check_silence() == [] and c.reusable
    c.start(out(recipients=("b@x.example",)))
    c.data_to_send()
    c.receive(b"250 Ok\r\n250 Ok\r\n354 go\r\n")
    assert c.check_silence() == [] and c.state is ClientState.BODY
    c.receive(b"250 Ok")  # still waiting for its line end: not silence, but an answer is awaited
    c.end_body()
    assert c.check_silence() == []


def test_half_a_line_on_an_idle_connection_is_no_reuse():  # S-808
    c = ready()
    c.start(out(recipients=("b@x.example",)))
    c.receive(b"250 Ok\r\n250 Ok\r\n354 go\r\n")
    c.end_body()
    assert isinstance(c.receive(b"250 2.0.0 Ok: queued as 1\r\n")[0], Delivered) and c.reusable
    c.data_to_send()
    assert c.receive(b"421 4.4.2 mta.test Error: ti") == []
    assert not c.reusable  # the pool does not keep it
    [ev] = c.start(out())  # and a transaction on it never begins
    assert c.data_to_send() == b""
    # Not this transaction's MAIL: a kept connection is replaced (S-808).
    assert isinstance(ev, Lost) and not ev.mail_answered and not ev.after_dot


def test_a_reply_nobody_asked_for_breaks_the_connection():  # S-808 (an idle MTA's 421)
    c = ready()
    [ev] = c.receive(b"421 4.4.2 mta.test Error: timeout exceeded\r\n")
    assert isinstance(ev, Lost) and not ev.mail_answered and not c.reusable


def test_421_in_the_envelope_refuses_and_ends_the_connection():  # S-807
    c = ready()
    c.start(out())
    [ev] = c.receive(b"250 2.1.0 Ok\r\n421 4.7.0 mta.test Error: too many errors\r\n")
    assert isinstance(ev, Rejected) and client_reply(ev) == R.HANDOFF_TEMPFAIL
    assert c.state is ClientState.CLOSED


def test_quit():
    c = ready()
    c.quit()
    assert c.data_to_send() == b"QUIT\r\n"
    assert c.receive(b"221 2.0.0 Bye\r\n") == [Closed()]


def test_reply_split_anywhere():  # bytes from the MTA in any pieces
    c = Client("msa.test")
    data = b"220 hi\r\n"
    for i in range(len(data)):
        assert c.receive(data[i : i + 1]) == []
    c.data_to_send()
    events = []
    for i in range(len(POSTFIX_EHLO)):
        events += c.receive(POSTFIX_EHLO[i : i + 1])
    assert len(events) == 1 and isinstance(events[0], Ready)


@pytest.mark.parametrize(
    ("pieces", "wire"),
    [
        ([b".x\r\n"], b"..x\r\n"),  # the first line of the message
        ([b"a\r\n", b".b\r\n"], b"a\r\n..b\r\n"),
        ([b"a\r", b"\n.b\r\n"], b"a\r\n..b\r\n"),
        ([b"a\r\n.", b".\r\n"], b"a\r\n...\r\n"),
        ([b"a", b"\r", b"\n", b".", b"\r\n"], b"a\r\n..\r\n"),
        ([b"no dots\r\n"], b"no dots\r\n"),
    ],
)
def test_dot_stuffing_across_pieces(pieces, wire):  # RFC 5321 §4.5.2
    c = ready()
    c.start(out(recipients=("b@x.example",)))
    c.receive(b"250 Ok\r\n250 Ok\r\n354 go\r\n")
    assert b"".join(c.stuff(p) for p in pieces) == wire


def test_end_body_adds_a_missing_crlf():
    c = ready()
    c.start(out(recipients=("b@x.example",)))
    c.receive(b"250 Ok\r\n250 Ok\r\n354 go\r\n")
    c.data_to_send()
    c.stuff(b"no line end")
    c.end_body()
    assert c.data_to_send() == b"\r\n.\r\n"
