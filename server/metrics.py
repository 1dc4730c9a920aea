"""Prometheus metrics (SPEC.md S-1501), served on `metrics_listen`.

What the daemon counts goes through one object, `server.metrics`: the
`Metrics` base does nothing (inetd mode, or no `metrics_listen`), so a
session pays one empty method call per event when metrics are off;
`Prometheus` counts through the `prometheus_client` package, imported only
when `metrics_listen` is set.

The counts are kept in prometheus_client's multiprocess mode: each process
writes its own values to small memory-mapped files in `spool/metrics`, and
the endpoint adds up every process's files at each scrape. With one process
that is the same numbers; with `workers` (SPEC.md S-1601) `/metrics` is the
sum over the workers, a worker that died included (its counters keep
counting in the totals; its live gauges are dropped), and nothing is asked
of a busy worker when Prometheus scrapes: the endpoint reads files, holding
no lock a session takes. Counters live as long as the daemon: a reload
(SIGHUP) keeps them, a restart starts them from zero, as Prometheus expects.

No label holds a user name, an address or a client IP: the labels are the
fixed words of S-1501, the listener's own address, and mechanism names.
"""

from __future__ import annotations

import os
import sys
import threading

TYPE_CHECKING = False  # typing is not imported before inetd's greeting (server/runtime.py makes NULL)
if TYPE_CHECKING:
    from collections.abc import Callable, Iterable
    from typing import Any

#: Seconds: a local sendmail answers within milliseconds, a queue-full MTA
#: or a remote SMTP hand-off within seconds; sendmail_timeout caps the end.
HANDOFF_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0)
#: Octets of accepted messages: a short text to a large attachment.
SIZE_BUCKETS = tuple(float(1 << n) for n in range(10, 31, 2))  # 1 KiB .. 1 GiB, by fours

MECHANISMS = ("PLAIN", "LOGIN", "CRAM-MD5", "SCRAM-SHA-256")
AUTH_RESULTS = ("success", "failure", "tempfail")
DIRECTORIES = ("users.db", "app", "sql", "dovecot", "unknown")
MESSAGE_RESULTS = ("accepted", "refused", "deferred")
REFUSAL_REASONS = ("sender", "header_sender", "limit", "size", "recipients", "syntax", "smuggling", "other")
CONNECTION_REFUSALS = ("max_connections", "max_connections_per_ip", "shutdown")
TLS_VERSIONS = ("TLSv1.2", "TLSv1.3", "failed")
SIGNATURE_KINDS = ("dkim", "pgp", "hashcash")
SIGNATURE_RESULTS = ("signed", "failed", "skipped")
HANDOFF_RESULTS = ("sent", "deferred", "refused")

_REPLY_GROUPS: tuple[tuple[Any, ...], ...] = ()


def _replies() -> tuple[tuple[Any, ...], ...]:
    """The replies each reason names, made once (smtp_states is loaded
    after inetd's greeting, so not at import)."""
    global _REPLY_GROUPS
    if _REPLY_GROUPS:
        return _REPLY_GROUPS
    from smtp_states import replies as R

    _REPLY_GROUPS = ((R.RATE_LIMITED, R.RECIPIENT_LIMIT), (R.SIZE_EXCEEDED, R.HEADER_TOO_LARGE),
            (R.BARE_CR, R.NUL_IN_DATA), (R.CANNOT_VERIFY_FROM, R.NO_FROM_HEADER), (R.TOO_MANY_RECIPIENTS,))
    return _REPLY_GROUPS


def refusal_reason(command: str, reply: Any) -> str:
    """S-1501's reason for a refused command or message (`reply`, 4xx/5xx)."""
    _LIMITS, _SIZE, _SMUGGLING, _HEADER_SENDER, _RECIPIENTS = _replies()
    if reply in _LIMITS:
        return "limit"
    if reply in _SIZE:
        return "size"
    if reply in _RECIPIENTS:
        return "recipients"
    if reply in _SMUGGLING:
        return "smuggling"
    if reply in _HEADER_SENDER:
        return "header_sender"
    if reply.enhanced == "5.7.1" and reply.code == 550:  # S-601, S-602: not the user's address
        return "sender" if command == "MAIL" else "header_sender"
    if reply.code in (500, 501, 555) or reply.enhanced in ("5.1.8", "5.1.2"):
        return "syntax"
    return "other"


