"""The SMTP core driven in memory: dialogs against `Connection` (SPEC.md §1, §2, §4, §5).

Each test is a transcript in the manner of chasquid's `.cmy` dialogs: a list of
`("C", bytes)` (the client sends) and `("S", text)` / `("S~", prefix)` (the next
reply line is exactly / starts with). Pausing events are answered by the
`Session` helper the way the shell answers them, unless a test wants to look
at the pause itself (`answer=False`).
"""

from __future__ import annotations

import base64
import hmac
import re
import tracemalloc
from collections import deque
from collections.abc import Iterable

import pytest

import sasl
from smtp_states import (
    AuthCheck,
    Close,
    Connection,
    DataChunk,
    DataEnd,
    DataStart,
    Ehlo,
    Event,
    MailFrom,
    RcptTo,
    Refused,
    Reply,
    Reset,
    Settings,
    StartTls,
)
from smtp_states import replies as R
from smtp_states.limits import MAX_AUTH_LINE, MAX_COMMAND_LINE, MAX_MESSAGES, MAX_PENDING_INPUT

HOST = "msa.test"
GREETING = "220 msa.test ESMTP msa"
PASSWORD = b"secret"
USERS = {"alice", "bob"}
ALL_MECHANISMS = ("PLAIN", "LOGIN", "CRAM-MD5")
EHLO_BASE = [
    "250-msa.test",
    "250-PIPELINING",
    "250-SIZE 26214400",
    "250-8BITMIME",
    "250-SMTPUTF8",
    "250-ENHANCEDSTATUSCODES",
]


def b64(data: bytes) -> bytes:
    return base64.b64encode(data)


def plain(user: str = "alice", password: bytes = PASSWORD, authzid: str = "") -> bytes:
    return b64(authzid.encode() + b"\0" + user.encode() + b"\0" + password)


class OwnPolicy:
    """`user` owns user@example.com, and alice also owns alice@[192.0.2.1]."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, str]] = []
        # S-1201: what the store would still let through (None: no limit).
        self.messages_left: int | None = None
        self.recipients_left: int | None = None
        self.reserved: list[tuple[str, str]] = []

    def may_send_as(self, user: str, address: str) -> bool:
        self.calls.append((user, address))
        return address.lower() in (f"{user}@example.com", f"{user}@[192.0.2.1]")

    def _reserve(self, user: str, kind: str) -> bool:
        left = getattr(self, f"{kind}_left")
        if left is not None:
            if left <= 0:
                return False
            setattr(self, f"{kind}_left", left - 1)
        self.reserved.append((user, kind))
        return True

    def reserve_message(self, user: str) -> bool:
        return self._reserve(user, "messages")

    def reserve_recipient(self, user: str) -> bool:
        return self._reserve(user, "recipients")


def check_credentials(ev: AuthCheck) -> sasl.AuthResult:
    """What the shell's verifier says, with one password for every user."""
    cred = ev.credentials
    if not isinstance(cred, sasl.Credentials):
        return sasl.AuthResult(False, None)
    user = cred.username.lower()
    if cred.mechanism == "CRAM-MD5":
        assert cred.challenge is not None and cred.digest is not None
        ok = hmac.compare_digest(hmac.new(PASSWORD, cred.challenge, "md5").hexdigest(), cred.digest)
    else:
        ok = cred.password == PASSWORD
    return sasl.AuthResult(ok and user in USERS, user if user in USERS else None)


class Session:
    """A Connection with a client's view: reply lines and every event."""

    def __init__(
        self,
        *,
        tls: bool = False,
        trusted: bool = False,
        starttls: bool = True,
        require_tls_for_auth: bool = True,
        auth_mechanisms: tuple[str, ...] = ALL_MECHANISMS,
        answer: bool = True,
        **settings: object,
    ) -> None:
        self.policy = OwnPolicy()
        self.mechanisms_made: list[str] = []

        def factory(name: str) -> object:
            self.mechanisms_made.append(name)
            return sasl.new_mechanism(name, hostname=HOST)

        self.conn = Connection(
            Settings(
                hostname=HOST,
                starttls=starttls,
                require_tls_for_auth=require_tls_for_auth,
                auth_mechanisms=auth_mechanisms,
                new_mechanism=factory,
                **settings,  # type: ignore[arg-type]
            ),
            self.policy,
            tls=tls,
            trusted=trusted,
        )
        self.answer = answer
        self.events: list[Event] = []
        self.auth_checks: list[AuthCheck] = []
        self.auth_results: deque[sasl.AuthResult] = deque()  # overrides check_credentials
        self.delivered: list[DataEnd] = []
        self.queue = 0
        self.conn.start()

    # -- answering pauses as the shell does ------------------------------------
    def handle(self, events: Iterable[Event]) -> list[Event]:
        pending = deque(events)
        seen: list[Event] = []
        while pending:
            ev = pending.popleft()
            seen.append(ev)
            if not self.answer:
                continue
            if isinstance(ev, StartTls):
                pending.extend(self.conn.tls_started())
            elif isinstance(ev, AuthCheck):
                pending.extend(self.conn.auth_done(self.check(ev)))
            elif isinstance(ev, DataEnd):
                pending.extend(self.conn.delivery_done(self.deliver(ev)))
        self.events.extend(seen)
        return seen

    def check(self, ev: AuthCheck) -> sasl.AuthResult:
        self.auth_checks.append(ev)
        return self.auth_results.popleft() if self.auth_results else check_credentials(ev)

    def deliver(self, ev: DataEnd) -> Reply:
        self.delivered.append(ev)
        self.queue += 1
        return R.queued(f"Q{self.queue}")

    # -- the wire ----------------------------------------------------------------
    def send(self, data: bytes) -> list[Event]:
        return self.handle(self.conn.receive(data))

    def read(self) -> list[str]:
        out = self.conn.data_to_send()
        if not out:
            return []
        assert out.endswith(b"\r\n"), out
        lines = out[:-2].split(b"\r\n")
        for line in lines:
            assert len(line) + 2 <= 512 and re.match(rb"\d{3}[ -]", line), line  # S-104
        return [line.decode("utf-8") for line in lines]

    def ask(self, data: bytes) -> list[str]:
        """Send, and return the reply lines."""
        self.send(data)
        return self.read()

    def one(self, line: bytes) -> str:
        """Send one command line; return its single reply line."""
        lines = self.ask(line + b"\r\n")
        assert len(lines) == 1, lines
        return lines[0]

    def of(self, kind: type) -> list:
        return [e for e in self.events if isinstance(e, kind)]


def dialog(s: Session, script: list[tuple[str, object]]) -> None:
    """Run a transcript; every reply line must be matched, in order."""
    pending: deque[str] = deque(s.read())
    for step, (kind, value) in enumerate(script):
        if kind == "C":
            assert not pending, f"step {step}: unmatched replies {list(pending)}"
            assert isinstance(value, bytes)
            pending.extend(s.ask(value))
        elif kind in ("S", "S~"):
            assert pending, f"step {step}: expected {value!r}, got nothing"
            got = pending.popleft()
            if kind == "S":
                assert got == value, f"step {step}: expected {value!r}, got {got!r}"
            else:
                assert isinstance(value, str) and got.startswith(value), f"step {step}: {got!r} !~ {value!r}"
        else:
            raise ValueError(kind)
    assert not pending, f"unmatched replies at the end: {list(pending)}"


def is_close(ev: Event, reason: str) -> bool:
    return isinstance(ev, Close) and ev.reason == reason


def greeted(**kwargs: object) -> Session:
    s = Session(**kwargs)  # type: ignore[arg-type]
    s.read()
    s.ask(b"EHLO client.example\r\n")
    return s


def authenticated(user: str = "alice", **kwargs: object) -> Session:
    s = greeted(tls=True, **kwargs)
    assert s.one(b"AUTH PLAIN " + plain(user)) == "235 2.7.0 Authentication successful"
    return s


def trusted(**kwargs: object) -> Session:
    return greeted(trusted=True, **kwargs)


def in_transaction(s: Session, sender: bytes = b"<alice@example.com>") -> Session:
    assert s.one(b"MAIL FROM:" + sender) == "250 2.1.0 Ok"
    return s


# =============================================================================
# Greeting, EHLO and HELO (S-201, S-202)
# =============================================================================


def test_greeting_names_host_without_version():  # S-201
    s = Session()
    assert s.read() == [GREETING]


def test_no_reply_before_start():  # S-201: the shell decides when to greet
    conn = Connection(Settings(hostname=HOST), OwnPolicy(), tls=False, trusted=False)
    assert conn.data_to_send() == b""


def test_ehlo_offers_starttls_but_not_auth_in_plaintext():  # S-202, S-1003
    dialog(
        Session(),
        [
            ("S", GREETING),
            ("C", b"EHLO client.example\r\n"),
            *[("S", line) for line in EHLO_BASE],
            ("S", "250 STARTTLS"),
        ],
    )


def test_ehlo_without_certificate_offers_neither_starttls_nor_auth():  # S-202
    s = Session(starttls=False)
    s.read()
    assert s.ask(b"EHLO client.example\r\n") == EHLO_BASE[:-1] + ["250 ENHANCEDSTATUSCODES"]


def test_ehlo_over_tls_offers_auth_and_not_starttls():  # S-202
    s = Session(tls=True)
    s.read()
    assert s.ask(b"EHLO client.example\r\n") == EHLO_BASE + ["250 AUTH PLAIN LOGIN CRAM-MD5"]


def test_ehlo_offers_auth_in_plaintext_when_tls_not_required():  # S-202
    s = Session(require_tls_for_auth=False)
    s.read()
    assert s.ask(b"EHLO client.example\r\n") == EHLO_BASE + ["250-STARTTLS", "250 AUTH PLAIN LOGIN CRAM-MD5"]


def test_ehlo_offers_cram_md5_only_if_listed():  # S-202
    s = Session(tls=True, auth_mechanisms=("PLAIN", "LOGIN"))
    s.read()
    assert s.ask(b"EHLO client.example\r\n")[-1] == "250 AUTH PLAIN LOGIN"
    assert s.one(b"AUTH CRAM-MD5") == "504 5.5.4 Unrecognized authentication type"
    assert s.mechanisms_made == []


def test_ehlo_size_is_the_configured_limit():  # S-202
    s = Session(max_message_size=1000, starttls=False)
    s.read()
    assert "250-SIZE 1000" in s.ask(b"EHLO client.example\r\n")


