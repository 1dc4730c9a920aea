"""The Received: field msa prepends, and the RFC 5322 date it and fix() use.

This module owns the trace field of SPEC.md S-706/S-707 (RFC 5321 §4.4,
the ``with`` keywords of RFC 3848 and RFC 6531 §3.7.3) and the rule that
nothing a client sent reaches a generated field unchecked (S-1005): every
string taken from the context is validated or reduced to a safe alphabet, so
no CR, LF, NUL or other control can start a new header line. Lines are at
most MAX_LINE octets. Standard library only; no I/O, no DNS.
"""

from __future__ import annotations

import ipaddress
import re
from datetime import datetime
from typing import TYPE_CHECKING

from .limits import MAX_DOMAIN, MAX_HELO_SHOWN, MAX_LINE, MAX_TLS_SHOWN

if TYPE_CHECKING:
    from .context import FixContext

__all__ = ["received_field", "rfc5322_date", "restrict", "with_protocol"]

_DAYS = ("Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun")
_MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")


def rfc5322_date(when: datetime) -> str:
    """RFC 5322 §3.3 date-time with a numeric zone, e.g.
    ``Wed, 25 Nov 2026 18:48:03 +0100``; English names whatever the locale.
    A naive datetime gets ``-0000``, "local time unknown" (§3.3)."""
    offset = when.utcoffset()
    if offset is None:
        zone = "-0000"
    else:
        seconds = int(offset.total_seconds())
        sign = "-" if seconds < 0 else "+"
        minutes = abs(seconds) // 60
        zone = f"{sign}{minutes // 60:02d}{minutes % 60:02d}"
    return (
        f"{_DAYS[when.weekday()]}, {when.day:02d} {_MONTHS[when.month - 1]} "
        f"{when.year:04d} {when.hour:02d}:{when.minute:02d}:{when.second:02d} {zone}"
    )


def _table(allowed: bytes) -> bytes:
    """A bytes.translate table keeping ``allowed`` and mapping the rest to "?"."""
    return bytes(b if b in allowed else 0x3F for b in range(256))


_ALNUM = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789"
#: S-707: what of an invalid HELO name is shown as ``(helo=X)``.
HELO_TABLE = _table(_ALNUM + b".:-")
#: Host names (LDH and dots) and queue ids.
HOST_TABLE = _table(_ALNUM + b".-")
ID_TABLE = _table(_ALNUM)
#: Text inside a comment: printable ASCII and space, without the comment's
#: own delimiters and quoting character (RFC 5322 §3.2.2 ctext).
COMMENT_TABLE = _table(bytes(b for b in range(0x20, 0x7F) if b not in b"()\\"))


def restrict(text: str, table: bytes, limit: int) -> str:
    """``text`` as octets (UTF-8, surrogates kept as the octets they stand
    for), cut to ``limit`` octets, every octet the table does not keep
    replaced by "?". The result is ASCII and safe in a header."""
    try:
        octets = text.encode("utf-8", "surrogateescape")
    except UnicodeEncodeError:  # a surrogate that stands for no octet
        octets = text.encode("utf-8", "surrogatepass")
    return octets[:limit].translate(table).decode("ascii")


# RFC 5321 §4.1.2: sub-domain = Let-dig [Ldh-str] (RFC 1035 labels, ≤ 63).
_LABEL = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?")
_IPV6_TEXT = re.compile(r"[0-9A-Fa-f:.]+")
#: A dotted quad in the form ipaddress writes (no leading zeros), so that
#: it stands for itself.
_IPV4 = re.compile(r"(?:25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])(?:\.(?:25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])){3}")


def _address_literal(text: str) -> bool:
    """RFC 5321 §4.1.3 IPv4-address-literal or IPv6-address-literal."""
    if not (text.startswith("[") and text.endswith("]")):
        return False
    inner = text[1:-1]
    if inner[:5].lower() == "ipv6:":
        if not _IPV6_TEXT.fullmatch(inner[5:]):
            return False  # no zone ids or anything else ipaddress would take
        try:
            ipaddress.IPv6Address(inner[5:])
        except ValueError:
            return False
        return True
    try:
        ipaddress.IPv4Address(inner)
    except ValueError:
        return False
    return True


def helo_domain(helo: str | None) -> str | None:
    """The HELO name when it may stand as the FROM domain (S-707): a domain
    of LDH labels or an address literal, at most MAX_DOMAIN octets. A name
    whose last label is all digits (a bare IP address) is not taken as a
    domain (RFC 3696 §2: top-level domains are never all-numeric)."""
    if helo is None or not helo.isascii() or not 0 < len(helo) <= MAX_DOMAIN:
        return None
    if _address_literal(helo):
        return helo
    labels = helo.split(".")
    if not all(_LABEL.fullmatch(label) for label in labels) or labels[-1].isdigit():
        return None
    return helo


