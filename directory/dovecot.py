"""Dovecot's authentication service as a directory (SPEC.md S-1302).

This module owns the client side of Dovecot's auth protocol 1.x on an
`auth` type listener (`auth_dovecot = unix:PATH | inet:HOST:PORT |
inet:[V6]:PORT`), the small pool of connections one process keeps to it,
and the mapping of Dovecot's answers to `Verdict`s. It imports the standard
library and `directory` only; what it logs goes through the `warn` and
`info` callables it is given.

The exchange (Dovecot's "Dovecot Auth Protocol"; dovecot/core
src/auth/auth-client-connection.c):

    C: VERSION 1 2 / CPID pid           msa speaks first: 2.4 waits for it,
    S: VERSION 1 n, MECH ..., SPID ...,  2.3 sends its part at once; any
       CUID ..., COOKIE ..., DONE        order, unknown lines ignored
    C: AUTH id PLAIN service=smtp session=... lip= rip= lport= rport=
       [secured=tls] no-penalty resp=BASE64(NUL name NUL password)
    S: OK id user=NAME ... | FAIL id [code=temp_fail] [reason=...] | CONT id ...

Decisions:

- ``OK`` is a success as its ``user=``, lower-cased (msa keys users, app
  passwords, limits and senders by the lower-case name, S-509; Dovecot's
  own default ``auth_username_format = %Lu`` lower-cases too). It is a
  failure when it carries ``nologin`` or ``proxy`` (Dovecot's own login
  processes then do not log the user in here: ``nologin`` refuses, ``proxy``
  hands the login to a backend that checks it, and a proxy passdb commonly
  says ``nopassword``, so this OK proves nothing), when ``user=`` is
  missing, or when the name is not one msa could log (controls, spaces,
  ``:``, over 255 octets).
- ``FAIL`` with ``code=temp_fail`` is temporary (454); any other ``FAIL``,
  and a ``CONT`` (PLAIN needs no second step), is a failure (535). Dovecot's
  ``reason=`` lands in the Verdict's reason, for the log only.
- Every answer from Dovecot is ``known=True``: Dovecot is asked last
  (S-1301) and a ``FAIL`` does not say whether it holds the name.
- A name or password holding TAB, CR, LF or NUL is a failure and Dovecot
  is never asked.
- A connection serves one request at a time (no answers to route between
  threads; a timed-out request dies with its connection):
  ``max_connections`` requests at once per process (others wait, within the
  same timeout), ``keep`` idle connections kept. A connection that saw an
  error or a ``CONT`` is closed, never reused. An idle one the server
  closed (a restart) is noticed before reuse; a reused one that reaches
  end of file or a reset before its answer is retried once on a fresh one
  (never after a timeout).
- A socket that is missing or refuses, a broken or over-long (16 KiB) line,
  a handshake without ``VERSION 1`` or ``MECH PLAIN``, or no answer within
  ``timeout`` is a temporary Verdict; one ``warn`` line per outage, one
  ``info`` line when Dovecot answers again. Nothing here raises out of
  ``authenticate``, and an error is never a success.
- ``senders`` is None: Dovecot does not say (msa decides, S-1305).

Host names in ``inet:`` are resolved at each connect, which the timeout
does not bound; use an address or a name in /etc/hosts.
"""

from __future__ import annotations

import base64
import ipaddress
import os
import socket
import threading
import time
import unicodedata

from . import Client, Verdict, Warn

__all__ = ["DEFAULT_TIMEOUT", "MAX_LINE", "DovecotDirectory", "parse_address", "tab_escape", "tab_unescape"]

#: Seconds for one attempt, waiting for a free connection included. Above
#: Dovecot's auth_failure_delay (2 s), which delays every FAIL.
DEFAULT_TIMEOUT = 10.0
#: Dovecot's own bound on a protocol line (AUTH_CLIENT_MAX_LINE_LENGTH).
MAX_LINE = 16384
#: Bytes of the whole handshake (a few hundred in practice).
MAX_HANDSHAKE = 64 * 1024
#: Lines that are not the answer (other IDs, unknown commands) tolerated while
#: waiting for it, before the connection counts as broken.
MAX_STRAY_LINES = 100
#: Octets of a user name (S-509) and of a password sent on.
MAX_NAME = 255
MAX_PASSWORD = 1024
#: Octets of Dovecot's `reason=` kept for the log.
MAX_REASON = 200
#: The largest request ID (32-bit); a connection that reaches it is replaced.
MAX_ID = 0xFFFFFFFF

