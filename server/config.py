"""The configuration file: `[msa]` INI → a frozen `Config` (CONTRACT.md).

Every problem is reported, not only the first, as `FILE:LINE: message` (or
`FILE: message` when no line applies); unknown keys are errors naming the
key, and so is a value holding a control or invisible character. Relative
paths are relative to the configuration file. The file itself is read with
files.read_regular (a FIFO or /dev/zero as `-c` gets a message, not a hang).
"""

from __future__ import annotations

import configparser
import ipaddress
import os
import re
import shlex
import socket
import unicodedata
from dataclasses import dataclass, field

from util import files

DEFAULT_PATH = "/etc/msa/msa.conf"


@dataclass(frozen=True, slots=True)
class Listen:
    """One `listen` entry: an address to accept on, and `starttls` or `tls` (S-403)."""

    host: str
    port: int
    mode: str  # "starttls" | "tls"

    def __str__(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{host}:{self.port} {self.mode}"


@dataclass(frozen=True, slots=True)
class SmtpRelay:
    """`handoff = smtp:HOST:PORT`: the MTA's SMTP service (S-806)."""

    host: str
    port: int

    def __str__(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{host}:{self.port}"


@dataclass(frozen=True, slots=True)
class Limit:
    """`N/PERIOD`: at most `count` in any `seconds` (S-1201)."""

    count: int
    seconds: float
    text: str  # as written, for the log and `msa.py limits`

    def __str__(self) -> str:
        return self.text


#: S-1201 periods: a number and a unit; at most a week, which is what the
#: state store keeps (state/sqlite.py MAX_WINDOW).
_PERIOD_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}
_LIMIT = re.compile(r"(?P<count>\d{1,9})\s*/\s*(?P<n>\d{1,6})(?P<unit>[smhd])\Z")
MAX_LIMIT_PERIOD = 7 * 86400

#: S-1601: each worker is a whole Python process (some 20 MiB resident); a
#: host with more CPUs than this is well served by fewer.
MAX_WORKERS = 256


@dataclass(frozen=True, slots=True)
class Config:
    """The configuration file, checked (CONTRACT.md "Configuration file");
    `lines` gives each key's line for FILE:LINE messages."""

    path: str
    hostname: str
    listen: tuple[Listen, ...]
    tls_cert: str | None
    tls_key: str | None
    users: str
    spool: str
    sendmail: tuple[str, ...]
    trusted_networks: tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]
    max_message_size: int
    max_recipients: int
    max_connections: int
    max_connections_per_ip: int
    timeout: float
    run_as: str | None
    require_tls_for_auth: bool
    log: str
    sendmail_timeout: float
    received_client: bool
    auth_cache_ttl: float
    auth_failures: int
    workers: int | str = 1  # S-1601: processes of serve, a number or "auto" (worker_count())
    handoff: SmtpRelay | None = None  # None: the sendmail command (the default)
    dkim_keys: str | None = None  # the directory of DKIM keys (S-1103); None: no DKIM
    pgp_keys: str | None = None  # the directory of USER.key OpenPGP keys (S-1104); None: no PGP
    pgp_sop: tuple[str, ...] = ("sqop",)  # the Stateless OpenPGP command
    hashcash_bits: int = 0  # S-1106; 0: off
    hashcash_max_stamps: int = 5
    hashcash_time_budget: float = 3.0
    auth_scram: bool = False  # S-514
    app_passwords: str = ""  # the app passwords file (S-515); absent = none
    state_dir: str = "/var/lib/msa"  # S-1202
    limit_messages: Limit | None = None  # S-1201; None: off
    limit_recipients: Limit | None = None
    auth_dovecot: str | None = None  # "unix:PATH" or "inet:HOST:PORT" (S-1302); None: no Dovecot
    auth_dovecot_timeout: float = 10.0
    sql: str | None = None  # the SQL directory file (S-1303); None: no SQL
    state: str = "sqlite"  # "sqlite" (state_dir) or a Redis URL shared by several hosts (S-1401)
    state_prefix: str = "msa:"  # every Redis key starts with it
    state_timeout: float = 0.5  # seconds before a store call counts as failed (S-1402)
    metrics_listen: tuple[str, int] | None = None  # the Prometheus endpoint (S-1501); None: none
    lines: dict[str, int] = field(default_factory=dict, compare=False, repr=False)

    def where(self, key: str) -> str:
        line = self.lines.get(key)
        return f"{self.path}:{line}" if line else self.path

    def is_trusted(self, ip: str) -> bool:
        """`ip` as runtime.client_ip() gives it (::ffff:a.b.c.d already
        a.b.c.d, S-109)."""
        try:
            addr = ipaddress.ip_address(ip)
        except ValueError:
            return False
        return any(addr in net for net in self.trusted_networks if net.version == addr.version)

    def worker_count(self) -> int:
        """S-1601: `workers` as a number; `auto` is one per CPU this
        process may run on (its affinity mask, which systemd's CPUAffinity=
        and taskset narrow), not every CPU of the host."""
        if self.workers == "auto":
            try:
                return max(1, len(os.sched_getaffinity(0)))
            except (AttributeError, OSError):
                return os.cpu_count() or 1
        return int(self.workers)