def client_literal(client_ip: str) -> str | None:
    """The client address as a Received: address literal: ``[192.0.2.1]``,
    ``[IPv6:2001:db8::1]``; ``::ffff:a.b.c.d`` shown as IPv4 (S-109); None
    when it is not an IP address (e.g. "unknown")."""
    if _IPV4.fullmatch(client_ip):
        return f"[{client_ip}]"  # as ipaddress writes it, without parsing it
    try:
        address = ipaddress.ip_address(client_ip)
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address):
        if address.ipv4_mapped is not None:
            return f"[{address.ipv4_mapped}]"
        # Rebuilt from the integer: a zone id ("%eth0") is not shown.
        return f"[IPv6:{ipaddress.IPv6Address(int(address)).compressed}]"
    return f"[{address}]"


def with_protocol(ctx: FixContext) -> str:
    """The ``with`` keyword: RFC 3848 (SMTP, ESMTP, ESMTPS, ESMTPA, ESMTPSA)
    or, for an SMTPUTF8 transaction, RFC 6531 §3.7.3 (UTF8SMTP, UTF8SMTPS,
    UTF8SMTPA, UTF8SMTPSA). After HELO it is SMTP: TLS and AUTH need EHLO."""
    if not ctx.esmtp:
        return "SMTP"
    base = "UTF8SMTP" if ctx.smtputf8 else "ESMTP"
    return base + ("S" if ctx.tls is not None else "") + ("A" if ctx.authenticated else "")


def _from_clause(ctx: FixContext) -> str:
    """RFC 5321 §4.4 From-domain = "FROM" FWS Extended-Domain."""
    literal = client_literal(ctx.client_ip) or "unknown"
    domain = helo_domain(ctx.helo)
    if domain is not None:
        return f"from {domain} ({literal})"
    if ctx.helo is None:
        return f"from {literal}"
    return f"from {literal} (helo={restrict(ctx.helo, HELO_TABLE, MAX_HELO_SHOWN)})"


def _recipient(ctx: FixContext) -> str | None:
    """The one recipient for the ``for`` clause, made safe: controls, line
    breaks and angle brackets become "?", non-ASCII too unless SMTPUTF8."""
    if len(ctx.recipients) != 1:
        return None  # S-706; several would also reveal Bcc recipients
    rcpt = ctx.recipients[0]
    if rcpt.isascii() and rcpt.isprintable() and "<" not in rcpt and ">" not in rcpt:
        return rcpt  # the common case: nothing to replace
    chars = []
    for c in rcpt:
        o = ord(c)
        if (
            c in "<>\u2028\u2029"
            or o < 0x20
            or 0x7F <= o < 0xA0
            or (o > 0x7F and (not ctx.smtputf8 or 0xD800 <= o < 0xE000))
        ):
            chars.append("?")
        else:
            chars.append(c)
    return "".join(chars)


def _octets(line: str) -> int:
    return len(line.encode("utf-8"))


def received_field(ctx: FixContext) -> bytes:
    """The Received: field (S-706), every clause on its own line, each line
    after the first starting with a tab, CRLF endings, lines ≤ MAX_LINE."""
    host = restrict(ctx.hostname, HOST_TABLE, MAX_DOMAIN)
    by = f"by {host} (msa) with {with_protocol(ctx)} id {restrict(ctx.queue_id, ID_TABLE, 64)}"
    using = None
    if ctx.tls is not None:
        using = f"\t(using {restrict(ctx.tls, COMMENT_TABLE, MAX_TLS_SHOWN).strip() or 'TLS'})"
    if ctx.received_client:
        lines = [f"Received: {_from_clause(ctx)}"]
        if using:
            lines.append(using)
        lines.append(f"\t{by}")
    else:
        # S-706: received_client = no drops the FROM clause, keeps the rest.
        lines = [f"Received: {by}"]
        if using:
            lines.append(using)
    date = rfc5322_date(ctx.now)
    rcpt = _recipient(ctx)
    if rcpt is not None and _octets(f"\tfor <{rcpt}>; {date}") <= MAX_LINE:
        lines.append(f"\tfor <{rcpt}>; {date}")
    elif rcpt is not None and _octets(f"\tfor <{rcpt}>;") <= MAX_LINE:
        lines += [f"\tfor <{rcpt}>;", f"\t{date}"]
    else:
        # No single recipient (or one too long for a line): the date alone
        # on the last line, as Postfix writes it.
        lines[-1] += ";"
        lines.append(f"\t{date}")
    return ("\r\n".join(lines) + "\r\n").encode("utf-8")