_FORBIDDEN = "\t\r\n\0"
_FORBIDDEN_BYTES = (b"\t", b"\r", b"\n", b"\0")
#: Unicode categories a canonical name may not hold (controls, invisible
#: formatting, surrogates from undecodable bytes, unassigned, separators).
_BAD_CATEGORIES = {"Cc", "Cf", "Cs", "Co", "Cn", "Zs", "Zl", "Zp"}


class _Broken(Exception):
    """The connection cannot be used; str() says why. `stale`: a reused
    connection ended before any answer (worth one retry on a fresh one)."""

    def __init__(self, why: str, stale: bool = False) -> None:
        super().__init__(why)
        self.stale = stale


def parse_address(text: str) -> tuple[int, object]:
    """`unix:PATH`, `inet:HOST:PORT` or `inet:[V6]:PORT` as (family,
    sockaddr); ValueError saying why for anything else."""
    kind, sep, rest = text.strip().partition(":")
    if not sep:
        raise ValueError(f"auth_dovecot {text!r}: expected unix:PATH or inet:HOST:PORT")
    if kind == "unix":
        if not rest.startswith("/"):
            raise ValueError(f"auth_dovecot {text!r}: the socket path must be absolute")
        if len(os.fsencode(rest)) > 107:
            raise ValueError(f"auth_dovecot {text!r}: the socket path is longer than 107 octets")
        return socket.AF_UNIX, rest
    if kind == "inet":
        host, sep, port = rest.rpartition(":")
        if host.startswith("[") and host.endswith("]"):
            host = host[1:-1]
            try:
                ipaddress.IPv6Address(host)
            except ValueError:
                raise ValueError(f"auth_dovecot {text!r}: not an IPv6 address in brackets") from None
        if not sep or not host or ":" in host and not rest.startswith("["):
            raise ValueError(f"auth_dovecot {text!r}: expected inet:HOST:PORT (IPv6: inet:[ADDRESS]:PORT)")
        if not port.isdigit() or not 0 < int(port) < 65536:
            raise ValueError(f"auth_dovecot {text!r}: the port must be a number from 1 to 65535")
        return socket.AF_INET, (host, int(port))
    raise ValueError(f"auth_dovecot {text!r}: expected unix:PATH or inet:HOST:PORT")


def tab_escape(value: str) -> str:
    """Dovecot's tab-escaping of a value (lib/strescape.c)."""
    return (value.replace("\1", "\0011").replace("\t", "\1t").replace("\r", "\1r")
            .replace("\n", "\1n").replace("\0", "\0010"))


_UNESCAPE = {"0": "\0", "1": "\1", "t": "\t", "r": "\r", "n": "\n"}


def tab_unescape(value: str) -> str:
    """The inverse of `tab_escape`, as Dovecot's str_tabunescape: an unknown
    escape keeps its character, a trailing \\001 is dropped."""
    if "\1" not in value:
        return value
    out, i = [], 0
    while i < len(value):
        ch = value[i]
        if ch == "\1":
            if i + 1 < len(value):
                out.append(_UNESCAPE.get(value[i + 1], value[i + 1]))
            i += 2
        else:
            out.append(ch)
            i += 1
    return "".join(out)


def _fields(line: bytes) -> list[str]:
    return [tab_unescape(f) for f in line.decode("utf-8", "surrogateescape").split("\t")]


def _params(fields: list[str]) -> dict[str, str]:
    """`name=value` and bare `name` parameters; the first of a name wins."""
    out: dict[str, str] = {}
    for f in fields:
        if f:
            name, _, value = f.partition("=")
            out.setdefault(name, value)
    return out


def _printable(text: str, limit: int = MAX_REASON) -> str:
    """Dovecot's text made safe for one log line."""
    text = "".join(ch if ch.isprintable() else "?" for ch in text)
    return text if len(text) <= limit else text[:limit] + "..."


def _name_problem(name: str) -> str | None:
    if not name:
        return "an empty user="
    if len(name.encode("utf-8", "surrogatepass")) > MAX_NAME:
        return "a user= longer than 255 octets"
    if ":" in name or any(unicodedata.category(ch) in _BAD_CATEGORIES for ch in name):
        return "a user= msa cannot use (a control, space or ':')"
    return None


