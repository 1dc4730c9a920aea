"""Events the core hands to the shell.

Pausing events (StartTls, AuthCheck, DataEnd, Close) always come last in
their batch: the core reads no further input until the shell answers with
`tls_started`, `auth_done` or `delivery_done` (Close needs no answer).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True, slots=True)
class Envelope:
    sender: str  # without brackets; "" is the null sender
    recipients: tuple[str, ...]
    size: int | None  # the SIZE= parameter
    body: str | None  # BODY= parameter, upper case
    smtputf8: bool
    ret: str | None = None  # DSN (S-809): RET=, ENVID= of MAIL
    envid: str | None = None
    rcpt_dsn: tuple[tuple[str | None, str | None], ...] = ()  # (NOTIFY, ORCPT) per recipient


@dataclass(frozen=True, slots=True)
class Ehlo:
    name: str
    esmtp: bool


@dataclass(frozen=True, slots=True)
class MailFrom:
    sender: str
    size: int | None
    body: str | None
    smtputf8: bool


@dataclass(frozen=True, slots=True)
class RcptTo:
    recipient: str


@dataclass(frozen=True, slots=True)
class DataStart:
    envelope: Envelope  # complete: DATA ends the envelope (steps that start early need it)


@dataclass(frozen=True, slots=True)
class DataChunk:
    data: bytes = field(repr=False)


@dataclass(frozen=True, slots=True)
class Reset:
    reason: str


@dataclass(frozen=True, slots=True)
class Refused:
    command: str
    reply: Any  # replies.Reply
    argument: str = ""  # the address a refused MAIL or RCPT named, as sent
    sender: str | None = None  # the transaction's sender, None outside one


# -- pausing --------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class StartTls:
    discarded: int  # bytes pipelined after STARTTLS, dropped (S-401)


@dataclass(frozen=True, slots=True)
class AuthCheck:
    mechanism: str
    credentials: Any = field(repr=False)  # sasl.Credentials


@dataclass(frozen=True, slots=True)
class DataEnd:
    envelope: Envelope
    size: int


@dataclass(frozen=True, slots=True)
class Close:
    reason: str
    reply: Any = None  # the last reply sent (421, 221), None if the client left


Event = (
    Ehlo | MailFrom | RcptTo | DataStart | DataChunk | Reset | Refused
    | StartTls | AuthCheck | DataEnd | Close
)
PAUSING = (StartTls, AuthCheck, DataEnd, Close)
