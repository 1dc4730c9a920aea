"""Properties of the sans-IO SMTP core (SPEC.md §1-§5, §10; STYLE.md "What msa takes" 4 and 10).

- Any client bytes give replies and events, never an exception, and every
  reply line is well formed (S-104).
- Cutting the same bytes into other chunks changes nothing (S-105, S-303;
  h11's fuzz harness feeds each input whole and byte by byte).
- A state-machine model: a message is handed over only after an accepted
  MAIL, at least one accepted RCPT and a 354, from an authenticated or
  trusted session (S-204, S-207, S-1011).
- Dot-stuffing as smtplib does it, then decoding, gives the message back
  (S-301, S-302).
- On long streams dense in CR, LF, ".", NUL, however split, the decoder gives
  the line reference's output and, of its faults, the one its fixed
  priority names (S-301..S-306).

Profiles ("ci", "fuzz") come from tests/conftest.py.
"""

from __future__ import annotations

import base64
import itertools
import re
from collections import deque

from hypothesis import given
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, rule

import sasl
from smtp_states import (
    AuthCheck,
    Close,
    Connection,
    DataChunk,
    DataEnd,
    DataStart,
    Event,
    MailFrom,
    RcptTo,
    Reset,
    Settings,
    StartTls,
)
from smtp_states import replies as R
from smtp_states.data import DataError
from datatest import decode, reference


HOST = "msa.test"
PASSWORD = b"secret"


def b64(data: bytes) -> bytes:
    return base64.b64encode(data)


# Fragments a client might send, including the awkward ones; mixed with
# random binary they reach every state: AUTH exchanges, DATA, STARTTLS.
FRAGMENTS = [
    b"EHLO c\r\nMAIL FROM:<alice@example.com>\r\nRCPT TO:<bob@example.org>\r\nDATA\r\n",
    b"MAIL FROM:<alice@example.com>\r\nRCPT TO:<bob@example.org>\r\nDATA\r\n",
    b"EHLO client.example\r\n",
    b"HELO client.example\r\n",
    b"ehlo x\n",
    b"MAIL FROM:<alice@example.com>\r\n",
    b"MAIL FROM:<>\r\n",
    b"MAIL FROM:<root>\r\n",
    b"MAIL FROM:<alice@example.com> SIZE=100 BODY=8BITMIME SMTPUTF8\r\n",
    "MAIL FROM:<jörg@example.com> SMTPUTF8\r\n".encode(),
    b"MAIL FROM:<mallory@example.org>\r\n",
    b"RCPT TO:<bob@example.org>\r\n",
    b"RCPT TO:<carol@example.org>\r\n",
    b"RCPT TO:<postmaster>\r\n",
    b"RCPT TO:<-x@example.org>\r\n",
    b"DATA\r\n",
    b"Subject: hi\r\n\r\nbody\r\n",
    b".\r\n",
    b"\r\n.\r\n",
    b"..\r\n",
    b"\r",
    b"\n",
    b".",
    b"\x00",
    b"\r\n",
    b"STARTTLS\r\n",
    b"AUTH PLAIN " + b64(b"\0alice\0" + PASSWORD) + b"\r\n",
    b"AUTH PLAIN " + b64(b"\0alice\0wrong") + b"\r\n",
    b"AUTH PLAIN\r\n",
    b64(b"\0bob\0" + PASSWORD) + b"\r\n",
    b"AUTH LOGIN\r\n",
    b"AUTH LOGIN " + b64(b"alice") + b"\r\n",
    b64(b"alice") + b"\r\n",
    b64(PASSWORD) + b"\r\n",
    b"AUTH CRAM-MD5\r\n",
    b"AUTH CRAM-MD5 " + b64(b"x") + b"\r\n",
    b"*\r\n",
    b"=\r\n",
    b"RSET\r\n",
    b"NOOP\r\n",
    b"VRFY x\r\n",
    b"HELP\r\n",
    b"EXPN x\r\n",
    b"QUIT\r\n",
    b"GET / HTTP/1.1\r\n",
    b"\xc3\xa9",
    b"\xff",
    b"x" * 2100,
    b"A" * 12300,
]