def _ip(text: str | None) -> str | None:
    if not text:
        return None
    try:
        return str(ipaddress.ip_address(text.strip("[]")))
    except ValueError:
        return None


def _port(value: int | None) -> int | None:
    return value if isinstance(value, int) and 0 < value < 65536 else None


class _Connection:
    """One handshaken connection; used by one thread at a time."""

    def __init__(self, family: int, sockaddr: object, address: str, deadline: float) -> None:
        self.address = address
        self.next_id = 1
        self.buffer = b""
        self.sock = self._connect(family, sockaddr, deadline)
        try:
            self._handshake(deadline)
        except BaseException:
            self.close()
            raise

    @staticmethod
    def _connect(family: int, sockaddr: object, deadline: float) -> socket.socket:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise _Broken("no time left to connect")
        try:
            if family == socket.AF_UNIX:
                sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
                try:
                    sock.settimeout(remaining)
                    sock.connect(sockaddr)
                except BaseException:
                    sock.close()
                    raise
                return sock
            host, port = sockaddr  # type: ignore[misc]
            return socket.create_connection((host, port), timeout=remaining)
        except TimeoutError:
            raise _Broken("connect: no answer within the timeout") from None
        except OSError as e:
            raise _Broken(f"connect: {e.strerror or e}") from None

    def _handshake(self, deadline: float) -> None:
        self.send(b"VERSION\t1\t2\nCPID\t%d\n" % os.getpid(), deadline)
        version = plain = False
        total = 0
        while True:
            line = self.readline(deadline, "handshake")
            total += len(line) + 1
            if total > MAX_HANDSHAKE:
                raise _Broken(f"handshake longer than {MAX_HANDSHAKE} octets")
            fields = line.split(b"\t")
            if fields[0] == b"VERSION":
                if len(fields) < 3 or fields[1] != b"1" or not fields[2].isdigit():
                    shown = _printable(line.decode("utf-8", "replace"), 80)
                    raise _Broken(f"handshake: Dovecot speaks {shown!r}, not auth protocol 1.x")
                version = True
            elif fields[0] == b"MECH" and len(fields) > 1 and fields[1].upper() == b"PLAIN":
                plain = True
            elif fields[0] == b"DONE":
                break
        if not version:
            raise _Broken("handshake: no VERSION line before DONE")
        if not plain:
            raise _Broken("handshake: Dovecot does not offer PLAIN (auth_mechanisms)")

    def send(self, data: bytes, deadline: float) -> None:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise _Broken("no answer within the timeout")
        try:
            self.sock.settimeout(remaining)
            self.sock.sendall(data)
        except TimeoutError:
            raise _Broken("sending: no progress within the timeout") from None
        except OSError as e:
            raise _Broken(f"sending: {e.strerror or e}", stale=True) from None

    def readline(self, deadline: float, during: str) -> bytes:
        """The next line without its LF."""
        while True:
            end = self.buffer.find(b"\n")
            if end >= 0:
                line, self.buffer = self.buffer[:end], self.buffer[end + 1 :]
                if len(line) > MAX_LINE:
                    raise _Broken(f"{during}: a line longer than {MAX_LINE} octets")
                return line
            if len(self.buffer) > MAX_LINE:
                raise _Broken(f"{during}: a line longer than {MAX_LINE} octets")
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise _Broken(f"{during}: no answer within the timeout")
            try:
                self.sock.settimeout(remaining)
                data = self.sock.recv(MAX_LINE + 1)
            except TimeoutError:
                raise _Broken(f"{during}: no answer within the timeout") from None
            except OSError as e:
                raise _Broken(f"{during}: {e.strerror or e}", stale=True) from None
            if not data:
                raise _Broken(f"{during}: Dovecot closed the connection", stale=True)
            self.buffer += data

    def idle_ok(self) -> bool:
        """Whether an idle connection is still open with nothing unread
        (the server closing it, on restart, makes it readable)."""
        if self.buffer:
            return False
        try:
            self.sock.settimeout(0)
            self.sock.recv(1, socket.MSG_PEEK)  # b"" (closed) or data nobody asked for
        except BlockingIOError:
            return True
        except OSError:
            pass
        return False

    def close(self) -> None:
        try:
            self.sock.close()
        except OSError:
            pass


