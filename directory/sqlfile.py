"""The SQL directory's file (SPEC.md S-1303; CONTRACT.md "Directories").

This module owns the file format: one ``[sql]`` section of ``key = value``
lines (``#`` and ``;`` comment lines, an inline comment after whitespace
and ``#``, indented continuation lines for long queries), its keys and their
checks, the DSN forms (``postgresql://`` or ``postgres://``, ``mysql://``
with an optional ``?unix_socket=PATH``, ``sqlite:///PATH``), a bounded read
of the file, and the warning about its mode (it holds a database password).
Every problem is ``FILE:LINE: why``, or ``FILE: why`` when no line is to
blame. Since CONTRACT.md's example comments its lines (``dsn = ... # or
mysql://...``), whitespace followed by ``#`` ends every value, the
password's too: a password with `` #`` in it, or with leading or trailing
spaces, goes in the DSN, percent-encoded. It opens no database and imports no driver (``sqldrivers`` does).
Imports: the standard library and ``sasl.hashes`` (the scheme names);
never ``server/``, ``delivery/`` or ``state/``.
"""

from __future__ import annotations

import os
import re
import stat
import unicodedata
import urllib.parse
from dataclasses import dataclass, field

from sasl import hashes
from util import files

__all__ = [
    "DEFAULT_TIMEOUT", "MAX_FILE_OCTETS", "SqlConfig", "SqlConfigError", "load", "mode_problem", "parse",
]  # fmt: skip

#: The file is a dozen lines; 1 MiB is far beyond any real one, and a
#: /dev/zero or a huge file named by mistake costs no more than that.
MAX_FILE_OCTETS = 1 << 20

#: Seconds a connection or a query may take (S-1303), and the most allowed:
#: an AUTH waits for it, and the client's own timeout is minutes.
DEFAULT_TIMEOUT = 5.0
MAX_TIMEOUT = 120.0

#: Characters in one query: real ones are a few hundred.
MAX_QUERY_CHARS = 8192

#: The placeholder, as a word of its own (``x::login`` is a cast, not it).
PLACEHOLDER = re.compile(r"(?<![:\w]):login(?!\w)")

_KEYS = ("dsn", "password", "password_query", "senders_query", "default_scheme", "timeout")
_KEY_LINE = re.compile(r"([A-Za-z_][A-Za-z0-9_.-]*)\s*[=:]\s?(.*)")
_INLINE_COMMENT = re.compile(r"\s#")
_MYSQL_PARAMS = ("unix_socket",)


@dataclass(frozen=True, slots=True)
class SqlConfig:
    """A parsed SQL file. ``kind``: ``postgresql``, ``mysql`` or ``sqlite``;
    ``dsn`` and ``password`` stay out of ``repr`` (they may hold the
    database password); ``lines``: the line of each key, for messages."""

    path: str
    kind: str
    dsn: str = field(repr=False)
    password: str | None = field(repr=False)
    password_query: str | None
    senders_query: str | None
    default_scheme: str
    timeout: float
    lines: dict[str, int] = field(default_factory=dict, compare=False)

    def where(self, key: str) -> str:
        """``FILE:LINE`` of ``key``, or ``FILE`` when it is not in the file."""
        line = self.lines.get(key)
        return f"{self.path}:{line}" if line else self.path

    # --- the DSN's parts ----------------------------------------------------------

    def mysql_params(self) -> dict[str, object]:
        """PyMySQL's connect() arguments from a ``mysql://`` DSN (and the
        ``password`` key, which wins over the DSN's)."""
        url = urllib.parse.urlsplit(self.dsn)
        query = dict(urllib.parse.parse_qsl(url.query))
        params: dict[str, object] = {
            "host": url.hostname or "localhost",
            "port": url.port or 3306,
            "user": urllib.parse.unquote(url.username) if url.username else None,
            "password": self.password
            if self.password is not None
            else urllib.parse.unquote(url.password or ""),
            "database": urllib.parse.unquote(url.path.lstrip("/")) or None,
        }
        if "unix_socket" in query:
            params["unix_socket"] = query["unix_socket"]
        return params

    def sqlite_path(self) -> str:
        """``sqlite:///var/lib/x.sqlite`` is /var/lib/x.sqlite; so is
        SQLAlchemy's ``sqlite:////var/lib/x.sqlite``."""
        path = self.dsn[len("sqlite://") :]
        return "/" + path.lstrip("/") if path.startswith("/") else path


