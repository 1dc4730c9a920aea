"""signing/mimewalk.py and signing/recode.py: S-1104's 7-bit rule (amended)
over MIME trees, from raw bytes (tests/integration/test_pgp.py signs the
results for real; tests/property/test_mimewalk_props.py takes trees apart)."""

from __future__ import annotations

import email
import email.message
import email.policy

import pytest

from signing import mimewalk as W
from signing import recode


def walk(ct: bytes | None, cte: bytes | None, body: bytes, chunk: int = 64 * 1024) -> tuple[W.Recoding, bytes]:
    """Both passes, `chunk` octets at a time: what was found, and the new
    body (the old one when nothing changes)."""
    pieces = [body[i : i + chunk] for i in range(0, len(body), chunk)]
    first = W.Walker(ct, cte)
    assert all(first.feed(p) == b"" for p in pieces)  # the first pass writes nothing
    assert first.finish() == b""
    found = first.result()
    if not found.changes or found.problem is not None:
        return found, body
    second = W.Walker(ct, cte, found)
    out = b"".join(second.feed(p) for p in pieces) + second.finish()
    assert second.result().problem is None
    return found, out


def leaves(message: bytes) -> list[tuple[str, bytes]]:
    """(type, decoded payload) of every leaf part, by Python's email parser."""
    msg = email.message_from_bytes(message, policy=email.policy.default)
    return [(p.get_content_type(), p.get_payload(decode=True)) for p in msg.walk() if not p.is_multipart()]


def whole(ct: bytes, body: bytes, cte: bytes | None = None) -> bytes:
    return (b"MIME-Version: 1.0\r\nContent-Type: " + ct + b"\r\n"
            + (b"Content-Transfer-Encoding: " + cte + b"\r\n" if cte else b"") + b"\r\n" + body)


def assert_seven_bit_safe(body: bytes) -> None:  # RFC 3156 §3
    assert body.isascii()
    lines = body.split(b"\r\n")
    assert not any(line.startswith(b"From ") for line in lines)
    assert not any(line.endswith((b" ", b"\t")) for line in lines)


MUTT = (b"--mutt1\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Disposition: inline\r\n"
        b"Content-Transfer-Encoding: 8bit\r\n\r\nGr\xc3\xbc\xc3\x9fe aus K\xc3\xb6ln\r\n\r\n-- \r\nAlice\r\n\r\n"
        b"--mutt1\r\nContent-Type: application/octet-stream\r\nContent-Disposition: attachment; filename=\"a.bin\"\r\n"
        b"Content-Transfer-Encoding: base64\r\n\r\nAAECAwQF/w==\r\n\r\n--mutt1--\r\n")


@pytest.mark.parametrize("chunk", [1, 7, 64 * 1024])
def test_a_mutt_message_has_its_text_part_reencoded_and_its_attachment_copied(chunk):  # S-1104
    found, out = walk(b'multipart/mixed; boundary="mutt1"', None, MUTT, chunk)
    assert found.problem is None and found.changes == {1: W.QUOTED_PRINTABLE}
    assert found.top_cte() is None  # the top-level multipart has no encoding to change
    text, attachment = out.split(b"--mutt1\r\n")[1:]
    assert text.startswith(b"Content-Type: text/plain; charset=utf-8\r\nContent-Disposition: inline\r\n"
                           b"Content-Transfer-Encoding: quoted-printable\r\n\r\n")  # nothing else of it changed
    assert b"Gr=C3=BC=C3=9Fe aus K=C3=B6ln\r\n\r\n--=20\r\nAlice\r\n\r\n" in text
    assert attachment == MUTT.split(b"--mutt1\r\n")[2]  # copied byte for byte
    assert_seven_bit_safe(out)
    ct = b'multipart/mixed; boundary="mutt1"'
    assert leaves(whole(ct, out)) == leaves(whole(ct, MUTT))