# Half the inputs start inside a transaction or an AUTH exchange, so that
# DATA and AUTH are reached often, not only by luck.
OPENERS = [
    b"",
    b"EHLO c\r\nMAIL FROM:<alice@example.com>\r\nRCPT TO:<bob@example.org>\r\nDATA\r\n",
    b"EHLO c\r\nAUTH PLAIN " + b64(b"\0alice\0" + PASSWORD) + b"\r\n",
    b"EHLO c\r\nAUTH LOGIN\r\n",
]
client_bytes = st.tuples(
    st.sampled_from(OPENERS),
    st.lists(
        st.one_of(
            st.sampled_from(FRAGMENTS),
            st.sampled_from([b"\r\n.\r\n", b".\r\n", b"\r", b"\n", b"\x00", b"line\r\n", b"\n.\n"]),
            st.binary(max_size=16),
        ),
        max_size=30,
    ),
).map(lambda t: t[0] + b"".join(t[1]))


class Policy:
    def may_send_as(self, user: str, address: str) -> bool:
        return address.endswith("@example.com")

    def reserve_message(self, user: str) -> bool:
        return True

    def reserve_recipient(self, user: str) -> bool:
        return True


def new_connection(
    *, trusted: bool = True, tls: bool = False, starttls: bool = True, require_tls_for_auth: bool = False
) -> Connection:
    conn = Connection(
        Settings(
            hostname=HOST,
            max_message_size=300,
            max_recipients=2,
            starttls=starttls,
            require_tls_for_auth=require_tls_for_auth,
            auth_mechanisms=("PLAIN", "LOGIN", "CRAM-MD5"),
            new_mechanism=lambda name: sasl.new_mechanism(
                name, hostname=HOST, urandom=lambda n: b"\x01" * n, clock=lambda: 1e9
            ),
            auth_failures=3,
        ),
        Policy(),
        tls=tls,
        trusted=trusted,
    )
    conn.start()
    return conn


def verdict(ev: AuthCheck) -> sasl.AuthResult:
    """Deterministic: the right password for alice or bob passes."""
    cred = ev.credentials
    if isinstance(cred, sasl.Credentials) and cred.username in ("alice", "bob") and cred.password == PASSWORD:
        return sasl.AuthResult(True, cred.username)
    return sasl.AuthResult(False, None)


def answer(conn: Connection, events: list[Event], check=verdict) -> list[Event]:
    """Answer pausing events as the shell does; return every event seen."""
    pending = deque(events)
    seen: list[Event] = []
    while pending:
        ev = pending.popleft()
        seen.append(ev)
        if isinstance(ev, StartTls):
            pending.extend(conn.tls_started())
        elif isinstance(ev, AuthCheck):
            pending.extend(conn.auth_done(check(ev)))
        elif isinstance(ev, DataEnd):
            pending.extend(conn.delivery_done(R.queued("Q1")))
    return seen


def feed(conn: Connection, chunks: list[bytes]) -> tuple[bytes, list[Event]]:
    out = bytearray(conn.data_to_send())
    events: list[Event] = []
    for chunk in chunks:
        if not chunk:
            continue  # b"" is end of input, not an empty read
        events += answer(conn, conn.receive(chunk))
        out += conn.data_to_send()
    return bytes(out), events


def merged(events: list[Event]) -> list[Event]:
    """Each delivered message's DataChunks joined into one.

    Chunk boundaries are the transport's. The chunks of a message that is
    refused (S-304..S-306) or unfinished are dropped: how much of it was
    handed on before the verdict depends on where the chunks were cut (a
    streaming decoder cannot take back what it has passed on), and the shell
    throws it away on the Reset.
    """
    out: list[Event] = []
    body: bytearray | None = None
    for ev in events:
        if isinstance(ev, DataChunk):
            assert body is not None, "DataChunk outside DATA"
            body += ev.data
            continue
        if isinstance(ev, DataStart):
            body = bytearray()
        elif isinstance(ev, DataEnd):
            assert body is not None
            if body:
                out.append(DataChunk(bytes(body)))
            body = None
        else:
            body = None
        out.append(ev)
    return out