def test_ehlo_after_starttls_offers_auth_and_no_starttls():  # S-202, S-402
    s = greeted()
    assert s.ask(b"STARTTLS\r\n") == ["220 2.0.0 Ready to start TLS"]
    assert s.ask(b"EHLO client.example\r\n") == EHLO_BASE + ["250 AUTH PLAIN LOGIN CRAM-MD5"]


def test_ehlo_name_is_reported_in_event():  # S-202
    s = Session()
    s.send(b"EHLO laptop.example\r\nHELO other\r\n")
    assert s.of(Ehlo) == [Ehlo("laptop.example", True), Ehlo("other", False)]


def test_odd_ehlo_name_is_not_rejected():  # S-202: stored for Received:, not judged
    s = Session(starttls=False)
    s.read()
    assert s.ask(b"EHLO [not a domain]!!\r\n")[0] == "250-msa.test"


@pytest.mark.parametrize("line", [b"EHLO", b"EHLO ", b"EHLO  "])
def test_ehlo_without_name_is_a_syntax_error(line):  # S-202
    s = Session()
    s.read()
    assert s.one(line) == "501 5.5.4 Syntax: EHLO hostname"


def test_helo_without_name_is_a_syntax_error():  # S-202
    s = Session()
    s.read()
    assert s.one(b"HELO").startswith("501 5.5.4 ")


def test_helo_has_no_extensions():  # S-202
    s = Session(tls=True, trusted=True)
    dialog(
        s,
        [
            ("S", GREETING),
            ("C", b"HELO client.example\r\n"),
            ("S", "250 msa.test"),
            ("C", b"AUTH PLAIN " + plain() + b"\r\n"),
            ("S", "503 5.5.1 Send EHLO first"),
            ("C", b"MAIL FROM:<alice@example.com> SIZE=10\r\n"),
            ("S~", "555 5.5.4 "),
            ("C", b"MAIL FROM:<alice@example.com> BODY=8BITMIME\r\n"),
            ("S~", "555 5.5.4 "),
            ("C", b"MAIL FROM:<alice@example.com>\r\n"),
            ("S", "250 2.1.0 Ok"),
        ],
    )
    assert s.auth_checks == [] and s.mechanisms_made == []


def test_starttls_after_helo_needs_ehlo():  # S-202
    s = Session()
    s.read()
    s.ask(b"HELO client.example\r\n")
    assert s.one(b"STARTTLS") == "503 5.5.1 Send EHLO first"
    assert s.of(StartTls) == []


def test_ehlo_after_helo_restores_extensions():  # S-202
    s = Session(tls=True)
    s.read()
    s.ask(b"HELO client.example\r\n")
    s.ask(b"EHLO client.example\r\n")
    assert s.one(b"AUTH PLAIN " + plain()) == "235 2.7.0 Authentication successful"


# =============================================================================
# The command/state table (§2)
# =============================================================================

STATES = ("fresh", "greeted", "mail", "rcpt")


def in_state(state: str) -> Session:
    s = Session(trusted=True, require_tls_for_auth=False)
    s.read()
    if state != "fresh":
        s.ask(b"EHLO client.example\r\n")
    if state in ("mail", "rcpt"):
        assert s.one(b"MAIL FROM:<alice@example.com>") == "250 2.1.0 Ok"
    if state == "rcpt":
        assert s.one(b"RCPT TO:<bob@example.org>") == "250 2.1.5 Ok"
    return s


# (command, {state: first reply line, or its prefix when it ends in a space})
TABLE: list[tuple[bytes, dict[str, str]]] = [
    (b"EHLO client.example", dict.fromkeys(STATES, "250-msa.test")),
    (b"HELO client.example", dict.fromkeys(STATES, "250 msa.test")),
    (
        b"STARTTLS",
        {
            "fresh": "220 2.0.0 Ready to start TLS",
            "greeted": "220 2.0.0 Ready to start TLS",
            "mail": "503 5.5.1 ",
            "rcpt": "503 5.5.1 ",
        },
    ),
    (b"AUTH PLAIN", {"fresh": "503 5.5.1 ", "greeted": "334 ", "mail": "503 5.5.1 ", "rcpt": "503 5.5.1 "}),
    (
        b"MAIL FROM:<carol@example.com>",
        {
            "fresh": "503 5.5.1 ",
            "greeted": "250 2.1.0 Ok",
            "mail": "503 5.5.1 Nested MAIL command",
            "rcpt": "503 5.5.1 ",
        },
    ),
    (
        b"RCPT TO:<dave@example.org>",
        {
            "fresh": "503 5.5.1 Need MAIL command",
            "greeted": "503 5.5.1 Need MAIL command",
            "mail": "250 2.1.5 Ok",
            "rcpt": "250 2.1.5 Ok",
        },
    ),
    (
        b"DATA",
        {
            "fresh": "503 5.5.1 ",
            "greeted": "503 5.5.1 ",
            "mail": "554 5.5.1 No valid recipients",
            "rcpt": "354 End data with <CR><LF>.<CR><LF>",
        },
    ),
    (b"RSET", dict.fromkeys(STATES, "250 2.0.0 Ok")),
    (b"NOOP", dict.fromkeys(STATES, "250 2.0.0 Ok")),
    (b"HELP", dict.fromkeys(STATES, "214 2.0.0 ")),
    (b"VRFY alice", dict.fromkeys(STATES, "252 2.0.0 Not verified; send mail to find out")),
    (b"QUIT", dict.fromkeys(STATES, "221 2.0.0 Bye")),
]


@pytest.mark.parametrize(
    ("command", "state", "expected"),
    [(cmd, state, row[state]) for cmd, row in TABLE for state in STATES],
    ids=[f"{cmd.split()[0].decode()}-{state}" for cmd, _ in TABLE for state in STATES],
)
def test_command_state_table(command, state, expected):  # §2 table
    s = in_state(state)
    first = s.ask(command + b"\r\n")[0]
    if expected.endswith(" "):
        assert first.startswith(expected)
    else:
        assert first == expected


@pytest.mark.parametrize("command", [b"EHLO client.example", b"HELO client.example", b"RSET"])
@pytest.mark.parametrize("state", ["mail", "rcpt"])
def test_ehlo_helo_and_rset_end_the_transaction(command, state):  # S-203
    s = in_state(state)
    s.ask(command + b"\r\n")
    assert len(s.of(Reset)) == 1
    assert s.one(b"RCPT TO:<bob@example.org>") == "503 5.5.1 Need MAIL command"
    assert s.one(b"DATA").startswith("503 5.5.1 ")
    assert s.one(b"MAIL FROM:<alice@example.com>") == "250 2.1.0 Ok"


def test_rset_outside_a_transaction_reports_no_reset():  # S-203
    s = in_state("greeted")
    assert s.one(b"RSET") == "250 2.0.0 Ok"
    assert s.of(Reset) == []


@pytest.mark.parametrize("command", [b"RSET", b"EHLO client.example", b"HELO client.example"])
def test_rset_and_ehlo_keep_the_authentication(command):  # S-203
    s = authenticated()
    s.ask(command + b"\r\n")
    if command.startswith(b"HELO"):
        assert s.one(b"MAIL FROM:<alice@example.com>") == "250 2.1.0 Ok"
    else:
        assert s.one(b"MAIL FROM:<alice@example.com> SIZE=10") == "250 2.1.0 Ok"
    assert s.conn.user == "alice"


def test_quit_closes_in_any_state():  # S-203
    for state in STATES:
        s = in_state(state)
        events = s.send(b"QUIT\r\nNOOP\r\n")
        assert s.read() == ["221 2.0.0 Bye"]
        assert is_close(events[-1], "quit")
        assert s.conn.closed
        assert s.conn.receive(b"NOOP\r\n") == [] and s.read() == []


# =============================================================================
# Other commands (S-203)
# =============================================================================


@pytest.mark.parametrize("line", [b"NOOP", b"NOOP anything at all", b"noop x y z"])
def test_noop_takes_any_argument(line):  # S-203
    assert Session().ask(line + b"\r\n")[-1] == "250 2.0.0 Ok"


def test_rset_with_argument_is_a_syntax_error():  # S-203
    s = in_state("rcpt")
    assert s.one(b"RSET now").startswith("501 5.5.4 ")
    assert s.of(Reset) == []
    assert s.one(b"DATA") == "354 End data with <CR><LF>.<CR><LF>"


@pytest.mark.parametrize("line", [b"VRFY alice", b"VRFY <root@localhost>", b"vrfy postmaster"])
def test_vrfy_never_looks_up(line):  # S-203
    assert Session().ask(line + b"\r\n")[-1] == "252 2.0.0 Not verified; send mail to find out"


@pytest.mark.parametrize("line", [b"EXPN staff", b"TURN", b"ETRN example.com", b"BDAT 0 LAST", b"expn x"])
def test_unimplemented_commands_get_502(line):  # S-203
    assert Session().ask(line + b"\r\n")[-1] == "502 5.5.1 Command not implemented"


def test_bdat_chunk_is_dropped_never_parsed_as_commands():  # S-203
    s = greeted()
    chunk = b"QUIT\r\nRSET\r\n"  # the client's data, whatever it looks like
    assert s.ask(b"BDAT %d LAST\r\n" % len(chunk) + chunk + b"NOOP\r\n") == [
        "502 5.5.1 Command not implemented",
        "250 2.0.0 Ok",
    ]
    assert not s.conn.closed


def test_bdat_chunk_split_over_reads():  # S-203
    s = greeted()
    assert s.ask(b"BDAT 24\r\nQUIT\r\n") == []
    assert s.ask(b"QUIT\r\nQUIT\r\nQU") == []
    assert s.ask(b"IT\r\nNOOP\r\n") == ["502 5.5.1 Command not implemented", "250 2.0.0 Ok"]
    assert not s.conn.closed


@pytest.mark.parametrize("line", [b"BDAT", b"BDAT x", b"BDAT -1", b"BDAT 1e3", b"BDAT 26214401 LAST",
                                  b"BDAT 999999999999999999999"])
def test_bdat_without_a_usable_size_loses_the_framing(line):  # S-203
    s = greeted()
    events = s.send(line + b"\r\nQUIT\r\n")
    assert s.read() == ["421 4.7.0 msa.test Error: BDAT without a usable size"]
    assert is_close(events[-1], "BDAT framing lost")



def test_help_points_to_rfc_5321():  # S-203
    lines = Session().ask(b"HELP\r\n")
    assert lines[-1].startswith("214 2.0.0 ") and "RFC 5321" in lines[-1]


