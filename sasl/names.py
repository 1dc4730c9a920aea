"""User names (SPEC.md S-509): which strings users.db can hold as a name.

A name must survive the round trip through the file (``msa.py user add``
writes it, the loader reads back the same name) and must not mislead the
administrator who reads users.db, ``msa.py user list`` or the log: no
character that is invisible, renders as something else, or changes how
the line around it is read. ``name_problem`` is the one test, used by the
loader, ``user add`` and the other user commands, and ``user import``. Its
messages never echo the name (a password typed into the wrong field must
not reach a terminal or a log); they name at most the one offending code
point, which is invisible anyway. Imports: the standard library only.
"""

from __future__ import annotations

import unicodedata

from . import limits

__all__ = ["name_problem"]

#: Unicode general categories a name may not contain, and what to call them.
#: Cc: controls (NUL, CR, LF, ESC, DEL, C1). Cf: invisible formatting (bidi
#: overrides such as U+202E, which makes the rest read backwards; zero-width
#: spaces and joiners; U+FEFF, which the loader strips as a BOM at the start
#: of the file, so that a name starting with one read back as another name).
#: Co: private use, whose look depends on the font. Cs: surrogates (no UTF-8
#: exists for them). Cn: unassigned in this Python's Unicode database: no
#: one can tell what they will look like (a name using a character newer
#: than the database is refused until Python knows it). Zs: spaces of every
#: width (S-509: "without spaces"). Zl, Zp: line and paragraph separators,
#: which editors and terminals may show as line breaks.
_REFUSED_CATEGORIES = {
    "Cc": "a control character",
    "Cf": "an invisible formatting character",
    "Co": "a private-use character",
    "Cs": "a surrogate",
    "Cn": "an unassigned code point",
    "Zs": "a space",
    "Zl": "a line separator",
    "Zp": "a paragraph separator",
}

#: Characters outside those categories that render as nothing: Unicode's
#: Default_Ignorable_Code_Point (DerivedCoreProperties.txt) that are letters
#: or marks (combining grapheme joiner, Hangul fillers, Khmer inherent
#: vowels, Mongolian and other variation selectors), and U+2800 BRAILLE
#: PATTERN BLANK, a symbol that looks like a space.
_INVISIBLE_RANGES = (
    (0x034F, 0x034F), (0x115F, 0x1160), (0x17B4, 0x17B5), (0x180B, 0x180D), (0x180F, 0x180F),
    (0x2800, 0x2800), (0x3164, 0x3164), (0xFE00, 0xFE0F), (0xFFA0, 0xFFA0), (0xE0100, 0xE01EF),
)  # fmt: skip


def _invisible(ch: str) -> bool:
    code = ord(ch)
    return any(low <= code <= high for low, high in _INVISIBLE_RANGES)


def name_problem(name: str) -> str | None:
    """Why ``name`` is not a valid user name (S-509), or None. Never echoes it.

    Callers also test ``name.lower()``, the form users.db stores.
    """
    if not name:
        return "empty user name"
    try:
        octets = len(name.encode("utf-8"))
    except UnicodeEncodeError:
        return "user name is not valid UTF-8"
    if octets > limits.MAX_USERNAME_OCTETS:
        return "user name longer than 255 octets"
    if name.startswith("#"):
        return "user name starts with '#' (it would be read as a comment)"
    for ch in name:
        if ch == ":":
            return "user name contains ':'"
        kind = _REFUSED_CATEGORIES.get(unicodedata.category(ch))
        if kind is None and _invisible(ch):
            kind = "an invisible character"
        if kind:
            return f"user name contains {kind} (U+{ord(ch):04X})"
    # NFC: a name has several spellings that look the same (é as one code
    # point or as e plus U+0301). Clients send what keyboards produce, which
    # is NFC almost everywhere, so a stored NFD name could not log in, and
    # two spellings could be two users that read as one in users.db and the
    # log. Normalising instead would store a name other than the one given,
    # and the loader must read back exactly what is in the file: refuse.
    if not unicodedata.is_normalized("NFC", name):
        return "user name is not in Unicode normalization form NFC (write accented letters precomposed, as keyboards send them)"
    return None
