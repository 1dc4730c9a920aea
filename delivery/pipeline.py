"""What happens to a fixed message between `headers.fix` and the hand-off
(SPEC.md S-1101; DESIGN.md "The message pipeline and the hand-offs").

One straight line: [PGP/MIME] -> [Hashcash] -> [DKIM] -> the hand-off's
parts. Each step takes the message as header bytes and body parts (bytes,
or ranges of a spool file) and returns it changed, or a refusal; nothing is
changed after it is signed, and no step holds the body (S-1102): each
streams the parts it reads. The sans-IO work is in `signing/`; this module
reads the spool and keeps the log notes.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from smtp_states import Reply
from smtp_states import replies as R

from . import pgp, stamps
from .handoff import FileRange, Part

#: Pieces the DKIM body pass reads: relaxed canonicalisation is fastest
#: on pieces that stay in the CPU's cache (bench case 12).
DKIM_READ = 64 * 1024
#: A body hashed while it is spooled has its SHA-256 computed in a thread
#: of its own past this many octets, in pieces of OFFLOAD_PIECE octets (few
#: GIL hand-offs); at most OFFLOAD_QUEUE pieces wait, so a slow hash slows
#: the client instead of growing memory (S-1102).
OFFLOAD_AFTER = 1024 * 1024
OFFLOAD_PIECE = 1024 * 1024
OFFLOAD_QUEUE = 4


class _ThreadedSha256:
    """hashlib.sha256 fed from the session thread, computed in another:
    update() only gathers, a thread allowed on every core hashes each
    gathered piece without the GIL (hashlib releases it), digest() waits."""

    def __init__(self, affinity: Any) -> None:
        import hashlib
        import queue
        import threading

        self._hash = hashlib.sha256()
        self._affinity = affinity
        self._pieces: list[bytes] = []
        self._held = 0
        self._queue: Any = queue.Queue(OFFLOAD_QUEUE)
        self._thread = threading.Thread(target=self._run, name="dkim-body", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        with self._affinity.wide():
            while (piece := self._queue.get()) is not None:
                self._hash.update(piece)

    def update(self, data: bytes) -> None:
        self._pieces.append(data)
        self._held += len(data)
        if self._held >= OFFLOAD_PIECE:
            self._flush()

    def _flush(self) -> None:
        if self._pieces:
            self._queue.put(b"".join(self._pieces) if len(self._pieces) > 1 else self._pieces[0])
            self._pieces, self._held = [], 0

    def close(self) -> None:
        if self._thread is not None:
            self._flush()
            self._queue.put(None)
            self._thread.join()
            self._thread = None

    def digest(self) -> bytes:
        self.close()
        return self._hash.digest()


class BodyDigest:
    """The DKIM body hash (relaxed, SHA-256: the same for every key) fed
    with the body as it is spooled, so that signing a large message costs
    little after its final dot (bench case 12).

    Canonicalisation runs in the session thread (C-speed bytes operations).
    Past OFFLOAD_AFTER, SHA-256 moves to a thread allowed on every core,
    beside the session thread's TLS and spooling. Used only when the body
    is not replaced later (a PGP/MIME wrap hashes its own output)."""

    def __init__(self, affinity: Any) -> None:
        self._affinity = affinity
        self._fed = 0
        self._threaded: _ThreadedSha256 | None = None
        self._body = self._new(None)

    @staticmethod
    def _new(hash_object: Any) -> Any:
        from signing import RelaxedBody

        return RelaxedBody(hash_object)

    def feed(self, data: bytes) -> None:
        if not data:
            return
        self._fed += len(data)
        if self._threaded is None and self._fed > OFFLOAD_AFTER:
            # The hash state so far moves to the thread's object.
            threaded = _ThreadedSha256(self._affinity)
            threaded._hash = self._body._hash.copy()
            self._body._hash = threaded
            self._threaded = threaded
        self._body.feed(data)

    def digest(self) -> bytes:
        """The body hash, once every piece fed is hashed."""
        return self._body.digest()

    def close(self) -> None:
        """No more pieces (the message ended, or was refused)."""
        if self._threaded is not None:
            self._threaded.close()


@dataclass(slots=True)
class Message:
    """The fixed message on its way to the hand-off."""

    header: bytes  # the whole header block, its empty line included
    body: tuple[Part, ...]
    notes: list[str] = field(default_factory=list)  # one log line each
    refused: Reply | None = None  # a step refused: this is the client's reply
    spools: list[Any] = field(default_factory=list)  # second spool files, removed with the first
    body_changed: bool = False  # a hash fed while spooling no longer applies


@dataclass(frozen=True, slots=True)
class Context:
    """What the steps need to know of the transaction and the daemon."""

    qid: str
    user: str | None  # the authenticated user; None: a trusted client
    recipients: tuple[str, ...]
    config: Any
    affinity: Any
    random: Callable[[int], bytes] = os.urandom  # for boundaries (Server.random.take)
    data_end: float = 0.0  # time.monotonic() at the final dot (S-1106's budget starts there)
    signer: Any = None  # pgp.EarlySigner started at the end of the header, or None
    minter: Any = None  # stamps.Minter started at the end of the header, or None
    minting: Any = None  # the host's minting slots (delivery/slots.py), or None: unbounded
    signing: Any = None  # the host's signing slots


def parts_chunks(parts: tuple[Part, ...], size: int) -> Iterator[bytes]:
    for part in parts:
        if isinstance(part, bytes):
            yield part
        else:
            yield from part.chunks(size)


def from_domain(fields: list[tuple[str, bytes]]) -> str | None:
    """The first From: mailbox's domain as an A-label, lower case (S-1103)."""
    from headers import parse_addresses, unfolded

    for name, raw in fields:
        if name.lower() == "from":
            addresses = parse_addresses(unfolded(name, raw))
            if not addresses:
                return None
            domain = addresses[0].rpartition("@")[2]
            if domain.isascii():
                return domain.lower()
            import idna

            try:
                return idna.encode(domain, uts46=True, transitional=False).decode("ascii").lower()
            except idna.IDNAError:
                return None
    return None