class ConfigError(Exception):
    def __init__(self, problems: list[str]) -> None:
        super().__init__("\n".join(problems))
        self.problems = problems


_DEFAULTS: dict[str, str] = {
    "hostname": "",
    "listen": "0.0.0.0:587 starttls, 0.0.0.0:465 tls",
    "tls_cert": "",
    "tls_key": "",
    "users": "users.db",
    "spool": "/var/spool/msa",
    "sendmail": "/usr/sbin/sendmail",
    "trusted_networks": "",
    "max_message_size": "26214400",
    "max_recipients": "100",
    "max_connections": "100",
    "max_connections_per_ip": "20",
    "workers": "1",
    "timeout": "300",
    "run_as": "",
    "require_tls_for_auth": "yes",
    "log": "stderr",
    "sendmail_timeout": "120",
    "received_client": "yes",
    "auth_cache_ttl": "300",
    "auth_failures": "3",
    "handoff": "sendmail",
    "handoff_timeout": "",  # sendmail_timeout's other name (CONTRACT.md)
    "dkim_keys": "",
    "pgp_keys": "",
    "pgp_sop": "sqop",
    "hashcash_bits": "0",
    "hashcash_max_stamps": "5",
    "hashcash_time_budget": "3",
    "auth_scram": "no",
    "app_passwords": "app-passwords.db",
    "state_dir": "/var/lib/msa",
    "limit_messages": "200/1h",
    "limit_recipients": "2000/24h",
    "auth_dovecot": "",
    "auth_dovecot_timeout": "10",
    "sql": "",
    "state": "sqlite",
    "state_prefix": "msa:",
    "state_timeout": "0.5",
    "metrics_listen": "",
}

#: The patterns of keys most configurations leave unset are kept as text:
#: re compiles (and caches) them when first used, not when inetd starts.
_DOVECOT = r"(?:unix:(?P<path>/\S+)|inet:(?:\[(?P<v6>[0-9A-Fa-f:.]+)\]|(?P<host>[^\s:\[\]]+)):(?P<port>\d{1,5}))\Z"
_SMTP_HANDOFF = r"smtp:(?:\[(?P<v6>[0-9A-Fa-f:.]+)\]|(?P<host>[^\s:\[\]]+)):(?P<port>\d{1,5})\Z"
_METRICS_LISTEN = r"(?:\[(?P<v6>[0-9A-Fa-f:.]+)\]|(?P<host>[^\s:\[\]]+)):(?P<port>\d{1,5})\Z"
_LISTEN = re.compile(r"^(?:\[(?P<v6>[0-9A-Fa-f:.]+)\]|(?P<host>[^\s:\[\]]+)):(?P<port>\d{1,5})\s+(?P<mode>\S+)$")
_BOOLS = {"yes": True, "true": True, "on": True, "1": True, "no": False, "false": False, "off": False, "0": False}


#: Keys whose value is a list: there a tab separates words and a newline
#: (a continuation line, which configparser joins with one) items.
_LIST_KEYS = frozenset({"listen", "trusted_networks", "sendmail", "pgp_sop"})

