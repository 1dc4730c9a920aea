"""delivery/pipeline.py in process: the DKIM body hash fed while spooling
equals the one pass over the spool (SPEC.md S-1103), small or large."""

from __future__ import annotations

import os
import random

import pytest

pytest.importorskip("cryptography")

from delivery import pipeline  # noqa: E402
from headers import fields_of  # noqa: E402
from server.affinity import CpuAffinity  # noqa: E402
from delivery.handoff import FileRange  # noqa: E402
from signing import RelaxedBody  # noqa: E402


@pytest.mark.parametrize("size", [0, 10, 70_000, 3 * 1024 * 1024 + 17])
def test_body_digest_fed_in_pieces_equals_the_spool_pass(tmp_path, size):  # S-1103, S-1102
    rng = random.Random(size)
    line = b"base64like0123456789ABCDEFGHIJ  and \t some spaces \r\n"
    body = (line * (size // len(line) + 1))[:size]
    path = tmp_path / "spool"
    path.write_bytes(body)
    fd = os.open(path, os.O_RDONLY)
    try:
        once = RelaxedBody()
        for chunk in pipeline.parts_chunks((FileRange(fd, 0, size),), pipeline.DKIM_READ):
            once.feed(chunk)
    finally:
        os.close(fd)
    fed = pipeline.BodyDigest(CpuAffinity())
    i = 0
    while i < size:
        n = rng.randint(1, 70_000)
        fed.feed(body[i : i + n])
        i += n
    assert fed.digest() == once.digest()
    if size > pipeline.OFFLOAD_AFTER:
        assert fed._threaded is not None  # the large one was hashed in its own thread


def test_a_refused_message_stops_the_hashing_thread():  # S-1102
    fed = pipeline.BodyDigest(CpuAffinity())
    fed.feed(b"x" * (pipeline.OFFLOAD_AFTER + 1) + b"\r\n")
    thread = fed._threaded._thread
    fed.close()
    assert not thread.is_alive()


@pytest.mark.parametrize(
    ("header", "domain"),
    [
        (b"From: Alice <alice@Example.ORG>\r\n", "example.org"),
        (b"From:\r\n Alice\r\n <alice@example.org>\r\n", "example.org"),  # folded: unfolded before parsing
        ("From: a@bücher.example\r\n".encode(), "xn--bcher-kva.example"),
        (b"From: not an address\r\n", None),
    ],
)
def test_from_domain(header, domain):  # S-1103
    assert pipeline.from_domain(fields_of(b"Received: x\r\n" + header + b"\r\n")) == domain


def test_stamp_resources_follow_to_then_cc_and_skip_bcc():  # S-1106
    from delivery import stamps
    fields = fields_of(b"To: b@x.example,\r\n A <a@x.example>\r\nCc: c@x.example, B@X.example\r\n"
                              b"Cc: d@x.example\r\nBcc: e@x.example\r\n\r\n")
    envelope = ["a@x.example", "b@x.example", "c@x.example", "d@x.example", "e@x.example", "o:dd@x.example"]
    assert stamps.resources(fields, envelope, 10).resources == ["b@x.example", "a@x.example", "c@x.example", "d@x.example"]
    assert stamps.resources(fields, envelope, 2).resources == ["b@x.example", "a@x.example"]
    colon = fields_of(b'To: "o:dd"@x.example\r\n\r\n')
    assert stamps.resources(colon, ['"o:dd"@x.example'], 10).resources == []  # a colon cannot be in a stamp


def test_stamp_validity():  # S-1106
    from delivery import stamps
    assert not stamps.valid("1:20:261201:a@x.example::r:0", 20, "a@x.example")  # (2^-20 that it is)
    assert not stamps.valid("0:20:261201:a@x.example::r:0", 20, "a@x.example")
    found = next(f"1:8:261201:a@x.example::r:{n:x}" for n in range(100000)
                 if stamps.valid(f"1:8:261201:a@x.example::r:{n:x}", 8, "a@x.example"))
    assert not stamps.valid(found, 8, "b@x.example") and not stamps.valid(found, 9, "a@x.example")