class SqlConfigError(Exception):
    """An SQL file msa cannot use; ``problems`` are ``FILE:LINE: why``."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("\n".join(problems))
        self.problems = list(problems)


# --- reading ----------------------------------------------------------------------


def _read(path: str) -> bytes:
    """The file's octets, read with the bound and the care of every
    configured file (util/files.py: a FIFO or a device named by mistake
    cannot hang msa). Raises SqlConfigError with ``FILE: why``."""
    try:
        return files.read_regular(path, MAX_FILE_OCTETS)
    except files.FileProblem as error:
        raise SqlConfigError([str(error)]) from None


def load(path: str) -> SqlConfig:
    """Read and parse the SQL file at ``path``; SqlConfigError lists every problem."""
    data = _read(path)
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as error:
        line = data.count(b"\n", 0, error.start) + 1
        raise SqlConfigError([f"{path}:{line}: not valid UTF-8"]) from None
    return parse(text, path)


def mode_problem(path: str) -> str | None:
    """A warning when the file's mode lets more than its owner read it and
    its group read it (wider than 0640: it holds a database password), or
    None. ``check`` prints it (CONTRACT.md "Directories")."""
    try:
        mode = stat.S_IMODE(os.stat(path).st_mode)
    except (OSError, ValueError):
        return None  # load() reports an unreadable file
    if mode & ~0o640:
        return f"{path}: mode {mode:04o} lets others read the database password; use chmod 600 (or 640)"
    return None


# --- parsing ----------------------------------------------------------------------


def _bad_characters(value: str) -> str | None:
    for ch in value:
        if ch not in "\t\n" and unicodedata.category(ch) in ("Cc", "Cf", "Zl", "Zp"):
            return f"has a control or invisible character (U+{ord(ch):04X})"
    return None


def _lines(text: str, path: str, problems: list[str]) -> dict[str, tuple[int, str]]:
    """``key -> (line, value)`` of the ``[sql]`` section; continuation lines
    are joined with newlines, inline comments removed."""
    entries: dict[str, tuple[int, str]] = {}
    section: str | None = None
    current: str | None = None
    seen_section = False
    for number, raw in enumerate(text.replace("\r\n", "\n").replace("\r", "\n").split("\n"), 1):
        stripped = raw.strip()
        if not stripped:
            current = None
            continue
        if stripped.startswith(("#", ";")):
            continue
        value = _INLINE_COMMENT.split(raw, maxsplit=1)[0]
        if raw[:1] in (" ", "\t"):
            if current is None:
                problems.append(f"{path}:{number}: an indented line continues no key")
            else:
                line, before = entries[current]
                entries[current] = (line, f"{before}\n{value.strip()}".strip())
            continue
        current = None
        if stripped.startswith("["):
            section = stripped[1:-1].strip() if stripped.endswith("]") else None
            if section != "sql":
                problems.append(f"{path}:{number}: unknown section {stripped[:40]!r} (only [sql] is read)")
            elif seen_section:
                problems.append(f"{path}:{number}: a second [sql] section")
            seen_section = True
            continue
        match = _KEY_LINE.fullmatch(value.strip())
        if match is None:
            problems.append(f"{path}:{number}: expected 'key = value'")
            continue
        key = match.group(1).lower()
        if section is None:
            problems.append(f"{path}:{number}: expected the section header [sql] before any key")
        elif section != "sql":
            continue  # its header was reported
        elif key not in _KEYS:
            problems.append(f"{path}:{number}: unknown key {key!r} (known: {', '.join(_KEYS)})")
        elif key in entries:
            problems.append(f"{path}:{number}: duplicate key {key!r} (first on line {entries[key][0]})")
        else:
            entries[key] = (number, match.group(2).strip())
            current = key
    if not seen_section:
        problems.append(f"{path}: no [sql] section")
    return entries


def _dsn_problem(dsn: str) -> tuple[str, str | None]:
    """``(kind, why not)`` of a DSN."""
    scheme = dsn.partition("://")[0].lower() if "://" in dsn else ""
    if scheme in ("postgresql", "postgres"):
        return "postgresql", None  # libpq parses the rest, and check() connects
    if scheme == "mysql":
        try:
            url = urllib.parse.urlsplit(dsn)
            url.port  # noqa: B018 - raises ValueError for a bad port
        except ValueError as error:
            return "mysql", f"malformed mysql:// DSN ({error})"
        for name, _ in urllib.parse.parse_qsl(url.query, keep_blank_values=True):
            if name not in _MYSQL_PARAMS:
                return "mysql", f"unknown DSN parameter {name[:40]!r} (known: {', '.join(_MYSQL_PARAMS)})"
        if url.fragment:
            return "mysql", "a mysql:// DSN has no #fragment"
        return "mysql", None
    if scheme == "sqlite":
        path = dsn[len("sqlite://") :]
        if not path.startswith("/") or "?" in path or "#" in path:
            return "sqlite", "expected sqlite:///ABSOLUTE/PATH"
        return "sqlite", None
    return "", "dsn must start with postgresql://, postgres://, mysql:// or sqlite:///"


def parse(text: str, path: str) -> SqlConfig:
    """Parse the text of an SQL file; SqlConfigError lists every problem."""
    problems: list[str] = []
    entries = _lines(text, path, problems)
    lines = {key: line for key, (line, _) in entries.items()}

    def where(key: str) -> str:
        return f"{path}:{lines[key]}" if key in lines else path

    values: dict[str, str] = {}
    for key, (_, value) in entries.items():
        why = _bad_characters(value)
        if why:
            problems.append(f"{where(key)}: {key} {why}")
        else:
            values[key] = value

    dsn = values.get("dsn", "")
    kind = ""
    if not dsn:
        problems.append(f"{where('dsn')}: dsn is required (postgresql://, mysql:// or sqlite:///PATH)")
    else:
        kind, why = _dsn_problem(dsn)
        if why:
            problems.append(f"{where('dsn')}: {why}")
    if "password" in values and kind == "sqlite":
        problems.append(f"{where('password')}: an SQLite database has no password")

    queries: dict[str, str | None] = {}
    for key in ("password_query", "senders_query"):
        query = values.get(key) or None
        if key in values and not query:
            problems.append(f"{where(key)}: {key} is empty")
        elif query is not None and len(query) > MAX_QUERY_CHARS:
            problems.append(f"{where(key)}: {key} is longer than {MAX_QUERY_CHARS} characters")
        queries[key] = query
    if queries["password_query"] is not None and not PLACEHOLDER.search(queries["password_query"]):
        problems.append(f"{where('password_query')}: password_query does not use :login")
    if not any(queries.values()) and not any(key in values for key in queries):
        problems.append(f"{path}: neither password_query nor senders_query is set")

    scheme = values.get("default_scheme", hashes.DEFAULT_SCHEME).upper()
    if scheme not in hashes.SCHEMES:
        problems.append(f"{where('default_scheme')}: default_scheme must be one of {', '.join(hashes.SCHEMES)}")

    timeout = DEFAULT_TIMEOUT
    if "timeout" in values:
        try:
            timeout = float(values["timeout"])
        except ValueError:
            timeout = -1.0
        if not 0 < timeout <= MAX_TIMEOUT:  # also NaN
            problems.append(f"{where('timeout')}: timeout must be seconds, more than 0 and at most {MAX_TIMEOUT:g}")

    if problems:
        raise SqlConfigError(problems)
    return SqlConfig(
        path=path,
        kind=kind,
        dsn=dsn,
        password=values.get("password"),
        password_query=queries["password_query"],
        senders_query=queries["senders_query"],
        default_scheme=scheme,
        timeout=timeout,
        lines=lines,
    )