@pytest.mark.parametrize(
    "line", [b"FOO", b"MAILFROM:<a@example.com>", b"X", b"", b"   ", b"SEND FROM:<a@b.c>"]
)
def test_unknown_command_is_unrecognized(line):  # S-203
    assert Session().ask(line + b"\r\n")[-1] == "500 5.5.2 Command unrecognized"


# =============================================================================
# Framing (S-101..S-107)
# =============================================================================


def test_command_ending_in_bare_lf_is_accepted():  # S-101
    s = Session(trusted=True)
    dialog(
        s,
        [
            ("S", GREETING),
            ("C", b"EHLO client.example\n"),
            *[("S", line) for line in EHLO_BASE],
            ("S", "250 STARTTLS"),
            ("C", b"MAIL FROM:<alice@example.com>\nRCPT TO:<bob@example.org>\r\nNOOP\n"),
            ("S", "250 2.1.0 Ok"),
            ("S", "250 2.1.5 Ok"),
            ("S", "250 2.0.0 Ok"),
        ],
    )


@pytest.mark.parametrize(
    "bad", [b"\r", b"\x00", b"\x01", b"\x08", b"\x0b", b"\x0c", b"\x1b", b"\x1f", b"\x7f"]
)
@pytest.mark.parametrize("template", [b"NOOP a%sb", b"EHLO client%s.example", b"MAIL FROM:<a%s@example.com>"])
def test_control_character_in_command_is_invalid(bad, template):  # S-101
    s = Session(trusted=True)
    s.read()
    assert s.one(template.replace(b"%s", bad)) == "500 5.5.2 Invalid character in command"


def test_cr_before_crlf_is_invalid():  # S-101
    s = Session()
    s.read()
    assert s.one(b"NOOP\r") == "500 5.5.2 Invalid character in command"


@pytest.mark.parametrize("line", [b"NOOP a\tb", b"EHLO client\t.example"])
def test_tab_in_command_is_invalid(line):  # S-101
    s = Session()
    s.read()
    assert s.one(line) == "500 5.5.2 Invalid character in command"


def test_command_line_of_2048_octets_is_accepted():  # S-102
    line = b"NOOP " + b"x" * (MAX_COMMAND_LINE - 7) + b"\r\n"
    assert len(line) == MAX_COMMAND_LINE == 2048
    assert Session().ask(line)[-1] == "250 2.0.0 Ok"


def test_command_line_of_2049_octets_is_too_long():  # S-102
    line = b"NOOP " + b"x" * (MAX_COMMAND_LINE - 6) + b"\r\n"
    assert len(line) == 2049
    s = Session()
    s.read()
    assert s.ask(line + b"NOOP\r\n") == ["500 5.5.2 Line too long", "250 2.0.0 Ok"]


def test_bare_lf_line_of_2048_octets_is_accepted():  # S-102, S-101
    line = b"NOOP " + b"x" * (MAX_COMMAND_LINE - 6) + b"\n"
    assert len(line) == 2048
    assert Session().ask(line)[-1] == "250 2.0.0 Ok"


def test_over_long_line_is_answered_once_when_its_end_arrives():  # S-102
    s = Session()
    s.read()
    for _ in range(20):
        assert s.ask(b"NOOP " + b"y" * 1000) == []
    assert s.ask(b"tail\r\nNOOP\r\n") == ["500 5.5.2 Line too long", "250 2.0.0 Ok"]


def test_over_long_line_is_dropped_as_it_arrives():  # S-102, S-1008
    s = Session()
    s.read()
    chunk = b"z" * 65536
    s.ask(b"NOOP ")
    tracemalloc.start()
    try:
        for _ in range(128):  # 8 MiB without a line ending
            s.send(chunk)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 1024 * 1024
    assert s.ask(b"\r\nNOOP\r\n") == ["500 5.5.2 Line too long", "250 2.0.0 Ok"]


def test_auth_command_line_gets_auth_room():  # S-102
    s = greeted(tls=True)
    line = b"AUTH PLAIN " + b"A" * (MAX_AUTH_LINE - 13) + b"\r\n"
    assert len(line) == MAX_AUTH_LINE == 12288
    # Not "Line too long": the response is read, and fails to decode.
    assert s.ask(line) == ["501 5.5.2 Cannot decode response"]


def test_auth_command_line_over_12288_is_too_long():  # S-102
    s = greeted(tls=True)
    line = b"AUTH PLAIN " + b"A" * (MAX_AUTH_LINE - 12) + b"\r\n"
    assert s.ask(line) == ["500 5.5.2 Line too long"]
    assert s.auth_checks == []


def test_other_command_line_does_not_get_auth_room():  # S-102
    s = Session()
    s.read()
    assert s.ask(b"NOOP " + b"A" * 4000 + b"\r\n") == ["500 5.5.2 Line too long"]


@pytest.mark.parametrize(
    "lines",
    [
        [b"ehlo client.example", b"mail from:<alice@example.com>", b"rcpt to:<bob@example.org>", b"data"],
        [b"Ehlo client.example", b"Mail From:<alice@example.com>", b"Rcpt To:<bob@example.org>", b"Data"],
        [b"EHLO client.example", b"MAIL from: <alice@example.com>", b"RCPT tO:<bob@example.org>", b"dAtA"],
    ],
)
def test_verbs_and_keywords_are_case_insensitive(lines):  # S-103
    s = Session(trusted=True, starttls=False)
    out = s.ask(b"".join(line + b"\r\n" for line in lines))
    assert out[-3:] == ["250 2.1.0 Ok", "250 2.1.5 Ok", "354 End data with <CR><LF>.<CR><LF>"]


def test_mail_parameter_keywords_are_case_insensitive():  # S-103, S-204
    s = trusted()
    assert s.one(b"MAIL FROM:<alice@example.com> size=100 body=8bitmime smtputf8 auth=<>") == "250 2.1.0 Ok"
    assert s.of(MailFrom)[-1] == MailFrom("alice@example.com", 100, "8BITMIME", True)


@pytest.mark.parametrize(
    "line",
    [b"NOOP \xc3\xa9", b"EHLO caf\xc3\xa9.example", b"VRFY \xff", b"N\xc3\x96OP", b"\xff", b"HELP \x80"],
)
def test_eight_bit_outside_mail_and_rcpt_is_invalid(line):  # S-103
    s = Session()
    s.read()
    assert s.one(line) == "500 5.5.2 Invalid character in command"


def test_eight_bit_in_mail_parameters_is_invalid():  # S-103
    s = trusted()
    assert s.one(b"MAIL FROM:<alice@example.com> SIZE=1\xc3\xa9") == "500 5.5.2 Invalid character in command"
    assert s.one(b"MAIL FROM:<alice@example.com> X-\xc3\xa9") == "500 5.5.2 Invalid character in command"
    in_transaction(s)
    assert s.one(b"RCPT TO:<bob@example.org> X=\xc3\xa9") == "500 5.5.2 Invalid character in command"


@pytest.mark.parametrize(
    "line",
    [
        b"MAIL FROM:\xc3\xa9<alice@example.com>",
        b"MAIL FROM:<alice@example.com>\xc3\xa9",
        b"MAIL FR\xc3\x96M:<alice@example.com>",
    ],
)
def test_eight_bit_around_the_mail_path_is_invalid(line):  # S-103
    s = trusted()
    assert s.one(line) == "500 5.5.2 Invalid character in command"


def test_eight_bit_after_the_rcpt_path_is_invalid():  # S-103
    s = in_transaction(trusted())
    assert s.one(b"RCPT TO:<bob@example.org>\xc3\xa9") == "500 5.5.2 Invalid character in command"


def test_pipelined_commands_are_answered_in_order_in_one_write():  # S-105
    s = Session(trusted=True, starttls=False)
    s.read()
    s.send(
        b"EHLO client.example\r\nNOOP\r\nMAIL FROM:<alice@example.com>\r\nRCPT TO:<bob@example.org>\r\n"
        b"RCPT TO:<carol@example.org>\r\nVRFY x\r\nRSET\r\nHELP\r\nFOO\r\nQUIT\r\nNOOP\r\n"
    )
    out = s.conn.data_to_send()
    assert s.conn.data_to_send() == b""
    codes = [line[:4] for line in out.split(b"\r\n") if line and not line.startswith(b"250-")]
    assert codes == [
        b"250 ",  # EHLO (last line)
        b"250 ",  # NOOP
        b"250 ",  # MAIL
        b"250 ",  # RCPT
        b"250 ",  # RCPT
        b"252 ",
        b"250 ",  # RSET
        b"214 ",
        b"500 ",
        b"221 ",
    ]
    assert out.count(b"2.1.5 Ok") == 2


def test_pipelined_transaction_with_data_resumes_after_delivery():  # S-105
    s = Session(trusted=True, starttls=False, answer=False)
    s.read()
    events = s.send(
        b"EHLO client.example\r\nMAIL FROM:<alice@example.com>\r\nRCPT TO:<bob@example.org>\r\nDATA\r\n"
        b"Subject: hi\r\n\r\nbody\r\n.\r\nNOOP\r\nQUIT\r\n"
    )
    assert isinstance(events[-1], DataEnd)
    assert s.read()[-3:] == ["250 2.1.0 Ok", "250 2.1.5 Ok", "354 End data with <CR><LF>.<CR><LF>"]
    assert s.conn.receive(b"RSET\r\n") == []  # held while paused
    assert s.read() == []
    events = s.handle(s.conn.delivery_done(R.queued("Q1")))
    assert s.read() == ["250 2.0.0 Ok: queued as Q1", "250 2.0.0 Ok", "221 2.0.0 Bye"]
    assert len(events) == 1 and is_close(events[0], "quit")


