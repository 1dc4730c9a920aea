"""The hand-off to the MTA: one interface, two kinds (DESIGN.md "The
message pipeline and the hand-offs", SPEC.md §8).

A message to hand on is an `Outbound`: its envelope and its bytes as a
sequence of parts, each either bytes held in memory (the fixed header, and
later the frames a signing step adds) or a `FileRange` of a spool file,
streamed and never read whole (S-1102). Both kinds take an `Outbound` and
return one `HandOff`: the reply for the client (None: delivered), and what
the log says. This module imports no kind; each kind (`sendmail`, `smtp`)
imports it, and `delivery.make_handoff` picks the one `handoff` names.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Protocol

from smtp_states import Envelope, Reply

#: Octets read from a spool file at a time when a part must pass through
#: msa (the SMTP hand-off stuffs dots; sendmail gets sendfile instead).
CHUNK = 1024 * 1024


@dataclass(frozen=True, slots=True)
class FileRange:
    """Octets `offset` to `offset + length` (None: to the end) of an open file."""

    fd: int
    offset: int
    length: int | None = None

    def size(self) -> int:
        if self.length is not None:
            return self.length
        return max(0, os.fstat(self.fd).st_size - self.offset)

    def chunks(self, size: int = CHUNK) -> Iterator[bytes]:
        """The range in pieces of at most `size` octets, read with pread
        (its length known first, so the end costs no extra read)."""
        offset = self.offset
        left = self.size()
        while left > 0:
            data = os.pread(self.fd, min(size, left), offset)
            if not data:
                return
            offset += len(data)
            left -= len(data)
            yield data


Part = bytes | FileRange


@dataclass(frozen=True, slots=True)
class Outbound:
    """One message for the MTA, in the form both hand-offs take."""

    qid: str
    envelope: Envelope
    parts: tuple[Part, ...]
    #: XFORWARD attributes for the SMTP hand-off (S-806), values before xtext.
    xforward: tuple[tuple[str, str], ...] = ()

    def size(self) -> int:
        return sum(len(p) if isinstance(p, bytes) else p.size() for p in self.parts)


@dataclass(frozen=True, slots=True)
class HandOff:
    reply: Reply | None  # None: delivered (the caller sends "queued as")
    status: str  # "sent" | "deferred" | "bounced"
    detail: str  # for the log: "exit 0", "250 2.0.0 Ok: queued as 4Zx", "timeout"...
    stderr: bytes = b""
    elapsed: float = 0.0
    relay: str = "sendmail"  # the log's relay=
    notes: tuple[str, ...] = field(default=())  # log-worthy, changing nothing
    may_duplicate: bool = False  # lost after the final dot (RFC 1047)


class Kind(Protocol):
    def deliver(self, out: Outbound, timeout: float) -> HandOff: ...

    def close(self) -> None: ...
