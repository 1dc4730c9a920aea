"""signing/pgpmime.py: S-1104's decisions and bytes, without the SOP
command (tests/integration/test_pgp.py signs for real)."""

from __future__ import annotations

import pytest

from signing import pgpmime as G


def fields(*lines: bytes) -> list[tuple[str, bytes]]:
    return [(line.split(b":", 1)[0].decode(), line + b"\r\n") for line in lines]


@pytest.mark.parametrize(
    ("value", "parsed"),
    [
        (b"text/plain", ("text/plain", {})),
        (b'Multipart/Mixed;\r\n boundary="a b"; Charset=x', ("multipart/mixed", {"boundary": "a b", "charset": "x"})),
        (b'text/plain (a comment); charset="utf\\-8";', ("text/plain", {"charset": "utf-8"})),
        (b"text/plain (a (nested) comment); charset=x", ("text/plain", {"charset": "x"})),
        (b'application/pdf; name="report (1).pdf"', ("application/pdf", {"name": "report (1).pdf"})),
        (b'multipart/mixed; boundary="(b)"', ("multipart/mixed", {"boundary": "(b)"})),
        (b"text", None),
        (b"text/plain; charset", None),
        ("text/plain; name=é".encode(), None),
    ],
)
def test_content_type(value, parsed):  # RFC 2045 §5.1
    assert G.content_type(value) == parsed


@pytest.mark.parametrize(
    ("header", "action", "why"),
    [
        ((), "sign", ""),
        ((b"Content-Type: text/html; charset=utf-8",), "sign", ""),
        ((b'Content-Type: multipart/signed; protocol="application/pgp-signature"; boundary=x',), "leave",
         "already protected"),
        ((b'Content-Type: multipart/encrypted; boundary=x',), "leave", "already protected"),
        ((b"Content-Type: application/pkcs7-mime; smime-type=enveloped-data",), "leave", "already protected"),
        ((b"Content-Type: multipart/mixed",), "skip", "multipart without a boundary"),
        ((b"Content-Type: garbage",), "skip", "unparsable Content-Type"),
    ],
)
def test_plan(header, action, why):  # S-1104
    p = G.plan(fields(*header))
    assert (p.action, p.why) == (action, why)


def test_header_values_are_the_first_fields_with_their_folds():
    f = fields(b"Content-Type: multipart/mixed;\r\n boundary=x", b"Content-Transfer-Encoding: 7bit",
               b"Content-Type: text/plain")
    assert G.header_values(f) == (b"multipart/mixed;\r\n boundary=x", b"7bit")
    assert G.header_values([]) == (None, None)


def test_quoted_printable_of_what_a_transport_may_change():  # RFC 3156 §3, RFC 2045 §6.7
    enc = G.QuotedPrintable()
    out = enc.feed(b"From me\r\ntrail \r\nx=y\r\ncaf\xc3\xa9\r\n") + enc.finish()
    assert out == b"=46rom me\r\ntrail=20\r\nx=3Dy\r\ncaf=C3=A9\r\n"


def test_the_last_line_without_a_line_break_gets_no_soft_break():  # S-1104 (amended)
    enc = G.QuotedPrintable()  # its line break is the delimiter's, or the one S-1104 adds
    assert enc.feed(b"caf\xc3\xa9\r\nFrom the end ") + enc.finish() == b"caf=C3=A9\r\n=46rom the end=20"


def test_a_line_longer_than_a_piece_gets_soft_breaks():
    enc = G.QuotedPrintable()
    long_line = b"a" * (G.QP_LINE_PIECE + 10)
    out = enc.feed(long_line) + enc.feed(b"\r\n") + enc.finish()
    assert all(len(line) <= 76 for line in out.split(b"\r\n"))
    assert out.replace(b"=\r\n", b"") == long_line + b"\r\n"


