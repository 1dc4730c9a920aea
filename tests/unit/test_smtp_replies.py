"""A walk over the reply table of smtp_states/replies.py (SPEC.md S-104, STYLE.md "What msa takes" 3).

Every named reply and every reply-building function (called with sample
arguments) must agree with itself: the enhanced code's class digit is the
reply's first digit, 3xx carry none, no control characters, wire lines at most
512 octets ending in CRLF. OpenSMTPD's table once reused one enhanced code for
two meanings; the uniqueness test catches that kind of slip.
"""

from __future__ import annotations

import inspect
import re

import pytest

from smtp_states import replies as R
from smtp_states.replies import Reply

HOST = "msa.test"

#: Sample arguments for the functions that build replies.
SAMPLES: dict[str, tuple] = {
    "greeting": (HOST,),
    "queued": ("4XyZ0aB1",),
    "sender_not_owned": ("mallory@example.com", "alice"),
    "from_not_owned": ("mallory@example.com", "alice"),
    "too_many_errors": (HOST,),
    "too_many_auth_failures": (HOST,),
    "too_many_messages": (HOST,),
    "not_smtp": (HOST,),
    "bdat_framing_lost": (HOST,),
    "timeout": (HOST,),
    "too_many_connections": (HOST,),
    "shutting_down": (HOST,),
    "sendmail_rejected": (554, "5.3.0", 64),
    "mta_rejected": ("5.1.1",),
}

#: Replies that carry no enhanced code although 2xx/4xx/5xx (S-104).
EXEMPT = {"greeting"}


def _constants() -> dict[str, Reply]:
    return {name: value for name, value in vars(R).items() if isinstance(value, Reply)}


def _functions() -> dict[str, Reply]:
    out = {}
    for name, fn in vars(R).items():
        if inspect.isfunction(fn) and fn.__module__ == R.__name__:
            reply = fn(*SAMPLES[name])
            assert isinstance(reply, Reply), name
            out[name] = reply
    return out


CONSTANTS = _constants()
FUNCTIONS = _functions()
ALL = {**CONSTANTS, **{f"{name}()": reply for name, reply in FUNCTIONS.items()}}


def test_every_function_has_a_sample():
    functions = {n for n, f in vars(R).items() if inspect.isfunction(f) and f.__module__ == R.__name__}
    assert functions == set(SAMPLES)


def test_the_table_is_not_empty():
    assert len(CONSTANTS) > 40 and len(FUNCTIONS) == len(SAMPLES)


@pytest.mark.parametrize("name", sorted(ALL))
def test_code_is_a_reply_code(name):  # S-104
    reply = ALL[name]
    assert isinstance(reply.code, int) and 200 <= reply.code <= 599


@pytest.mark.parametrize("name", sorted(ALL))
def test_enhanced_class_matches_the_code(name):  # S-104, RFC 2034 §4, RFC 3463 §2
    reply = ALL[name]
    first = reply.code // 100
    if first == 3:
        assert reply.enhanced == ""  # 334, 354 carry none
        return
    if name.rstrip("()") in EXEMPT:
        assert reply.enhanced == ""
        return
    m = re.fullmatch(r"([245])\.(\d{1,3})\.(\d{1,3})", reply.enhanced)
    assert m, f"{name}: {reply.enhanced!r}"
    assert int(m.group(1)) == first, f"{name}: {reply.code} {reply.enhanced}"


@pytest.mark.parametrize("name", sorted(ALL))
def test_no_control_characters(name):  # S-104, S-1005
    reply = ALL[name]
    for line in reply.lines():
        assert not re.search(r"[\x00-\x1f\x7f]", line), f"{name}: {line!r}"
    assert not re.search(r"[\x00-\x1f\x7f]", reply.enhanced)


@pytest.mark.parametrize("name", sorted(ALL))
def test_wire_form(name):  # S-104
    reply = ALL[name]
    wire = reply.to_bytes()
    assert wire.endswith(b"\r\n")
    lines = wire[:-2].split(b"\r\n")
    assert len(lines) == len(reply.lines())
    for i, line in enumerate(lines):
        assert len(line) + 2 <= 512
        sep = b" " if i == len(lines) - 1 else b"-"
        assert line[:4] == str(reply.code).encode() + sep
        if reply.enhanced:
            assert line[4:].startswith(reply.enhanced.encode())