LINE = re.compile(rb"(\d{3})([ -])(.*)", re.S)
ENHANCED = re.compile(rb"([245])\.\d{1,3}\.\d{1,3}(?: |$)")


def check_replies(out: bytes) -> None:
    """S-104: CRLF, at most 512 octets, DDD- then DDD , enhanced codes."""
    if not out:
        return
    assert out.endswith(b"\r\n"), out[-50:]
    lines = out[:-2].split(b"\r\n")
    reply: list[bytes] = []
    first_reply = True
    for line in lines:
        assert len(line) + 2 <= 512, line[:80]
        assert b"\r" not in line and b"\n" not in line, line[:80]
        m = LINE.fullmatch(line)
        assert m, line[:80]
        if reply:
            assert line[:3] == reply[0][:3], (reply, line)  # one code per reply
        reply.append(line)
        if m.group(2) == b" ":
            check_reply(reply, first_reply)
            first_reply = False
            reply = []
    assert not reply, reply  # the last reply is complete


def check_reply(reply: list[bytes], greeting: bool) -> None:
    code = reply[0][:3]
    if greeting:
        assert reply == [b"220 msa.test ESMTP msa"]
        return
    if code == b"250" and reply[0][4:] == b"msa.test":
        return  # EHLO/HELO reply: keywords, no enhanced codes (S-104)
    for line in reply:
        text = line[4:]
        if code[:1] == b"3":
            assert not ENHANCED.match(text), line
        else:
            m = ENHANCED.match(text)
            assert m, line
            assert m.group(1) == code[:1], line


# =============================================================================
# (a) any bytes: no exception, well-formed replies
# =============================================================================


@given(data=client_bytes, tls=st.booleans(), require=st.booleans())
def test_any_bytes_give_well_formed_replies(data, tls, require):  # S-104, STYLE.md 4
    conn = new_connection(tls=tls, require_tls_for_auth=require)
    out, events = feed(conn, [data])
    check_replies(out)
    assert sum(isinstance(e, Close) for e in events) <= 1
    if any(isinstance(e, Close) for e in events):
        assert isinstance(events[-1], Close) and conn.closed


@given(data=client_bytes)
def test_any_bytes_then_eof(data):  # S-104
    conn = new_connection()
    out, events = feed(conn, [data])
    events += conn.receive(b"")
    out += conn.data_to_send()
    check_replies(out)
    assert conn.closed and isinstance(events[-1], Close)
    assert conn.receive(b"NOOP\r\n") == [] and conn.data_to_send() == b""


# =============================================================================
# (b) chunking does not change the result
# =============================================================================


@st.composite
def chunked(draw, data: bytes) -> list[bytes]:
    if not data:
        return []
    cuts = sorted(draw(st.sets(st.integers(min_value=1, max_value=max(1, len(data) - 1)), max_size=12)))
    bounds = [0, *cuts, len(data)]
    return [data[a:b] for a, b in itertools.pairwise(bounds)]


#: The three verdicts on a message (S-304, S-305, S-306).


def same_verdict(result: tuple[bytes, list[Event]]) -> tuple[bytes, list[Event]]:
    """The output and the merged events: with the fixed verdict priority of
    DataDecoder, even a message with several faults gets one reply however
    its bytes were split (S-303..S-306)."""
    out, events = result
    return out, merged(events)


