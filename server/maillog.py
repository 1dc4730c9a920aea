"""The session's log lines, one function per event, in Postfix's shape
(SPEC.md §9): connect, TLS, AUTH, client=, disconnect. The writer, and the
lines every room shares (info, warning, error, reject, from=, to=), are
util/maillog.py's, re-exported here for the daemon's modules.
"""

from __future__ import annotations

from util.maillog import (  # noqa: F401  (re-exported for the daemon's modules)
    MAX_LINE,
    MAX_VALUE,
    client_name,
    delivered,
    error,
    esc,
    info,
    internal_error,
    message_from,
    reject,
    sendmail_stderr,
    setup,
    warning,
)
from util.maillog import emit_info, emit_warning


def connect(sid: str, client: str) -> None:
    emit_info("%s: connect from %s", sid, client)


def starttls(sid: str, client: str, discarded: int) -> None:
    if discarded:
        emit_warning("%s: warning: %s: discarded %d bytes pipelined after STARTTLS", sid, client, discarded)


def tls_established(sid: str, client: str, version: str, cipher: str) -> None:
    emit_info("%s: TLS connection established from %s: %s with cipher %s", sid, client, version, cipher)


def tls_failed(sid: str, client: str, reason: str) -> None:
    emit_info("%s: SSL_accept error from %s: %s", sid, client, esc(reason))


def auth_ok(sid: str, client: str, method: str, user: str, app: str | None = None,
            directory: str | None = None) -> None:
    """``app``: the label of the app password used (S-515); ``directory``:
    the one that knew the user (S-1301), said when more than users.db is in use."""
    client_line(sid, client, method, user, app, directory)


def client_line(sid: str, client: str, method: str, user: str, app: str | None,
                directory: str | None = None) -> None:
    tail = f", app={esc(app)}" if app is not None else ""
    if directory is not None:
        tail += f", directory={directory}"
    emit_info("%s: client=%s, sasl_method=%s, sasl_username=%s%s", sid, client, method, esc(user), tail)


def auth_failed(client: str, method: str, user: str | None, reason: str) -> None:
    emit_warning(
        "warning: %s: SASL %s authentication failed: %s, sasl_username=%s",
        client, method, reason, esc(user) if user else "(unknown)",
    )


def client(qid: str, client: str, method: str | None, user: str | None, app: str | None = None,
           directory: str | None = None) -> None:
    if user:
        client_line(qid, client, method or "", user, app, directory)
    else:
        emit_info("%s: client=%s", qid, client)


def disconnect(sid: str, client: str, counts: dict[str, int]) -> None:
    order = ["ehlo", "helo", "starttls", "auth", "mail", "rcpt", "data", "rset", "noop", "vrfy", "help", "quit", "unknown"]
    parts = [f"{k}={counts[k]}" for k in order if counts.get(k)]
    parts.append(f"commands={counts.get('commands', 0)}")
    emit_info("%s: disconnect from %s %s", sid, client, " ".join(parts))
