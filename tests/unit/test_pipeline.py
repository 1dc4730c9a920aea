"""server/pipeline.py in process: the DKIM body hash fed while spooling
equals the one pass over the spool (SPEC.md S-1103), small or large."""

from __future__ import annotations

import os
import random

import pytest

pytest.importorskip("cryptography")

from server import pipeline  # noqa: E402
from server.affinity import CpuAffinity  # noqa: E402
from server.handoff import FileRange  # noqa: E402
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