#: Unicode categories refused in any value, beside Cc (controls, NUL among
#: them): configparser passes them through, and each would reach a path,
#: a user name or a log line. Cf: invisible format characters (bidi
#: overrides, zero-width spaces) that make a value read as another;
#: Zl, Zp: line and paragraph separators.
_INVISIBLE = frozenset({"Cf", "Zl", "Zp"})

#: RFC 1035 §2.3.4 and RFC 1123 §2.1: a host name is LDH labels of 1 to 63
#: octets, at most 253 octets written without the final dot.
_LDH_LABEL = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?\Z")
_MAX_HOST_NAME = 253

#: POSIX.1-2017 §3.437 (User Name) and §3.282 (Portable Filename Character
#: Set): letters, digits, '.', '_' and '-', not starting with '-'; Samba's
#: machine accounts end in '$'. LOGIN_NAME_MAX on Linux is 256.
_USER_NAME = r"[A-Za-z0-9._][A-Za-z0-9._-]*\$?\Z"  # as text, like _DOVECOT
_MAX_USER_NAME = 256


#: S-1401: the URL query parameters msa passes on to redis-py; the others
#: (timeouts, pool sizes, retries) are msa's to set, from state_timeout.
_STATE_QUERY = frozenset({"db"})
_STATE_TLS_QUERY = frozenset({"ssl_ca_certs", "ssl_cert_reqs", "ssl_check_hostname", "ssl_certfile", "ssl_keyfile"})
#: state_prefix: a Redis key prefix of printable ASCII, no spaces.
_STATE_PREFIX = re.compile(r"[!-~]{1,64}\Z")


def state_url_problem(url: str) -> str | None:
    """Why `url` is not a Redis URL msa can use (S-1401: redis://, rediss://,
    unix://, redis-py's forms), or None."""
    from urllib.parse import parse_qs, urlsplit

    scheme = url.split("://", 1)[0].lower() if "://" in url else ""
    if scheme not in ("redis", "rediss", "unix"):
        return "must be sqlite or a Redis URL: redis://[:PASSWORD@]HOST[:PORT][/DB], rediss://... (TLS) or unix:///PATH[?db=N]"
    if "#" in url:
        return "holds a '#': write it as %23 (in a password, say)"
    try:
        parts = urlsplit(url)
        port = parts.port
        query = parse_qs(parts.query, keep_blank_values=True, strict_parsing=bool(parts.query))
    except ValueError:  # its text may hold the password: not repeated
        return "is not a URL (in a password, write '/', '?', '#' and '@' as %2F, %3F, %23 and %40)"
    allowed = _STATE_QUERY | (_STATE_TLS_QUERY if scheme == "rediss" else frozenset())
    for name, values in query.items():
        if name not in allowed:
            return f"has the parameter {name!r}; only {', '.join(sorted(allowed))} may be given (msa sets the rest)"
        if len(values) != 1:
            return f"gives {name!r} more than once"
    if query.get("ssl_cert_reqs", ["required"])[0] not in ("none", "optional", "required"):
        return "ssl_cert_reqs must be none, optional or required"
    db = query.get("db", [""])[0]
    if scheme == "unix":
        if parts.hostname or port is not None:
            return "names a host; a unix:// URL is unix:///PATH (three slashes), or unix://:PASSWORD@/PATH"
        if not parts.path.startswith("/") or parts.path == "/":
            return "needs the absolute path of the socket: unix:///run/redis/redis.sock"
    else:
        if not parts.hostname:
            return "names no host"
        if port is not None and not 0 < port < 65536:
            return f"port {port} out of range"
        path = parts.path.strip("/")
        if path:
            if not path.isdigit() or "db" in query:
                return f"path {parts.path!r} must be a database number (/0 to /15...), given once"
            db = path
    if db and not (db.isascii() and db.isdigit() and int(db) < 2**31):
        return f"database {db!r} must be a number"
    return None


def _bad_character(key: str, value: str) -> str | None:
    """Why `value` cannot be the value of `key`, for its characters alone."""
    for ch in value:
        if ch in "\t\n" and key in _LIST_KEYS:
            continue
        if ch == "\n":
            return "continues on a second line; write the value on one line"
        category = unicodedata.category(ch)
        if category == "Cc":
            return f"contains a control character (U+{ord(ch):04X}); remove it"
        if category in _INVISIBLE:
            return f"contains an invisible formatting character (U+{ord(ch):04X}); remove it"
    return None