def signature_outcomes(notes: Iterable[str]) -> list[tuple[str, str]]:
    """(kind, result) of each signing step's log note (delivery/pipeline.py:
    `dkim=signed, ...`, `pgp=left (...)`, `hashcash=2 stamps (...)`)."""
    out = []
    for note in notes:
        kind, sep, rest = note.partition("=")
        if not sep or kind not in SIGNATURE_KINDS:
            continue
        word = rest.split(None, 1)[0].rstrip(",") if rest else ""
        if word in ("signed", "failed"):
            out.append((kind, word))
        elif kind == "hashcash" and word.isdigit():
            out.append((kind, "signed" if int(word) > 0 else "skipped"))
        else:  # none, left, skipped
            out.append((kind, "skipped"))
    return out


class Metrics:
    """The events the daemon counts; this base counts nothing."""

    enabled = False

    def connection(self, listener: str) -> None:
        pass

    def connection_refused(self, reason: str) -> None:
        pass

    def session_started(self) -> None:
        pass

    def session_ended(self) -> None:
        pass

    def tls(self, version: str) -> None:
        pass

    def auth(self, mechanism: str, result: str, directory: str, delayed: bool) -> None:
        pass

    def refused(self, command: str, reply: Any) -> None:
        pass

    def message(self, reply: Any, size: int, recipients: int, handoff: Any = None, kind: str = "",
                notes: Iterable[str] = ()) -> None:
        pass

    def health(self, store: tuple[str, bool] | None, directories: Iterable[tuple[str, bool]]) -> None:
        pass


NULL = Metrics()


class Prometheus(Metrics):
    """S-1501's metrics in prometheus_client's multiprocess mode (`prepare`
    first: the mode is chosen when the package is imported)."""

    enabled = True

    def __init__(self, version: str) -> None:
        from prometheus_client import Counter, Gauge, Histogram

        def counter(name: str, text: str, labels: tuple[str, ...] = ()) -> Any:
            return Counter(name, text, labels, registry=None)

        self._connections = counter("msa_connections_total", "TCP connections accepted, by listener",
                                    ("listener",))
        self._refused_connections = counter("msa_connections_refused_total",
                                            "Connections refused or ended before a session, by reason", ("reason",))
        self._active = Gauge("msa_sessions_active", "SMTP sessions open now", registry=None,
                             multiprocess_mode="livesum")
        self._tls = counter("msa_tls_handshakes_total", "TLS handshakes, by protocol version or failed",
                            ("version",))
        self._auth = counter("msa_auth_attempts_total", "AUTH attempts by mechanism, result and directory",
                             ("mechanism", "result", "directory"))
        self._delayed = counter("msa_auth_delayed_total", "AUTH attempts delayed after failures from the client")
        self._messages = counter("msa_messages_total", "Messages whose DATA ended, by the final reply",
                                 ("result",))
        self._refusals = counter("msa_refusals_total", "Refused commands and messages, by reason", ("reason",))
        self._recipients = counter("msa_recipients_total", "Recipients of accepted messages")
        self._bytes = Histogram("msa_message_bytes", "Size of accepted messages in octets", registry=None,
                                buckets=SIZE_BUCKETS)
        self._handoff = Histogram("msa_handoff_seconds", "Time to hand a message to the MTA",
                                  ("handoff", "result"), registry=None, buckets=HANDOFF_BUCKETS)
        self._signatures = counter("msa_signatures_total", "Signing steps, by kind and result", ("kind", "result"))
        self._store_up = Gauge("msa_store_up", "1 when the state store answers, 0 while it fails", ("store",),
                               registry=None, multiprocess_mode="livemin")
        self._directory_up = Gauge("msa_directory_up", "1 when the directory answers, 0 while it fails",
                                   ("directory",), registry=None, multiprocess_mode="livemin")
        self._build = Gauge("msa_build_info", "msa's version and Python's", ("version", "python"), registry=None,
                            multiprocess_mode="max")
        self._build.labels(version, ".".join(map(str, sys.version_info[:3]))).set(1)
        self._health: dict[tuple[str, str], bool] = {}
        # Every series of a fixed label set exists from the start, at 0, so
        # that rate() and the dashboard's panels see the first event.
        for reason in CONNECTION_REFUSALS:
            self._refused_connections.labels(reason)
        for version_ in TLS_VERSIONS:
            self._tls.labels(version_)
        for result in MESSAGE_RESULTS:
            self._messages.labels(result)
        for reason in REFUSAL_REASONS:
            self._refusals.labels(reason)
        for mechanism in ("PLAIN", "LOGIN"):
            for result in AUTH_RESULTS:
                self._auth.labels(mechanism, result, "users.db")

    def connection(self, listener: str) -> None:
        self._connections.labels(listener).inc()

    def connection_refused(self, reason: str) -> None:
        self._refused_connections.labels(reason).inc()

    def session_started(self) -> None:
        self._active.inc()

    def session_ended(self) -> None:
        self._active.dec()

    def tls(self, version: str) -> None:
        self._tls.labels(version if version in TLS_VERSIONS else "other").inc()

    def auth(self, mechanism: str, result: str, directory: str, delayed: bool) -> None:
        if mechanism not in MECHANISMS:
            mechanism = "other"
        self._auth.labels(mechanism, result, directory if directory in DIRECTORIES else "unknown").inc()
        if delayed:
            self._delayed.inc()

    def refused(self, command: str, reply: Any) -> None:
        reason = refusal_reason(command, reply)
        self._refusals.labels(reason).inc()
        if command == "DATA" and reason in ("size", "smuggling"):  # the decoder's verdict ends the message
            self._messages.labels("refused").inc()

    def message(self, reply: Any, size: int, recipients: int, handoff: Any = None, kind: str = "",
                notes: Iterable[str] = ()) -> None:
        for step, result in signature_outcomes(notes):
            self._signatures.labels(step, result).inc()
        if handoff is not None:
            result = {"sent": "sent", "deferred": "deferred"}.get(handoff.status, "refused")
            self._handoff.labels(kind, result).observe(handoff.elapsed)
        if reply.code < 300:
            self._messages.labels("accepted").inc()
            self._recipients.inc(recipients)
            self._bytes.observe(size)
        elif reply.code < 500:
            self._messages.labels("deferred").inc()
        else:
            self._messages.labels("refused").inc()
            if handoff is None:  # refused by msa (the MTA's refusals are counted by the hand-off)
                self._refusals.labels(refusal_reason("DATA", reply)).inc()

    def health(self, store: tuple[str, bool] | None, directories: Iterable[tuple[str, bool]]) -> None:
        """The store's and the directories' state as this process sees it
        (serve calls it every second); written only when it changed."""
        pairs = [(("store", store[0]), store[1])] if store is not None else []
        pairs += [(("directory", name), up) for name, up in directories]
        for key, up in pairs:
            if self._health.get(key) is not up:
                self._health[key] = up
                gauge = self._store_up if key[0] == "store" else self._directory_up
                gauge.labels(key[1]).set(1 if up else 0)


