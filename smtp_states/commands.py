"""Command lines: verbs, paths and ESMTP parameters (SPEC.md §1, §2).

Pure functions from bytes to parsed values or a refusal `Reply`; no state.
The grammar is RFC 5321 §4.1.2 with RFC 6531's UTF-8 extension.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass

from . import replies as R
from .limits import MAX_DOMAIN, MAX_LOCAL_PART, MAX_PATH
from .replies import Reply

# Controls (HTAB included) and DEL are never valid in a command (S-101).
_CONTROL = re.compile(rb"[\x00-\x1f\x7f]")
_HTTP_METHODS = (b"GET ", b"POST ", b"PUT ", b"HEAD ", b"CONNECT ", b"OPTIONS ")

# RFC 5321 §4.1.2 / RFC 5322 §3.2.3 atext; RFC 6531 adds UTF8-non-ascii.
_ATEXT = r"A-Za-z0-9!#$%&'*+/=?^_`{|}~-"
_DOT_STRING = re.compile(rf"[{_ATEXT}]+(?:\.[{_ATEXT}]+)*\Z")
_DOT_STRING_UTF8 = re.compile(rf"(?:[{_ATEXT}]|[^\x00-\x7f])+(?:\.(?:[{_ATEXT}]|[^\x00-\x7f])+)*\Z")
# qtextSMTP = %d32-33 / %d35-91 / %d93-126; quoted-pairSMTP = "\" %d32-126
_QUOTED = re.compile(r'"(?:[\x20\x21\x23-\x5b\x5d-\x7e]|\\[\x20-\x7e])*"\Z')
_QUOTED_UTF8 = re.compile(r'"(?:[\x20\x21\x23-\x5b\x5d-\x7e]|[^\x00-\x7f]|\\[\x20-\x7e])*"\Z')
_LABEL = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?\Z")
_LABEL_UTF8 = re.compile(r"(?:[A-Za-z0-9]|[^\x00-\x7f])(?:(?:[A-Za-z0-9-]|[^\x00-\x7f])*(?:[A-Za-z0-9]|[^\x00-\x7f]))?\Z")
_IPV4 = re.compile(r"(?:25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)(?:\.(?:25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)){3}\Z")
_IPV6_TEXT = re.compile(r"[0-9A-Fa-f:.]+\Z")  # no zone ID ("%eth0"), nothing else
_KEYWORD = re.compile(r"[A-Za-z0-9][A-Za-z0-9-]*\Z")
_XTEXT = re.compile(r"(?:[\x21-\x2a\x2c-\x3c\x3e-\x7e]|\+[0-9A-F]{2})*\Z")
_HEXCHAR = re.compile(r"\+([0-9A-F]{2})")  # in a value _XTEXT matched


def split_line(line: bytes) -> bytes:
    """Strip the line ending (CRLF or bare LF, S-101)."""
    if line.endswith(b"\r\n"):
        return line[:-2]
    return line[:-1]


def has_bad_character(text: bytes) -> bool:
    """S-101: a CR, NUL or other control inside a command line."""
    return _CONTROL.search(text) is not None


def eight_bit_outside_path(text: bytes) -> bool:
    """S-103: in MAIL and RCPT, octets above 0x7F only inside `<...>`."""
    if text.isascii():
        return False
    lt, gt = text.find(b"<"), text.rfind(b">")
    if 0 <= lt < gt:
        return not (text[:lt].isascii() and text[gt + 1 :].isascii())
    return True


def is_http(text: bytes) -> bool:
    """S-107: the first command looks like an HTTP request."""
    return text.upper().startswith(_HTTP_METHODS)


def verb_and_argument(text: bytes) -> tuple[str, bytes]:
    verb, _, arg = text.partition(b" ")
    try:
        name = verb.decode("ascii").upper()
    except UnicodeDecodeError:
        name = "?"
    return name, arg.strip(b" \t")


@dataclass(frozen=True, slots=True)
class Path:
    address: str  # "local@domain", "postmaster", "root" or "" (null)
    local: str
    domain: str
    literal: bool  # domain is an address literal
    utf8: bool  # contains non-ASCII

    @property
    def qualified(self) -> bool:
        """RFC 6409 §4.2: a dot in the domain, or an address literal."""
        return self.literal or "." in self.domain


def _check_domain(domain: str, utf8: bool) -> tuple[bool, bool]:
    """(valid, literal) for a domain or address literal (RFC 5321 §4.1.3).

    Only `[IPv4]` and `[IPv6:...]` literals that `ipaddress` parses, with
    no zone ID, are taken (S-206): RFC 5321's General-address-literal
    `[tag:text]` and a zone ID may hold `,`, `(`, `!` or `]`, which an
    MTA's sendmail reads as more addresses, so one RCPT would become
    several recipients there (S-1004).
    """
    if domain.startswith("["):
        if not domain.endswith("]"):
            return False, True
        inner = domain[1:-1]
        if _IPV4.match(inner):
            return True, True
        if inner[:5].lower() == "ipv6:" and _IPV6_TEXT.match(inner[5:]):
            try:
                ipaddress.IPv6Address(inner[5:])
            except ValueError:
                return False, True
            return True, True
        return False, True
    if not domain or len(domain.encode()) > MAX_DOMAIN:
        return False, False
    label = _LABEL_UTF8 if utf8 else _LABEL
    return all(label.match(p) for p in domain.split(".")), False


def parse_path(raw: bytes, *, null_ok: bool, utf8_ok: bool, bare_ok: bool) -> Path | str:
    """Parse `<...>` (brackets included). Return a Path, or a reason:
    "syntax", "utf8" (non-ASCII without SMTPUTF8), or "dash" (S-206)."""
    if len(raw) < 2 or raw[:1] != b"<" or raw[-1:] != b">":
        return "syntax"
    inner_b = raw[1:-1]
    if len(raw) > MAX_PATH:
        return "syntax"
    try:
        inner = inner_b.decode("utf-8")
    except UnicodeDecodeError:
        return "syntax" if utf8_ok else "utf8"
    utf8 = not inner.isascii()
    if utf8 and not utf8_ok:
        return "utf8"
    if inner == "":
        return Path("", "", "", False, False) if null_ok else "syntax"
    # A source route "@a,@b:" is accepted and dropped (RFC 5321 §4.1.2, C.).
    if inner.startswith("@"):
        colon = inner.find(":")
        if colon == -1:
            return "syntax"
        for hop in inner[:colon].split(","):
            if not hop.startswith("@") or not _check_domain(hop[1:], utf8)[0]:
                return "syntax"
        inner = inner[colon + 1 :]
    at = inner.rfind("@")
    if at == -1:
        # A bare local part: <postmaster> for everyone, <root> for trusted.
        if (_DOT_STRING.match(inner) and (bare_ok or inner.lower() == "postmaster")):
            if inner.startswith("-"):
                return "dash"
            return Path(inner, inner, "", False, False)
        return "syntax"
    local, domain = inner[:at], inner[at + 1 :]
    if local.startswith("\""):
        ok = (_QUOTED_UTF8 if utf8 else _QUOTED).match(local)
    else:
        ok = (_DOT_STRING_UTF8 if utf8 else _DOT_STRING).match(local)
    if not ok or len(local.encode()) > MAX_LOCAL_PART:
        return "syntax"
    valid, literal = _check_domain(domain, utf8)
    if not valid:
        return "syntax"
    if local.startswith("-") or local.startswith("\"-"):
        return "dash"  # S-206, S-1004: never an option to sendmail
    return Path(f"{local}@{domain}", local, domain, literal, utf8)


def split_path_and_params(arg: bytes, prefix: bytes) -> tuple[bytes, list[bytes]] | None:
    """Split `FROM:<path> params` (prefix b"FROM:"); spaces allowed after
    the colon (S-204). The path ends at the first `>` outside quotes."""
    if arg[: len(prefix)].upper() != prefix:
        return None
    rest = arg[len(prefix) :].lstrip(b" ")
    if not rest.startswith(b"<"):
        return None
    if b'"' not in rest:  # no quoted string: the first ">" ends the path
        end = rest.find(b">", 1)
    else:
        end = _path_end(rest)
    if end == -1:
        return None
    path = rest[: end + 1]
    tail = rest[end + 1 :]
    if tail and not tail.startswith(b" "):
        return None
    return path, tail.split()


def _path_end(rest: bytes) -> int:
    """Where the path that starts `rest` ends: its first ">" outside quotes
    (a backslash inside quotes escapes the next octet); -1 if none."""
    quoted = escaped = False
    end = -1
    for i in range(1, len(rest)):  # bounded by the 2048-octet line
        c = rest[i]
        if escaped:
            escaped = False
        elif quoted and c == 0x5C:
            escaped = True
        elif c == 0x22:
            quoted = not quoted
        elif c == 0x3E and not quoted:
            end = i
            break
    return end


@dataclass(frozen=True, slots=True)
class MailParams:
    size: int | None = None
    body: str | None = None
    smtputf8: bool = False
    ret: str | None = None  # DSN RET=FULL|HDRS, upper case (S-809)
    envid: str | None = None  # DSN ENVID=, the xtext as sent


@dataclass(frozen=True, slots=True)
class RcptParams:
    notify: str | None = None  # NEVER, or SUCCESS/FAILURE/DELAY joined by ","
    orcpt: str | None = None  # "rfc822;" + the xtext as sent


#: RFC 3461 §4.4, §4.2: ENVID is at most 100 characters, ORCPT 500.
MAX_ENVID = 100
MAX_ORCPT = 500
_NOTIFY_WORDS = ("SUCCESS", "FAILURE", "DELAY")


def _xtext_ok(value: str) -> bool:
    """RFC 3461 §4: xchars and "+" with two upper-case hex digits."""
    return bool(value) and _XTEXT.match(value) is not None


def _dsn_xtext_ok(value: str) -> bool:
    """S-809 (amended): well-formed xtext whose decoded value is printable
    US-ASCII, %x20-7E (RFC 3461 §4.2 for ORCPT, §4.4 for ENVID: "printable
    (graphic and white space) characters from the US-ASCII repertoire").
    No controls (HTAB, CR, LF, NUL, DEL) and no octet above 0x7E. An MTA
    refuses them (Postfix's smtpd runs allprint() over the decoded ENVID),
    and passed on they would cost the client the whole message after DATA."""
    if not _xtext_ok(value):
        return False
    return all(0x20 <= int(h, 16) <= 0x7E for h in _HEXCHAR.findall(value))


def parse_rcpt_params(params: list[bytes], dsn: bool) -> RcptParams | Reply:
    """S-205, S-809: no parameters, but NOTIFY= and ORCPT= while DSN is
    offered; a malformed one is 501 5.5.4, an unknown one 555 5.5.4."""
    seen: set[str] = set()
    notify = orcpt = None
    for p in params:
        try:
            key, eq, value = p.decode("ascii").partition("=")
        except UnicodeDecodeError:
            return R.INVALID_CHARACTER
        key = key.upper()
        if not dsn or key not in ("NOTIFY", "ORCPT") or not _KEYWORD.match(key):
            return R.UNSUPPORTED_PARAMETER
        if key in seen or not eq:
            return R.BAD_PARAMETER
        seen.add(key)
        if key == "NOTIFY":
            words = value.upper().split(",")
            if words != ["NEVER"] and (len(set(words)) != len(words) or not all(w in _NOTIFY_WORDS for w in words)):
                return R.BAD_PARAMETER
            notify = ",".join(words)
        else:
            kind, semi, addr = value.partition(";")
            if kind.lower() != "rfc822" or not semi or len(value) > MAX_ORCPT or not _dsn_xtext_ok(addr):
                return R.BAD_PARAMETER
            orcpt = f"rfc822;{addr}"
    return RcptParams(notify, orcpt)


def parse_mail_params(params: list[bytes], max_size: int, esmtp: bool, dsn: bool = False) -> MailParams | Reply:
    """S-204: SIZE, BODY, SMTPUTF8 and AUTH (ignored, RFC 4954 §5); RET and
    ENVID while DSN is offered (S-809)."""
    if params and not esmtp:
        return R.UNSUPPORTED_PARAMETER  # S-202: no extensions after HELO
    seen: set[str] = set()
    size = body = ret = envid = None
    smtputf8 = False
    for p in params:
        try:
            text = p.decode("ascii")
        except UnicodeDecodeError:
            return R.BAD_PARAMETER
        key, eq, value = text.partition("=")
        if not _KEYWORD.match(key):
            return R.BAD_PARAMETER
        key = key.upper()
        if key in seen:
            return R.BAD_PARAMETER
        seen.add(key)
        if key == "SIZE":
            if not eq or not value.isdigit() or len(value) > 20:
                return R.BAD_PARAMETER
            size = int(value)
            if size > max_size:
                return R.SIZE_EXCEEDED
        elif key == "BODY":
            body = value.upper()
            if not eq or body not in ("7BIT", "8BITMIME"):
                return R.BAD_PARAMETER
        elif key == "SMTPUTF8":
            if eq:
                return R.BAD_PARAMETER
            smtputf8 = True
        elif key == "AUTH":
            if not eq or not _xtext_ok(value):
                return R.BAD_PARAMETER
        elif key == "RET" and dsn:
            ret = value.upper()
            if not eq or ret not in ("FULL", "HDRS"):
                return R.BAD_PARAMETER
        elif key == "ENVID" and dsn:
            if not eq or len(value) > MAX_ENVID or not _dsn_xtext_ok(value):
                return R.BAD_PARAMETER
            envid = value
        else:
            return R.UNSUPPORTED_PARAMETER  # and RET, ENVID without DSN (S-202)
    return MailParams(size, body, smtputf8, ret, envid)