@given(data=client_bytes, pick=st.data())
def test_chunking_does_not_change_replies_or_events(data, pick):  # S-105, S-303
    # No certificate: a handshake makes later bytes TLS, which a fixed
    # byte string cannot model; STARTTLS then gets a 502 and no pause.
    whole = same_verdict(feed(new_connection(starttls=False), [data]))
    pieces = pick.draw(chunked(data))
    assert same_verdict(feed(new_connection(starttls=False), pieces)) == whole
    if len(data) <= 4000:
        single = feed(new_connection(starttls=False), [bytes([b]) for b in data])
        assert same_verdict(single) == whole


# =============================================================================
# (c) a model of the session: what may lead to a hand-off
# =============================================================================

COMMANDS = [f for f in FRAGMENTS if len(f) < 200]
BODY = [b"hello\r\n", b"..dot\r\n", b".\r\n", b"\r\n.\r\n", b"\n.\n", b"\r", b"\x00", b"x" * 350 + b"\r\n"]


class SessionModel(RuleBasedStateMachine):
    """The model follows the events; each DataEnd must be earned."""

    @initialize(
        trusted=st.booleans(),
        tls=st.booleans(),
        require=st.booleans(),
        auth_works=st.booleans(),
    )
    def start(self, trusted, tls, require, auth_works):
        self.trusted = trusted
        self.auth_works = auth_works
        self.conn = new_connection(trusted=trusted, tls=tls, require_tls_for_auth=require)
        self.out = bytearray(self.conn.data_to_send())
        self.authenticated = False
        self.sender: str | None = None
        self.recipients: list[str] = []
        self.data_started = False
        self.closed = False
        self.starts = 0
        self.ends = 0

    def check(self, ev: AuthCheck) -> sasl.AuthResult:
        return verdict(ev) if self.auth_works else sasl.AuthResult(False, None)

    def run(self, events: list[Event]) -> None:
        pending = deque(events)
        while pending:
            ev = pending.popleft()
            assert not self.closed, f"{ev} after Close"
            if isinstance(ev, StartTls):
                self.authenticated = False  # S-402
                self.sender, self.recipients, self.data_started = None, [], False
                pending.extend(self.conn.tls_started())
            elif isinstance(ev, AuthCheck):
                result = self.check(ev)
                assert not self.authenticated  # S-501: no AUTH after a success
                assert self.sender is None  # S-501: not in a transaction
                self.authenticated = result.ok
                pending.extend(self.conn.auth_done(result))
            elif isinstance(ev, MailFrom):
                assert self.trusted or self.authenticated  # S-204, S-1011
                assert self.sender is None  # no nested MAIL
                self.sender = ev.sender
            elif isinstance(ev, RcptTo):
                assert self.sender is not None
                assert not self.data_started
                assert ev.recipient not in self.recipients  # S-205: passed once
                self.recipients.append(ev.recipient)
            elif isinstance(ev, DataStart):
                assert self.sender is not None and self.recipients
                self.data_started = True
                self.starts += 1
            elif isinstance(ev, DataChunk):
                assert self.data_started
            elif isinstance(ev, DataEnd):
                # S-207, S-1011: accepted MAIL, >= 1 RCPT, a 354, and trust or AUTH.
                assert self.data_started and self.sender is not None and self.recipients
                assert self.trusted or self.authenticated
                assert ev.envelope.sender == self.sender
                assert list(ev.envelope.recipients) == self.recipients
                assert 1 <= len(ev.envelope.recipients) <= 2
                self.ends += 1
                self.sender, self.recipients, self.data_started = None, [], False
                pending.extend(self.conn.delivery_done(R.queued("Q1")))
            elif isinstance(ev, Reset):
                self.sender, self.recipients, self.data_started = None, [], False
            elif isinstance(ev, Close):
                self.closed = True
        self.out += self.conn.data_to_send()

    def send(self, data: bytes) -> None:
        self.run(self.conn.receive(data))

    @rule(data=st.sampled_from(COMMANDS))
    def command(self, data):
        self.send(data)

    @rule(data=st.sampled_from(BODY))
    def body(self, data):
        self.send(data)

    @rule(data=st.binary(min_size=1, max_size=24))
    def noise(self, data):
        self.send(data)

    @rule(data=st.sampled_from(COMMANDS), cut=st.integers(min_value=1, max_value=10))
    def split_command(self, data, cut):
        self.send(data[:cut])
        if data[cut:]:
            self.send(data[cut:])

    @invariant()
    def replies_match_the_model(self):
        if not hasattr(self, "conn"):
            return
        out = bytes(self.out)
        check_replies(out)
        # One 354 per DataStart, and the model agrees on being closed.
        assert len(re.findall(rb"(?:^|\r\n)354 ", out)) == self.starts
        assert self.conn.closed == self.closed
        if not (self.trusted or self.auth_works):
            assert self.ends == 0  # S-1011


