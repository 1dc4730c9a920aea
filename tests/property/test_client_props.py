"""Properties of the SMTP client core (SPEC.md S-806 to S-808; STYLE.md 4, 10).

- Any bytes from the MTA, in any pieces, give a defined outcome: events of
  the documented kinds, never an exception, bounded output; once the
  connection is given up, nothing more happens.
- The same bytes cut into other pieces give the same events and the same
  commands (h11's fuzz harness feeds each input whole and byte by byte).
- Never DATA after a refused RCPT, and a message is Delivered only after
  250s to MAIL, every RCPT and the dot, and a 354 (S-807).
- Dot-stuffing over any split, then RFC 5321 decoding, gives the message back.

Profiles ("ci", "fuzz") come from tests/conftest.py.
"""

from __future__ import annotations

import dataclasses
import re

from hypothesis import given
from hypothesis import strategies as st

from smtp_states.client import (
    Client,
    ClientState,
    Closed,
    Delivered,
    Lost,
    Note,
    Outgoing,
    Ready,
    Rejected,
    SendBody,
    Unavailable,
    client_reply,
)

EVENTS = (Ready, SendBody, Delivered, Rejected, Unavailable, Lost, Note, Closed)

# What an MTA may say, well formed or not, to make every branch reachable.
MTA_FRAGMENTS = [
    b"220 mta ESMTP\r\n",
    b"220-mta\r\n220 ESMTP\r\n",
    b"250-mta\r\n250-PIPELINING\r\n250-SIZE 1000\r\n250-DSN\r\n250-SMTPUTF8\r\n"
    b"250 XFORWARD NAME ADDR PROTO HELO SOURCE PORT IDENT\r\n",
    b"250-mta\r\n250 8BITMIME\r\n",
    b"250 2.0.0 Ok\r\n",
    b"250 2.1.0 Ok\r\n",
    b"250 2.1.5 Ok\r\n",
    b"250 2.0.0 Ok: queued as 4ZX\r\n",
    b"354 End data\r\n",
    b"421 4.3.2 bye\r\n",
    b"450 4.2.0 later\r\n",
    b"451 4.3.0 error\r\n",
    b"502 5.5.2 Error: command not recognized\r\n",
    b"503 5.5.1 Error: need MAIL command\r\n",
    b"550 5.1.1 unknown\r\n",
    b"552 5.3.4 too big\r\n",
    b"554 5.7.1 refused\r\n",
    b"221 2.0.0 Bye\r\n",
    b"250",
    b"-",
    b" ",
    b"\r\n",
    b"\n",
    b"junk\r\n",
    b"99 x\r\n",
    b"2500\r\n",
    b"",
]

mta_bytes = st.lists(
    st.one_of(st.sampled_from(MTA_FRAGMENTS), st.binary(max_size=40)), max_size=30
).map(b"".join)

OUT = Outgoing(
    sender="alice@example.org",
    recipients=("a@x.example", "b@x.example"),
    size=100,
    eightbit=True,
    ret="FULL",
    envid="x",
    rcpt_dsn=(("NEVER", None), (None, "rfc822;b@x.example")),
    xforward=(("ADDR", "192.0.2.1"), ("HELO", "h"), ("IDENT", "Q")),
)


def drive(pieces: list[bytes], smtputf8: bool = False, act: bool = True) -> tuple[list[object], bytes, ClientState]:
    """Play the shell: start a transaction when ready, stream a body on
    354, reset after a refusal (unless not `act`); return every event and
    every byte sent."""
    c = Client("msa.test")
    events: list[object] = []
    sent = bytearray()
    started = 0
    for piece in pieces:
        if not piece:
            continue  # b"" is the MTA closing: see test_close_at_any_point
        got = c.receive(piece)
        events += got
        for ev in got:
            assert isinstance(ev, EVENTS), ev
            if isinstance(ev, SendBody):
                sent += c.stuff(b"Subject: x\r\n\r\n.dot\r\n")
                c.end_body()
            if isinstance(ev, (Rejected, Unavailable, Lost)):
                assert client_reply(ev).code in (451, 554)
        if not act:
            pass
        elif c.state is ClientState.READY and started < 3:
            started += 1
            events += c.start(dataclasses.replace(OUT, smtputf8=smtputf8))
        elif c.state is ClientState.REFUSED:
            c.reset()
        sent += c.data_to_send()
        assert len(sent) < 100_000
    return events, bytes(sent), c.state