# -- the daemon's side: the files, the endpoint ----------------------------------------------
class MetricsError(Exception):
    pass


def directory_of(cfg: Any) -> str:
    return os.path.join(cfg.spool, "metrics")


def clear(cfg: Any) -> None:
    """Remove a previous run's files (a restart starts the counts from zero).
    Called before run_as as well as after: files a root daemon left behind
    cannot be removed by the daemon user."""
    import shutil

    path = directory_of(cfg)
    try:
        if os.path.isdir(path) and not os.path.islink(path):
            shutil.rmtree(path)
        elif os.path.lexists(path):
            os.unlink(path)
    except OSError as e:
        raise MetricsError(f"cannot remove {path}: {e.strerror or e}") from None


def prepare(cfg: Any, version: str) -> Metrics:
    """The metrics of `cfg` (NULL without metrics_listen): the multiprocess
    files' directory made empty, then prometheus_client imported in that
    mode. Called once in serve, after run_as (the files are the daemon
    user's) and before any worker starts."""
    if cfg.metrics_listen is None:
        return NULL
    path = directory_of(cfg)
    clear(cfg)
    try:
        os.mkdir(path, 0o700)
    except OSError as e:
        raise MetricsError(f"cannot make {path}: {e.strerror or e}") from None
    if "prometheus_client" in sys.modules and os.environ.get("PROMETHEUS_MULTIPROC_DIR") != path:
        raise MetricsError("prometheus_client was imported before its multiprocess directory was set")
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = path
    try:
        return Prometheus(version)
    except ImportError:
        raise MetricsError("the prometheus_client package is not installed "
                           "(pip install prometheus-client, or Debian's python3-prometheus-client)") from None


def module_problem() -> str | None:
    """Why metrics_listen cannot work here (check), or None."""
    import importlib.util

    if importlib.util.find_spec("prometheus_client") is None:
        return ("the prometheus_client package is not installed "
                "(pip install prometheus-client, or Debian's python3-prometheus-client)")
    return None


