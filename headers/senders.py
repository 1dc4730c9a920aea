"""Addresses of the originator fields, and whether the user may use them.

This module owns the address-list grammar (RFC 5322 §3.4 with the obsolete
forms of §4.4 that matter, groups per RFC 6854, UTF-8 per RFC 6532) and the
header-sender check of SPEC.md S-602. It is deliberately strict: anything
that two parsers could read differently is refused rather than guessed at,
because parser disagreements are how spoofed From: lines get past checks.
It never decodes RFC 2047 encoded words, so a display name can never turn
into an address. Standard library only; no I/O.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass

from .parse import HeaderBlock

__all__ = ["SenderProblem", "parse_addresses", "check_senders"]

# RFC 6532 §3.2: atext, qtext, ctext, dtext and VCHAR also take UTF8-non-ascii.
# Left out, being controls or line breaks to some readers: C1 controls
# (U+0080-U+009F) and U+2028/U+2029.
_NA = "\u00a0-\u2027\u202a-\U0010ffff"
# RFC 5322 §3.2.3: atext.
_ATOM = re.compile(r"[A-Za-z0-9!#$%&'*+\-/=?^_`{|}~" + _NA + r"]+")
# RFC 5322 §3.2.4: quoted-string = DQUOTE *([FWS] qcontent) [FWS] DQUOTE,
# qtext = %d33 / %d35-91 / %d93-126, quoted-pair = "\" (VCHAR / WSP).
# FWS is plain WSP here: the value was unfolded (§2.2.3).
_QSTRING = re.compile(r'"(?:[ \t!#-\[\]-~' + _NA + r"]|\\[ \t!-~" + _NA + r'])*"')
# RFC 5322 §3.2.2: ctext = %d33-39 / %d42-91 / %d93-126, plus WSP (FWS).
_CTEXT = re.compile(r"[ \t!-'*-\[\]-~" + _NA + r"]+")
_QPAIR = re.compile(r"\\[ \t!-~" + _NA + r"]")
_WSP = re.compile(r"[ \t]+")
# RFC 5322 §3.4.1 domain-literal, narrowed to what an address literal can
# hold (RFC 5321 §4.1.3: IPv4, "IPv6:..." or "tag:content" of LDH and
# colons), so no "@", space or quoted-pair can hide in it.
_LITERAL = re.compile(r"\[[A-Za-z0-9.:\-]+\]")
# RFC 2047 §5 (3): an encoded-word MUST NOT appear in any part of an addr-spec.
_ENCODED_WORD = re.compile(r"=\?[^?]*\?[bBqQ]\?[^?]*\?=")

_ATOM_TOKEN, _QUOTED_TOKEN, _DOT_TOKEN = 0, 1, 2


class _Reject(Exception):
    """Internal: the value does not parse. Never leaves this module."""


class _Parser:
    """Recursive descent over an unfolded, decoded field value."""

    __slots__ = ("s", "i")

    def __init__(self, s: str) -> None:
        self.s = s
        self.i = 0

    def peek(self) -> str:
        return self.s[self.i] if self.i < len(self.s) else ""

    def expect(self, char: str) -> None:
        if self.peek() != char:
            raise _Reject
        self.i += 1

    # RFC 5322 §3.2.2: CFWS = (1*([FWS] comment) [FWS]) / FWS
    def skip_cfws(self) -> None:
        s = self.s
        while True:
            m = _WSP.match(s, self.i)
            if m:
                self.i = m.end()
            if self.peek() != "(":
                return
            self.skip_comment()

    def skip_comment(self) -> None:
        """comment = "(" *([FWS] ccontent) [FWS] ")", nested to any depth;
        iterative, so deep nesting costs no stack."""
        s, depth = self.s, 0
        while True:
            c = self.peek()
            if c == "(":
                depth += 1
                self.i += 1
            elif c == ")":
                depth -= 1
                self.i += 1
                if depth == 0:
                    return
            elif c == "\\":
                m = _QPAIR.match(s, self.i)
                if not m:
                    raise _Reject
                self.i = m.end()
            else:
                m = _CTEXT.match(s, self.i)
                if not m:
                    raise _Reject  # end of input inside a comment, or a control
                self.i = m.end()

    def words(self) -> list[tuple[int, str]]:
        """A run of atoms, quoted strings and dots, CFWS between them
        dropped: the material of a phrase or of a local part."""
        tokens: list[tuple[int, str]] = []
        s = self.s
        while True:
            self.skip_cfws()
            c = self.peek()
            if c == '"':
                m = _QSTRING.match(s, self.i)
                if not m:
                    raise _Reject  # unterminated, or a control inside
                tokens.append((_QUOTED_TOKEN, m.group()))
                self.i = m.end()
            elif c == ".":
                tokens.append((_DOT_TOKEN, "."))
                self.i += 1
            else:
                m = _ATOM.match(s, self.i)
                if not m:
                    return tokens
                tokens.append((_ATOM_TOKEN, m.group()))
                self.i = m.end()

    # RFC 5322 §3.4.1: local-part = dot-atom / quoted-string / obs-local-part,
    # obs-local-part = word *("." word): words and dots alternate.
    @staticmethod
    def local_part(tokens: list[tuple[int, str]]) -> str:
        if not tokens or len(tokens) % 2 == 0:
            raise _Reject
        for n, (kind, text) in enumerate(tokens):
            if (kind == _DOT_TOKEN) != (n % 2 == 1):
                raise _Reject
            if kind == _ATOM_TOKEN and _ENCODED_WORD.search(text):
                raise _Reject
        return "".join(text for _, text in tokens)

    # RFC 5322 §3.4.1: domain = dot-atom / domain-literal / obs-domain,
    # obs-domain = atom *("." atom).
    def domain(self) -> str:
        self.skip_cfws()
        if self.peek() == "[":
            m = _LITERAL.match(self.s, self.i)
            if not m:
                raise _Reject
            self.i = m.end()
            return m.group()
        labels = []
        while True:
            self.skip_cfws()
            m = _ATOM.match(self.s, self.i)
            if not m or _ENCODED_WORD.search(m.group()):
                raise _Reject
            labels.append(m.group())
            self.i = m.end()
            self.skip_cfws()
            if self.peek() != ".":
                return ".".join(labels)
            self.i += 1

    def addr_spec_after(self, tokens: list[tuple[int, str]]) -> tuple[str, str]:
        """The rest of an addr-spec whose local part was read as ``tokens``."""
        local = self.local_part(tokens)
        self.expect("@")
        return local, self.domain()

    # RFC 5322 §3.4: angle-addr = [CFWS] "<" addr-spec ">" [CFWS]. The
    # obsolete source route (obs-angle-addr) is refused: no client sends it
    # now and readers disagree about it. "<>" is no mailbox either.
    def angle_addr(self) -> tuple[str, str]:
        self.expect("<")
        tokens = self.words()
        address = self.addr_spec_after(tokens)
        self.skip_cfws()
        self.expect(">")
        return address

    # RFC 5322 §3.2.5: phrase = 1*word / obs-phrase,
    # obs-phrase = word *(word / "." / CFWS): it starts with a word.
    @staticmethod
    def check_phrase(tokens: list[tuple[int, str]]) -> None:
        if not tokens or tokens[0][0] == _DOT_TOKEN:
            raise _Reject

    def address(self, out: list[tuple[str, str]], *, in_group: bool) -> None:
        """address = mailbox / group; mailbox = name-addr / addr-spec."""
        self.skip_cfws()
        if self.peek() == "<":
            out.append(self.angle_addr())
            return
        tokens = self.words()
        c = self.peek()
        if c == "<":
            self.check_phrase(tokens)  # display-name = phrase
            out.append(self.angle_addr())
        elif c == "@":
            out.append(self.addr_spec_after(tokens))
        elif c == ":" and not in_group:
            self.check_phrase(tokens)
            self.i += 1
            self.group_list(out)
        else:
            raise _Reject

    # RFC 6854 / RFC 5322 §3.4: group = display-name ":" [group-list] ";"
    # [CFWS]; group-list = mailbox-list / CFWS / obs-group-list. Empty list
    # members (obs-mbox-list) are tolerated; a group inside a group is not.
    def group_list(self, out: list[tuple[str, str]]) -> None:
        while True:
            self.skip_cfws()
            c = self.peek()
            if c == ";":
                self.i += 1
                return
            if c == ",":
                self.i += 1
                continue
            self.address(out, in_group=True)
            self.skip_cfws()
            if self.peek() == ",":
                self.i += 1
            elif self.peek() != ";":
                raise _Reject

    # RFC 5322 §3.4: address-list = (address *("," address)) / obs-addr-list,
    # obs-addr-list = *([CFWS] ",") address *("," [address / CFWS]).
    def address_list(self) -> list[tuple[str, str]]:
        out: list[tuple[str, str]] = []
        seen_address = False
        while True:
            self.skip_cfws()
            c = self.peek()
            if c == "":
                break
            if c == ",":
                self.i += 1
                continue
            self.address(out, in_group=False)
            seen_address = True
            self.skip_cfws()
            c = self.peek()
            if c == "":
                break
            self.expect(",")
        if not seen_address:
            raise _Reject
        return out


def _parse(value: bytes) -> list[tuple[str, str]] | None:
    """(local part, domain) of every mailbox in the value, or None."""
    try:
        text = value.decode("utf-8")  # RFC 6532 §3.1: UTF-8, nothing else
    except UnicodeDecodeError:
        return None
    try:
        return _Parser(text).address_list()
    except _Reject:
        return None


def parse_addresses(value: bytes) -> list[str] | None:
    """The addr-specs of an address-list value (a field's unfolded value), as
    ``local@domain`` with quoted local parts kept as written and comments
    and folding white space dropped; None when the value does not parse.
    A group contributes its members; an empty group contributes nothing."""
    parsed = _parse(value)
    if parsed is None:
        return None
    return [f"{local}@{domain}" for local, domain in parsed]


@dataclass(frozen=True, slots=True)
class SenderProblem:
    """Why the header senders cannot be accepted (S-602, S-705).

    kind "not_owned": 550 5.7.1 From: address <ADDR> not owned by user NAME;
    "unverifiable": 554 5.6.0 Cannot verify From: header;
    "no_from": 554 5.6.0 Message has no From: header.
    """

    kind: str
    address: str | None = None
    field: str | None = None


# The originator fields of RFC 5322 §3.6.2 and §3.6.6, by lower-case name.
_SENDER_FIELDS = {
    "from": "From",
    "sender": "Sender",
    "resent-from": "Resent-From",
    "resent-sender": "Resent-Sender",
}
# RFC 5322 §3.6.2 and §3.6.6: Sender: and Resent-Sender: hold one mailbox.
_SINGLE_MAILBOX = frozenset({"sender", "resent-sender"})
# RFC 5322 §3.6: From: and Sender: occur at most once.
_AT_MOST_ONCE = ("from", "sender")


def _fully_qualified(domain: str) -> bool:
    """An address literal, or a name with at least one dot (S-602)."""
    return domain.startswith("[") or "." in domain


def check_senders(block: HeaderBlock, allowed: Callable[[str], bool]) -> SenderProblem | None:
    """S-602: every mailbox of every From:, Sender:, Resent-From: and
    Resent-Sender: must satisfy ``allowed``. Fields that cannot be verified
    are reported before any ownership, so the answer does not depend on the
    order of the fields. A missing From: is fine here (fix() adds one)."""
    counts = dict.fromkeys(_SENDER_FIELDS, 0)
    for f in block.fields:
        if f.lname in counts:
            counts[f.lname] += 1
    for lname in _AT_MOST_ONCE:
        if counts[lname] > 1:
            return SenderProblem("unverifiable", field=_SENDER_FIELDS[lname])

    checked: list[tuple[str, list[tuple[str, str]]]] = []
    for f in block.fields:
        canonical = _SENDER_FIELDS.get(f.lname)
        if canonical is None:
            continue
        mailboxes = _parse(f.value())
        if (
            not mailboxes
            or (f.lname in _SINGLE_MAILBOX and len(mailboxes) != 1)
            or not all(_fully_qualified(domain) for _, domain in mailboxes)
        ):
            return SenderProblem("unverifiable", field=canonical)
        checked.append((canonical, mailboxes))

    for canonical, mailboxes in checked:
        for local, domain in mailboxes:
            address = f"{local}@{domain}"
            if not allowed(address):
                return SenderProblem("not_owned", address=address, field=canonical)
    return None