def check_dialog(events: list[object], sent: bytes) -> None:
    """S-807: DATA never follows a refused RCPT within one transaction, and
    Delivered only after MAIL, RCPTs and the dot were sent."""
    for ev in events:
        assert isinstance(ev, EVENTS)
    if any(isinstance(ev, Delivered) for ev in events):
        assert b"MAIL FROM:" in sent and b"RCPT TO:" in sent and b"DATA\r\n" in sent and b"\r\n.\r\n" in sent
    after_gone = False
    for ev in events:
        assert not after_gone, events  # nothing after Lost/Unavailable/Closed
        if isinstance(ev, (Lost, Unavailable, Closed)):
            after_gone = True


@given(mta_bytes, st.booleans())
def test_any_mta_bytes_give_a_defined_outcome(data, smtputf8):  # S-808
    events, sent, _ = drive([data], smtputf8)
    check_dialog(events, sent)


@given(mta_bytes, st.lists(st.integers(min_value=0, max_value=400), max_size=8))
def test_same_bytes_however_split(data, cuts):  # S-808
    # Without the shell acting in between (what it does depends on when a
    # reply arrives), the bytes' pieces change nothing.
    whole = drive([data], act=False)
    points = sorted({c % (len(data) + 1) for c in cuts})
    pieces = [data[a:b] for a, b in zip([0, *points], [*points, len(data)], strict=True)]
    assert drive(pieces, act=False) == whole
    assert drive([data[i : i + 1] for i in range(len(data))], act=False) == whole


@given(mta_bytes, st.integers(min_value=0, max_value=400))
def test_the_mta_closing_at_any_point_ends_it(data, cut):  # S-808
    c = Client("msa.test")
    events = c.receive(data[: cut % (len(data) + 1)]) if data else []
    events += c.receive(b"")
    assert c.state is ClientState.CLOSED
    assert isinstance(events[-1], (Lost, Unavailable, Closed)) if events else True
    assert c.receive(b"250 Ok\r\n") == [] and c.receive(b"") == []


@given(st.lists(st.sampled_from([b"250 Ok\r\n", b"550 5.1.1 no\r\n", b"450 4.2.0 later\r\n"]),
                min_size=3, max_size=3))
def test_never_data_after_a_refused_rcpt(envelope_replies):  # S-807
    c = Client("msa.test")
    c.receive(b"220 mta\r\n")
    c.receive(b"250-mta\r\n250 PIPELINING\r\n")
    c.data_to_send()
    c.start(Outgoing("a@x.example", ("b@x.example", "c@x.example"), 10))
    c.data_to_send()
    events = c.receive(b"".join(envelope_replies))
    sent = c.data_to_send()
    if all(r.startswith(b"250") for r in envelope_replies):
        assert sent == b"DATA\r\n" and events == []
    else:
        assert sent == b"" and len(events) == 1 and isinstance(events[0], Rejected)


def _unstuff(wire: bytes) -> bytes:
    """RFC 5321 §4.5.2, the receiver's side."""
    return re.sub(rb"(?m)^\.", b"", wire.replace(b"\r\n", b"\n")).replace(b"\n", b"\r\n")


@given(
    st.lists(st.sampled_from([b"\r\n", b".", b"..", b"a", b"\r\n.", b".\r\n", b"x y"]), max_size=60).map(b"".join),
    st.lists(st.integers(min_value=0, max_value=300), max_size=10),
)
def test_stuffing_over_any_split_round_trips(message, cuts):  # RFC 5321 §4.5.2
    message = b"H: v\r\n\r\n" + message.replace(b"\r", b"").replace(b"\n", b"\r\n")
    c = Client("msa.test")
    c.receive(b"220 mta\r\n250 Ok\r\n")
    c.start(Outgoing("a@x.example", ("b@x.example",), 10))
    c.receive(b"250 Ok\r\n250 Ok\r\n354 go\r\n")
    c.data_to_send()
    points = sorted({x % (len(message) + 1) for x in cuts})
    pieces = [message[a:b] for a, b in zip([0, *points], [*points, len(message)], strict=True)]
    wire = b"".join(c.stuff(p) for p in pieces)
    c.end_body()
    wire += c.data_to_send()
    assert wire.endswith(b"\r\n.\r\n")
    body = wire[: -len(b".\r\n")]
    assert b"\r\n.\r\n" not in b"\r\n" + body  # nothing ends the data early
    expected = message if message.endswith(b"\r\n") else message + b"\r\n"
    assert _unstuff(body) == expected