def test_names_are_unique_per_reply():  # STYLE.md 3: one name per meaning
    """Two names for one (code, enhanced, text) only as a declared alias
    (the same object), never as two copies that could drift apart."""
    seen: dict[tuple, str] = {}
    for name, reply in CONSTANTS.items():
        key = (reply.code, reply.enhanced, reply.lines())
        if key in seen:
            assert CONSTANTS[seen[key]] is reply, f"{name} duplicates {seen[key]}"
        else:
            seen[key] = name


def test_one_text_one_enhanced_code_per_reply_code():  # STYLE.md 3
    """Within one reply code a text has one enhanced code, except the plain
    "Ok", whose enhanced codes tell MAIL, RCPT and the rest apart (S-204, S-205)."""
    seen: dict[tuple, str] = {}
    for name, reply in ALL.items():
        key = (reply.code, reply.lines())
        if reply.lines() == ("Ok",):
            continue
        if key in seen:
            other = ALL[seen[key]]
            assert other.enhanced == reply.enhanced, f"{name} and {seen[key]}"
        seen[key] = name


def test_ok_replies_differ_by_enhanced_code():  # S-203, S-204, S-205
    assert str(R.OK) == "250 2.0.0 Ok"
    assert str(R.SENDER_OK) == "250 2.1.0 Ok"
    assert str(R.RECIPIENT_OK) == "250 2.1.5 Ok"


@pytest.mark.parametrize(
    ("reply", "wire"),
    [
        (R.greeting(HOST), b"220 msa.test ESMTP msa\r\n"),  # S-201
        (R.OK, b"250 2.0.0 Ok\r\n"),
        (R.BYE, b"221 2.0.0 Bye\r\n"),  # S-203
        (R.VRFY, b"252 2.0.0 Not verified; send mail to find out\r\n"),
        (R.NOT_IMPLEMENTED, b"502 5.5.1 Command not implemented\r\n"),
        (R.UNRECOGNIZED, b"500 5.5.2 Command unrecognized\r\n"),
        (R.INVALID_CHARACTER, b"500 5.5.2 Invalid character in command\r\n"),  # S-101
        (R.LINE_TOO_LONG, b"500 5.5.2 Line too long\r\n"),  # S-102
        (R.SEND_EHLO_FIRST, b"503 5.5.1 Send EHLO first\r\n"),  # S-202
        (R.NESTED_MAIL, b"503 5.5.1 Nested MAIL command\r\n"),
        (R.NEED_MAIL, b"503 5.5.1 Need MAIL command\r\n"),
        (R.NO_VALID_RECIPIENTS, b"554 5.5.1 No valid recipients\r\n"),
        (R.SYNTAX_EHLO, b"501 5.5.4 Syntax: EHLO hostname\r\n"),
        (R.TLS_READY, b"220 2.0.0 Ready to start TLS\r\n"),  # S-401
        (R.TLS_ACTIVE, b"503 5.5.1 TLS already active\r\n"),
        (R.AUTH_REQUIRED, b"530 5.7.0 Authentication required\r\n"),  # S-204
        (R.BAD_SENDER_SYNTAX, b"501 5.1.7 Bad sender address syntax\r\n"),  # S-206
        (R.BAD_RECIPIENT_SYNTAX, b"501 5.1.3 Bad recipient address syntax\r\n"),
        (R.UNSUPPORTED_PARAMETER, b"555 5.5.4 Unsupported parameter\r\n"),
        (R.SIZE_EXCEEDED, b"552 5.3.4 Message size exceeds fixed limit\r\n"),
        (R.TOO_MANY_RECIPIENTS, b"452 4.5.3 Too many recipients\r\n"),  # S-205
        (R.START_DATA, b"354 End data with <CR><LF>.<CR><LF>\r\n"),  # S-207
        (R.BARE_CR, b"554 5.6.0 Message contains a bare CR\r\n"),  # S-305
        (R.NUL_IN_DATA, b"554 5.6.0 Message contains NUL characters\r\n"),  # S-306
        (R.NO_STORAGE, b"452 4.3.1 Insufficient system storage\r\n"),  # S-307
        (R.AUTH_OK, b"235 2.7.0 Authentication successful\r\n"),  # S-503
        (R.AUTH_INVALID, b"535 5.7.8 Authentication credentials invalid\r\n"),
        (R.AUTH_TEMPFAIL, b"454 4.7.0 Temporary authentication failure\r\n"),
        (
            R.AUTH_NEEDS_TLS,
            b"504 5.5.4 Encryption required for requested authentication mechanism\r\n",
        ),  # S-501
        (R.AUTH_UNKNOWN_MECHANISM, b"504 5.5.4 Unrecognized authentication type\r\n"),
        (R.AUTH_CANCELLED, b"501 5.0.0 Authentication cancelled\r\n"),  # S-502
        (R.AUTH_BAD_BASE64, b"501 5.5.2 Cannot decode response\r\n"),
        (R.AUTH_LINE_TOO_LONG, b"500 5.5.6 Authentication exchange line is too long\r\n"),  # S-504
        (R.CANNOT_VERIFY_FROM, b"554 5.6.0 Cannot verify From: header\r\n"),  # S-602
        (R.NO_FROM_HEADER, b"554 5.6.0 Message has no From: header\r\n"),  # S-705
        (R.HEADER_TOO_LARGE, b"552 5.3.4 Message header too large\r\n"),  # S-703
        (R.queued("ABC"), b"250 2.0.0 Ok: queued as ABC\r\n"),  # S-309
        (
            R.sender_not_owned("m@example.com", "alice"),
            b"550 5.7.1 Sender address <m@example.com> not owned by user alice\r\n",
        ),
        (
            R.from_not_owned("m@example.com", "alice"),
            b"550 5.7.1 From: address <m@example.com> not owned by user alice\r\n",
        ),
        (R.too_many_errors(HOST), b"421 4.7.0 msa.test Error: too many errors\r\n"),  # S-106
        (R.too_many_auth_failures(HOST), b"421 4.7.0 msa.test Error: too many failed authentications\r\n"),
        (R.not_smtp(HOST), b"421 4.7.0 msa.test Not an SMTP client\r\n"),  # S-107
        (R.bdat_framing_lost(HOST), b"421 4.7.0 msa.test Error: BDAT without a usable size\r\n"),  # S-203
        (R.timeout(HOST), b"421 4.4.2 msa.test Error: timeout exceeded\r\n"),  # S-108
        (R.too_many_connections(HOST), b"421 4.7.0 msa.test Too many connections\r\n"),  # S-109
        (R.shutting_down(HOST), b"421 4.3.2 msa.test Service shutting down\r\n"),  # S-110
        (
            R.HANDOFF_TEMPFAIL,
            b"451 4.3.0 Temporary failure handing the message on; try again later\r\n",
        ),  # S-803
        (
            R.sendmail_rejected(550, "5.1.1", 67),
            b"550 5.1.1 Rejected by the mail system (sendmail exit 67)\r\n",
        ),
    ],
)
def test_texts_follow_the_spec(reply, wire):  # SPEC.md, word for word
    assert reply.to_bytes() == wire