def test_held_input_is_bounded():  # S-105
    s = Session(trusted=True, starttls=False, answer=False)
    s.read()
    s.send(b"EHLO c\r\nMAIL FROM:<a@example.com>\r\nRCPT TO:<b@example.org>\r\nDATA\r\n.\r\n")
    assert s.conn.wants_input()
    s.conn.receive(b"EHLO c\r\n" * (MAX_PENDING_INPUT // 8 + 1))
    assert not s.conn.wants_input()
    s.handle(s.conn.delivery_done(R.queued("Q1")))
    assert s.conn.wants_input()


def test_tenth_protocol_error_closes():  # S-106
    s = Session()
    s.read()
    for _ in range(9):
        assert s.one(b"FOO") == "500 5.5.2 Command unrecognized"
    assert not s.conn.closed
    events = s.send(b"FOO\r\nNOOP\r\n")
    assert s.read() == ["500 5.5.2 Command unrecognized", "421 4.7.0 msa.test Error: too many errors"]
    assert is_close(events[-1], "too many errors")
    assert s.conn.closed


def test_every_kind_of_protocol_error_counts():  # S-106
    s = Session(tls=True, trusted=True)
    s.read()
    s.ask(b"EHLO client.example\r\n")
    lines = [
        b"FOO",  # 500
        b"RSET x",  # 501
        b"EXPN x",  # 502
        b"RCPT TO:<a@example.com>",  # 503
        b"AUTH DIGEST-MD5",  # 504
        b"MAIL FROM:<a@example.com> RET=FULL",  # 555
        b"MAIL FROM:<\xc3\xa9@example.com>",  # 550
        b"NOOP \x01",  # 500
        b"DATA x",  # 503
    ]
    replies = s.ask(b"".join(line + b"\r\n" for line in lines))
    assert [r[:3] for r in replies] == ["500", "501", "502", "503", "504", "555", "550", "500", "503"]
    assert not s.conn.closed
    assert s.ask(b"VRFY\r\n")[-1] == "421 4.7.0 msa.test Error: too many errors"
    assert s.conn.closed


def test_refusals_outside_500_504_530_and_550_555_do_not_count():  # S-106
    s = Session(tls=True, trusted=True, max_recipients=1)
    s.read()
    s.ask(b"EHLO client.example\r\n")
    s.ask(b"MAIL FROM:<a@example.com>\r\nRCPT TO:<b@example.org>\r\n")
    for i in range(15):  # 452 4.5.3: a temporary refusal, not an error
        assert s.one(f"RCPT TO:<c{i}@example.org>".encode()) == "452 4.5.3 Too many recipients"
    assert not s.conn.closed


def test_530_counts_as_an_error():  # S-106 (amended): an unauthenticated MAIL loop is cut
    s = greeted()
    for _ in range(9):
        assert s.one(b"MAIL FROM:<alice@example.com>") == "530 5.7.0 Authentication required"
    assert not s.conn.closed
    s.send(b"MAIL FROM:<alice@example.com>\r\n")
    assert s.read() == ["530 5.7.0 Authentication required", "421 4.7.0 msa.test Error: too many errors"]
    assert s.conn.closed


@pytest.mark.parametrize("junk", [b"NOOP", b"RSET", b"VRFY x", b"HELP", b"noop whatever"])
def test_junk_commands_beyond_100_count_as_errors(junk):  # S-106
    s = greeted()
    replies = s.ask((junk + b"\r\n") * 100)
    assert len(replies) == 100 and not s.conn.closed
    replies = s.ask((junk + b"\r\n") * 9)
    assert len(replies) == 9 and not s.conn.closed  # errors 1..9: still open
    assert s.ask(junk + b"\r\n")[-1] == "421 4.7.0 msa.test Error: too many errors"
    assert s.conn.closed


def test_junk_count_starts_again_after_a_delivered_message():  # S-106, as Postfix
    s = trusted()
    s.ask(b"NOOP\r\n" * 100)
    s.ask(b"MAIL FROM:<a@example.com>\r\nRCPT TO:<b@example.org>\r\nDATA\r\nx\r\n.\r\n")
    assert s.ask(b"NOOP\r\n" * 109)[-1] == "250 2.0.0 Ok"
    assert not s.conn.closed


def test_junk_and_other_errors_add_up():  # S-106
    s = greeted()
    s.ask(b"NOOP\r\n" * 105)  # five errors
    for _ in range(4):
        assert s.one(b"FOO") == "500 5.5.2 Command unrecognized"
    assert s.ask(b"FOO\r\n")[-1] == "421 4.7.0 msa.test Error: too many errors"


@pytest.mark.parametrize("method", [b"GET", b"POST", b"PUT", b"HEAD", b"CONNECT", b"OPTIONS", b"get"])
def test_http_first_line_is_cut(method):  # S-107, S-1014
    s = Session()
    s.read()
    events = s.send(method + b" / HTTP/1.1\r\nHost: msa.test\r\n\r\n")
    assert s.read() == ["421 4.7.0 msa.test Not an SMTP client"]
    assert len(events) == 1 and is_close(events[0], "not SMTP")


def test_http_method_after_the_first_command_is_unrecognized():  # S-107
    s = Session()
    s.read()
    s.ask(b"NOOP\r\n")
    assert s.one(b"GET / HTTP/1.1") == "500 5.5.2 Command unrecognized"
    assert not s.conn.closed


def test_http_method_without_space_is_not_http():  # S-107
    s = Session()
    s.read()
    assert s.one(b"GETX") == "500 5.5.2 Command unrecognized"
    assert not s.conn.closed


def test_end_of_input_closes():
    s = Session()
    s.read()
    events = s.send(b"")
    assert len(events) == 1 and is_close(events[0], "lost")
    assert s.conn.closed


# =============================================================================
# MAIL (S-204, S-601)
# =============================================================================


def test_mail_needs_authentication_or_trust():  # S-204, S-1011
    s = greeted()
    dialog(
        s,
        [
            ("C", b"MAIL FROM:<alice@example.com>\r\n"),
            ("S", "530 5.7.0 Authentication required"),
            ("C", b"RCPT TO:<bob@example.org>\r\n"),
            ("S", "503 5.5.1 Need MAIL command"),
            ("C", b"DATA\r\n"),
            ("S~", "503 5.5.1 "),
        ],
    )
    assert s.of(MailFrom) == [] and s.of(DataStart) == []
    assert [(r.command, r.reply) for r in s.of(Refused)][0] == ("MAIL", R.AUTH_REQUIRED)


def test_mail_from_trusted_client_is_accepted():  # S-204
    s = trusted()
    assert s.one(b"MAIL FROM:<anyone@anywhere.example>") == "250 2.1.0 Ok"
    assert s.of(MailFrom) == [MailFrom("anyone@anywhere.example", None, None, False)]
    assert s.policy.calls == []  # S-601: trusted clients may use any sender


@pytest.mark.parametrize(
    "line",
    [
        b"MAIL FROM:<alice@example.com>",
        b"MAIL FROM: <alice@example.com>",
        b"MAIL FROM:   <alice@example.com>",
    ],
)
def test_spaces_after_the_colon_are_allowed(line):  # S-204
    assert trusted().one(line) == "250 2.1.0 Ok"


@pytest.mark.parametrize(
    ("params", "event"),
    [
        (b"SIZE=1000", MailFrom("alice@example.com", 1000, None, False)),
        (b"SIZE=0", MailFrom("alice@example.com", 0, None, False)),
        (b"BODY=7BIT", MailFrom("alice@example.com", None, "7BIT", False)),
        (b"BODY=8BITMIME", MailFrom("alice@example.com", None, "8BITMIME", False)),
        (b"SMTPUTF8", MailFrom("alice@example.com", None, None, True)),
        (b"AUTH=<>", MailFrom("alice@example.com", None, None, False)),
        (b"AUTH=alice+40example.com", MailFrom("alice@example.com", None, None, False)),
        (
            b"SIZE=26214400 BODY=8BITMIME SMTPUTF8 AUTH=<>",
            MailFrom("alice@example.com", 26214400, "8BITMIME", True),
        ),
    ],
)
def test_mail_parameters_are_accepted(params, event):  # S-204
    s = trusted()
    assert s.one(b"MAIL FROM:<alice@example.com> " + params) == "250 2.1.0 Ok"
    assert s.of(MailFrom) == [event]


@pytest.mark.parametrize(
    "params",
    [
        b"SIZE=1 SIZE=1",
        b"SIZE=1 size=2",
        b"BODY=7BIT BODY=8BITMIME",
        b"SMTPUTF8 SMTPUTF8",
        b"AUTH=<> AUTH=<>",
        b"SIZE=abc",
        b"SIZE=",
        b"SIZE",
        b"SIZE=-1",
        b"BODY=BINARYMIME",
        b"BODY",
        b"SMTPUTF8=yes",
        b"AUTH=",
        b"=x",
    ],
)
def test_repeated_or_malformed_mail_parameter_is_a_syntax_error(params):  # S-204
    s = trusted()
    assert s.one(b"MAIL FROM:<alice@example.com> " + params).startswith("501 5.5.4 ")
    assert s.of(MailFrom) == []


@pytest.mark.parametrize(
    "params", [b"RET=HDRS", b"ENVID=abc", b"ret=full", b"XFOO", b"X-BAR=1", b"MT-PRIORITY=3"]
)
def test_dsn_and_unknown_mail_parameters_are_unsupported(params):  # S-202, S-204
    s = trusted()
    assert s.one(b"MAIL FROM:<alice@example.com> " + params) == "555 5.5.4 Unsupported parameter"


@pytest.mark.parametrize("params", [b"NOTIFY=NEVER", b"ORCPT=rfc822;bob@example.org"])
def test_rcpt_only_dsn_parameters_at_mail_are_unsupported(params):  # S-202
    s = trusted()
    assert s.one(b"MAIL FROM:<alice@example.com> " + params) == "555 5.5.4 Unsupported parameter"


def test_size_over_the_limit_is_refused_at_mail():  # S-204
    s = trusted(max_message_size=1000)
    assert s.one(b"MAIL FROM:<alice@example.com> SIZE=1001") == "552 5.3.4 Message size exceeds fixed limit"
    assert s.one(b"MAIL FROM:<alice@example.com> SIZE=1000") == "250 2.1.0 Ok"


def test_sender_not_owned_is_refused():  # S-601, S-1010
    s = authenticated()
    assert s.one(b"MAIL FROM:<mallory@example.com>") == (
        "550 5.7.1 Sender address <mallory@example.com> not owned by user alice"
    )
    assert (
        s.one(b"MAIL FROM:<bob@example.com>")
        == "550 5.7.1 Sender address <bob@example.com> not owned by user alice"
    )
    assert s.one(b"MAIL FROM:<alice@example.com>") == "250 2.1.0 Ok"
    assert ("alice", "mallory@example.com") in s.policy.calls


def test_sender_reply_names_the_authenticated_user():  # S-601
    s = authenticated("bob")
    assert (
        s.one(b"MAIL FROM:<alice@example.com>")
        == "550 5.7.1 Sender address <alice@example.com> not owned by user bob"
    )


def test_message_over_the_limit_gets_450_at_mail():  # S-1201
    s = authenticated()
    s.policy.messages_left = 0
    assert s.one(b"MAIL FROM:<alice@example.com>") == "450 4.7.1 Sending rate limit exceeded; try again later"
    assert s.of(MailFrom) == []
    refused = s.of(Refused)[-1]
    assert refused.command == "MAIL" and refused.reply.code == 450
    # Not in a transaction: a pipelined RCPT gets 503, nothing is queued.
    assert s.one(b"RCPT TO:<bob@example.net>").startswith("503 ")
    s.policy.messages_left = None
    assert s.one(b"MAIL FROM:<alice@example.com>") == "250 2.1.0 Ok"


def test_a_message_is_reserved_only_once_every_other_check_passed():  # S-1201 amended
    s = authenticated()
    s.one(b"MAIL FROM:<mallory@example.com>")  # not owned: nothing reserved
    s.one(b"MAIL FROM:<alice@example.com> SIZE=x")  # malformed: nothing reserved
    assert s.policy.reserved == []
    assert s.one(b"MAIL FROM:<alice@example.com>") == "250 2.1.0 Ok"
    assert s.policy.reserved == [("alice", "messages")]


def test_recipient_past_the_limit_gets_452_and_earlier_ones_stand():  # S-1201
    s = authenticated()
    s.policy.recipients_left = 2
    in_transaction(s)
    assert s.one(b"RCPT TO:<a@example.net>") == "250 2.1.5 Ok"
    assert s.one(b"RCPT TO:<a@example.net>") == "250 2.1.5 Ok"  # the same one again costs nothing
    assert s.one(b"RCPT TO:<b@example.net>") == "250 2.1.5 Ok"
    assert s.one(b"RCPT TO:<c@example.net>") == "452 4.5.3 Recipient limit reached; try again later"
    assert s.one(b"DATA") == "354 End data with <CR><LF>.<CR><LF>"
    s.ask(b"Subject: x\r\n\r\nbody\r\n.\r\n")
    assert s.delivered[-1].envelope.recipients == ("a@example.net", "b@example.net")
    assert s.policy.reserved.count(("alice", "recipients")) == 2


def test_limits_are_asked_only_for_authenticated_users():  # S-1201: trusted networks are not limited
    s = trusted()
    s.policy.messages_left = s.policy.recipients_left = 0
    assert s.one(b"MAIL FROM:<anyone@example.org>") == "250 2.1.0 Ok"
    assert s.one(b"RCPT TO:<a@example.net>") == "250 2.1.5 Ok"
    assert s.policy.reserved == []
    a = authenticated()
    in_transaction(a)
    assert a.policy.reserved[0] == ("alice", "messages")


def test_null_sender_is_allowed_to_authenticated_users():  # S-601
    s = authenticated()
    assert s.one(b"MAIL FROM:<>") == "250 2.1.0 Ok"
    assert s.of(MailFrom)[-1].sender == ""
    assert s.policy.calls == []


def test_address_literal_sender_is_checked_against_policy():  # S-206, S-601
    s = authenticated()
    assert s.one(b"MAIL FROM:<alice@[192.0.2.1]>") == "250 2.1.0 Ok"


# =============================================================================
# Paths (S-206)
# =============================================================================

LABEL63 = "a" * 63
DOMAIN_251 = ".".join([LABEL63, "b" * 63, "c" * 63, "d" * 59])
assert len(DOMAIN_251) == 251


@pytest.mark.parametrize(
    ("path", "sender"),
    [
        ("<>", ""),
        ("<alice@example.com>", "alice@example.com"),
        ("<@relay.example:alice@example.com>", "alice@example.com"),
        ("<@relay.example,@hop2.example:alice@example.com>", "alice@example.com"),
        ("<alice@[192.0.2.1]>", "alice@[192.0.2.1]"),
        ("<alice@[IPv6:2001:db8::1]>", "alice@[IPv6:2001:db8::1]"),
        ('<"john doe"@example.com>', '"john doe"@example.com'),
        ('<"a\\"b"@example.com>', '"a\\"b"@example.com'),
        ('<"a>b"@example.com>', '"a>b"@example.com'),
        ("<first.last+tag@sub.example.com>", "first.last+tag@sub.example.com"),
        ("<!#$%&'*+/=?^_`{|}~@example.com>", "!#$%&'*+/=?^_`{|}~@example.com"),
        ("<" + "l" * 64 + "@example.com>", "l" * 64 + "@example.com"),
        ("<a@" + DOMAIN_251 + ">", "a@" + DOMAIN_251),  # path of 255 octets
        ("<ab@" + DOMAIN_251 + ">", "ab@" + DOMAIN_251),  # path of 256 octets
        ("<root>", "root"),  # trusted: bare local part
        ("<root@localhost>", "root@localhost"),
        ("<postmaster>", "postmaster"),
    ],
)
def test_valid_sender_paths(path, sender):  # S-206
    s = trusted()
    assert s.one(b"MAIL FROM:" + path.encode()) == "250 2.1.0 Ok"
    assert s.of(MailFrom)[-1].sender == sender


@pytest.mark.parametrize(
    "path",
    [
        "<@example.com>",
        "<alice@>",
        "<alice@@example.com>",
        "<al ice@example.com>",
        "<.alice@example.com>",
        "<alice.@example.com>",
        "<al..ice@example.com>",
        "<alice@exa_mple.com>",
        "<alice@-example.com>",
        "<alice@example..com>",
        "<alice@[192.0.2.256]>",
        "<alice@[IPv6:2001:db8::zz]>",
        "<alice@[192.0.2.1>",
        "<@relay.example alice@example.com>",
        "<@relay.example:>",
        "<" + "l" * 65 + "@example.com>",  # local part over 64
        "<abc@" + DOMAIN_251 + ">",  # path of 257 octets
        "<a@" + ".".join([LABEL63] * 4) + ">",  # domain of 255 octets, path of 259
        "<a@" + "b" * 64 + ".example>",  # label over 63
    ],
)
def test_bad_sender_syntax(path):  # S-206
    s = trusted()
    assert s.one(b"MAIL FROM:" + path.encode()) == "501 5.1.7 Bad sender address syntax"
    assert s.of(MailFrom) == []


@pytest.mark.parametrize(
    "path", ["<-oQ/tmp/x@example.com>", "<-root>", '<"-f"@example.com>', "<@relay.example:-x@example.com>"]
)
def test_sender_starting_with_dash_is_refused(path):  # S-206, S-1004
    s = trusted()
    assert s.one(b"MAIL FROM:" + path.encode()) == "501 5.1.7 Bad sender address syntax"


@pytest.mark.parametrize("path", ["<-x@example.org>", "<-bob>", '<"-bob"@example.org>'])
def test_recipient_starting_with_dash_is_refused(path):  # S-206, S-1004
    s = in_transaction(trusted())
    assert s.one(b"RCPT TO:" + path.encode()) == "501 5.1.3 Bad recipient address syntax"
    assert s.of(RcptTo) == []


def test_null_path_is_for_mail_only():  # S-206
    s = in_transaction(trusted())
    assert s.one(b"RCPT TO:<>") == "501 5.1.3 Bad recipient address syntax"


@pytest.mark.parametrize(
    "path", ["<bob@>", "<bob@exa mple.org>", "<bob@[1.2.3]>", "<" + "l" * 65 + "@example.org>"]
)
def test_bad_recipient_syntax(path):  # S-206
    s = in_transaction(trusted())
    assert s.one(b"RCPT TO:" + path.encode()) == "501 5.1.3 Bad recipient address syntax"


def test_mail_without_brackets_is_refused():  # S-206
    s = trusted()
    assert s.one(b"MAIL FROM:alice@example.com").startswith("501 5.")
    assert s.one(b"MAIL TO:<alice@example.com>").startswith("501 5.")
    assert s.one(b'MAIL FROM:<"unterminated@example.com>').startswith("501 5.")
    in_transaction(s)
    assert s.one(b"RCPT TO:bob@example.org").startswith("501 5.")
    assert s.one(b"RCPT FROM:<bob@example.org>").startswith("501 5.")


def test_utf8_sender_needs_smtputf8():  # S-206, S-103
    s = trusted()
    assert s.one("MAIL FROM:<jörg@example.com>".encode()) == "550 5.6.7 Non-ASCII address requires SMTPUTF8"
    assert (
        s.one("MAIL FROM:<jörg@bücher.example>".encode()) == "550 5.6.7 Non-ASCII address requires SMTPUTF8"
    )
    assert s.one("MAIL FROM:<jörg@bücher.example> SMTPUTF8".encode()) == "250 2.1.0 Ok"
    assert s.of(MailFrom) == [MailFrom("jörg@bücher.example", None, None, True)]


def test_utf8_recipient_needs_smtputf8():  # S-206
    s = in_transaction(trusted())
    assert s.one("RCPT TO:<søren@example.org>".encode()) == "553 5.6.7 Non-ASCII address requires SMTPUTF8"
    s.ask(b"RSET\r\n")
    in_transaction(s, b"<alice@example.com> SMTPUTF8")
    assert s.one("RCPT TO:<søren@example.org>".encode()) == "250 2.1.5 Ok"
    assert s.of(RcptTo) == [RcptTo("søren@example.org")]


def test_invalid_utf8_address_is_refused_even_with_smtputf8():  # S-206: "must be valid"
    s = trusted()
    reply = s.one(b"MAIL FROM:<j\xc3rg@example.com> SMTPUTF8")
    assert reply.startswith("5") and s.of(MailFrom) == []


def test_authenticated_sender_domain_must_be_qualified():  # S-206, RFC 6409 §4.2
    s = authenticated()
    assert s.one(b"MAIL FROM:<alice@localhost>").startswith("554 5.1.8 ")
    assert s.one(b"MAIL FROM:<alice@example>").startswith("554 5.1.8 ")


def test_authenticated_recipient_domain_must_be_qualified():  # S-206
    s = in_transaction(authenticated())
    assert s.one(b"RCPT TO:<bob@localhost>").startswith("554 5.1.2 ")
    assert s.one(b"RCPT TO:<bob@[192.0.2.7]>") == "250 2.1.5 Ok"
    assert s.one(b"RCPT TO:<bob@example.org>") == "250 2.1.5 Ok"


def test_authenticated_client_may_not_use_bare_local_parts():  # S-206
    s = authenticated()
    assert s.one(b"MAIL FROM:<root>") == "501 5.1.7 Bad sender address syntax"
    in_transaction(s)
    assert s.one(b"RCPT TO:<root>") == "501 5.1.3 Bad recipient address syntax"


def test_trusted_client_may_use_local_addresses():  # S-206
    s = trusted()
    dialog(
        s,
        [
            ("C", b"MAIL FROM:<root>\r\n"),
            ("S", "250 2.1.0 Ok"),
            ("C", b"RCPT TO:<root>\r\n"),
            ("S", "250 2.1.5 Ok"),
            ("C", b"RCPT TO:<admin@localhost>\r\n"),
            ("S", "250 2.1.5 Ok"),
        ],
    )
    assert s.of(RcptTo) == [RcptTo("root"), RcptTo("admin@localhost")]


# =============================================================================
# RCPT (S-205)
# =============================================================================


@pytest.mark.parametrize("path", [b"<postmaster>", b"<POSTMASTER>", b"<PostMaster>"])
@pytest.mark.parametrize("who", ["trusted", "authenticated"])
def test_postmaster_without_domain_is_accepted(path, who):  # S-205
    s = trusted() if who == "trusted" else authenticated()
    in_transaction(s)
    assert s.one(b"RCPT TO:" + path) == "250 2.1.5 Ok"


@pytest.mark.parametrize(
    "params", [b"NOTIFY=NEVER", b"ORCPT=rfc822;bob@example.org", b"XFOO", b"notify=success"]
)
def test_rcpt_parameters_are_unsupported(params):  # S-205
    s = in_transaction(trusted())
    assert s.one(b"RCPT TO:<bob@example.org> " + params) == "555 5.5.4 Unsupported parameter"
    assert s.of(RcptTo) == []


def test_duplicate_recipient_is_passed_once():  # S-205
    s = in_transaction(trusted())
    for path in (b"<bob@example.org>", b"<bob@EXAMPLE.org>", b"<bob@example.org>", b"<carol@example.org>"):
        assert s.one(b"RCPT TO:" + path) == "250 2.1.5 Ok"
    assert s.of(RcptTo) == [RcptTo("bob@example.org"), RcptTo("carol@example.org")]
    s.ask(b"DATA\r\n.\r\n")
    assert s.delivered[0].envelope.recipients == ("bob@example.org", "carol@example.org")


def test_local_part_case_makes_a_different_recipient():  # S-205, RFC 5321 §2.4
    s = in_transaction(trusted())
    s.ask(b"RCPT TO:<bob@example.org>\r\nRCPT TO:<Bob@example.org>\r\n")
    assert s.of(RcptTo) == [RcptTo("bob@example.org"), RcptTo("Bob@example.org")]


def test_one_recipient_too_many_gets_452():  # S-205
    s = in_transaction(trusted(max_recipients=3))
    for n in range(3):
        assert s.one(b"RCPT TO:<r%d@example.org>" % n) == "250 2.1.5 Ok"
    assert s.one(b"RCPT TO:<r3@example.org>") == "452 4.5.3 Too many recipients"
    assert s.one(b"RCPT TO:<r1@example.org>") == "250 2.1.5 Ok"  # a duplicate adds nothing
    assert s.one(b"RCPT TO:<r4@example.org>") == "452 4.5.3 Too many recipients"
    assert len(s.of(RcptTo)) == 3
    assert not s.conn.closed
    s.ask(b"DATA\r\n.\r\n")
    assert s.delivered[0].envelope.recipients == ("r0@example.org", "r1@example.org", "r2@example.org")


def test_default_recipient_limit_is_100():  # S-205
    s = in_transaction(trusted())
    out = s.ask(b"".join(b"RCPT TO:<r%d@example.org>\r\n" % n for n in range(101)))
    assert out[:100] == ["250 2.1.5 Ok"] * 100
    assert out[100] == "452 4.5.3 Too many recipients"


# =============================================================================
# DATA and the session's message count (S-207)
# =============================================================================


def test_data_with_argument_is_a_syntax_error():  # S-207
    s = in_transaction(trusted())
    s.ask(b"RCPT TO:<bob@example.org>\r\n")
    assert s.one(b"DATA now").startswith("501 5.5.4 ")
    assert s.of(DataStart) == []
    assert s.one(b"DATA") == "354 End data with <CR><LF>.<CR><LF>"


def test_after_the_message_the_session_is_greeted_and_still_authenticated():  # S-207
    s = authenticated()
    dialog(
        s,
        [
            ("C", b"MAIL FROM:<alice@example.com>\r\n"),
            ("S", "250 2.1.0 Ok"),
            ("C", b"RCPT TO:<bob@example.org>\r\n"),
            ("S", "250 2.1.5 Ok"),
            ("C", b"DATA\r\n"),
            ("S", "354 End data with <CR><LF>.<CR><LF>"),
            ("C", b"Subject: one\r\n\r\nhello\r\n.\r\n"),
            ("S", "250 2.0.0 Ok: queued as Q1"),
            ("C", b"RCPT TO:<bob@example.org>\r\n"),
            ("S", "503 5.5.1 Need MAIL command"),
            ("C", b"MAIL FROM:<alice@example.com>\r\n"),
            ("S", "250 2.1.0 Ok"),
            ("C", b"RCPT TO:<carol@example.org>\r\nDATA\r\nSubject: two\r\n\r\n.\r\n"),
            ("S", "250 2.1.5 Ok"),
            ("S", "354 End data with <CR><LF>.<CR><LF>"),
            ("S", "250 2.0.0 Ok: queued as Q2"),
        ],
    )
    assert [d.envelope.recipients for d in s.delivered] == [("bob@example.org",), ("carol@example.org",)]
    assert s.delivered[0].envelope.sender == "alice@example.com"


def test_data_end_carries_the_envelope():  # S-207
    s = trusted()
    s.ask(
        b"MAIL FROM:<alice@example.com> SIZE=50 BODY=8BITMIME SMTPUTF8\r\nRCPT TO:<bob@example.org>\r\nDATA\r\n"
    )
    s.ask(b"hello\r\n.\r\n")
    (end,) = s.delivered
    assert end.envelope.sender == "alice@example.com"
    assert end.envelope.recipients == ("bob@example.org",)
    assert (end.envelope.size, end.envelope.body, end.envelope.smtputf8) == (50, "8BITMIME", True)
    assert end.size == 7


def test_delivery_reply_is_sent_as_given():  # S-207, S-803
    s = Session(trusted=True, answer=False)
    s.read()
    s.send(b"EHLO c\r\nMAIL FROM:<a@example.com>\r\nRCPT TO:<b@example.org>\r\nDATA\r\n.\r\n")
    s.read()
    s.handle(s.conn.delivery_done(R.HANDOFF_TEMPFAIL))
    assert s.read() == ["451 4.3.0 Temporary failure handing the message on; try again later"]
    assert s.one(b"RCPT TO:<b@example.org>") == "503 5.5.1 Need MAIL command"


def test_1001st_mail_of_a_session_is_cut():  # S-207
    s = trusted()
    out = s.ask(b"MAIL FROM:<alice@example.com>\r\nEHLO c\r\n" * MAX_MESSAGES)  # EHLO is no junk (S-106)
    assert [line[:3] for line in out if not line.startswith("250-")] == ["250", "250"] * MAX_MESSAGES
    events = s.send(b"MAIL FROM:<alice@example.com>\r\n")
    assert s.read()[0].startswith("421 4.7.0 msa.test ")
    assert is_close(events[-1], "too many messages")
    assert len(s.of(MailFrom)) == 1000


# =============================================================================
# STARTTLS (S-401, S-402)
# =============================================================================


def test_starttls_with_argument_is_a_syntax_error():  # S-401
    s = greeted()
    assert s.one(b"STARTTLS now") == "501 5.5.4 Syntax error, no parameters allowed"
    assert s.of(StartTls) == []


def test_starttls_when_tls_is_active():  # S-401
    s = greeted(tls=True)
    assert s.one(b"STARTTLS") == "503 5.5.1 TLS already active"


def test_starttls_without_a_certificate():  # S-401
    s = greeted(starttls=False)
    assert s.one(b"STARTTLS").startswith("502 5.5.1 ")
    assert s.of(StartTls) == []


def test_starttls_pauses_until_the_handshake():  # S-401
    s = greeted(answer=False)
    events = s.send(b"STARTTLS\r\n")
    assert events == [StartTls(0)]
    assert s.read() == ["220 2.0.0 Ready to start TLS"]
    assert s.handle(s.conn.tls_started()) == []
    assert s.conn.tls and s.read() == []


def test_pipelined_bytes_after_starttls_are_discarded():  # S-401, S-1002
    s = greeted(answer=False)
    events = s.send(b"STARTTLS\r\nRSET\r\n")
    assert events == [StartTls(6)]
    assert s.read() == ["220 2.0.0 Ready to start TLS"]
    s.handle(s.conn.tls_started())
    assert s.read() == []  # RSET is never answered
    assert s.one(b"MAIL FROM:<alice@example.com>") == "503 5.5.1 Bad sequence of commands"


def test_injected_commands_after_starttls_never_run():  # S-401, S-1002
    s = greeted(trusted=True, answer=False)
    s.send(b"STARTTLS\r\nEHLO evil\r\nMAIL FROM:<mallory@example.com>\r\nRCPT TO:<victim@example.org>\r\n")
    assert s.of(StartTls)[0].discarded == len(
        b"EHLO evil\r\nMAIL FROM:<mallory@example.com>\r\nRCPT TO:<victim@example.org>\r\n"
    )
    s.handle(s.conn.tls_started())
    assert s.read() == ["220 2.0.0 Ready to start TLS"]
    assert s.of(MailFrom) == [] and s.of(RcptTo) == [] and s.of(Ehlo) == [Ehlo("client.example", True)]


def test_bytes_received_before_the_handshake_are_discarded():  # S-401, S-1002
    s = greeted(answer=False)
    s.send(b"STARTTLS\r\n")
    s.read()
    s.send(b"NOOP\r\n")  # arrives in plaintext before the shell starts the handshake
    s.handle(s.conn.tls_started())
    assert s.read() == []


def test_after_tls_the_session_is_fresh():  # S-402, S-1002
    s = greeted(trusted=True)
    s.ask(b"MAIL FROM:<alice@example.com>\r\n")
    dialog(
        s,
        [
            ("C", b"RSET\r\nSTARTTLS\r\n"),
            ("S", "250 2.0.0 Ok"),
            ("S", "220 2.0.0 Ready to start TLS"),
            ("C", b"MAIL FROM:<alice@example.com>\r\n"),
            ("S", "503 5.5.1 Bad sequence of commands"),
            ("C", b"AUTH PLAIN " + plain() + b"\r\n"),
            ("S", "503 5.5.1 Bad sequence of commands"),
            ("C", b"EHLO client.example\r\n"),
            *[("S", line) for line in EHLO_BASE],
            ("S", "250 AUTH PLAIN LOGIN CRAM-MD5"),
            ("C", b"MAIL FROM:<alice@example.com>\r\n"),
            ("S", "250 2.1.0 Ok"),
        ],
    )
    assert s.conn.helo == "client.example"


def test_starttls_forgets_the_authentication():  # S-402
    s = greeted(require_tls_for_auth=False)
    assert s.one(b"AUTH PLAIN " + plain()) == "235 2.7.0 Authentication successful"
    s.ask(b"STARTTLS\r\n")
    s.ask(b"EHLO client.example\r\n")
    assert s.conn.user is None
    assert s.one(b"MAIL FROM:<alice@example.com>") == "530 5.7.0 Authentication required"
    assert s.one(b"AUTH PLAIN " + plain()) == "235 2.7.0 Authentication successful"


def test_starttls_twice_is_refused():  # S-401
    s = greeted()
    s.ask(b"STARTTLS\r\n")
    s.ask(b"EHLO client.example\r\n")
    assert s.one(b"STARTTLS") == "503 5.5.1 TLS already active"


# =============================================================================
# AUTH (S-501..S-513)
# =============================================================================


@pytest.fixture(params=["plain", "starttls", "tls"])
def ready(request) -> Session:
    """Greeted by EHLO with AUTH offered: in plaintext (require_tls_for_auth
    off), after STARTTLS, or on an implicit-TLS connection."""
    if request.param == "plain":
        s = greeted(require_tls_for_auth=False, starttls=False)
    elif request.param == "starttls":
        s = greeted()
        s.ask(b"STARTTLS\r\n")
        s.ask(b"EHLO client.example\r\n")
    else:
        s = greeted(tls=True)
    return s


def test_plain_with_initial_response(ready):  # S-505, S-503
    assert ready.one(b"AUTH PLAIN " + plain()) == "235 2.7.0 Authentication successful"
    (check,) = ready.auth_checks
    assert check.mechanism == "PLAIN"
    assert check.credentials == sasl.Credentials(mechanism="PLAIN", username="alice", password=PASSWORD)
    assert ready.conn.user == "alice"


def test_plain_without_initial_response(ready):  # S-505, S-502
    dialog(
        ready,
        [
            ("C", b"AUTH PLAIN\r\n"),
            ("S", "334 "),
            ("C", plain() + b"\r\n"),
            ("S", "235 2.7.0 Authentication successful"),
        ],
    )
    assert ready.auth_checks[0].credentials.password == PASSWORD


def test_plain_with_authzid_equal_to_user(ready):  # S-505
    assert ready.one(b"AUTH PLAIN " + plain(authzid="alice")) == "235 2.7.0 Authentication successful"


def test_plain_with_other_authzid_fails(ready):  # S-505, S-503
    assert ready.one(b"AUTH PLAIN " + plain(authzid="bob")) == "535 5.7.8 Authentication credentials invalid"
    assert isinstance(ready.auth_checks[0].credentials, sasl.Failure)


def test_plain_empty_initial_response_is_checked_and_fails(ready):  # S-502, S-505
    assert ready.one(b"AUTH PLAIN =") == "535 5.7.8 Authentication credentials invalid"
    (check,) = ready.auth_checks
    assert isinstance(check.credentials, sasl.Failure)


def test_wrong_password_fails(ready):  # S-503
    assert (
        ready.one(b"AUTH PLAIN " + plain(password=b"wrong")) == "535 5.7.8 Authentication credentials invalid"
    )
    assert ready.conn.user is None
    assert ready.one(b"MAIL FROM:<alice@example.com>") == "530 5.7.0 Authentication required"


def test_login_without_initial_response(ready):  # S-506
    dialog(
        ready,
        [
            ("C", b"AUTH LOGIN\r\n"),
            ("S", "334 VXNlcm5hbWU6"),
            ("C", b64(b"alice") + b"\r\n"),
            ("S", "334 UGFzc3dvcmQ6"),
            ("C", b64(PASSWORD) + b"\r\n"),
            ("S", "235 2.7.0 Authentication successful"),
        ],
    )
    assert ready.auth_checks[0].credentials == sasl.Credentials(
        mechanism="LOGIN", username="alice", password=PASSWORD
    )


def test_login_with_initial_response(ready):  # S-506
    dialog(
        ready,
        [
            ("C", b"AUTH LOGIN " + b64(b"alice") + b"\r\n"),
            ("S", "334 UGFzc3dvcmQ6"),
            ("C", b64(PASSWORD) + b"\r\n"),
            ("S", "235 2.7.0 Authentication successful"),
        ],
    )


def test_login_empty_initial_response_fails(ready):  # S-502, S-506
    assert ready.one(b"AUTH LOGIN =") == "535 5.7.8 Authentication credentials invalid"


def test_cram_md5_challenge_and_response(ready):  # S-507
    line = ready.one(b"AUTH CRAM-MD5")
    assert line.startswith("334 ")
    challenge = base64.b64decode(line[4:], validate=True)
    assert re.fullmatch(rb"<\d+\.\d+@msa\.test>", challenge), challenge
    digest = hmac.new(PASSWORD, challenge, "md5").hexdigest()
    assert ready.one(b64(b"alice " + digest.upper().encode())) == "235 2.7.0 Authentication successful"
    cred = ready.auth_checks[0].credentials
    assert (cred.mechanism, cred.username, cred.challenge, cred.digest) == (
        "CRAM-MD5",
        "alice",
        challenge,
        digest,
    )


def test_cram_md5_challenges_differ(ready):  # S-507
    first = ready.one(b"AUTH CRAM-MD5")
    ready.ask(b"*\r\n")
    second = ready.one(b"AUTH CRAM-MD5")
    assert first != second


@pytest.mark.parametrize("initial", [b"YWxpY2UgMDAwMDAwMDAwMDAwMDAwMDAwMDAwMDAwMDAwMDAwMDA=", b"="])
def test_cram_md5_refuses_an_initial_response(ready, initial):  # S-501, RFC 4954 §4
    assert (
        ready.one(b"AUTH CRAM-MD5 " + initial) == "501 5.7.0 Initial response not allowed for this mechanism"
    )
    assert ready.auth_checks == []
    assert ready.one(b"AUTH PLAIN " + plain()) == "235 2.7.0 Authentication successful"


@pytest.mark.parametrize("mechanism", [b"PLAIN", b"LOGIN", b"CRAM-MD5"])
def test_star_cancels_the_exchange(ready, mechanism):  # S-502
    assert ready.one(b"AUTH " + mechanism).startswith("334 ")
    assert ready.one(b"*") == "501 5.0.0 Authentication cancelled"
    assert ready.auth_checks == []
    assert ready.one(b"NOOP") == "250 2.0.0 Ok"  # back to commands
    assert ready.one(b"AUTH PLAIN " + plain()) == "235 2.7.0 Authentication successful"


def test_star_as_initial_response_cancels(ready):  # S-502
    assert ready.one(b"AUTH PLAIN *") == "501 5.0.0 Authentication cancelled"
    assert ready.auth_checks == []


def test_star_after_login_username_cancels(ready):  # S-502
    ready.ask(b"AUTH LOGIN\r\n" + b64(b"alice") + b"\r\n")
    assert ready.one(b"*") == "501 5.0.0 Authentication cancelled"


@pytest.mark.parametrize("response", [b"!!!!", b"YWxpY2U", b"YW xpY2U=", b"YWxpY2U=x", b"%%", b"YWxp\tY2U="])
def test_bad_base64_response(ready, response):  # S-502
    assert ready.one(b"AUTH PLAIN") == "334 "
    assert ready.one(response) == "501 5.5.2 Cannot decode response"
    assert ready.auth_checks == []
    assert ready.one(b"NOOP") == "250 2.0.0 Ok"


@pytest.mark.parametrize("initial", [b"!!!!", b"YWxpY2U", b"AGFsaWNlAHNlY3JldA"])
def test_bad_base64_initial_response(ready, initial):  # S-502
    assert ready.one(b"AUTH PLAIN " + initial) == "501 5.5.2 Cannot decode response"
    assert ready.auth_checks == []


def test_auth_twice_is_refused(ready):  # S-501
    ready.ask(b"AUTH PLAIN " + plain() + b"\r\n")
    assert ready.one(b"AUTH PLAIN " + plain("bob")).startswith("503 5.5.1 ")
    assert ready.conn.user == "alice" and len(ready.auth_checks) == 1


def test_auth_in_a_transaction_is_refused():  # S-501
    s = in_transaction(trusted(tls=True))
    assert s.one(b"AUTH PLAIN " + plain()).startswith("503 5.5.1 ")
    s.ask(b"RCPT TO:<bob@example.org>\r\n")
    assert s.one(b"AUTH LOGIN").startswith("503 5.5.1 ")
    assert s.auth_checks == [] and s.mechanisms_made == []


def test_auth_before_ehlo_is_refused():  # S-501, §2 table
    s = Session(tls=True)
    s.read()
    assert s.one(b"AUTH PLAIN " + plain()).startswith("503 5.5.1 ")


@pytest.mark.parametrize("initial", [b"", b" " + plain(), b" !!!notbase64", b" *"])
def test_auth_without_tls_when_required_decodes_nothing(initial):  # S-501, S-1003
    s = Session()
    s.read()
    assert "AUTH" not in " ".join(s.ask(b"EHLO client.example\r\n"))
    assert (
        s.one(b"AUTH PLAIN" + initial)
        == "504 5.5.4 Encryption required for requested authentication mechanism"
    )
    assert s.mechanisms_made == [] and s.auth_checks == []


@pytest.mark.parametrize(
    "line", [b"AUTH DIGEST-MD5", b"AUTH XOAUTH2 dXNlcj1h", b"AUTH GSSAPI", b"AUTH PLAINX"]
)
def test_unknown_mechanism(ready, line):  # S-501
    assert ready.one(line) == "504 5.5.4 Unrecognized authentication type"
    assert ready.mechanisms_made == []


@pytest.mark.parametrize("name", [b"plain", b"Plain", b"pLaIn"])
def test_mechanism_names_are_case_insensitive(ready, name):  # S-103
    assert ready.one(b"AUTH " + name + b" " + plain()) == "235 2.7.0 Authentication successful"


def test_response_line_of_12288_octets_is_read(ready):  # S-504
    ready.ask(b"AUTH PLAIN\r\n")
    line = b"A" * (MAX_AUTH_LINE - 2) + b"\r\n"
    assert ready.ask(line) == ["501 5.5.2 Cannot decode response"]


def test_over_long_response_line_ends_the_exchange(ready):  # S-504
    assert ready.one(b"AUTH LOGIN") == "334 VXNlcm5hbWU6"
    line = b"A" * (MAX_AUTH_LINE - 1) + b"\r\n"
    assert ready.ask(line + b"NOOP\r\n") == [
        "500 5.5.6 Authentication exchange line is too long",
        "250 2.0.0 Ok",
    ]
    assert ready.auth_checks == []
    assert ready.one(b"AUTH PLAIN " + plain()) == "235 2.7.0 Authentication successful"


def test_over_long_response_is_answered_when_its_end_arrives(ready):  # S-504, S-102
    ready.ask(b"AUTH PLAIN\r\n")
    for _ in range(10):
        assert ready.ask(b"Q" * 4096) == []
    assert ready.ask(b"\r\n") == ["500 5.5.6 Authentication exchange line is too long"]


def test_temporary_failure(ready):  # S-503
    ready.auth_results.append(sasl.AuthResult(False, "alice", temporary=True))
    assert ready.one(b"AUTH PLAIN " + plain()) == "454 4.7.0 Temporary authentication failure"
    assert ready.conn.user is None
    assert ready.one(b"AUTH PLAIN " + plain()) == "235 2.7.0 Authentication successful"


def test_scram_success_sends_the_server_signature_then_waits_for_an_empty_answer(ready):  # S-514, RFC 5802 §5
    # The shell's verifier said yes and gave the server-final message; the
    # user is authenticated only after the client's empty last response.
    ready.auth_results.append(sasl.AuthResult(True, "alice", server_final=b"v=c2lnbmF0dXJl"))
    assert ready.one(b"AUTH PLAIN " + plain()) == "334 " + base64.b64encode(b"v=c2lnbmF0dXJl").decode()
    assert ready.conn.user is None
    assert ready.one(b"MAIL FROM:<alice@example.com>") == "501 5.5.2 Cannot decode response"  # not base64
    assert ready.conn.user is None
    ready.auth_results.append(sasl.AuthResult(True, "alice", server_final=b"v=eA=="))
    ready.one(b"AUTH PLAIN " + plain())
    assert ready.one(b"*") == "501 5.0.0 Authentication cancelled"
    ready.auth_results.append(sasl.AuthResult(True, "alice", server_final=b"v=eA=="))
    ready.one(b"AUTH PLAIN " + plain())
    assert ready.one(b"eA==") == "535 5.7.8 Authentication credentials invalid"  # not empty
    assert ready.conn.user is None
    ready.auth_results.append(sasl.AuthResult(True, "alice", server_final=b"v=eA=="))
    ready.one(b"AUTH PLAIN " + plain())
    assert ready.one(b"") == "235 2.7.0 Authentication successful"
    assert ready.conn.user == "alice"


def test_failures_up_to_the_limit_close_the_session(ready):  # S-511, S-1007
    limit = ready.conn.settings.auth_failures
    assert limit == 3
    for _ in range(limit - 1):
        assert (
            ready.one(b"AUTH PLAIN " + plain(password=b"wrong"))
            == "535 5.7.8 Authentication credentials invalid"
        )
    assert not ready.conn.closed
    events = ready.send(b"AUTH PLAIN " + plain(password=b"wrong") + b"\r\nNOOP\r\n")
    assert ready.read() == [
        "535 5.7.8 Authentication credentials invalid",
        "421 4.7.0 msa.test Error: too many failed authentications",
    ]
    assert is_close(events[-1], "auth failures")
    assert ready.conn.closed


def test_failure_limit_is_a_setting():  # S-511
    s = greeted(tls=True, auth_failures=1)
    assert s.ask(b"AUTH PLAIN " + plain(password=b"x") + b"\r\n") == [
        "535 5.7.8 Authentication credentials invalid",
        "421 4.7.0 msa.test Error: too many failed authentications",
    ]


def test_temporary_failures_do_not_count_towards_the_limit():  # S-511
    s = greeted(tls=True, auth_failures=1)
    for _ in range(3):
        s.auth_results.append(sasl.AuthResult(False, None, temporary=True))
        assert s.one(b"AUTH PLAIN " + plain()) == "454 4.7.0 Temporary authentication failure"
    assert not s.conn.closed


def test_auth_check_pauses_until_answered():  # S-503
    s = greeted(tls=True, answer=False)
    events = s.send(b"AUTH PLAIN " + plain() + b"\r\n")
    assert [type(e) for e in events] == [AuthCheck]
    assert s.read() == []
    s.handle(s.conn.auth_done(sasl.AuthResult(True, "alice")))
    assert s.read() == ["235 2.7.0 Authentication successful"]


def test_commands_pipelined_after_auth_wait_for_the_check():  # S-513
    s = greeted(tls=True, answer=False)
    events = s.send(
        b"AUTH PLAIN " + plain() + b"\r\nMAIL FROM:<alice@example.com>\r\nRCPT TO:<bob@example.org>\r\n"
        b"DATA\r\nSubject: pipelined\r\n\r\nbody\r\n.\r\nQUIT\r\n"
    )
    assert [type(e) for e in events] == [AuthCheck]
    assert s.read() == []
    events = s.handle(s.conn.auth_done(sasl.AuthResult(True, "alice")))
    assert [type(e) for e in events] == [MailFrom, RcptTo, DataStart, DataChunk, DataEnd]
    assert s.read() == [
        "235 2.7.0 Authentication successful",
        "250 2.1.0 Ok",
        "250 2.1.5 Ok",
        "354 End data with <CR><LF>.<CR><LF>",
    ]
    assert events[3] == DataChunk(b"Subject: pipelined\r\n\r\nbody\r\n")
    events = s.handle(s.conn.delivery_done(R.queued("Q1")))
    assert s.read() == ["250 2.0.0 Ok: queued as Q1", "221 2.0.0 Bye"]
    assert len(events) == 1 and is_close(events[0], "quit")


def test_commands_pipelined_after_failed_auth_are_refused():  # S-513, S-1011
    s = greeted(tls=True)
    s.send(
        b"AUTH PLAIN " + plain(password=b"wrong") + b"\r\nMAIL FROM:<alice@example.com>\r\n"
        b"RCPT TO:<bob@example.org>\r\nDATA\r\n"
    )
    assert s.read() == [
        "535 5.7.8 Authentication credentials invalid",
        "530 5.7.0 Authentication required",
        "503 5.5.1 Need MAIL command",
        "503 5.5.1 Need MAIL command",
    ]
    assert s.of(DataStart) == [] and s.delivered == []


def test_line_after_auth_challenge_is_a_response_not_a_command(ready):  # S-513, RFC 4954 §4
    ready.send(b"AUTH LOGIN\r\nMAIL FROM:<alice@example.com>\r\n")
    # The MAIL line answers "Username:"; it is not run: decoding fails.
    assert ready.read() == ["334 VXNlcm5hbWU6", "501 5.5.2 Cannot decode response"]


# =============================================================================
# DSN (S-202, S-809): offered only with the SMTP hand-off (Settings.dsn)
# =============================================================================


def test_dsn_is_advertised_and_its_parameters_reach_the_envelope():  # S-202, S-809
    s = Session(tls=True, trusted=True, dsn=True)
    s.read()
    assert s.ask(b"EHLO client.example\r\n")[-1] == "250 DSN"
    assert s.one(b"MAIL FROM:<alice@example.com> RET=FULL ENVID=<m.1@example.com>") == "250 2.1.0 Ok"
    assert s.one(b"RCPT TO:<bob@example.org> NOTIFY=SUCCESS,FAILURE,DELAY") == "250 2.1.5 Ok"
    assert s.one(b"RCPT TO:<carol@example.org>") == "250 2.1.5 Ok"
    assert s.one(b"RCPT TO:<dave@example.org> NOTIFY=NEVER ORCPT=rfc822;dave@example.org") == "250 2.1.5 Ok"
    assert s.one(b"RCPT TO:<eve@example.org> NOTIFY=SOMETIMES") == "501 5.5.4 Invalid parameter"
    s.ask(b"DATA\r\nx\r\n.\r\n")
    [end] = s.delivered
    env = end.envelope
    assert (env.ret, env.envid) == ("FULL", "<m.1@example.com>")
    assert env.recipients == ("bob@example.org", "carol@example.org", "dave@example.org")
    assert env.rcpt_dsn == (("SUCCESS,FAILURE,DELAY", None), (None, None), ("NEVER", "rfc822;dave@example.org"))


@pytest.mark.parametrize(
    ("mail", "rcpt"),
    [
        (b"MAIL FROM:<alice@example.com> ENVID=m+01x", b"RCPT TO:<bob@example.org> ORCPT=rfc822;bob+0D+0A@example.org"),
        (b"MAIL FROM:<alice@example.com> ENVID=m+7F", b"RCPT TO:<bob@example.org> ORCPT=rfc822;b+C3+B8@example.org"),
        (b"MAIL FROM:<alice@example.com> ENVID=m+0", b"RCPT TO:<bob@example.org> ORCPT=rfc822;bob+2b@example.org"),
    ],
)
def test_dsn_xtext_that_is_not_printable_ascii_is_refused_at_mail_and_rcpt(mail, rcpt):  # S-809 amended
    # RFC 3461 §4.2, §4.4: refused where the client can tell which parameter
    # is wrong, not after DATA by the MTA; the transaction goes on without it.
    s = Session(tls=True, trusted=True, dsn=True)
    s.read()
    s.ask(b"EHLO client.example\r\n")
    assert s.one(mail) == "501 5.5.4 Invalid parameter"
    assert s.one(b"MAIL FROM:<alice@example.com> ENVID=m+20x") == "250 2.1.0 Ok"
    assert s.one(rcpt) == "501 5.5.4 Invalid parameter"
    assert s.one(b"RCPT TO:<bob@example.org> ORCPT=rfc822;bob@example.org") == "250 2.1.5 Ok"
    s.ask(b"DATA\r\nx\r\n.\r\n")
    [end] = s.delivered
    assert end.envelope.envid == "m+20x" and end.envelope.recipients == ("bob@example.org",)
    assert end.envelope.rcpt_dsn == ((None, "rfc822;bob@example.org"),)


def test_without_dsn_the_parameters_are_unsupported_and_not_advertised():  # S-202
    s = Session(tls=True, trusted=True)
    s.read()
    assert not any("DSN" in line for line in s.ask(b"EHLO client.example\r\n"))
    assert s.one(b"MAIL FROM:<alice@example.com> RET=FULL") == "555 5.5.4 Unsupported parameter"
    s.one(b"MAIL FROM:<alice@example.com>")
    assert s.one(b"RCPT TO:<bob@example.org> NOTIFY=NEVER") == "555 5.5.4 Unsupported parameter"
