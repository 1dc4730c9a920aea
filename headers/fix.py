"""The header block msa hands on (SPEC.md §7, RFC 6409 §8).

This module owns the rewrite of the header: Received: first (S-706), the
client's fields byte for byte and in order minus Bcc:, Resent-Bcc: and
Return-Path: (S-704), then the Date:, Message-ID: and From: that are missing
(S-705), then the empty line that ends the block (S-701). The body is never
read (S-708): the caller sends it from ``block.body_offset``. Every string
from the context is reduced to a safe alphabet before it is written
(S-1005). Standard library only; no I/O.
"""

from __future__ import annotations

import re
import secrets
from datetime import timezone

from .context import FixContext
from .limits import MAX_DOMAIN, MAX_LINE, MIN_MESSAGE_ID_RANDOM
from .parse import Field, HeaderBlock
from .received import HOST_TABLE, ID_TABLE, received_field, restrict, rfc5322_date
from .senders import SenderProblem, parse_addresses

__all__ = ["FixContext", "fix", "valid_msg_id"]


# S-704: dropped with their continuation lines. Bcc: would reveal the blind
# recipients (RFC 5322 §3.6.3); Return-Path: is the final MTA's to add
# (RFC 5321 §4.4).
_REMOVED = frozenset({"bcc", "resent-bcc", "return-path"})

# RFC 5322 §3.6.4 msg-id = [CFWS] "<" id-left "@" id-right ">" [CFWS], with
# id-left = dot-atom-text and id-right = dot-atom-text / no-fold-literal
# (obsolete forms not accepted), atext widened by RFC 6532 §3.2. Only white
# space is tolerated around it. Anything else is replaced (RFC 6409 §8.3).
_NA = "\u00a0-\u2027\u202a-\U0010ffff"
_ATEXT = r"[A-Za-z0-9!#$%&'*+\-/=?^_`{|}~" + _NA + r"]+"
_DOT_ATOM_TEXT = _ATEXT + r"(?:\." + _ATEXT + r")*"
_NO_FOLD_LITERAL = r"\[[!-Z^-~" + _NA + r"]*\]"
_MSG_ID = re.compile(
    r"[ \t]*<" + _DOT_ATOM_TEXT + "@(?:" + _DOT_ATOM_TEXT + "|" + _NO_FOLD_LITERAL + r")>[ \t]*"
)
# Host names in a Message-ID: dot-separated runs of atext; ours are LDH.
_HOST_LABEL = re.compile(r"[A-Za-z0-9-]+")


def valid_msg_id(value: bytes) -> bool:
    """Whether an unfolded Message-ID: value is one valid msg-id."""
    try:
        text = value.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return _MSG_ID.fullmatch(text) is not None


def _id_host(hostname: str) -> str:
    """``hostname`` as a dot-atom-text of LDH labels, for id-right."""
    labels = [
        "".join(_HOST_LABEL.findall(label))
        for label in restrict(hostname, HOST_TABLE, MAX_DOMAIN).split(".")
    ]
    labels = [label for label in labels if label]
    return ".".join(labels) or "localhost"


def _message_id(ctx: FixContext) -> str:
    """``<UTCSTAMP.QUEUEID.RANDOM@HOST>`` (S-705), atext and dots only."""
    try:
        utc = ctx.now.astimezone(timezone.utc)
    except (OverflowError, ValueError):  # out of datetime's range: keep local
        utc = ctx.now
    stamp = (
        f"{utc.year:04d}{utc.month:02d}{utc.day:02d}"
        f"{utc.hour:02d}{utc.minute:02d}{utc.second:02d}"
    )
    queue_id = restrict(ctx.queue_id, ID_TABLE, 64).replace("?", "") or "0"
    random = bytes(ctx.random)
    if len(random) < MIN_MESSAGE_ID_RANDOM:
        # A caller bug, but the id must stay unique: never fewer than 64 bits.
        random += secrets.token_bytes(MIN_MESSAGE_ID_RANDOM)
    return f"<{stamp}.{queue_id}.{random[:32].hex()}@{_id_host(ctx.hostname)}>"


def _with_crlf(raw: bytes) -> bytes:
    """A kept field, its last line ended by CRLF. Only a field cut off by the
    end of the message lacks it (parse.py); the other cases cannot come from
    the SMTP layer's CRLF-normalised input, and are mended so that the block
    stays well-formed whatever the input."""
    if raw.endswith(b"\r\n"):
        return raw
    if raw.endswith(b"\r"):
        return raw + b"\n"
    if raw.endswith(b"\n"):
        return raw[:-1] + b"\r\n"
    return raw + b"\r\n"


def _kept_fields(block: HeaderBlock, message_id: bytes | None, invalid: list[Field]) -> list[bytes]:
    """The client's fields in order, minus S-704's, every invalid Message-ID:
    (those in ``invalid``) dropped; ``message_id``, when given, takes the
    place of the first one."""
    out: list[bytes] = []
    for f in block.fields:
        if f.lname in _REMOVED:
            continue
        if f.lname == "message-id" and any(f is bad for bad in invalid):
            if message_id is not None:
                out.append(message_id)
                message_id = None
            continue
        out.append(_with_crlf(f.raw))
    return out


def fix(block: HeaderBlock, ctx: FixContext) -> bytes | SenderProblem:
    """The complete new header block, empty line included, to be followed by
    the body from ``block.body_offset``; or a SenderProblem: "no_from" when
    there is no From: and the null envelope sender leaves none to add,
    "unverifiable" when the envelope sender cannot be written as a line."""
    names = {f.lname for f in block.fields}
    from_field = None
    if "from" not in names:
        # RFC 6409 §8.1: From: from the envelope sender (S-705).
        from_field = _from_field(ctx.sender)
        if isinstance(from_field, SenderProblem):
            return from_field
    ids = block.named("message-id")
    invalid = [f for f in ids if not valid_msg_id(f.value())]  # each value checked once
    message_id = None
    if len(invalid) == len(ids):
        # RFC 5322 §3.6.4; RFC 6409 §8.3: missing or invalid, ours instead.
        message_id = f"Message-ID: {_message_id(ctx)}\r\n".encode("ascii")
    parts = [received_field(ctx)]
    parts += _kept_fields(block, message_id if ids else None, invalid)
    if "date" not in names:
        # RFC 5322 §3.6.1 orig-date; RFC 6409 §8.2.
        parts.append(f"Date: {rfc5322_date(ctx.now)}\r\n".encode("ascii"))
    if message_id is not None and not ids:
        parts.append(message_id)
    if from_field is not None:
        parts.append(from_field)
    parts.append(b"\r\n")
    return b"".join(parts)


def _from_field(sender: str) -> bytes | SenderProblem:
    """``From: <sender>`` (RFC 6409 §8.1). The null sender gives none
    (S-705). The address was checked by the SMTP layer (S-206); it must
    still read back as exactly that address with msa's own parser, so no
    control, line break or stray bracket is ever written (S-1005), and the
    line must fit (RFC 5322 §2.1.1)."""
    if not sender:
        return SenderProblem("no_from", field="From")
    try:
        octets = sender.encode("utf-8")
    except UnicodeEncodeError:  # lone surrogates
        return SenderProblem("unverifiable", field="From")
    line = b"From: <" + octets + b">"
    if len(line) > MAX_LINE or parse_addresses(line[5:]) != [sender]:
        return SenderProblem("unverifiable", field="From")
    return line + b"\r\n"