def test_part_header_copies_protected_fields_and_says_so():  # S-1104, RFC 9788 §4.1
    f = fields(b"From: a@example.org", b"To: b@example.net", b"Subject: hi", b"X-Mailer: m", b"Received: x",
               b"Content-Type: text/plain; charset=utf-8", b"Content-Transfer-Encoding: 8bit",
               b"Content-Language: de", b"MIME-Version: 1.0")
    head = G.part_header(f, "quoted-printable", eight_bit=True)
    assert head == (b'Content-Type: text/plain; charset=utf-8; protected-headers="v1"; hp="clear"\r\n'
                    b"Content-Language: de\r\nContent-Transfer-Encoding: quoted-printable\r\n"
                    b"From: a@example.org\r\nTo: b@example.net\r\nSubject: hi\r\n")


@pytest.mark.parametrize(
    "ct",
    [
        b'Content-Type: multipart/mixed; boundary="a  b"',  # two spaces inside a quoted string
        b'Content-Type: application/octet-stream; name="a;b"',  # a semicolon inside one
        b'Content-type: text/plain;\r\n\tcharset="utf-8";\r\n   format=flowed',  # folded as the client did
        b"Content-Type: text/plain; charset=us-ascii (plain (nested) comment)",
    ],
)
def test_part_header_keeps_the_content_type_bytes(ct):  # S-1104
    f = fields(ct, b"Content-Transfer-Encoding:  7bit (as sent)")
    head = G.part_header(f)
    assert head.startswith(ct)  # the original value, byte for byte
    added = head[len(ct) : head.index(b"\r\nContent-Transfer-Encoding:") + 2]
    assert added in (b'; protected-headers="v1"; hp="clear"\r\n', b';\r\n\tprotected-headers="v1"; hp="clear"\r\n')
    assert b"\r\nContent-Transfer-Encoding:  7bit (as sent)\r\n" in head  # kept too
    assert G.content_type(head.split(b":", 1)[1].partition(b"\r\nContent-Transfer")[0])[1]["protected-headers"] == "v1"


def test_part_header_folds_before_the_added_parameters_when_the_line_is_long():  # S-1104, RFC 5322 §2.1.1
    ct = b'Content-Type: multipart/alternative; boundary="==============' + b"7" * 30 + b'=="'
    head = G.part_header(fields(ct))
    assert head == ct + b';\r\n\tprotected-headers="v1"; hp="clear"\r\n'


def test_part_header_without_content_type_names_the_default():  # RFC 2045 §5.2
    assert G.part_header([]).startswith(
        b'Content-Type: text/plain; charset=us-ascii; protected-headers="v1"; hp="clear"\r\n')


def test_frame_around_a_body():  # RFC 1847 §2.1, RFC 3156 §5, S-1104 (amended)
    f = fields(b"From: a@example.org", b"MIME-Version: 1.0", b"Content-Type: text/plain")
    outer = G.outer_header(f, b"BND", "pgp-sha512")
    assert outer == (b"From: a@example.org\r\nMIME-Version: 1.0\r\n"
                     b'Content-Type: multipart/signed; micalg="pgp-sha512";\r\n'
                     b'\tprotocol="application/pgp-signature"; boundary="BND"\r\n\r\n')
    head = G.part_header(f)
    before = G.signed_part(head)
    assert before == head + b"\r\n"
    body = b"line\r\n"
    whole = G.prefix(b"BND", head) + body + G.suffix(b"BND", b"SIG\n", True)
    start = whole.index(b"--BND\r\n") + 7
    end = whole.index(b"\r\n--BND\r\n", start)
    # The signed octets: the body whole, its last CRLF included; the
    # delimiter has a CRLF of its own.
    assert whole[start:end] == before + body + G.part_end(True) == before + b"line\r\n"
    assert whole.endswith(b"\r\n\r\nSIG\r\n\r\n--BND--\r\n")


def test_a_body_without_a_final_line_break_gets_one_inside_the_signed_part():  # S-1104 (amended)
    head = G.part_header([])
    whole = G.prefix(b"BND", head) + b"no line break" + G.suffix(b"BND", b"S", False)
    start = whole.index(b"--BND\r\n") + 7
    end = whole.index(b"\r\n--BND\r\n", start)
    assert whole[start:end] == G.signed_part(head) + b"no line break" + G.part_end(False)
    assert whole[start:end].endswith(b"no line break\r\n")