def host_name_problem(name: str) -> str | None:
    """Why `name` is not a host name (RFC 1123 §2.1), or None."""
    if not name:
        return "it is empty"
    if not name.isascii():
        return "it is not ASCII; write an internationalized name in its xn-- form (IDNA A-labels)"
    if len(name) > _MAX_HOST_NAME:
        return f"it is longer than {_MAX_HOST_NAME} octets"
    labels = name.split(".")
    if "" in labels:
        return "it has an empty label (a dot at the start or the end, or two in a row)"
    for label in labels:
        if len(label) > 63:
            return "a label is longer than 63 octets"
        if not _LDH_LABEL.match(label):
            return f"label {label!r} may hold only letters, digits and '-', and neither start nor end with '-'"
    if labels[-1].isdigit():  # 127.1 and 010.0.0.1 would resolve as IPv4 addresses
        return "its last label is all digits (RFC 3696 §2), so it reads as an IPv4 address"
    return None


def _key_lines(text: str) -> dict[str, int]:
    """Line numbers of `key =` lines, for FILE:LINE messages. Lines end at
    \\n only, as configparser reads them (not at \\f or U+2028)."""
    lines: dict[str, int] = {}
    for n, line in enumerate(text.split("\n"), 1):
        m = re.match(r"\s*([A-Za-z0-9_.-]+)\s*[=:]", line)
        if m and not line.lstrip().startswith(("#", ";")):
            lines.setdefault(m.group(1).lower(), n)
    return lines


def load(path: str) -> Config:
    try:
        data = files.read_regular(path, files.CONFIG_MAX_OCTETS)
    except files.FileProblem as e:
        raise ConfigError([str(e)]) from None
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as e:
        line = data.count(b"\n", 0, e.start) + 1
        raise ConfigError([f"{path}:{line}: not valid UTF-8"]) from None
    # Universal newlines, as open() in text mode gave them: CRLF and CR end lines.
    return parse(text.replace("\r\n", "\n").replace("\r", "\n"), path)


