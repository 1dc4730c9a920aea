"""Permitted senders (SPEC.md S-206, S-603): what a sender entry is
(``user@domain``, its ``+tag`` forms, or ``@domain``), how addresses
compare (local parts case-insensitively after unquoting, domains as
IDNA2008 A-labels), and `SenderRules`, the check of one user's list,
whichever directory it came from (users.db, SQL, S-1305).

Imports: the standard library, and ``idna`` lazily for non-ASCII domains
(IDNA2008 with UTS #46, never Python's IDNA2003 codec).
"""

from __future__ import annotations

import ipaddress
import re
import string
from collections.abc import Iterable

from . import limits

__all__ = ["SenderRules", "address_key", "check_sender", "split_senders"]

_ATEXT = frozenset(string.ascii_letters + string.digits + "!#$%&'*+-/=?^_`{|}~")
_LDH_LABEL = re.compile(r"[a-z0-9]([a-z0-9-]*[a-z0-9])?")


def _unquote(local: str) -> str | None:
    """The content of an RFC 5321 §4.1.2 Quoted-string, or None if malformed."""
    if len(local) < 2 or local[0] != '"' or local[-1] != '"':
        return None
    out: list[str] = []
    body = iter(local[1:-1])
    for ch in body:
        if ch == "\\":  # quoted-pairSMTP = "\" %d32-126
            nxt = next(body, "")
            if not " " <= nxt <= "~":
                return None
            out.append(nxt)
        elif ch == '"' or ord(ch) < 32 or ord(ch) == 127:
            return None
        else:
            out.append(ch)
    return "".join(out)


def _local_key(local: str) -> str | None:
    """Comparison form of a local part: unquoted, lower-case (S-603)."""
    if local.startswith('"'):
        unquoted = _unquote(local)
        return None if unquoted is None else unquoted.lower()
    atoms = local.split(".")  # Dot-string; RFC 6531 §3.3 adds UTF-8 to atext
    if not all(atom and all(ch in _ATEXT or ord(ch) > 127 for ch in atom) for atom in atoms):
        return None
    return local.lower()


def _domain_key(domain: str) -> str | None:
    """Comparison form of a domain: lower-case A-labels, or a literal (S-603)."""
    if domain.startswith("["):
        inner = domain[1:-1] if domain.endswith("]") else "%"
        try:
            if inner[:5].lower() == "ipv6:" and "%" not in inner:
                return f"[ipv6:{ipaddress.IPv6Address(inner[5:]).compressed}]"
            return f"[{ipaddress.IPv4Address(inner)}]"
        except ValueError:
            return None
    if not domain.isascii():
        import idna  # IDNA2008 + UTS #46 non-transitional: straße.de stays itself

        try:
            domain = idna.encode(domain, uts46=True, transitional=False).decode("ascii")
        except (ValueError, idna.IDNAError):
            return None
    domain = domain.lower()
    if len(domain) > limits.MAX_DOMAIN_OCTETS:
        return None
    labels = domain.split(".")
    if not all(len(label) <= limits.MAX_LABEL_OCTETS and _LDH_LABEL.fullmatch(label) for label in labels):
        return None
    return domain


def address_key(address: str) -> tuple[str, str] | None:
    """``(local, domain)`` comparison forms; local is "" for ``@domain``."""
    local, at, domain = address.rpartition("@")
    if not at:
        return None
    domain_key = _domain_key(domain)
    if domain_key is None:
        return None
    if not local:
        return "", domain_key
    local_key = _local_key(local)
    return None if local_key is None else (local_key, domain_key)


def check_sender(address: str) -> str | None:
    """Why ``address`` cannot be a permitted sender entry, or None."""
    if not address:
        return "empty sender address"
    local, at, domain = address.rpartition("@")
    if not at:
        return "expected local@domain or @domain"
    if len(local.encode("utf-8", "surrogatepass")) > limits.MAX_LOCAL_PART_OCTETS:
        return "local part longer than 64 octets"
    if local and _local_key(local) is None:
        return "malformed local part"
    if _domain_key(domain) is None:
        return "malformed domain"
    return None


def split_senders(text: str) -> list[str] | str:
    """Comma-separated senders (commas in quotes or literals kept), or why not."""
    items: list[str] = []
    current: list[str] = []
    quoted = escaped = bracket = False
    for ch in text:
        if quoted:
            current.append(ch)
            if escaped:
                escaped = False
            elif ch == "\\":
                escaped = True
            elif ch == '"':
                quoted = False
            continue
        if ch == ":" and not bracket:
            return "too many ':'-separated fields (expected NAME:HASH:CRAM:SENDERS[:SCRAM])"
        if ch == "," and not bracket:
            items.append("".join(current).strip(" \t"))
            current = []
            continue
        quoted = ch == '"'
        bracket = (bracket or ch == "[") and ch != "]"
        current.append(ch)
    if quoted:
        return "unterminated quoted local part in senders"
    last = "".join(current).strip(" \t")
    if last or items:
        items.append(last)
    return items



class SenderRules:
    """One user's permitted senders, ready to check addresses against."""

    __slots__ = ("domains", "exact")

    def __init__(self, senders: Iterable[str]) -> None:
        keys = [key for key in map(address_key, senders) if key is not None]
        self.exact = frozenset(key for key in keys if key[0])
        self.domains = frozenset(domain for local, domain in keys if not local)

    def allows(self, address: str) -> bool:
        """S-603: ``address`` is permitted (not ``<>``: the caller's)."""
        key = address_key(address)
        if key is None or not key[0]:
            return False
        local, domain = key
        if domain in self.domains:
            return True
        return any(domain == allowed_domain and (local == allowed or local.startswith(allowed + "+"))
                   for allowed, allowed_domain in self.exact)
