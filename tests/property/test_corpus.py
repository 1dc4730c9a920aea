"""Replay the kept corpus (tests/corpus/*.smtp) through the core: the
inputs that once broke a rule stay fixed (DESIGN.md "Testing")."""

from __future__ import annotations

import random
from pathlib import Path

import pytest
from test_connection_props import check_replies, feed, merged, new_connection

CORPUS = sorted((Path(__file__).resolve().parent.parent / "corpus").glob("*.smtp"))


def test_corpus_is_not_empty():
    assert len(CORPUS) >= 10


@pytest.mark.parametrize("path", CORPUS, ids=[p.stem for p in CORPUS])
@pytest.mark.parametrize("trusted", [True, False])
def test_corpus_input_replays_the_same_however_split(path, trusted):  # S-104, S-105, S-303
    data = path.read_bytes()
    whole_out, whole_events = feed(new_connection(starttls=False, trusted=trusted), [data])
    check_replies(whole_out)
    bytewise = feed(new_connection(starttls=False, trusted=trusted), [bytes([b]) for b in data])
    assert (bytewise[0], merged(bytewise[1])) == (whole_out, merged(whole_events))
    rng = random.Random(path.name)
    for _ in range(20):
        cuts = sorted(rng.sample(range(1, len(data)), min(len(data) - 1, rng.randint(1, 6))))
        pieces = [data[a:b] for a, b in zip([0, *cuts], [*cuts, len(data)], strict=True)]
        out, events = feed(new_connection(starttls=False, trusted=trusted), pieces)
        assert (out, merged(events)) == (whole_out, merged(whole_events))