def test_multi_line_reply_uses_dash_then_space():  # S-104
    reply = Reply(250, "", ("msa.test", "PIPELINING", "SIZE 10"))
    assert reply.to_bytes() == b"250-msa.test\r\n250-PIPELINING\r\n250 SIZE 10\r\n"


def test_multi_line_reply_with_enhanced_code_on_every_line():  # S-104, RFC 2034 §4
    reply = Reply(214, "2.0.0", ("one", "two"))
    assert reply.to_bytes() == b"214-2.0.0 one\r\n214 2.0.0 two\r\n"


def test_empty_challenge_is_code_and_space():  # S-502
    assert Reply(334, "", "").to_bytes() == b"334 \r\n"


def test_long_text_is_cut_to_512_octets():  # S-104
    wire = Reply(550, "5.7.1", "x" * 2000).to_bytes()
    assert len(wire) == 512 and wire.endswith(b"\r\n")
    wire = R.sender_not_owned("a" * 64 + "@" + "b" * 250, "u" * 255).to_bytes()
    assert len(wire) <= 512 and wire.endswith(b"\r\n") and wire.count(b"\r\n") == 1


@pytest.mark.parametrize("name", sorted(ALL))
def test_error_count_covers_500_504_530_and_550_555(name):  # S-106
    reply = ALL[name]
    assert reply.is_error == (500 <= reply.code <= 504 or reply.code == 530 or 550 <= reply.code <= 555)