def test_python_email_message_with_eight_bit_parts():  # S-1104
    msg = email.message.EmailMessage()
    msg["Subject"] = "x"
    msg.set_content("Grüße\nFrom here on\ntrailing \n")
    msg.add_alternative("<p>Grüße</p>\n", subtype="html")
    msg.add_attachment(bytes(range(256)) * 4, maintype="application", subtype="octet-stream", filename="b.bin")
    inner = email.message.EmailMessage()
    inner["Subject"] = "inner"
    inner.set_content("Ünïcode\n")
    msg.add_attachment(inner)
    data = msg.as_bytes(policy=email.policy.SMTP)
    head, _, body = data.partition(b"\r\n\r\n")
    ct = next(line for line in head.split(b"\r\n") if line.startswith(b"Content-Type:"))[13:].strip()
    found, out = walk(ct, None, body, 100)
    assert found.problem is None
    # Two 8-bit text parts, the message/rfc822's label and its 8-bit text.
    assert sorted(found.changes.values()) == sorted([W.QUOTED_PRINTABLE] * 3 + [W.SEVEN_BIT])
    assert b"Content-Type: message/rfc822\r\nContent-Transfer-Encoding: 7bit\r\n" in out
    assert_seven_bit_safe(out)
    assert leaves(head + b"\r\n\r\n" + out) == leaves(data)


def test_a_clean_multipart_changes_nothing():  # S-1104: parts already clean are copied byte for byte
    body = (b"preamble\r\n--b\r\nContent-Type: text/plain\r\n\r\nhi\r\n--b\r\nContent-Type: image/png\r\n"
            b"Content-Transfer-Encoding: base64\r\n\r\niVBORw0KGgo=\r\n--b--\r\nepilogue\r\n")
    found, out = walk(b"multipart/mixed; boundary=b", None, body, 3)
    assert found == W.Recoding() and out == body


def test_nested_alternative_with_an_eight_bit_html_part():  # S-1104: at any depth
    body = (b"--outer\r\nContent-Type: multipart/alternative; boundary=inner\r\n\r\n"
            b"--inner\r\nContent-Type: text/plain\r\n\r\nplain\r\n"
            b"--inner\r\nContent-Type: text/html; charset=utf-8\r\nContent-Transfer-Encoding: 8bit\r\n\r\n"
            b"<p>caf\xc3\xa9</p>\r\n--inner--\r\n\r\n--outer\r\nContent-Type: text/plain\r\n\r\nsecond\r\n--outer--\r\n")
    found, out = walk(b"multipart/mixed; boundary=outer", None, body, 5)
    assert found.changes == {3: W.QUOTED_PRINTABLE}  # 0 mixed, 1 alternative, 2 plain, 3 html, 4 plain
    assert b"<p>caf=C3=A9</p>" in out
    assert leaves(whole(b"multipart/mixed; boundary=outer", out)) == leaves(
        whole(b"multipart/mixed; boundary=outer", body))


def test_a_single_eight_bit_octet_stream_becomes_base64():  # S-1104: any other type as base64
    body = bytes(range(1, 256)).replace(b"\r", b"").replace(b"\n", b"") * 3 + b"\r\nend\r\n"
    found, out = walk(b"application/octet-stream", b"binary", body, 10)
    assert found.changes == {0: W.BASE64} and found.top_cte() == "base64"
    assert all(len(line) <= 76 for line in out.split(b"\r\n")) and not out.endswith(b"\r\n")
    assert leaves(whole(b"application/octet-stream", out, b"base64")) == [("application/octet-stream", body)]


def test_a_quoted_printable_text_with_a_from_line_is_repaired():  # S-1104
    body = b"Hello,\r\nFrom here on=2C\r\nsoft =\r\nbreak\r\n"
    found, out = walk(b"text/plain; charset=utf-8", b"quoted-printable", body, 4)
    assert found.changes == {0: W.REPAIR_QP} and found.top_cte() is None  # its encoding stays
    assert out == b"Hello,\r\n=46rom here on=2C\r\nsoft =\r\nbreak\r\n"


