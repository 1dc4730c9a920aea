"""Every bound of the headers package, each with its source.

This module owns numbers only; it imports nothing. The header reader, the
address parser and the generated fields take their limits from here so that a
bound is changed in one place (STYLE.md "What msa takes", item 5).
"""

from __future__ import annotations

#: Largest header block accepted, in octets (SPEC.md S-703: 1 MiB, as
#: Postfix's ``header_size_limit`` is about 100 KiB per field and msa allows
#: ten times that for the whole block). Over it: 552 5.3.4.
MAX_HEADER_BYTES = 1024 * 1024

#: Most fields accepted in one header block (SPEC.md S-703). Over it: 552 5.3.4.
MAX_HEADER_FIELDS = 2000

#: Longest line msa generates, without its CRLF (RFC 5322 §2.1.1: "Each line
#: of characters MUST be no more than 998 characters, excluding the CRLF").
MAX_LINE = 998

#: A field name and the spaces before its colon must fit in the first
#: MAX_LINE octets of the line (RFC 5322 §2.1.1 again). A longer run of
#: name characters without a colon is not a field line, so the header reader
#: can decide what a line is without buffering an unbounded line (S-701).
MAX_NAME_SCAN = MAX_LINE

#: Longest domain accepted as the FROM domain of Received: (SPEC.md S-707;
#: RFC 1035 §2.3.4 gives 255 octets for a name).
MAX_DOMAIN = 255

#: Longest DNS label (RFC 1035 §2.3.4).
MAX_LABEL = 63

#: How much of an invalid HELO name is shown as ``(helo=X)`` (SPEC.md S-707).
MAX_HELO_SHOWN = 64

#: How much of the TLS description is shown in the ``using`` comment of
#: Received:; ssl's version and cipher names are far shorter, the bound only
#: keeps the generated line under MAX_LINE whatever the caller passes.
MAX_TLS_SHOWN = 200

#: Fewest random octets in a generated Message-ID (SPEC.md S-705: 64+ bits).
MIN_MESSAGE_ID_RANDOM = 8
