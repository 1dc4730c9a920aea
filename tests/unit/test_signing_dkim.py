"""signing/dkim.py in memory (SPEC.md S-1103): RFC 8463 Appendix A's vectors,
header canonicalisation, the h= lists, the field's shape, DNS records."""

from __future__ import annotations

import base64
import re

import pytest

from signing import dkim as D

cryptography = pytest.importorskip("cryptography")
from cryptography.hazmat.primitives.asymmetric import ed25519, rsa  # noqa: E402

# RFC 8463 Appendix A: the key (A.1, A.2) and the signed message (A.3).
RFC8463_SEED = "nWGxne/9WmC6hEr0kuwsxERJxWl7MmkZcDusAxyuf2A="
RFC8463_PUBLIC = "11qYAYKxCrfVS/7TyWQHOg7hcvPapiMlrwIaaPcHURo="
RFC8463_BODY = b"Hi.\r\n\r\nWe lost the game.  Are you hungry yet?\r\n\r\nJoe.\r\n"
RFC8463_FIELDS = [
    ("From", b"From: Joe SixPack <joe@football.example.com>\r\n"),
    ("To", b"To: Suzie Q <suzie@shopping.example.net>\r\n"),
    ("Subject", b"Subject: Is dinner ready?\r\n"),
    ("Date", b"Date: Fri, 11 Jul 2003 21:00:37 -0700 (PDT)\r\n"),
    ("Message-ID", b"Message-ID: <20030712040037.46341.5F8J@football.example.com>\r\n"),
]
RFC8463_SIGNATURE = (
    b"DKIM-Signature: v=1; a=ed25519-sha256; c=relaxed/relaxed;\r\n"
    b" d=football.example.com; i=@football.example.com;\r\n"
    b" q=dns/txt; s=brisbane; t=1528637909; h=from : to :\r\n"
    b" subject : date : message-id : from : subject : date;\r\n"
    b" bh=2jUSOH9NhtVGCQWNr9BrIAPreKQjO6Sn7XIkfJVOzv8=;\r\n"
    b" b="
)
RFC8463_B = "/gCrinpcQOoIfuHNQIbq4pgh9kyIK3AQUdt9OdqQehSwhEIug4D11BusFa3bT3FY5OsU7ZbnKELq+eXdp1Q1Dw=="


def rfc8463_key() -> D.Key:
    private = ed25519.Ed25519PrivateKey.from_private_bytes(base64.b64decode(RFC8463_SEED))
    key = D.key_from_private("football.example.com", "brisbane", private)
    assert isinstance(key, D.Key)
    return key


def test_rfc8463_body_hash_however_split():  # S-1103, RFC 8463 A.3
    for step in (1, 2, 3, 7, 100):
        body = D.RelaxedBody()
        for i in range(0, len(RFC8463_BODY), step):
            body.feed(RFC8463_BODY[i : i + step])
        assert base64.b64encode(body.digest()).decode() == "2jUSOH9NhtVGCQWNr9BrIAPreKQjO6Sn7XIkfJVOzv8="


def test_rfc8463_ed25519_signature_exactly():  # S-1103, RFC 8463 §3, A.3
    # Ed25519 is deterministic: signing the SHA-256 of the canonical header
    # (PureEdDSA over the digest, not over the data) gives the RFC's b=.
    h = ["from", "to", "subject", "date", "message-id", "from", "subject", "date"]
    data = D.header_hash_input(RFC8463_FIELDS, h) + D.relaxed_header(RFC8463_SIGNATURE + b"\r\n")[:-2]
    assert base64.b64encode(rfc8463_key().sign(data)).decode() == RFC8463_B


def test_rfc8463_public_key_record():  # RFC 8463 §4, A.2: the raw key, not SPKI
    assert rfc8463_key().dns_value() == f"v=DKIM1; k=ed25519; p={RFC8463_PUBLIC}"


@pytest.mark.parametrize(
    ("raw", "canonical"),
    [
        (b"Subject: Is dinner ready?\r\n", b"subject:Is dinner ready?\r\n"),
        (b"SUBJECT  :   a \t b  \r\n", b"subject:a b\r\n"),
        (b"To: a,\r\n\tb,\r\n c\r\n", b"to:a, b, c\r\n"),
        (b"X: \r\n", b"x:\r\n"),
        (b"From: J\xc3\xb6rg <j@example.org>\r\n", b"from:J\xc3\xb6rg <j@example.org>\r\n"),
    ],
)
def test_relaxed_header(raw, canonical):  # RFC 6376 §3.4.2
    assert D.relaxed_header(raw) == canonical


def test_signed_names_oversign_and_never():  # S-1103
    names = ["Received", "From", "To", "To", "Subject", "Bcc", "Resent-From", "List-Id", "X-Hashcash",
             "DKIM-Signature", "Return-Path", "X-Other", "Content-Type"]
    h = D.signed_names(names)
    assert h.count("from") == 2 and h.count("to") == 3 and h.count("subject") == 2
    assert h.count("content-type") == 2 and h.count("reply-to") == 1 and h.count("sender") == 1
    assert "resent-from" in h and "list-id" in h and h.count("list-id") == 1
    for never in ("received", "bcc", "x-hashcash", "dkim-signature", "return-path", "x-other"):
        assert never not in h


def test_header_hash_takes_instances_from_the_bottom():  # RFC 6376 §5.4.2
    fields = [("To", b"To: first\r\n"), ("To", b"To: second\r\n")]
    assert D.header_hash_input(fields, ["to", "to", "to"]) == b"to:second\r\nto:first\r\n"


def test_signature_field_shape():  # S-1103: folded, b= last, no l= or x=
    key = rfc8463_key()
    fields = [("Received", b"Received: by msa.test\r\n"), *RFC8463_FIELDS]
    field = D.signature_field(key, fields, b"\x00" * 32, 1764583200)
    text = field.decode()
    assert text.startswith("DKIM-Signature: v=1; a=ed25519-sha256; c=relaxed/relaxed;\r\n"
                           "\td=football.example.com; s=brisbane; t=1764583200;\r\n")
    assert field.endswith(b"\r\n")
    assert re.search(r"\tbh=AAAA[A-Za-z0-9+/=]*;\r\n\tb=[A-Za-z0-9+/=]+(\r\n\t [A-Za-z0-9+/=]+)*\r\n\Z", text), text
    assert all(len(line) <= 78 for line in text.split("\r\n"))
    assert "l=" not in text and "x=" not in text and "received" not in text.split("h=")[1].split(";")[0]


def test_zone_line_splits_rsa_records_into_255_octet_strings():  # S-1103, RFC 1035 §3.3
    key = D.key_from_private("example.org", "msa202612", rsa.generate_private_key(public_exponent=65537,
                                                                                 key_size=2048))
    assert isinstance(key, D.Key)
    line = key.zone_line()
    assert line.startswith("msa202612._domainkey.example.org. IN TXT \"v=DKIM1; k=rsa; p=MII")
    strings = re.findall(r'"([^"]*)"', line)
    assert len(strings) == 2 and all(len(s) <= 255 for s in strings)
    assert "".join(strings) == key.dns_value()
