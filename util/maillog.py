"""The log-line writer, and the lines of a message's way out, in Postfix's
shape (SPEC.md §9): used by every I/O room (server/, delivery/, state/,
directory/ through the callbacks they are given).

`msa[PID]: ID: key=value, ...`. Client-supplied text goes through `esc()`
wherever it appears: what is not printable becomes \\xNN or \\uNNNN and each
value is cut to 256 characters; no line exceeds 2048 (S-901).
No function here takes a password, an AUTH response or message content
(S-903).
"""

from __future__ import annotations

import logging
import os
import sys
import time

log = logging.getLogger("msa")

#: S-901: each client-supplied value is cut to this many characters, and
#: no line is longer than MAX_LINE.
MAX_VALUE = 256
MAX_LINE = 2048
_CUT = "..."


def _escaped(ch: str) -> str:
    o = ord(ch)
    if o < 0x100 or 0xDC80 <= o <= 0xDCFF:  # a control, or a non-UTF-8 octet
        return f"\\x{o & 0xFF:02x}"
    return f"\\u{o:04x}" if o <= 0xFFFF else f"\\U{o:08x}"


def esc(value: str | bytes | None, limit: int = MAX_VALUE) -> str:
    """Client text made safe for a log line (S-901): cut to ``limit``
    characters (the last three "..." when cut), then every character that is not printable (C0 and C1
    controls, DEL, U+2028/U+2029, bidirectional and other format
    characters, unassigned or private-use code points, spaces other than
    the ASCII one) and every octet that was not UTF-8 written as \\xNN,
    \\uNNNN or \\UNNNNNNNN. The common case is one C-speed test."""
    if value is None:
        return ""
    if isinstance(value, bytes):
        value = value.decode("utf-8", "surrogateescape")
    cut = len(value) > limit
    if cut:
        value = value[: limit - len(_CUT)]
    if not value.isprintable():
        value = "".join(ch if ch.isprintable() else _escaped(ch) for ch in value)
    return value + _CUT if cut else value


def client_name(ip: str, port: int | None) -> str:
    return f"unknown[{ip}]:{port}" if port is not None else f"unknown[{ip}]"


class _Formatter(logging.Formatter):
    """`msa[PID]: message`, after an RFC 3339 stamp when `stamp` is set."""

    def __init__(self, stamp: bool) -> None:
        super().__init__()
        self.stamp = stamp
        self.pid = os.getpid()
        self._cache = (-1, "", "")  # (second, stamp, zone), replaced whole

    def format(self, record: logging.LogRecord) -> str:
        return self.line(record.getMessage(), record.created)

    def line(self, text: str, created: float) -> str:
        line = f"msa[{self.pid}]: {text}"
        if len(line) > MAX_LINE or not line.isprintable():
            # Values are escaped where they are logged; this is the last
            # guard for text that reached a line some other way (S-901).
            line = esc(line, MAX_LINE - len(_CUT))
        if not self.stamp:
            return line
        second = int(created)
        cached = self._cache
        if cached[0] != second:  # strftime once a second, not per line
            t = time.localtime(second)
            z = time.strftime("%z", t)
            cached = self._cache = (second, time.strftime("%Y-%m-%dT%H:%M:%S", t), f"{z[:3]}:{z[3:]}")
        return f"{cached[1]}.{int((created - second) * 1000):03d}{cached[2]} {line}"


class _LineHandler(logging.Handler):
    """One write(2) per line, without the handler lock: a line is written
    whole by one system call, so threads need not queue behind each
    other's writes (with the lock they convoyed on the GIL)."""

    def __init__(self, fd: int) -> None:
        super().__init__()
        self.fd = fd

    def handle(self, record: logging.LogRecord) -> bool:  # no self.lock
        self.emit(record)
        return True

    def emit(self, record: logging.LogRecord) -> None:
        self.write(self.format(record))

    def text(self, text: str) -> None:
        """A line without the logging module's record (the event functions'
        path: a LogRecord costs more than the rest of the line)."""
        formatter = self.formatter
        assert isinstance(formatter, _Formatter)
        self.write(formatter.line(text, time.time()))

    def write(self, line: str) -> None:
        data = (line + "\n").encode("utf-8", "backslashreplace")
        try:
            while data:
                data = data[os.write(self.fd, data) :]
        except OSError:
            pass  # a log that cannot be written must not stop mail


