"""Properties of the SMTP client core (SPEC.md S-806 to S-808; STYLE.md 4, 10).

- Any bytes from the MTA, in any pieces, give a defined outcome: events of
  the documented kinds, never an exception, bounded output; once the
  connection is given up, nothing more happens.
- Any reply stream, played against a shell that acts as delivery/smtp.py
  does (well-formed and malformed lines, replies nobody asked for, doubled
  replies, replies of the wrong class, half lines, a close or a timeout
  anywhere, any chunking): every outcome maps to a defined reply, and an
  oracle that pairs replies with commands by their order checks that
  nothing but RSET or QUIT follows a refusal, DATA and the message only
  follow acceptance, and every protocol violation ends the connection
  (S-807, S-808).
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

from hypothesis import event, given
from hypothesis import strategies as st

from smtp_states import replies as R
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
from smtp_states.limits import MAX_MTA_REPLY_LINE, MAX_MTA_REPLY_LINES

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
        if act and any(isinstance(ev, SendBody) for ev in got) and c.state is ClientState.BODY:
            got += c.check_silence()  # what the shell asks before it streams (S-808)
            if c.state is ClientState.BODY:
                sent += c.stuff(b"Subject: x\r\n\r\n.dot\r\n")
                c.end_body()
        events += got
        for ev in got:
            assert isinstance(ev, EVENTS), ev
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


# -- any reply stream against a shell that acts, judged by an oracle ------------------

def usually(normal: list, rare: list, n: int = 6) -> list:
    """A list to sample from: the normal answers many times, at both ends
    (Hypothesis favours the ends of a range, and shrinks to the first), the
    rare ones in the middle."""
    return normal * n + rare + normal * n


#: Plausible answers per command ("EHLO": an EHLO reply drawn below); at a
#: "wrong" fault any code of CODES comes instead, of the right class or not.
PLAUSIBLE = {
    "GREETING": usually([220], [554, 421], 15),
    "EHLO": usually(["EHLO"], [502, 421], 15),
    "HELO": usually([250], [501, 421], 3),
    "XFORWARD": usually([250], [550, 421], 8),
    "MAIL": usually([250], [451, 553, 421], 8),
    "RCPT": usually([250], [251, 450, 550, 421], 10),
    "DATA": usually([354], [554, 451, 421], 8),
    "DOT": usually([250], [554, 451, 421], 6),
    "RSET": usually([250], [500, 421], 6),
    "QUIT": [221, 500, 221],
}
CODES = [211, 220, 221, 235, 250, 251, 252, 334, 354, 421, 450, 451, 452, 454, 500, 501, 502, 503, 530, 550,
         552, 553, 554, 555]
TEXTS = ["2.0.0 Ok", "2.1.5 Ok", "4.3.0 error", "4.2.0 later", "5.1.1 unknown", "5.6.0 content", "5.7.1 policy",
         "5.3.4 too big", "4.7.1 other class", "go ahead", ""]
EXTENSIONS = ["PIPELINING", "PIPELINING", "8BITMIME", "SMTPUTF8", "DSN", "ENHANCEDSTATUSCODES", "CHUNKING",
              "XFORWARD NAME ADDR PROTO HELO SOURCE PORT IDENT", "XFORWARD ADDR"]
SIZES = [None, "SIZE 10240000", "SIZE", "SIZE 0",  # then malformed (RFC 1870: ASCII digits)
         "SIZE \u00b2", "SIZE 12x", "SIZE 1 2", "SIZE " + "9" * 21, "SIZE \u0661\u0660"]
JUNK = [b"junk\r\n", b"2500 Ok\r\n", b"199 low\r\n", b"250-a\r\n354 b\r\n", b"\x00\xff\r\n", b"x" * 5000,
        b"250-" + b"a\r\n250-" * 300 + b"a\r\n", b"\n", b"\r\n"]
BODIES = [b"Subject: x\r\n\r\nhello\r\n", b"Subject: x\r\n\r\n.dot\r\n..\r\n.\r\n", b"S: x\r\n\r\nno end"]
OUTGOING = [
    OUT,
    Outgoing("a@x.example", ("b@x.example",), 10),
    Outgoing("", ("b@x.example", "c@x.example", "d@x.example"), 10, smtputf8=True),
]
GONE = (Lost, Unavailable, Closed)
FAULTS = ["wrong", "doubled", "surplus", "junk", "half", "binary", "size", "close", "timeout", "silence"]


def reply(code: int, text: str, lines: int = 1) -> bytes:
    body = [f"{code}-{text}" for _ in range(lines - 1)] + [f"{code} {text}".rstrip()]
    return "".join(line + "\r\n" for line in body).encode()


class Oracle:
    """The MTA's bytes read independently of the client: replies in order
    (RFC 5321 §4.2), paired with the commands in the order msa sent them."""

    def __init__(self, received: bytes) -> None:
        self.replies: list[tuple[int, list[bytes]]] = []
        self.broken = False
        self.pending = False  # part of a reply buffered
        lines = received.split(b"\n")
        tail = lines.pop()
        code: bytes | None = None
        current: list[bytes] = []
        for raw in lines:
            line = raw[:-1] if raw.endswith(b"\r") else raw
            if (len(line) > MAX_MTA_REPLY_LINE or not re.fullmatch(rb"[2-5][0-9][0-9](?:[ -].*)?", line, re.S)
                    or (code is not None and line[:3] != code) or len(current) >= MAX_MTA_REPLY_LINES):
                self.broken = True
                return
            code = line[:3]
            current.append(line[4:])
            if line[3:4] != b"-":
                self.replies.append((int(code), current))
                code, current = None, []
        self.broken = len(tail) > MAX_MTA_REPLY_LINE
        self.pending = bool(tail) or bool(current)


def valid_class(verb: str, code: int) -> bool:
    """RFC 5321 §4.2.1, §4.3.2: 3yz answers DATA alone, and DATA takes
    only 3yz or a refusal."""
    return verb == "QUIT" or code // 100 in ((3 if verb == "DATA" else 2), 4, 5)


def bad_size(lines: list[bytes]) -> bool:
    for line in lines[1:]:
        words = line.decode("utf-8", "replace").split()
        if words and words[0].upper() == "SIZE":
            return not (words[1:] == [] or (len(words) == 2 and re.fullmatch(r"[0-9]{1,20}", words[1])))
    return False


class Shell:
    """Plays delivery/smtp.py against a drawn MTA, checking as it goes."""

    def __init__(self, data) -> None:
        self.data = data
        self.c = Client("msa.test")
        self.commands: list[tuple[str, int, int]] = [("GREETING", 0, -1)]  # (verb, step, transaction)
        self.received = bytearray()
        self.step = 0
        self.txn = -1
        self.gone = False
        self.sent = 0
        self.seen: set[str] = set()  # for --hypothesis-show-statistics
        self.turns = 0
        self.faulty = set(data.draw(st.lists(st.integers(1, 40), max_size=3)))

    def draw(self, strategy):
        return self.data.draw(strategy)

    def oracle(self) -> Oracle:
        return Oracle(bytes(self.received))

    # -- what msa sends --------------------------------------------------------
    def drain(self) -> None:
        out = self.c.data_to_send()
        self.sent += len(out)
        assert self.sent < 200_000
        if self.gone:
            assert out == b""  # nothing after the end
        for line in out.split(b"\r\n")[:-1]:
            verb = line.split(b" ", 1)[0].decode("ascii").upper()
            assert verb in PLAUSIBLE, line
            self.commands.append((verb, self.step, self.txn))

    def stream_body(self) -> None:
        o = self.oracle()
        expected = [verb for verb, _, _ in self.commands]
        # Only after a 354 to DATA, with nothing else said (S-808).
        assert len(o.replies) == len(expected) and not o.pending and not o.broken
        assert expected[-1] == "DATA" and o.replies[-1][0] // 100 == 3
        body = self.draw(st.sampled_from(BODIES))
        cuts = sorted(self.draw(st.lists(st.integers(0, len(body)), max_size=4)))
        for a, b in zip([0, *cuts], [*cuts, len(body)], strict=True):
            self.sent += len(self.c.stuff(body[a:b]))
        self.c.end_body()
        assert self.c.data_to_send() in (b".\r\n", b"\r\n.\r\n")
        self.commands.append(("DOT", self.step, self.txn))

    # -- what the MTA sends ----------------------------------------------------
    def feed(self, chunk: bytes) -> list[object]:
        self.step += 1
        if self.c.state is ClientState.CLOSED:
            assert self.c.receive(chunk) == []
            return []
        self.received += chunk
        events = self.c.receive(chunk)
        self.judge(events)
        self.drain()
        self.check_violations_end_it()
        return events

    def judge(self, events: list[object]) -> None:
        for ev in events:
            assert isinstance(ev, EVENTS), ev
            assert not self.gone, events  # nothing after Lost, Unavailable or Closed
            self.seen.add(type(ev).__name__ + (f" {ev.stage}" if isinstance(ev, Rejected) else "")
                          + (f" {ev.reason[:40]}" if isinstance(ev, (Lost, Unavailable)) else "")
                          + (" after the dot" if isinstance(ev, Lost) and ev.after_dot else ""))
            self.gone = isinstance(ev, GONE)
            if isinstance(ev, (Rejected, Lost, Unavailable)):
                answer = client_reply(ev)
                assert answer in (R.HANDOFF_TEMPFAIL, R.SMTPUTF8_UNSUPPORTED, R.MTA_UNAVAILABLE,
                                  R.MTA_LOST_AFTER_DOT) or (
                    answer.code == 554 and re.fullmatch(r"5\.[167]\.\d{1,3}|5\.3\.0", answer.enhanced)), answer
            if isinstance(ev, Rejected):
                assert ev.reply is None or ev.reply.code // 100 in (4, 5)  # never a 2yz or 3yz taken for a refusal
            if isinstance(ev, Lost):
                assert ev.after_dot == self.dot_outstanding(), (ev, self.commands)  # 451 4.4.2 vs 4.4.1
                assert ev.mail_answered == self.mail_answered()
                assert client_reply(ev) == (R.MTA_LOST_AFTER_DOT if ev.after_dot else R.MTA_UNAVAILABLE)
            if isinstance(ev, Delivered):
                self.check_delivered()

    def _paired(self) -> list[tuple[str, int, int, int | None]]:
        o = self.oracle()
        codes = [code for code, _ in o.replies]
        return [(verb, step, txn, codes[i] if i < len(codes) else None)
                for i, (verb, step, txn) in enumerate(self.commands)]

    def dot_outstanding(self) -> bool:
        """The final dot of the current transaction was sent, and no valid
        reply to it has come: the MTA may have the message (RFC 1047)."""
        return any(verb == "DOT" and txn == self.txn and (code is None or not valid_class(verb, code))
                   for verb, _, txn, code in self._paired())

    def mail_answered(self) -> bool:
        """A valid reply to this transaction's MAIL arrived before any reply
        that broke the protocol (the client reads no further than that)."""
        for verb, _, txn, code in self._paired():
            if code is None:
                return False
            if not valid_class(verb, code):
                return False
            if verb == "MAIL" and txn == self.txn:
                return True
        return False

    def check_delivered(self) -> None:
        """S-808: 250 to the client only after 2yz to MAIL, every RCPT and
        the dot, and a 354 to DATA, all in this transaction."""
        mine = [(verb, code) for verb, _, txn, code in self._paired() if txn == self.txn and verb != "XFORWARD"]
        verbs = [verb for verb, _ in mine]
        assert verbs[0] == "MAIL" and "RCPT" in verbs and verbs[-2:] == ["DATA", "DOT"], mine
        for verb, code in mine:
            assert code is not None and code // 100 == (3 if verb == "DATA" else 2), mine

    def check_violations_end_it(self) -> None:
        """Every protocol violation the oracle sees has ended the connection."""
        o = self.oracle()
        closed = self.c.state is ClientState.CLOSED
        if o.broken or len(o.replies) > len(self.commands):  # malformed, or a reply nobody asked for
            assert closed
        for (verb, _, _), (code, lines) in zip(self.commands, o.replies, strict=False):
            if not valid_class(verb, code) or (verb == "EHLO" and code // 100 == 2 and bad_size(lines)):
                assert closed, (verb, code)

    # -- the shell's moves -----------------------------------------------------
    def act(self) -> None:
        """As smtp_relay: RSET after a refusal, or QUIT on a connection that
        will not be reused; start a message on a ready connection."""
        state = self.c.state
        if state is ClientState.REFUSED:
            if self.draw(st.booleans()):
                self.c.reset()
            else:
                self.c.quit()
        elif state is ClientState.READY and self.draw(st.integers(0, 3)) < 3:
            if self.txn < 3:
                self.txn += 1
                self.judge(self.c.start(self.draw(st.sampled_from(OUTGOING))))
            elif self.draw(st.booleans()):
                self.c.quit()
        self.drain()

    def play(self, chunks: list[bytes]) -> None:
        i = 0
        while i < len(chunks):
            events = self.feed(chunks[i])
            i += 1
            go = [ev for ev in events if isinstance(ev, (SendBody, *GONE, Delivered, Rejected))]
            if go and isinstance(go[0], SendBody) and self.c.state is ClientState.BODY:
                # The shell's quiet(): what already arrived is read first.
                arrived = self.draw(st.integers(0, len(chunks) - i))
                for chunk in chunks[i : i + arrived]:
                    self.feed(chunk)
                i += arrived
                self.judge(self.c.check_silence())
                if self.c.state is ClientState.BODY:
                    self.stream_body()
            self.act()

    def awaiting(self) -> list[str]:
        return [verb for verb, _, _ in self.commands[len(self.oracle().replies) :]]

    def turn(self) -> list[bytes] | str:
        """The MTA's next bytes: answers to some or all of what is awaited
        (mostly positive, now and then a refusal), any chunking. At the
        turns drawn as faulty, one fault: a reply of any class, a doubled
        reply, one no one asked for, junk, half a line, random bytes, a
        close or a timeout. The fault-free dialog is the simplest draw, so a
        failure shrinks to the one fault that matters."""
        self.turns += 1
        fault = self.draw(st.sampled_from(FAULTS)) if self.turns in self.faulty else None
        if fault in ("close", "timeout", "silence"):
            return fault
        parts: list[bytes] = []
        awaiting = self.awaiting()
        answered = awaiting[: self.draw(st.integers(0, len(awaiting)))] if awaiting else []
        odd = self.draw(st.integers(0, len(answered) - 1)) if answered and fault in ("wrong", "doubled") else -1
        for n, verb in enumerate(answered):
            code = self.draw(st.sampled_from(CODES if n == odd and fault == "wrong" else PLAUSIBLE[verb]))
            if code == "EHLO":
                exts = self.draw(st.lists(st.sampled_from(EXTENSIONS), max_size=5))
                size = self.draw(st.sampled_from(SIZES if fault == "size" else SIZES[:4]))
                lines = ["mta.test", *exts] + ([size] if size else [])
                parts.append("".join(f"250{'-' if i < len(lines) - 1 else ' '}{x}\r\n"
                                     for i, x in enumerate(lines)).encode())
            else:
                parts.append(reply(code, self.draw(st.sampled_from(TEXTS)), self.draw(st.integers(1, 2))))
            if n == odd and fault == "doubled":
                parts.append(parts[-1])
        if fault == "surplus":
            parts.append(reply(self.draw(st.sampled_from(CODES)), "surplus"))  # a reply nobody asked for
        elif fault == "junk":
            parts.append(self.draw(st.sampled_from(JUNK)))
        elif fault == "half":
            parts.append(self.draw(st.sampled_from([b"250 2.0", b"354", b"2", b"250-more\r\n"])))
        elif fault == "binary":
            parts.append(self.draw(st.binary(min_size=1, max_size=30)))
        data = b"".join(parts)
        cuts = sorted(self.draw(st.lists(st.integers(0, len(data)), max_size=4)))
        return [data[a:b] for a, b in zip([0, *cuts], [*cuts, len(data)], strict=True) if b > a]

    def finish(self) -> None:
        """Across the whole dialog (S-807): after a refused MAIL, RCPT, DATA
        or dot, only RSET or QUIT follow (RCPTs already pipelined with MAIL
        aside), and the next MAIL only after an RSET the MTA accepted."""
        paired = self._paired()
        for j, (verb, _, txn, code) in enumerate(paired):
            if verb not in ("MAIL", "RCPT", "DATA", "DOT") or code is None or code // 100 not in (4, 5):
                continue
            group = next(step for v, step, t, _ in paired if t == txn and v == "MAIL")
            reset = False
            for later, step, t, later_code in paired[j + 1 :]:
                if t != txn:
                    assert later not in ("XFORWARD", "MAIL") or reset, paired  # a new one only after RSET
                    break
                assert later in ("RSET", "QUIT") or (later == "RCPT" and step == group), paired
                reset = reset or (later == "RSET" and later_code is not None and later_code // 100 == 2)


@given(st.data())
def test_any_reply_stream_gives_a_defined_outcome(data):  # S-807, S-808
    shell = Shell(data)
    for _ in range(40):
        if shell.c.state is ClientState.CLOSED:
            break
        turn = shell.turn()
        if turn == "close":
            shell.feed(b"")
        elif turn == "timeout":
            shell.judge([shell.c.lost("timeout")])
            shell.drain()
        elif turn == "silence":
            shell.act()
        else:
            shell.play(turn)
    shell.finish()
    for ev in shell.seen:
        event(ev)
    if shell.gone:
        assert shell.c.state is ClientState.CLOSED and shell.c.receive(b"250 Ok\r\n") == []


@given(mta_bytes, st.lists(st.integers(min_value=0, max_value=400), max_size=8))
def test_same_bytes_however_split(data, cuts):  # S-808
    # Without the shell acting in between (what it does depends on when a
    # reply arrives), the bytes' pieces change nothing: the same events and
    # end. What is sent may only be longer: a command the pieces let out
    # before the violation arrived, which a whole batch keeps back.
    events, sent, state = drive([data], act=False)
    points = sorted({c % (len(data) + 1) for c in cuts})
    pieces = [data[a:b] for a, b in zip([0, *points], [*points, len(data)], strict=True)]
    for split in (drive(pieces, act=False), drive([data[i : i + 1] for i in range(len(data))], act=False)):
        assert (split[0], split[2]) == (events, state)
        assert split[1].startswith(sent)


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