def dkim(msg: Message, keys: Any, digest: BodyDigest | None = None, now: float | None = None) -> Message:
    """S-1103: one DKIM-Signature per key of the From: domain, right below
    msa's Received: (the first field); none when the domain has no key;
    451 4.3.0 when its keys cannot sign. `digest`: the body hash fed while
    spooling, for a body no earlier step replaced; else one pass here."""
    from headers import fields_of
    from signing import RelaxedBody, signature_field

    fields = fields_of(msg.header)
    domain = from_domain(fields)
    if domain is None or not keys.keys_for(domain):
        if domain is not None and domain in keys.broken:
            msg.notes.append(f"dkim=failed, d={domain}: no usable key ({', '.join(keys.broken[domain])})")
            msg.refused = R.HANDOFF_TEMPFAIL
            return msg
        msg.notes.append(f"dkim=none, d={domain or '?'}")
        return msg
    if digest is not None:
        body_hash = digest.digest()
    else:
        body = RelaxedBody()
        for chunk in parts_chunks(msg.body, DKIM_READ):
            body.feed(chunk)
        body_hash = body.digest()
    stamp = int(time.time() if now is None else now)
    signatures = []
    for key in keys.keys_for(domain):
        try:
            signatures.append(signature_field(key, fields, body_hash, stamp))
        except Exception as e:  # noqa: BLE001 - a key that cannot sign: never sent unsigned (S-1103)
            msg.notes.append(f"dkim=failed, d={domain}, s={key.selector}: {type(e).__name__}: {e}")
            msg.refused = R.HANDOFF_TEMPFAIL
            return msg
    received = len(fields[0][1]) if fields and fields[0][0].lower() == "received" else 0
    msg.header = msg.header[:received] + b"".join(signatures) + msg.header[received:]
    shown = ", ".join(f"s={k.selector} ({k.algorithm})" for k in keys.keys_for(domain))
    msg.notes.append(f"dkim=signed, d={domain}, {shown}")
    return msg


def run(keys: Any, ctx: Context, header: bytes, body: FileRange, digest: BodyDigest | None = None) -> Message:
    """Every configured step in S-1101's order; the first refusal ends it.
    `keys`: the DKIM keys (None: no DKIM); `digest`: the DKIM body hash of
    `body`, fed while it was spooled."""
    from headers import fields_of

    msg = Message(header, (body,))
    key = pgp.key_for(ctx.config, ctx.user)
    if key is not None:
        msg = pgp.step(msg, ctx, key, fields_of(msg.header))
        if msg.refused is not None:
            return msg
    if ctx.config.hashcash_bits > 0:
        msg = stamps.step(msg, ctx, fields_of(msg.header))
    if keys is not None:
        msg = dkim(msg, keys, None if msg.body_changed else digest)
    return msg