def setup(kind: str = "stderr") -> None:
    """Send log lines to stderr (with an RFC 3339 stamp outside the
    journal) or to syslog, facility mail."""
    # What the records need not carry (the logging docs' "Optimization"):
    # no caller lookup, thread, process or multiprocessing names.
    logging._srcfile = None  # type: ignore[attr-defined]
    logging.logThreads = False
    logging.logProcesses = False
    logging.logMultiprocessing = False
    log.handlers.clear()
    log.propagate = False
    log.setLevel(logging.INFO)
    handler: logging.Handler
    if kind == "syslog":
        # Imported only here: logging.handlers brings pickle, queue and
        # struct, which a session logging to stderr never uses.
        from logging.handlers import SysLogHandler

        try:
            handler = SysLogHandler(address="/dev/log", facility=SysLogHandler.LOG_MAIL)
        except OSError:
            handler = _LineHandler(sys.stderr.fileno())
            handler.setFormatter(_Formatter(stamp=True))
        else:
            handler.setFormatter(_Formatter(stamp=False))
    else:
        handler = _LineHandler(sys.stderr.fileno())
        handler.setFormatter(_Formatter(stamp="JOURNAL_STREAM" not in os.environ))
    global _direct
    _direct = handler if isinstance(handler, _LineHandler) else None
    log.addHandler(handler)


#: The stderr handler, written to directly by the event functions; None
#: for syslog, which goes through the logging module.
_direct: _LineHandler | None = None


def _forked() -> None:
    """In a forked child (serve's workers, S-1601): its lines carry its own
    PID, as each Postfix process's do."""
    pid = os.getpid()
    for handler in log.handlers:
        if isinstance(handler.formatter, _Formatter):
            handler.formatter.pid = pid


os.register_at_fork(after_in_child=_forked)


def _line(level: int, text: str) -> None:
    if _direct is not None:
        _direct.text(text)
    elif log.isEnabledFor(level):
        log.log(level, "%s", text)


def emit_info(fmt: str, *args: object) -> None:
    _line(logging.INFO, fmt % args)


def emit_warning(fmt: str, *args: object) -> None:
    _line(logging.WARNING, fmt % args)


def emit_error(fmt: str, *args: object) -> None:
    _line(logging.ERROR, fmt % args)


# -- events -------------------------------------------------------------------------
def info(text: str) -> None:
    emit_info("%s", text)


def warning(text: str) -> None:
    emit_warning("warning: %s", text)


def error(text: str) -> None:
    emit_error("error: %s", text)


def internal_error(sid: str, client: str, exc: BaseException) -> None:
    """A bug reached a thread boundary: one line, with where it happened."""
    import traceback

    frames = traceback.extract_tb(exc.__traceback__)
    where = f" at {frames[-1].filename.rsplit('/', 1)[-1]}:{frames[-1].lineno}" if frames else ""
    emit_error("%s: error: internal error with %s: %s: %s%s", sid, client, type(exc).__name__, esc(str(exc)), where)


def message_from(qid: str, sender: str, size: int, nrcpt: int) -> None:
    emit_info("%s: from=<%s>, size=%d, nrcpt=%d", qid, esc(sender), size, nrcpt)


def delivered(qid: str, rcpt: str, delay: float, status: str, detail: str, relay: str = "sendmail") -> None:
    """``detail`` may quote the MTA (which may quote the client): escaped."""
    emit_info("%s: to=<%s>, relay=%s, delay=%.2f, status=%s (%s)", qid, esc(rcpt), relay, delay, status,
             esc(detail, 2 * MAX_VALUE))


def reject(sid: str, command: str, client: str, reply: str, sender: str | None, rcpt: str | None,
           helo: str | None, hint: str | None = None, *, limit: str | None = None,
           user: str | None = None) -> None:
    """``reply`` may carry client text (an address in a 550): escaped too.
    ``hint``: what the administrator could do, after the Postfix fields."""
    extra = []
    if sender is not None:
        extra.append(f"from=<{esc(sender)}>")
    if rcpt is not None:
        extra.append(f"to=<{esc(rcpt)}>")
    if helo is not None:
        extra.append(f"helo=<{esc(helo)}>")
    if limit is not None:  # S-1201
        extra.append(f"limit={esc(limit)}")
    if user is not None:
        extra.append(f"sasl_username={esc(user)}")
    tail = "; " + " ".join(extra) if extra else ""
    if hint is not None:
        tail += f"; hint: {esc(hint, 2 * MAX_VALUE)}"
    emit_info("%s: reject: %s from %s: %s%s", sid, command, client, esc(reply), tail)


def sendmail_stderr(qid: str, text: bytes) -> None:
    if text:
        emit_info("%s: sendmail said: %s", qid, esc(text[:512], 512))