TestSessionModel = SessionModel.TestCase


@given(data=client_bytes, tls=st.booleans(), require=st.booleans())
def test_open_relay_is_impossible(data, tls, require):  # S-1011
    """Neither authenticated nor trusted: whatever the bytes, no hand-off."""
    conn = new_connection(trusted=False, tls=tls, require_tls_for_auth=require)
    out, events = feed(conn, [data])
    # feed() answers AUTH with the verifier; here every check fails.
    conn2 = new_connection(trusted=False, tls=tls, require_tls_for_auth=require)
    out2 = bytearray(conn2.data_to_send())
    events2: list[Event] = []
    if data:
        events2 = answer(conn2, conn2.receive(data), check=lambda ev: sasl.AuthResult(False, None))
    out2 += conn2.data_to_send()
    assert not any(isinstance(e, (MailFrom, RcptTo, DataStart, DataChunk, DataEnd)) for e in events2)
    assert b"\r\n354 " not in bytes(out2) and b"250 2.1.0" not in bytes(out2)
    # With working credentials, a DataEnd needs a successful AUTH first.
    if any(isinstance(e, DataEnd) for e in events):
        first_end = next(i for i, e in enumerate(events) if isinstance(e, DataEnd))
        assert b"235 2.7.0" in out
        assert any(isinstance(e, AuthCheck) for e in events[:first_end])


# =============================================================================
# (d) dot-stuffing round trip, and the decoder against a line reference
# =============================================================================

line_text = st.one_of(
    st.binary(max_size=30),
    st.sampled_from([b"", b".", b"..", b"...", b". ", b".\t"]),
    st.binary(max_size=20).map(lambda b: b"." + b),
).map(lambda b: b.replace(b"\r", b"").replace(b"\n", b"").replace(b"\x00", b""))

bodies = st.tuples(
    st.lists(st.tuples(line_text, st.sampled_from([b"\r\n", b"\n"])), max_size=20),
    line_text,
).map(lambda t: b"".join(text + end for text, end in t[0]) + t[1])


def smtplib_stuff(body: bytes) -> bytes:
    """What smtplib.SMTP.data() puts on the wire (_fix_eols, _quote_periods)."""
    data = re.sub(rb"(?:\r\n|\n|\r(?!\n))", b"\r\n", body)
    data = re.sub(rb"(?m)^\.", b"..", data)
    if not data.endswith(b"\r\n"):
        data += b"\r\n"
    return data + b".\r\n"


@given(body=bodies, pick=st.data())
def test_dot_stuffing_round_trip(body, pick):  # S-301, S-302, S-304
    wire = smtplib_stuff(body)
    expected = re.sub(rb"(?<!\r)\n", b"\r\n", body)
    if not expected.endswith(b"\r\n"):  # smtplib ends the data with CRLF
        expected += b"\r\n"
    for chunks in ([wire], pick.draw(chunked(wire + b"NEXT"))):
        out, consumed, error, size = decode(chunks)
        assert error is None
        assert out == expected
        assert consumed == len(wire)
        assert size == len(expected)


data_stream = st.lists(
    st.sampled_from([b"\r", b"\n", b".", b"\r\n", b"\r\n.\r\n", b"a", b"\x00", b"..", b"xyz"]),
    max_size=30,
).map(b"".join)


