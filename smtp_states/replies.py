"""Replies: the `Reply` type and the table of every named reply msa sends.

Texts are stable (users search for them, log filters match them) and follow
SPEC.md word for word. Replies that name the host are built by functions.
Every 2xx/4xx/5xx reply carries an enhanced status code (RFC 2034, RFC 3463)
except the greeting and the EHLO/HELO replies; 3xx replies carry none.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from .limits import MAX_REPLY_LINE


@dataclass(frozen=True, slots=True)
class Reply:
    """One reply: code, enhanced status code (RFC 3463, "" for none) and
    text; a tuple of lines is a multiline reply."""

    code: int
    enhanced: str
    text: str | tuple[str, ...]
    #: The reply as sent, made once: most replies are constants of this
    #: module, sent again with every command.
    wire: bytes = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "wire", self._wire())

    def lines(self) -> tuple[str, ...]:
        return self.text if isinstance(self.text, tuple) else (self.text,)

    def to_bytes(self) -> bytes:
        return self.wire

    def _wire(self) -> bytes:
        lines = self.lines()
        out = []
        for i, line in enumerate(lines):
            sep = "-" if i < len(lines) - 1 else " "
            prefix = f"{self.code}{sep}"
            if self.enhanced:
                prefix += self.enhanced + " " if line else self.enhanced
            wire = (prefix + line).encode("utf-8", "replace")[: MAX_REPLY_LINE - 2]
            out.append(wire + b"\r\n")
        return b"".join(out)

    @property
    def is_error(self) -> bool:
        """A protocol error for the S-106 count: 500-504, 530 and 550-555."""
        return 500 <= self.code <= 504 or self.code == 530 or 550 <= self.code <= 555

    def __str__(self) -> str:
        first = self.lines()[-1]
        return f"{self.code} {self.enhanced} {first}" if self.enhanced else f"{self.code} {first}"


# -- session -----------------------------------------------------------------
OK = Reply(250, "2.0.0", "Ok")
BYE = Reply(221, "2.0.0", "Bye")
HELP = Reply(214, "2.0.0", "See RFC 5321 (https://www.rfc-editor.org/rfc/rfc5321)")
VRFY = Reply(252, "2.0.0", "Not verified; send mail to find out")
NOT_IMPLEMENTED = Reply(502, "5.5.1", "Command not implemented")
UNRECOGNIZED = Reply(500, "5.5.2", "Command unrecognized")
INVALID_CHARACTER = Reply(500, "5.5.2", "Invalid character in command")
LINE_TOO_LONG = Reply(500, "5.5.2", "Line too long")
BAD_SEQUENCE = Reply(503, "5.5.1", "Bad sequence of commands")
SEND_EHLO_FIRST = Reply(503, "5.5.1", "Send EHLO first")
NESTED_MAIL = Reply(503, "5.5.1", "Nested MAIL command")
NEED_MAIL = Reply(503, "5.5.1", "Need MAIL command")
NEED_RCPT = Reply(503, "5.5.1", "Need RCPT command")
NO_VALID_RECIPIENTS = Reply(554, "5.5.1", "No valid recipients")
SYNTAX_EHLO = Reply(501, "5.5.4", "Syntax: EHLO hostname")
SYNTAX_HELO = Reply(501, "5.5.4", "Syntax: HELO hostname")
SYNTAX_NO_ARGS = Reply(501, "5.5.4", "Syntax error, no parameters allowed")
SYNTAX_VRFY = Reply(501, "5.5.4", "Syntax: VRFY address")
SYNTAX_MAIL = Reply(501, "5.5.4", "Syntax: MAIL FROM:<address>")
SYNTAX_RCPT = Reply(501, "5.5.4", "Syntax: RCPT TO:<address>")
SYNTAX_AUTH = Reply(501, "5.5.4", "Syntax: AUTH mechanism [initial-response]")

# -- TLS (S-401) ---------------------------------------------------------------
TLS_READY = Reply(220, "2.0.0", "Ready to start TLS")
TLS_ACTIVE = Reply(503, "5.5.1", "TLS already active")
TLS_UNAVAILABLE = Reply(502, "5.5.1", "TLS not available")

# -- MAIL / RCPT (S-204..S-206, S-601) -----------------------------------------
SENDER_OK = Reply(250, "2.1.0", "Ok")
RECIPIENT_OK = Reply(250, "2.1.5", "Ok")
AUTH_REQUIRED = Reply(530, "5.7.0", "Authentication required")
BAD_SENDER_SYNTAX = Reply(501, "5.1.7", "Bad sender address syntax")
BAD_RECIPIENT_SYNTAX = Reply(501, "5.1.3", "Bad recipient address syntax")
BAD_PARAMETER = Reply(501, "5.5.4", "Invalid parameter")
UNSUPPORTED_PARAMETER = Reply(555, "5.5.4", "Unsupported parameter")
SIZE_EXCEEDED = Reply(552, "5.3.4", "Message size exceeds fixed limit")
SENDER_NOT_UTF8 = Reply(550, "5.6.7", "Non-ASCII address requires SMTPUTF8")
RECIPIENT_NOT_UTF8 = Reply(553, "5.6.7", "Non-ASCII address requires SMTPUTF8")
SENDER_NOT_FQDN = Reply(554, "5.1.8", "Sender domain must be fully qualified")
RECIPIENT_NOT_FQDN = Reply(554, "5.1.2", "Recipient domain must be fully qualified")
TOO_MANY_RECIPIENTS = Reply(452, "4.5.3", "Too many recipients")
RATE_LIMITED = Reply(450, "4.7.1", "Sending rate limit exceeded; try again later")  # S-1201
RECIPIENT_LIMIT = Reply(452, "4.5.3", "Recipient limit reached; try again later")  # S-1201

# -- DATA (S-207, §3) ------------------------------------------------------------
START_DATA = Reply(354, "", "End data with <CR><LF>.<CR><LF>")
BARE_CR = Reply(554, "5.6.0", "Message contains a bare CR")
NUL_IN_DATA = Reply(554, "5.6.0", "Message contains NUL characters")
NO_STORAGE = Reply(452, "4.3.1", "Insufficient system storage")
HEADER_TOO_LARGE = Reply(552, "5.3.4", "Message header too large")
CANNOT_VERIFY_FROM = Reply(554, "5.6.0", "Cannot verify From: header")
NO_FROM_HEADER = Reply(554, "5.6.0", "Message has no From: header")

# -- AUTH (§5) ------------------------------------------------------------------
AUTH_OK = Reply(235, "2.7.0", "Authentication successful")
AUTH_INVALID = Reply(535, "5.7.8", "Authentication credentials invalid")
AUTH_TEMPFAIL = Reply(454, "4.7.0", "Temporary authentication failure")
AUTH_NEEDS_TLS = Reply(
    504, "5.5.4", "Encryption required for requested authentication mechanism"
)
AUTH_UNKNOWN_MECHANISM = Reply(504, "5.5.4", "Unrecognized authentication type")
AUTH_ALREADY = Reply(503, "5.5.1", "Already authenticated")
AUTH_CANCELLED = Reply(501, "5.0.0", "Authentication cancelled")
AUTH_BAD_BASE64 = Reply(501, "5.5.2", "Cannot decode response")
AUTH_NO_INITIAL = Reply(501, "5.7.0", "Initial response not allowed for this mechanism")
AUTH_LINE_TOO_LONG = Reply(500, "5.5.6", "Authentication exchange line is too long")

# -- hand-off (§8) ----------------------------------------------------------------
INTERNAL_ERROR = Reply(421, "4.3.0", "Internal error; try again later")
HANDOFF_TEMPFAIL = Reply(
    451, "4.3.0", "Temporary failure handing the message on; try again later"
)
# The SMTP hand-off (S-807, S-808).
MTA_UNAVAILABLE = Reply(451, "4.4.1", "Mail system unavailable; try again later")
MTA_LOST_AFTER_DOT = Reply(451, "4.4.2", "Connection to the mail system lost; try again later")
SMTPUTF8_UNSUPPORTED = Reply(554, "5.6.7", "SMTPUTF8 is not supported by the mail system")


def greeting(host: str) -> Reply:
    return Reply(220, "", f"{host} ESMTP msa")  # S-201: no version


def queued(queue_id: str) -> Reply:
    return Reply(250, "2.0.0", f"Ok: queued as {queue_id}")  # S-309


def sender_not_owned(address: str, user: str) -> Reply:
    return Reply(550, "5.7.1", f"Sender address <{address}> not owned by user {user}")


def from_not_owned(address: str, user: str) -> Reply:
    return Reply(550, "5.7.1", f"From: address <{address}> not owned by user {user}")


def too_many_errors(host: str) -> Reply:
    return Reply(421, "4.7.0", f"{host} Error: too many errors")


def too_many_auth_failures(host: str) -> Reply:
    return Reply(421, "4.7.0", f"{host} Error: too many failed authentications")


def too_many_messages(host: str) -> Reply:
    return Reply(421, "4.7.0", f"{host} Error: too many messages in one session")


def bdat_framing_lost(host: str) -> Reply:
    return Reply(421, "4.7.0", f"{host} Error: BDAT without a usable size")  # S-203


def not_smtp(host: str) -> Reply:
    return Reply(421, "4.7.0", f"{host} Not an SMTP client")  # S-107


def timeout(host: str) -> Reply:
    return Reply(421, "4.4.2", f"{host} Error: timeout exceeded")  # S-108


def too_many_connections(host: str) -> Reply:
    return Reply(421, "4.7.0", f"{host} Too many connections")  # S-109


def shutting_down(host: str) -> Reply:
    return Reply(421, "4.3.2", f"{host} Service shutting down")  # S-110


def mta_rejected(enhanced: str) -> Reply:
    return Reply(554, enhanced, "Rejected by the mail system")  # S-807


def sendmail_rejected(code: int, enhanced: str, status: int) -> Reply:
    return Reply(code, enhanced, f"Rejected by the mail system (sendmail exit {status})")