@pytest.mark.parametrize(
    "line",
    [b"trailing  ", b"tab\t", b"caf\xc3\xa9", b"eq= ", b"eq== ", b"=A= ", b"8bit and soft \xff=", b"x" * 200 + b" "],
)
def test_a_quoted_printable_line_is_requoted_to_decode_the_same(line):  # S-1104, RFC 2045 §6.7
    body = b"before\r\n" + line + b"\r\nFrom after\r\n" + line
    found, out = walk(b"text/plain", b"quoted-printable", body)
    assert found.changes == {0: W.REPAIR_QP}
    assert_seven_bit_safe(out)
    assert all(len(x) <= 76 for x in out.split(b"\r\n")[1:-2]) or len(line) > 76
    assert leaves(whole(b"text/plain", out, b"quoted-printable")) == leaves(whole(b"text/plain", body, b"quoted-printable"))


def test_a_base64_part_loses_what_decoders_ignore():  # S-1104, RFC 2045 §6.8
    body = b"QUJD REVG \r\nR0hJ\xff\r\n"
    found, out = walk(b"application/pdf", b"base64", body)
    assert found.changes == {0: W.REPAIR_BASE64} and out == b"QUJDREVG\r\nR0hJ\r\n"
    assert leaves(whole(b"application/pdf", out, b"base64")) == leaves(whole(b"application/pdf", body, b"base64"))


def test_text_holding_its_boundary_mid_line_becomes_base64():  # RFC 2046 §5.1.1
    # A soft break could start a line with "--b": quoted-printable is not safe for it.
    body = (b"--b\r\nContent-Type: text/plain\r\nContent-Transfer-Encoding: 8bit\r\n\r\n" + b"x" * 70
            + b"--b\xc3\xa9\r\n--b--\r\n")
    found, out = walk(b"multipart/mixed; boundary=b", None, body)
    assert found.changes == {1: W.BASE64}
    assert leaves(whole(b"multipart/mixed; boundary=b", out)) == leaves(whole(b"multipart/mixed; boundary=b", body))


@pytest.mark.parametrize(
    ("ct", "body", "armor"),
    [
        (b"text/plain", b"-----BEGIN PGP MESSAGE-----\r\n", True),
        (b"text/plain", b"quoted:\r\n> -----BEGIN PGP MESSAGE-----\r\n", False),
        (b"multipart/mixed; boundary=b",
         b"--b\r\nContent-Type: text/plain\r\n\r\n-----BEGIN PGP SIGNED MESSAGE-----\r\n--b--\r\n", True),
        (b"multipart/mixed; boundary=b", b"--b\r\n\r\n-----BEGIN PGP SIGNED MESSAGE-----\r\n--b--\r\n", True),
        (b"multipart/mixed; boundary=b", b"--b\r\nContent-Type: application/pgp-keys\r\n\r\n"
         b"-----BEGIN PGP PUBLIC KEY BLOCK-----\r\n--b--\r\n", False),
        (b"multipart/mixed; boundary=b", b"--b\r\nContent-Type: text/plain\r\n\r\nhi\r\n--b\r\n"
         b"Content-Type: text/plain\r\n\r\n-----BEGIN PGP MESSAGE-----\r\n--b--\r\n", False),  # only the first
        (b"multipart/mixed; boundary=b", b"--b\r\nContent-Type: multipart/alternative; boundary=c\r\n\r\n--c\r\n"
         b"Content-Type: text/plain\r\n\r\n-----BEGIN PGP MESSAGE-----\r\n--c--\r\n--b--\r\n", True),  # at depth
    ],
)
def test_inline_pgp_in_the_first_text_part(ct, body, armor):  # S-1104: left alone
    first = W.Walker(ct, None)
    for i in range(len(body)):  # one octet at a time: the carry must hold the pattern
        first.feed(body[i : i + 1])
    first.finish()
    assert first.result().armor is armor


