"""DKIM signatures (RFC 6376, RFC 8301, RFC 8463), fed chunk by chunk.

This module owns relaxed canonicalisation of the body (`RelaxedBody`, fed
like hashlib: `feed(chunk)`, then `digest()`) and of header fields, which
fields a signature covers (S-1103's lists, `signed_names`), the
`DKIM-Signature` field itself (folded, `b=` last), and the DNS record of a
key. The body is never held: each chunk is canonicalised with a constant
number of C-speed bytes operations (S-303's rule), carrying at most the
unfinished last line, itself bounded. Signing is done with `cryptography`,
imported only when a key is used, so msa runs without it when no key is
configured. No I/O: keys come in as objects, bytes come in as arguments.
"""

from __future__ import annotations

import base64
import hashlib
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

#: S-1103: the fields a signature covers, each as often as it occurs, in
#: this order; Resent-* and List-* fields too (`signed_names`).
SIGNED = (
    "from", "sender", "reply-to", "subject", "date", "to", "cc", "message-id", "in-reply-to",
    "references", "mime-version", "content-type", "content-transfer-encoding", "autocrypt", "openpgp",
)  # fmt: skip
#: ... and these once more than they occur (listed once when absent), so
#: that none can be added after signing (RFC 6376 §8.15).
OVERSIGNED = frozenset({
    "from", "subject", "date", "to", "cc", "message-id", "reply-to", "sender", "mime-version",
    "content-type", "content-transfer-encoding",
})  # fmt: skip
#: Never signed: trace fields, Bcc, other signatures, stamps added later.
NEVER = frozenset({"received", "return-path", "bcc", "dkim-signature", "x-hashcash"})

#: RFC 8301 §3.2: no RSA key under 1024 bits signs.
MIN_RSA_BITS = 1024
#: A body line without LF is canonicalised in pieces past this many octets,
#: so that the carry stays bounded (msa sets no limit on body lines).
MAX_CARRY = 64 * 1024
#: Header lines of the DKIM-Signature field are kept within this width.
FOLD_AT = 76

_WSP_RUN = re.compile(rb"[ \t]+")
_CRLF = b"\r\n"
_CRLFS = b"\r\n" * 32768  # pending empty lines are hashed from this, in slices


