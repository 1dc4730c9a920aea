"""signing: transforms of the fixed message before the hand-off (SPEC.md §11).

Sans-IO like headers/: bytes and key objects in, bytes out; no sockets,
files or processes (the shell feeds the spool and runs any helper process).
`dkim` signs with `cryptography`, imported only when a key is used.
"""

from .dkim import Key, RelaxedBody, key_from_private, relaxed_header, signature_field, signed_names

__all__ = ["Key", "RelaxedBody", "key_from_private", "relaxed_header", "signature_field", "signed_names"]