def process_died(pid: int) -> None:
    """A worker ended: its live gauges leave the sums (S-1601)."""
    if "prometheus_client" in sys.modules:
        from prometheus_client import multiprocess

        multiprocess.mark_process_dead(pid)


class _ProcessesCollector:
    """The client's process metrics (CPU, resident memory, open files) of
    the daemon and its workers together: prometheus_client's
    ProcessCollector read for each process, the sums reported."""

    SUMMED = ("process_cpu_seconds_total", "process_resident_memory_bytes", "process_virtual_memory_bytes",
              "process_open_fds")

    def __init__(self, pids: Callable[[], list[int]]) -> None:
        self._pids = pids

    def collect(self) -> Iterable[Any]:
        from prometheus_client import ProcessCollector
        from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

        totals: dict[str, float] = {}
        first: dict[str, Any] = {}  # the daemon's own (start time, max fds)
        for pid in [os.getpid(), *self._pids()]:
            collector = ProcessCollector(pid=lambda pid=pid: pid, registry=None)
            for family in collector.collect():
                for sample in family.samples:
                    if sample.name in self.SUMMED:
                        totals[sample.name] = totals.get(sample.name, 0.0) + sample.value
                    elif sample.name not in first:
                        first[sample.name] = (family, sample.value)
        docs = {
            "process_cpu_seconds_total": "User and system CPU time of the daemon and its workers, in seconds",
            "process_resident_memory_bytes": "Resident memory of the daemon and its workers, in octets",
            "process_virtual_memory_bytes": "Virtual memory of the daemon and its workers, in octets",
            "process_open_fds": "Open file descriptors of the daemon and its workers",
        }
        for name, value in totals.items():
            if name.endswith("_total"):
                yield CounterMetricFamily(name[: -len("_total")], docs[name], value=value)
            else:
                yield GaugeMetricFamily(name, docs[name], value=value)
        for name, (family, value) in first.items():
            yield GaugeMetricFamily(name, family.documentation, value=value)


class Endpoint:
    """GET /metrics on `metrics_listen` (S-1501), in threads of its own;
    anything else is 404. Each scrape reads every process's files into a
    new registry (prometheus_client's multiprocess collection)."""

    MAX_SCRAPES = 4  # at once; more wait in the listen queue
    TIMEOUT = 10.0  # seconds for a scraper to send its request and read the answer

    def __init__(self, cfg: Any, pids: Callable[[], list[int]] = lambda: []) -> None:
        import http.server
        import socket

        from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
        from prometheus_client.multiprocess import MultiProcessCollector

        import prometheus_client.process_collector  # noqa: F401 - imported before any fork (workers)
        import prometheus_client.core  # noqa: F401

        path = directory_of(cfg)
        slots = threading.BoundedSemaphore(self.MAX_SCRAPES)
        timeout = self.TIMEOUT
        self.pids = pids  # the workers' (S-1601); set by the master once it has them

        def scrape() -> bytes:
            registry = CollectorRegistry()
            MultiProcessCollector(registry, path=path)
            registry.register(_ProcessesCollector(lambda: self.pids()))
            return generate_latest(registry)

        class Handler(http.server.BaseHTTPRequestHandler):
            server_version = "msa"
            sys_version = ""

            def setup(self) -> None:
                self.request.settimeout(timeout)
                super().setup()

            def do_GET(self) -> None:  # noqa: N802 - http.server's name
                if self.path.split("?", 1)[0] != "/metrics":
                    self._answer(404, b"Not Found\n", "text/plain; charset=utf-8")
                    return
                with slots:
                    body = scrape()
                self._answer(200, body, CONTENT_TYPE_LATEST)

            def do_HEAD(self) -> None:  # noqa: N802
                self._answer(404, b"", "text/plain; charset=utf-8")

            def _answer(self, code: int, body: bytes, content_type: str) -> None:
                self.send_response(code)
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
                pass  # a scrape every few seconds is not an event of the mail log

        host, port = cfg.metrics_listen

        class HTTPServer(http.server.ThreadingHTTPServer):
            address_family = socket.AF_INET6 if ":" in host else socket.AF_INET
            daemon_threads = True
            request_queue_size = 16

        self.httpd = HTTPServer((host, port), Handler)
        self.address = self.httpd.server_address[:2]
        self._thread = threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.5},
                                        name="metrics", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def close(self) -> None:
        if self._thread.is_alive():
            self.httpd.shutdown()
        self.httpd.server_close()