class RelaxedBody:
    """RFC 6376 §3.4.4 relaxed body canonicalisation, then SHA-256.

    Lines are handled whole: a chunk's complete lines now, its last,
    unfinished line carried to the next. Empty lines are not hashed until a
    non-empty line follows (trailing empty lines are ignored, §3.4.4 c)."""

    __slots__ = ("_hash", "_carry", "_pending", "_nonempty")

    def __init__(self, hash_object: Any = None) -> None:
        # `hash_object`: anything with hashlib's update() and digest() (the
        # shell may hash in another thread); SHA-256 by default.
        self._hash = hash_object if hash_object is not None else hashlib.sha256()
        self._carry = b""
        self._pending = 0  # CRLFs owed before the next content
        self._nonempty = False

    def feed(self, chunk: bytes) -> None:
        if not chunk:
            return
        data = self._carry + chunk if self._carry else chunk
        end = data.rfind(b"\n") + 1
        if end:
            self._lines(data[:end] if end < len(data) else data)
        rest = data[end:]
        if len(rest) > MAX_CARRY:
            # A very long line: its part up to the last non-WSP octet can be
            # canonicalised now (a WSP run there may still continue).
            cr = rest.endswith(b"\r")  # maybe the first half of a CRLF: kept
            tail = rest[:-1] if cr else rest
            cut = len(tail.rstrip(b" \t"))
            if cut:
                self._content(_WSP_RUN.sub(b" ", tail[:cut]))
            rest = (b" " if cut < len(tail) else b"") + (b"\r" if cr else b"")  # a WSP run: one SP
        self._carry = rest

    def _lines(self, block: bytes) -> None:
        """Whole lines ending in CRLF (msa's spool holds no bare CR or LF)."""
        if block.find(b"\t") != -1:
            block = block.replace(b"\t", b" ")
        if block.find(b" ") != -1:  # one memchr: base64 parts have no space at all
            if block.find(b"  ") != -1:
                while b"  " in block:  # each pass halves every run: log2(run) passes
                    block = block.replace(b"  ", b" ")
            if block.find(b" \r\n") != -1:
                block = block.replace(b" \r\n", b"\r\n")  # WSP at line ends (§3.4.4 b)
        content = block.rstrip(b"\r\n")
        if content:
            self._content(content)
        self._pending += (len(block) - len(content)) // 2

    def _content(self, content: bytes) -> None:
        """Non-empty canonical octets: the empty lines owed come first."""
        pending = self._pending
        while pending:
            n = min(pending, len(_CRLFS) // 2)
            self._hash.update(_CRLFS[: 2 * n])
            pending -= n
        self._pending = 0
        self._hash.update(content)
        self._nonempty = True

    def digest(self) -> bytes:
        """The body hash; nothing may be fed afterwards."""
        if self._carry:
            # A last line without CRLF gets one (§3.4.4). Its trailing WSP is
            # kept as one SP, as the verifiers (dkimpy, OpenDKIM) keep it;
            # msa's own bodies always end in CRLF.
            line = _WSP_RUN.sub(b" ", self._carry)
            self._carry = b""
            if line:
                self._content(line)
            self._pending += 1
        if self._nonempty:
            self._hash.update(_CRLF)  # the last non-empty line's own CRLF
        return self._hash.digest()


def relaxed_header(raw: bytes) -> bytes:
    """RFC 6376 §3.4.2: `name:value` + CRLF, the name in lower case, the
    value unfolded, WSP runs as one SP, none around the colon or at the end."""
    name, _, value = raw.partition(b":")
    if value.endswith(b"\r\n"):
        value = value[:-2]
    value = value.replace(b"\r\n", b"")
    value = _WSP_RUN.sub(b" ", value).strip(b" ")
    return name.rstrip(b" \t").lower() + b":" + value + _CRLF


def signed_names(names: Sequence[str]) -> list[str]:
    """The h= list (lower case) for a header whose field names, in order,
    are `names` (S-1103): every occurrence of a signed field, then one more
    entry for each oversigned name."""
    counts: dict[str, int] = {}
    extra: list[str] = []
    for name in names:
        lname = name.lower()
        if lname in NEVER:
            continue
        if lname in SIGNED or lname.startswith(("resent-", "list-")):
            counts[lname] = counts.get(lname, 0) + 1
    order = [n for n in SIGNED if n in counts] + sorted(n for n in counts if n not in SIGNED)
    out: list[str] = []
    for lname in order:
        out += [lname] * counts[lname]
    for lname in SIGNED:
        if lname in OVERSIGNED:
            extra.append(lname)
    return out + extra


def header_hash_input(fields: Sequence[tuple[str, bytes]], h: Sequence[str]) -> bytes:
    """RFC 6376 §5.4.2: for each name of h=, the next instance from the
    bottom, canonicalised; a name with no instance left adds nothing."""
    by_name: dict[str, list[bytes]] = {}
    for name, raw in fields:
        by_name.setdefault(name.lower(), []).append(raw)
    out = []
    for lname in h:
        instances = by_name.get(lname)
        if instances:
            out.append(relaxed_header(instances.pop()))
    return b"".join(out)


@dataclass(frozen=True, slots=True)
class Key:
    """One DKIM key: `dkim_keys/DOMAIN/SELECTOR.key`."""

    domain: str  # A-label, lower case
    selector: str
    algorithm: str  # "rsa-sha256" | "ed25519-sha256"
    private: Any = field(repr=False)  # a cryptography private key
    bits: int = 0  # RSA modulus size

    def sign(self, data: bytes) -> bytes:
        """The b= value's octets for the canonical header `data`."""
        if self.algorithm == "ed25519-sha256":
            # RFC 8463 §3: PureEdDSA over the SHA-256 digest, not the data.
            return self.private.sign(hashlib.sha256(data).digest())
        from cryptography.hazmat.primitives import hashes
        from cryptography.hazmat.primitives.asymmetric import padding

        return self.private.sign(data, padding.PKCS1v15(), hashes.SHA256())  # RFC 6376 §3.3.1

    def dns_value(self) -> str:
        """The TXT record's text (RFC 6376 §3.6.1; RFC 8463 §4 for Ed25519:
        the raw 32-octet key, not its SubjectPublicKeyInfo)."""
        from cryptography.hazmat.primitives import serialization

        public = self.private.public_key()
        if self.algorithm == "ed25519-sha256":
            raw = public.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
            return "v=DKIM1; k=ed25519; p=" + base64.b64encode(raw).decode("ascii")
        der = public.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
        return "v=DKIM1; k=rsa; p=" + base64.b64encode(der).decode("ascii")

    def zone_line(self) -> str:
        """`SELECTOR._domainkey.DOMAIN. IN TXT ( "..." "..." )`: the value
        in quoted strings of at most 255 octets (S-1103; RFC 1035 §3.3)."""
        value = self.dns_value()
        parts = [value[i : i + 255] for i in range(0, len(value), 255)]
        quoted = " ".join(f'"{p}"' for p in parts)
        return f"{self.selector}._domainkey.{self.domain}. IN TXT {quoted}"


def key_from_private(domain: str, selector: str, private: Any) -> Key | str:
    """A Key for a loaded private key, or why it cannot sign."""
    from cryptography.hazmat.primitives.asymmetric import ed25519, rsa

    if isinstance(private, ed25519.Ed25519PrivateKey):
        return Key(domain, selector, "ed25519-sha256", private)
    if isinstance(private, rsa.RSAPrivateKey):
        if private.key_size < MIN_RSA_BITS:
            return f"an RSA key of {private.key_size} bits; at least {MIN_RSA_BITS} sign (RFC 8301)"
        return Key(domain, selector, "rsa-sha256", private, private.key_size)
    return "neither an RSA nor an Ed25519 key"


def _fold_list(prefix: str, items: Sequence[str], sep: str) -> list[str]:
    """`prefix` then the items joined by `sep`, as lines of at most FOLD_AT
    characters where the items allow, each further line starting with a tab
    (FWS is allowed after `sep`, RFC 6376 §3.5)."""
    lines: list[str] = []
    line = prefix
    for i, item in enumerate(items):
        word = item if i == len(items) - 1 else item + sep
        if len(line) + len(word) > FOLD_AT and line.strip():
            lines.append(line)
            line = "\t "
        line += word
    lines.append(line)
    return lines


def signature_field(key: Key, fields: Sequence[tuple[str, bytes]], body_hash: bytes, timestamp: int) -> bytes:
    """The `DKIM-Signature:` field (CRLF-ended) for a header of `fields`
    (name, raw bytes with CRLF) and a body of `body_hash`, signed with `key`:
    v, a, c, d, s, t, h, bh, then b last (RFC 6376 §3.5). No l=, no x=."""
    h = signed_names([name for name, _ in fields])
    lines = [f"DKIM-Signature: v=1; a={key.algorithm}; c=relaxed/relaxed;",
             f"\td={key.domain}; s={key.selector}; t={timestamp};"]
    h_lines = _fold_list("\th=", h, ":")
    h_lines[-1] += ";"
    lines += h_lines
    lines.append(f"\tbh={base64.b64encode(body_hash).decode('ascii')};")
    lines.append("\tb=")
    unsigned = "\r\n".join(lines).encode("ascii")
    # §3.7: the signature field, b= empty, canonicalised, without its CRLF.
    data = header_hash_input(fields, h) + relaxed_header(unsigned)[:-2]
    b64 = base64.b64encode(key.sign(data)).decode("ascii")
    first = FOLD_AT - len("\tb=")
    pieces = [b64[:first]] + [b64[i : i + FOLD_AT - 2] for i in range(first, len(b64), FOLD_AT - 2)]
    return (unsigned.decode("ascii") + "\r\n\t ".join(pieces) + "\r\n").encode("ascii")