@pytest.mark.parametrize(
    ("ct", "body", "problem"),
    [
        (b'multipart/mixed; boundary="b"', b"--b\r\nContent-Type: multipart/signed; boundary=s\r\n\r\n--s\r\n"
         b"Content-Type: text/plain\r\n\r\ncaf\xc3\xa9\r\n--s--\r\n--b--\r\n",
         "an 8-bit or unsafe part inside a signed or encrypted part"),
        (b"multipart/mixed; boundary=b", b"--b\r\nContent-Type: text/plain; name=\"\xc3\xa9\"\r\n\r\nx\r\n--b--\r\n",
         "8-bit octets in a part's header"),
        (b"multipart/mixed; boundary=b", b"caf\xc3\xa9 preamble\r\n--b\r\n\r\nx\r\n--b--\r\n",
         "8-bit octets or unsafe lines in a multipart preamble"),
        (b"multipart/mixed; boundary=b", b"--b\r\n\r\nx\r\n--b--\r\nFrom the epilogue\r\n",
         "8-bit octets or unsafe lines in a multipart epilogue"),
        (b"multipart/mixed; boundary=b", b"--b \r\n\r\nx\r\n--b--\r\n", "white space after a boundary"),
        (b"multipart/mixed; boundary=b", b"--b\r\nContent-Type: multipart/mixed\r\n\r\nx\r\n--b--\r\n",
         "a multipart/mixed part without a usable boundary"),
        (b"multipart/mixed; boundary=b", b"--b\r\nContent-Type: text/plain\r\nContent-Transfer-Encoding: x-uuencode"
         b"\r\n\r\nbegin 644 a \r\n--b--\r\n", "an 8-bit or unsafe part in x-uuencode"),
        (b"multipart/mixed; boundary=b", b"--b\r\nContent-Type: message/rfc822\r\n\r\nFrom alice Mon Jan 1\r\n"
         b"Subject: x\r\n\r\nx\r\n--b--\r\n", 'a part\'s header has a line starting with "From "'),
        (b"multipart/mixed; boundary=b", b"--b\r\nContent-Type: text/plain; (\r\n\r\ncaf\xc3\xa9\r\n--b--\r\n",
         "an 8-bit or unsafe part whose Content-Type does not parse"),
    ],
)
def test_what_cannot_be_made_seven_bit_is_left_unsigned_with_the_reason(ct, body, problem):  # S-1104
    assert walk(ct, None, body, 5)[0].problem == problem


def test_nesting_past_the_bound_is_left_unsigned():  # S-1102, S-1104: bounded memory
    depth = W.MAX_DEPTH + 1
    body = b"".join(b"--b%d\r\nContent-Type: multipart/mixed; boundary=b%d\r\n\r\n" % (i, i + 1) for i in range(depth))
    body += b"--b%d\r\n\r\ncaf\xc3\xa9\r\n" % depth
    assert walk(b"multipart/mixed; boundary=b0", None, body)[0].problem == "parts nested deeper than 50"
    shallow = body.split(b"--b%d\r\n" % (W.MAX_DEPTH - 1))[0] + b"--b%d\r\n\r\ncaf\xc3\xa9\r\n" % (W.MAX_DEPTH - 1)
    found, out = walk(b"multipart/mixed; boundary=b0", None, shallow)
    assert found.problem is None and found.changes == {W.MAX_DEPTH: W.QUOTED_PRINTABLE}


def test_message_rfc822_chains_count_toward_the_depth():  # S-1104: a message/rfc822 is its own multipart
    body = b"Content-Type: message/rfc822\r\n\r\n" * (W.MAX_DEPTH + 1) + b"x\r\n"
    assert walk(b"message/rfc822", None, body)[0].problem == "parts nested deeper than 50"


@pytest.mark.parametrize("end", [b"\r\n\r\nbody\r\n--b--\r\n", b""])
def test_a_part_header_past_the_bound_is_left_unsigned(end):  # S-1102
    body = b"--b\r\nX-Long: " + b"x" * W.PART_HEADER_MAX + end
    assert walk(b"multipart/mixed; boundary=b", None, body)[0].problem == "a part header over 256 KiB"
    first = W.Walker(b"multipart/mixed; boundary=b", None)
    for i in range(0, len(body), 4096):
        first.feed(body[i : i + 4096])
        assert len(first._buf) <= W.PART_HEADER_MAX + 4096  # never more held than the bound and a piece


