"""msa's header block: read it, check its senders, hand on a fixed one.

A sans-IO package (DESIGN.md): bytes and values in, bytes and values out;
it imports only the standard library and never touches a socket, thread,
file or process. Client faults come back as values (``HeaderTooLarge``,
``SenderProblem``); an exception leaving this package is a bug.

- ``HeaderReader`` (parse.py): the header block, incremental and bounded
  (SPEC.md S-701, S-703).
- ``check_senders``/``parse_addresses`` (senders.py): S-602, S-702.
- ``fix``/``FixContext`` (fix.py) and ``received_field`` (received.py):
  S-704 to S-707.
"""

from .fix import FixContext, fix
from .limits import MAX_HEADER_BYTES, MAX_HEADER_FIELDS, MAX_LINE
from .parse import Field, HeaderBlock, HeaderReader, HeaderTooLarge, fields_of, unfolded
from .received import received_field
from .senders import SenderProblem, check_senders, parse_addresses

__all__ = [
    "MAX_HEADER_BYTES",
    "MAX_HEADER_FIELDS",
    "MAX_LINE",
    "Field",
    "FixContext",
    "HeaderBlock",
    "HeaderReader",
    "HeaderTooLarge",
    "SenderProblem",
    "check_senders",
    "fields_of",
    "fix",
    "parse_addresses",
    "received_field",
    "unfolded",
]