@given(stream=data_stream, pick=st.data())
def test_decoder_agrees_with_line_reference(stream, pick):  # S-301, S-302, S-305, S-306
    expected, consumed, errors = reference(stream)
    out, got_consumed, error, _ = decode(pick.draw(chunked(stream)))
    assert got_consumed == consumed
    if consumed is None:
        return
    if errors:
        assert error in errors
    else:
        assert error is None and out == expected


@given(stream=data_stream, pick=st.data())
def test_decoder_chunking_is_invisible(stream, pick):  # S-303
    whole = decode([stream])
    parts = decode(pick.draw(chunked(stream)))
    assert parts[1] == whole[1]  # the same end
    assert parts[2] == whole[2]  # the same verdict, by the decoder's fixed priority
    if whole[1] is not None and whole[2] is None:
        assert parts == whole
    single = decode([bytes([b]) for b in stream])
    assert single[1] == whole[1] and single[2] == whole[2]
    if whole[1] is not None and whole[2] is None:
        assert single == whole


#: Of several faults, the one the decoder names (its fixed priority, S-303..S-306).
VERDICT_ORDER = (DataError.BARE_CR, DataError.NUL, DataError.TOO_BIG)
END = b"\r\n.\r\n"


DENSE_UNITS = [b"\r", b"\n", b".", b"\x00", b"a", b"\r\n", b"\n."]
#: Line texts, weighted by repetition: mostly dot lines; "." alone (the end,
#: after a CRLF) rarer. FAULTY_TEXTS join them in a quarter of the streams.
DENSE_TEXTS = [b"", b"", b"..", b"...", b".a", b".a", b"a", b"a.", b"."]
FAULTY_TEXTS = [b".\x00", b"\r."]


@st.composite
def dense_streams(draw) -> bytes:
    """Streams dense in CR, LF, "." and NUL, then maybe an end and a next
    command: either up to 600 draws from a few of DENSE_UNITS (some without
    CR or NUL, so that many are clean), or up to 300 lines of DENSE_TEXTS
    ending in CRLF or a bare LF. The length is drawn first: hypothesis's
    lists are short on average."""
    picks = draw(st.binary(min_size=draw(st.integers(0, 600)), max_size=600))
    if draw(st.booleans()):
        units = draw(st.lists(st.sampled_from(DENSE_UNITS), min_size=1, unique=True))
        body = b"".join(units[b % len(units)] for b in picks)
    else:
        texts = DENSE_TEXTS + (FAULTY_TEXTS if draw(st.integers(0, 3)) == 0 else [])
        pairs = zip(picks[::2], picks[1::2], strict=False)  # an odd last pick is left over
        body = b"".join(texts[t % len(texts)] + (b"\r\n", b"\n")[e & 1] for t, e in pairs)
    return body + draw(st.sampled_from([b"", END, END + b"NOOP\r\n", b"\r\n.", b"\n.\r"]))


@given(stream=dense_streams(), max_size=st.one_of(st.just(10**9), st.integers(0, 1000)), pick=st.data())
def test_decoder_equals_line_reference_on_dense_streams(stream, max_size, pick):  # S-301..S-306
    for chunks in (pick.draw(chunked(stream)), [bytes([b]) for b in stream]):
        agrees_with_reference(stream, chunks, max_size)


def agrees_with_reference(stream: bytes, chunks: list[bytes], max_size: int) -> None:
    expected, consumed, errors = reference(stream, max_size)
    out, got_consumed, error, size = decode(chunks, max_size)
    assert got_consumed == consumed
    if consumed is not None:
        assert error == next((e for e in VERDICT_ORDER if e in errors), None)
        if error is None:
            assert (out, size) == (expected, len(expected))
        return
    # Not ended: what was decided cannot depend on what comes next.
    completed, _, completed_errors = reference(stream + END, max_size)
    if error is not None:
        assert error in completed_errors
    elif not completed_errors:
        assert completed.startswith(out) and size == len(out)