class DovecotDirectory:
    """Passwords checked by Dovecot's auth service (S-1302). Thread-safe."""

    name = "dovecot"

    def __init__(self, address: str, *, warn: Warn, info: Warn, timeout: float = DEFAULT_TIMEOUT,
                 max_connections: int = 8, keep: int = 4) -> None:
        self.address = address.strip()
        self._family, self._sockaddr = parse_address(self.address)
        if not timeout > 0:
            raise ValueError("auth_dovecot_timeout must be more than 0 seconds")
        self.timeout = float(timeout)
        self._warn = warn
        self._info = info
        self._max = max(1, max_connections)
        self._keep = max(0, min(keep, self._max))
        self._cond = threading.Condition()
        self._idle: list[_Connection] = []
        self._open = 0  # connections checked out or idle, or being opened
        self._pid = os.getpid()
        self._closed = False
        self._down = False  # within an outage: warned once, info when it ends

    # -- the Directory interface ----------------------------------------------------------------

    @property
    def failing(self) -> bool:
        """Within an outage (msa_directory_up, S-1501)."""
        return self._down

    def authenticate(self, name: str, password: bytes, client: Client) -> Verdict:
        if any(ch in name for ch in _FORBIDDEN) or any(b in password for b in _FORBIDDEN_BYTES):
            return Verdict(known=True, reason="dovecot: the name or password holds TAB, CR, LF or NUL; Dovecot was not asked")
        try:
            raw_name = name.encode("utf-8")
        except UnicodeEncodeError:
            return Verdict(known=True, reason="dovecot: the name is not valid UTF-8; Dovecot was not asked")
        if not raw_name or not password or len(raw_name) > MAX_NAME or len(password) > MAX_PASSWORD:
            return Verdict(known=True, reason="dovecot: empty or over-long name or password; Dovecot was not asked")
        if self._closed:
            return Verdict(known=True, temporary=True, reason="dovecot: the directory was closed")
        resp = base64.b64encode(b"\0" + raw_name + b"\0" + password)
        deadline = time.monotonic() + self.timeout
        try:
            fields = self._ask(self._request_line(client), resp, deadline)
        except _Broken as e:
            self._outage(str(e))
            return Verdict(known=True, temporary=True, reason=f"dovecot: {self.address}: {e}")
        except Exception as e:  # a bug here must not end the session, nor log what was sent
            self._outage(f"internal error ({type(e).__name__})")
            return Verdict(known=True, temporary=True, reason=f"dovecot: internal error ({type(e).__name__})")
        self._answered()
        return self._verdict(fields)

    def senders(self, user: str) -> tuple[str, ...] | None:
        return None

    def close(self) -> None:
        with self._cond:
            self._closed = True
            idle, self._idle = self._idle, []
            self._open -= len(idle)
            self._cond.notify_all()
        for conn in idle:
            conn.close()

    def check(self) -> str | None:
        """Connect and handshake once, apart from the pool: None when Dovecot
        answers as an auth listener, else why not (for `msa.py check`)."""
        try:
            conn = _Connection(self._family, self._sockaddr, self.address, time.monotonic() + self.timeout)
        except _Broken as e:
            hint = ""
            if "closed the connection" in str(e):
                hint = " (is it an auth type listener? userdb, login and master listeners speak other protocols)"
            return f"auth_dovecot {self.address}: {e}{hint}"
        conn.close()
        return None

    # -- one request ----------------------------------------------------------------------------

    @staticmethod
    def _request_line(client: Client) -> bytes:
        parts = ["service=smtp"]
        if client.session:
            parts.append("session=" + tab_escape(client.session))
        for key, value in (("lip", _ip(client.local_ip)), ("rip", _ip(client.remote_ip)),
                           ("lport", _port(client.local_port)), ("rport", _port(client.remote_port))):
            if value is not None:
                parts.append(f"{key}={value}")
        if client.tls:
            parts.append("secured=tls")
        parts.append("no-penalty")
        return "\t".join(parts).encode("utf-8", "replace")

    def _ask(self, params: bytes, resp: bytes, deadline: float) -> list[str]:
        """The answer's fields for one AUTH: a fresh connection, or an idle
        one (retried once on a fresh one if that turns out dead)."""
        conn, reused = self._acquire(deadline)
        while True:
            ok = False
            try:
                request_id = conn.next_id
                conn.next_id += 1
                line = b"AUTH\t%d\tPLAIN\t%s\tresp=%s\n" % (request_id, params, resp)
                if len(line) > MAX_LINE:
                    raise _Broken(f"the AUTH line would be longer than {MAX_LINE} octets")
                fields = self._exchange(conn, request_id, line, deadline)
                ok = fields[0] != "CONT" and conn.next_id <= MAX_ID
                return fields
            except _Broken as e:
                if not (reused and e.stale):
                    raise
            finally:
                self._release(conn, ok)
            conn, reused = self._acquire(deadline, fresh=True)

    @staticmethod
    def _exchange(conn: _Connection, request_id: int, line: bytes, deadline: float) -> list[str]:
        conn.send(line, deadline)
        want = str(request_id)
        for _ in range(MAX_STRAY_LINES):
            fields = _fields(conn.readline(deadline, "waiting for the answer"))
            if fields[0] in ("OK", "FAIL", "CONT") and len(fields) > 1 and fields[1] == want:
                return fields
        raise _Broken(f"{MAX_STRAY_LINES} lines without the answer")

    @staticmethod
    def _verdict(fields: list[str]) -> Verdict:
        params = _params(fields[2:])
        said = f" ({_printable(params['reason'])})" if params.get("reason") else ""
        if fields[0] == "FAIL":
            if params.get("code") == "temp_fail":
                return Verdict(known=True, temporary=True, reason=f"dovecot: temporary failure{said}")
            code = f" code={_printable(params['code'], 40)}" if params.get("code") else ""
            return Verdict(known=True, reason=f"dovecot: authentication failed{code}{said}")
        if fields[0] == "CONT":
            return Verdict(known=True, reason="dovecot: asked for more than PLAIN gives (CONT)")
        if "nologin" in params:
            return Verdict(known=True, reason=f"dovecot: the password is right but logins are disabled (nologin){said}")
        if "proxy" in params:
            return Verdict(known=True, reason="dovecot: answered proxy (the login belongs to another server)")
        user = params.get("user")
        if user is None:
            return Verdict(known=True, reason="dovecot: OK without user=")
        if problem := _name_problem(user):
            return Verdict(known=True, reason=f"dovecot: OK with {problem}")
        return Verdict(known=True, ok=True, user=user.lower())

    # -- the pool -------------------------------------------------------------------------------

    def _acquire(self, deadline: float, fresh: bool = False) -> tuple[_Connection, bool]:
        """A connection for one request, and whether it was reused."""
        stale: list[_Connection] = []
        try:
            with self._cond:
                if self._pid != os.getpid():  # forked: the parent's connections are not ours
                    stale.extend(self._idle)
                    self._pid, self._idle, self._open = os.getpid(), [], 0
                if fresh:  # a reused connection was dead: so, likely, are the other idle ones
                    stale.extend(self._idle)
                    self._open -= len(self._idle)
                    self._idle = []
                while True:
                    if self._closed:
                        raise _Broken("closed")
                    while self._idle:
                        conn = self._idle.pop()
                        if conn.idle_ok():
                            return conn, True
                        stale.append(conn)
                        self._open -= 1
                    if self._open < self._max:
                        self._open += 1
                        break
                    remaining = deadline - time.monotonic()
                    if remaining <= 0:
                        raise _Broken(f"all {self._max} connections busy for the whole timeout")
                    self._cond.wait(remaining)
        finally:
            for conn in stale:
                conn.close()
        try:
            return _Connection(self._family, self._sockaddr, self.address, deadline), False
        except BaseException:
            with self._cond:
                self._open -= 1
                self._cond.notify()
            raise

    def _release(self, conn: _Connection, reusable: bool) -> None:
        with self._cond:
            keep = reusable and not self._closed and len(self._idle) < self._keep
            if keep:
                self._idle.append(conn)
            else:
                self._open -= 1
            self._cond.notify()
        if not keep:
            conn.close()

    # -- outages --------------------------------------------------------------------------------

    def _outage(self, why: str) -> None:
        with self._cond:
            first, self._down = not self._down, True
        if first:
            self._warn(f"dovecot: {self.address}: {why}; AUTH for Dovecot's users answers 454 until it works again")

    def _answered(self) -> None:
        with self._cond:
            back, self._down = self._down, False
        if back:
            self._info(f"dovecot: {self.address}: answers again")