def parse(text: str, path: str) -> Config:
    problems: list[str] = []
    lines = _key_lines(text)

    def where(key: str) -> str:
        return f"{path}:{lines[key]}" if key in lines else path

    cp = configparser.ConfigParser(interpolation=None, strict=True, empty_lines_in_values=False)
    try:
        cp.read_string(text, source=path)
    except configparser.Error as e:
        lineno = getattr(e, "lineno", None)
        msg = str(e).splitlines()[0] if str(e) else type(e).__name__
        if isinstance(e, configparser.MissingSectionHeaderError):
            msg = "expected the section header [msa] before any key"
        elif isinstance(e, configparser.DuplicateOptionError):
            msg = f"duplicate key {e.option!r}"
        elif isinstance(e, configparser.DuplicateSectionError):
            msg = f"duplicate section [{e.section}]"
        elif isinstance(e, configparser.ParsingError):
            bad = e.errors[0] if e.errors else (None, "")
            lineno, msg = bad[0], f"cannot parse line {bad[1]!s}"
        raise ConfigError([f"{path}:{lineno}: {msg}" if lineno else f"{path}: {msg}"]) from None
    for section in cp.sections():
        if section != "msa":
            problems.append(f"{path}: unknown section [{section}] (only [msa] is read)")
    values = dict(_DEFAULTS)
    refused: set[str] = set()
    if cp.has_section("msa"):
        for key, value in cp.items("msa"):
            if key not in _DEFAULTS:
                problems.append(f"{where(key)}: unknown key {key!r}")
            elif why := _bad_character(key, value):
                problems.append(f"{where(key)}: {key} {why}")
                refused.add(key)  # the default stands in, unchecked
            else:
                values[key] = value.strip()
    elif not problems:
        problems.append(f"{path}: no [msa] section")

    base = os.path.dirname(os.path.abspath(path))

    def rel(p: str) -> str:
        return os.path.normpath(os.path.join(base, os.path.expanduser(p)))

    def integer(key: str, low: int, high: int) -> int:
        raw = values[key]
        try:
            v = int(raw)
        except ValueError:
            problems.append(f"{where(key)}: {key} must be a whole number, not {raw!r}")
            return int(_DEFAULTS[key])
        if not low <= v <= high:
            problems.append(f"{where(key)}: {key} must be between {low} and {high}, not {v}")
        return v

    def number(key: str, low: float, high: float) -> float:
        raw = values[key]
        try:
            v = float(raw)
        except ValueError:
            problems.append(f"{where(key)}: {key} must be a number of seconds, not {raw!r}")
            return float(_DEFAULTS[key])
        if not low <= v <= high or v != v:
            problems.append(f"{where(key)}: {key} must be between {low:g} and {high:g}, not {raw}")
        return v

    def boolean(key: str) -> bool:
        raw = values[key].lower()
        if raw not in _BOOLS:
            problems.append(f"{where(key)}: {key} must be yes or no, not {values[key]!r}")
            return _BOOLS[_DEFAULTS[key]]
        return _BOOLS[raw]

    listen: list[Listen] = []
    for item in values["listen"].split(",") if "listen" not in refused else ():
        item = item.strip()
        m = _LISTEN.match(item)
        if not m:
            problems.append(f"{where('listen')}: listen entry {item!r} is not HOST:PORT MODE")
            continue
        host = m.group("v6") or m.group("host")
        port = int(m.group("port"))
        mode = m.group("mode").lower()
        if m.group("v6"):
            try:
                ipaddress.IPv6Address(host)
            except ValueError:
                problems.append(f"{where('listen')}: {host!r} is not an IPv6 address")
        else:
            try:
                ipaddress.ip_address(host)
            except ValueError:
                if why := host_name_problem(host):
                    problems.append(f"{where('listen')}: listen host {host!r} is neither an IP address nor a host name: {why}")
        if not 0 <= port < 65536:  # 0: any free port, printed in the log
            problems.append(f"{where('listen')}: port {port} out of range")
        if mode not in ("starttls", "tls"):
            problems.append(f"{where('listen')}: mode {mode!r} must be starttls or tls")
        listen.append(Listen(host, port, mode))
    if not listen and "listen" not in refused and not any("listen" in p for p in problems):
        problems.append(f"{where('listen')}: no listen address")

    cert = rel(values["tls_cert"]) if values["tls_cert"] else None
    key = rel(values["tls_key"]) if values["tls_key"] else None
    if bool(cert) != bool(key) and not {"tls_cert", "tls_key"} & refused:
        problems.append(f"{where('tls_cert' if cert else 'tls_key')}: tls_cert and tls_key go together")
    if not cert and not {"tls_cert", "tls_key"} & refused and any(entry.mode == "tls" for entry in listen):
        problems.append(f"{where('listen')}: a tls listener needs tls_cert and tls_key")

    try:
        pgp_sop = tuple(shlex.split(values["pgp_sop"]))
    except ValueError as e:
        problems.append(f"{where('pgp_sop')}: pgp_sop: {e}")
        pgp_sop = ()
    if not pgp_sop and not any("pgp_sop" in p for p in problems):
        problems.append(f"{where('pgp_sop')}: pgp_sop is empty")

    try:
        sendmail = tuple(shlex.split(values["sendmail"]))
    except ValueError as e:
        problems.append(f"{where('sendmail')}: sendmail: {e}")
        sendmail = ()
    if not sendmail and not any("sendmail" in p for p in problems):
        problems.append(f"{where('sendmail')}: sendmail is empty")

    nets = []
    for item in re.split(r"[,\s]+", values["trusted_networks"]):
        if not item:
            continue
        try:
            nets.append(ipaddress.ip_network(item, strict=False))
        except ValueError:
            problems.append(f"{where('trusted_networks')}: {item!r} is not a network (CIDR)")

    hostname = values["hostname"] or socket.getfqdn()
    if "hostname" not in refused and (why := host_name_problem(hostname)):
        unset = "" if values["hostname"] else " (the host's name: hostname is not set)"
        problems.append(f"{where('hostname')}: hostname {hostname!r}{unset} is not a domain name: {why}")

    run_as = values["run_as"]
    if run_as and (len(run_as) > _MAX_USER_NAME or not re.match(_USER_NAME, run_as)):
        problems.append(f"{where('run_as')}: run_as {run_as!r} is not a user name "
                        "(letters, digits, '.', '_' and '-', not starting with '-')")  # fmt: skip

    workers: int | str = 1
    raw_workers = values["workers"]
    if raw_workers.lower() == "auto":
        workers = "auto"
    elif "workers" not in refused:
        if raw_workers.isascii() and raw_workers.isdigit() and 1 <= int(raw_workers) <= MAX_WORKERS:
            workers = int(raw_workers)
        else:
            problems.append(f"{where('workers')}: workers must be a whole number from 1 to {MAX_WORKERS}, or auto "
                            f"(one per CPU), not {raw_workers!r}")  # fmt: skip

    handoff = None
    raw_handoff = values["handoff"]
    if raw_handoff.lower() != "sendmail" and "handoff" not in refused:
        m = re.match(_SMTP_HANDOFF, raw_handoff)
        host = (m.group("v6") or m.group("host")) if m else ""
        why = None if m else "must be sendmail or smtp:HOST:PORT (e.g. smtp:127.0.0.1:10025)"
        if m and m.group("v6"):
            try:
                ipaddress.IPv6Address(host)
            except ValueError:
                why = f"{host!r} is not an IPv6 address"
        elif m:
            try:
                ipaddress.ip_address(host)
            except ValueError:
                if (bad := host_name_problem(host)) is not None:
                    why = f"{host!r} is neither an IP address nor a host name: {bad}"
        if m and not 0 < int(m.group("port")) < 65536:
            why = f"port {m.group('port')} out of range"
        if why:
            problems.append(f"{where('handoff')}: handoff {raw_handoff!r} {why}")
        else:
            assert m is not None
            handoff = SmtpRelay(host, int(m.group("port")))
    timeout_key = "sendmail_timeout"
    if values["handoff_timeout"]:
        if "sendmail_timeout" in lines:
            problems.append(f"{where('handoff_timeout')}: handoff_timeout is sendmail_timeout's other name: "
                            "give one of them")  # fmt: skip
        timeout_key = "handoff_timeout"

    def limit(key: str) -> Limit | None:
        raw = values[key]
        if raw == "0":
            return None
        m = _LIMIT.match(raw)
        seconds = int(m.group("n")) * _PERIOD_UNITS[m.group("unit")] if m else 0
        if m is None or int(m.group("count")) == 0:
            problems.append(f"{where(key)}: {key} must be N/PERIOD (like 200/1h, 30m, 24h or 7d) or 0 for "
                            f"no limit, not {raw!r}")  # fmt: skip
            return None
        if not 0 < seconds <= MAX_LIMIT_PERIOD:
            problems.append(f"{where(key)}: {key}: the period must be between 1s and 7d, not {m.group('n')}{m.group('unit')}")
            return None
        return Limit(int(m.group("count")), float(seconds), raw)

    auth_dovecot = None
    raw_dovecot = values["auth_dovecot"]
    if raw_dovecot and "auth_dovecot" not in refused:
        m = re.match(_DOVECOT, raw_dovecot)
        why = None if m else ("must be unix:/PATH (Dovecot's auth listener, e.g. unix:/run/dovecot/auth-msa) "
                              "or inet:HOST:PORT")
        if m and m.group("port") and not 0 < int(m.group("port")) < 65536:
            why = f"port {m.group('port')} out of range"
        elif m and m.group("v6"):
            try:
                ipaddress.IPv6Address(m.group("v6"))
            except ValueError:
                why = f"{m.group('v6')!r} is not an IPv6 address"
        elif m and m.group("host"):
            try:
                ipaddress.ip_address(m.group("host"))
            except ValueError:
                if (bad := host_name_problem(m.group("host"))) is not None:
                    why = f"{m.group('host')!r} is neither an IP address nor a host name: {bad}"
        if why:
            problems.append(f"{where('auth_dovecot')}: auth_dovecot {raw_dovecot!r} {why}")
        else:
            auth_dovecot = raw_dovecot

    state = values["state"]
    if state.lower() == "sqlite":
        state = "sqlite"
    elif "state" not in refused and (why := state_url_problem(state)):
        problems.append(f"{where('state')}: state {why}")
    state_prefix = values["state_prefix"]
    if "state_prefix" not in refused and not _STATE_PREFIX.match(state_prefix):
        problems.append(f"{where('state_prefix')}: state_prefix must be 1 to 64 printable ASCII characters "
                        f"without spaces (like msa: or mail1:), not {state_prefix!r}")  # fmt: skip

    metrics_listen = None
    if values["metrics_listen"] and "metrics_listen" not in refused:
        metrics_listen = _metrics_listen(values["metrics_listen"], where("metrics_listen"), problems)

    log = values["log"].lower()
    if log not in ("stderr", "syslog"):
        problems.append(f"{where('log')}: log must be stderr or syslog, not {values['log']!r}")

    cfg = Config(
        path=path,
        hostname=hostname,
        listen=tuple(listen),
        tls_cert=cert,
        tls_key=key,
        users=rel(values["users"]),
        spool=rel(values["spool"]),
        sendmail=sendmail,
        trusted_networks=tuple(nets),
        max_message_size=integer("max_message_size", 1024, 2**40),
        max_recipients=integer("max_recipients", 1, 100000),
        max_connections=integer("max_connections", 1, 100000),
        max_connections_per_ip=integer("max_connections_per_ip", 1, 100000),
        workers=workers,
        timeout=number("timeout", 1, 86400),
        run_as=run_as or None,
        require_tls_for_auth=boolean("require_tls_for_auth"),
        log=log,
        sendmail_timeout=number(timeout_key, 1, 86400),
        received_client=boolean("received_client"),
        auth_cache_ttl=number("auth_cache_ttl", 0, 86400),
        auth_failures=integer("auth_failures", 1, 100),
        handoff=handoff,
        dkim_keys=rel(values["dkim_keys"]) if values["dkim_keys"] else None,
        pgp_keys=rel(values["pgp_keys"]) if values["pgp_keys"] else None,
        pgp_sop=pgp_sop,
        hashcash_bits=integer("hashcash_bits", 0, 32),
        hashcash_max_stamps=integer("hashcash_max_stamps", 0, 100),
        hashcash_time_budget=number("hashcash_time_budget", 0, 60),
        auth_scram=boolean("auth_scram"),
        app_passwords=rel(values["app_passwords"]),
        state_dir=rel(values["state_dir"]),
        limit_messages=limit("limit_messages"),
        limit_recipients=limit("limit_recipients"),
        auth_dovecot=auth_dovecot,
        auth_dovecot_timeout=number("auth_dovecot_timeout", 0.1, 600),
        sql=rel(values["sql"]) if values["sql"] else None,
        state=state,
        state_prefix=state_prefix,
        state_timeout=number("state_timeout", 0.01, 30),
        metrics_listen=metrics_listen,
        lines=lines,
    )
    if problems:
        raise ConfigError(problems)
    return cfg


def _metrics_listen(raw: str, where: str, problems: list[str]) -> tuple[str, int] | None:
    """S-1501: HOST:PORT ([V6]:PORT) of the /metrics endpoint: an IP address
    or a host name, and a port from 1 to 65535 (0, any port, only in tests)."""
    m = re.match(_METRICS_LISTEN, raw)
    if not m:
        problems.append(f"{where}: metrics_listen {raw!r} is not HOST:PORT (like 127.0.0.1:9587 or [::1]:9587)")
        return None
    host, port = m.group("v6") or m.group("host"), int(m.group("port"))
    try:
        if m.group("v6"):
            ipaddress.IPv6Address(host)
        else:
            ipaddress.ip_address(host)
    except ValueError:
        if m.group("v6") or host_name_problem(host) is not None:
            problems.append(f"{where}: metrics_listen host {host!r} is neither an IP address nor a host name")
            return None
    if port > 65535:
        problems.append(f"{where}: metrics_listen port {port} out of range")
        return None
    return host, port