def test_too_many_parts_are_left_unsigned():  # S-1102
    body = b"--b\r\n\r\nx\r\n" * W.MAX_ENTITIES + b"--b--\r\n"
    assert walk(b"multipart/mixed; boundary=b", None, body)[0].problem == "more than 10000 parts"


@pytest.mark.parametrize(
    "body",
    [
        b"--b\r\nContent-Type: text/plain\r\n--b\r\n\r\ncaf\xc3\xa9\r\n--b--\r\n",  # a header ended by a delimiter
        b"--b\r\n--b\r\nContent-Transfer-Encoding: 8bit\r\n\r\ncaf\xc3\xa9\r\n--b--\r\n",  # an empty part
        b"--b\r\nContent-Transfer-Encoding: 8bit\r\n\r\ncaf\xc3\xa9\r\n--b",  # no close delimiter, no CRLF
        b"--b\r\nContent-Transfer-Encoding: 8bit\r\n\r\ncaf\xc3\xa9",  # cut short
        b"--b\r\n\r\n--bb\r\ncaf\xc3\xa9\r\n--b--",  # "--bb" is no delimiter of "b"
        b"--b\r\nContent-Type: multipart/alternative; boundary=c\r\n\r\n--c\r\n\r\ncaf\xc3\xa9\r\n--b--\r\n",
    ],
)
def test_odd_structures_decode_the_same(body):  # S-1104: as Python's email parser reads them
    ct = b"multipart/mixed; boundary=b"
    for chunk in (1, 3, 1000):
        found, out = walk(ct, None, body, chunk)
        assert found.problem is None and found.changes
        assert leaves(whole(ct, out)) == leaves(whole(ct, body))
        assert out.isascii()


def test_a_container_labelled_eight_bit_says_seven_bit():  # S-1104, RFC 2045 §6.4
    body = b"--b\r\nContent-Type: text/plain\r\n\r\nascii\r\n--b--\r\n"
    found, out = walk(b"multipart/mixed; boundary=b", b"8bit", body)
    assert found.changes == {0: W.SEVEN_BIT} and found.top_cte() == "7bit" and out == body


def test_base64_encoder_lines():  # RFC 2045 §6.8
    enc = recode.Base64()
    data = bytes(range(256)) * 3
    out = b"".join(enc.feed(data[i : i + 13]) for i in range(0, len(data), 13)) + enc.finish()
    lines = out.split(b"\r\n")
    assert all(len(line) == 76 for line in lines[:-1]) and 0 < len(lines[-1]) <= 76
    import base64

    assert base64.b64decode(out.replace(b"\r\n", b"")) == data
    empty = recode.Base64()
    assert empty.feed(b"") + empty.finish() == b""


@pytest.mark.parametrize(
    ("body", "eight_bit", "trailing_ws", "from_line"),
    [
        (b"plain\r\n", False, False, False),
        (b"caf\xc3\xa9\r\n", True, False, False),
        (b"space \r\n", False, True, False),
        (b"tab\t\r\n", False, True, False),
        (b"ends in a space ", False, True, False),  # the region's end is a line end
        (b"From here\r\n", False, False, True),
        (b"x\r\nFrom here\r\n", False, False, True),
        (b"x\r\n>From here\r\n", False, False, False),
    ],
)
def test_line_scan(body, eight_bit, trailing_ws, from_line):  # RFC 3156 §3
    s = recode.LineScan()
    for i in range(len(body)):  # one octet at a time: the carry must hold patterns across pieces
        s.feed(body[i : i + 1])
    s.finish()
    assert (s.eight_bit, s.trailing_ws, s.from_line) == (eight_bit, trailing_ws, from_line)
