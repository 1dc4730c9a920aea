"""The state store in Redis, shared by several msa hosts (SPEC.md §14:
S-1401 to S-1403; S-511, S-1201, S-1202, S-514).

This module owns how login failures, sending reservations, first-refusal
notes and the SCRAM secret live in a Redis server (6 or later, or Valkey)
that every msa host points at with ``state = redis://...``, so that a
hijacked account gets its limit once, not once per host, and a password
guesser its login delay once. It keeps SQLite's semantics (state/sqlite.py)
and implements the same ``state.Store`` interface.

Layout: every key starts with ``state_prefix`` and has a TTL, so nothing
grows without bound and a reservation left by a process that died expires
with its window:

- ``PREFIXfail:CLIENT``: a hash, one field per failed login name (a keyed
  hash of it, never the name, S-1202) holding ``COUNT:MS`` (its failures,
  the server time of the last), expiring 15 minutes after the address's
  last failure (S-511).
- ``PREFIXsent:messages:USER``, ``PREFIXsent:recipients:USER``: a hash of
  steps (the step's start in milliseconds of the server's clock → count)
  with ``total`` (their sum) and ``first`` (the oldest step), expiring a
  window after the last reservation (S-1201).
- ``PREFIXnoted:KIND:USER``: set while a window's first refusal is logged.
- ``PREFIXsecret``: the 32 octets every host makes unknown users' salts
  from (S-514), set once with SET NX; a local copy in ``state_dir/secret``.

Each check-and-count is one Lua script (state/redisscripts.py) run by the
server (EVALSHA, loaded again after NOSCRIPT, as redis-py's
``register_script`` does), on ``redis.call('TIME')``: atomic across every
thread, process and host, and on one clock, so hosts with skewed clocks
agree (S-1401).

Faults (S-1402): every call waits at most ``state_timeout`` (socket and
connect timeouts; redis-py's retries off). A call that fails starts an
episode: one warning, the limits fail open, login delays hold in this
process (the ``fallback`` ``sasl.Throttle`` keeps the failures Redis could
not take), and the server is tried
again after a growing pause (at most every RETRY_MAX seconds) by one call
at a time while the others fail open at once, never once per message; the
first call that works again logs one line. redis-py is imported only
when this store is made: ``module_problem()`` says whether it can be.
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
import threading
import time
from collections.abc import Callable, Iterable
from typing import Any

from sasl import Throttle
from sasl.limits import (
    THROTTLE_FIRST_DELAY_SECONDS,
    THROTTLE_FORGET_SECONDS,
    THROTTLE_MAX_COUNTED_FAILURES,
    THROTTLE_MAX_DELAY_SECONDS,
    THROTTLE_MAX_NAMES,
    THROTTLE_OTHER_NAMES,
)

from util import maillog

from . import NOT_COUNTED, Hold, Usage
from . import redisscripts as scripts
from .secretfile import SECRET_FILENAME, SECRET_OCTETS, load_secret, read_secret, replace_secret

__all__ = ["RedisStore", "module_problem", "shown_url"]

#: While a failure episode lasts, the server is tried again after this
#: pause, doubled each time it still fails, up to RETRY_MAX (S-1402).
RETRY_FIRST = 0.5
RETRY_MAX = 5.0

#: Connections to Redis per process (for the sessions; `msa.py limits`
#: and the checks use redis-py's own pool of as many); a call finding all
#: of them busy waits for one at most state_timeout (it then fails open).
POOL_SIZE = 32

#: The shared secret's TTL, renewed whenever a process checks it: a key
#: like any other (S-1401), which a host that holds the secret sets again
#: with the same value should it ever expire.
SECRET_TTL_MS = 90 * 86400 * 1000

#: How often a process compares its secret with Redis's (seconds): a host
#: that made its own while Redis was down takes the shared one within this.
SECRET_RECHECK = 600.0

#: Oldest Redis msa runs on (S-1401): scripts that write after TIME.
MIN_REDIS_MAJOR = 6

class _Script:
    """A Lua script and its SHA1, by which the server knows it (EVALSHA)."""

    __slots__ = ("sha", "text")

    def __init__(self, text: str) -> None:
        self.text = text
        self.sha = hashlib.sha1(text.encode()).hexdigest()


def module_problem() -> str | None:
    """Why redis-py cannot be imported, or None (S-1403: check names it,
    serve and inetd refuse to start without it). Imports nothing."""
    try:
        spec = importlib.util.find_spec("redis")
    except (ImportError, ValueError):
        spec = None
    # A directory named redis without the package (a namespace package,
    # origin None) is not redis-py.
    found = spec is not None and spec.origin is not None
    if found:
        return None
    return ("the redis module (redis-py) is missing; Debian: apt install python3-redis, "
            "or pip install redis")


def shown_url(url: str) -> str:
    """The URL without its password, for logs and messages."""
    from urllib.parse import urlsplit

    try:
        parts = urlsplit(url)
        host = parts.netloc.rpartition("@")[2]
    except ValueError:
        return url.split("://", 1)[0] + "://..."
    user = parts.username if parts.username else ""
    return f"{parts.scheme}://{user + '@' if user else ''}{host}{parts.path}" + (f"?{parts.query}" if parts.query else "")


def _why(error: BaseException) -> str:
    text = str(error) or type(error).__name__
    return text.splitlines()[0][:200] if text else type(error).__name__


def _escape_glob(text: bytes) -> bytes:
    """``text`` as a literal in a SCAN MATCH pattern."""
    out = bytearray()
    for b in text:
        if b in b"*?[]\\":
            out += b"\\"
        out.append(b)
    return bytes(out)


def _key_part(text: str) -> bytes:
    return text.encode("utf-8", "surrogatepass")


class RedisStore:
    """The state in the Redis server ``url`` names, under ``prefix``;
    thread-safe; every method but counts() and reset() fails open within
    ``timeout`` seconds (state.Store's interface)."""

    def __init__(self, url: str, prefix: str = "msa:", timeout: float = 0.5, directory: str | None = None,
                 *, clock: Callable[[], float] = time.monotonic) -> None:
        import redis
        from redis.backoff import NoBackoff
        from redis.connection import parse_url
        from redis.retry import Retry

        self.url = url
        self.where = shown_url(url)
        self.prefix = _key_part(prefix)
        self.timeout = timeout
        #: state_dir: where the local copy of the shared secret lives.
        self.directory = directory
        options = parse_url(url)
        for name in ("socket_timeout", "socket_connect_timeout", "retry", "retry_on_timeout", "retry_on_error",
                     "max_connections", "timeout", "health_check_interval"):
            options.pop(name, None)  # msa's to set (config.py lets none of them through anyway)
        # No retries by redis-py: a timeout retried doubles the wait, and a
        # script sent again after it might count twice (_command retries a
        # connection found closed, once, before anything ran).
        pool = redis.BlockingConnectionPool(
            max_connections=POOL_SIZE, timeout=timeout, socket_timeout=timeout, socket_connect_timeout=timeout,
            retry=Retry(NoBackoff(), 0), **options)
        self._redis = redis.Redis(connection_pool=pool)  # counts(), reset(), problem()
        self._connect = lambda: pool.connection_class(**pool.connection_kwargs)
        self._idle: list[Any] = []  # this process's connections, the last one used first
        self._slots = threading.BoundedSemaphore(POOL_SIZE)
        self._pid = os.getpid()
        self._connection_error = redis.ConnectionError
        self._errors: tuple[type[BaseException], ...] = (redis.RedisError, OSError, ValueError, EOFError)
        self._response_error = redis.ResponseError
        self._no_script = redis.exceptions.NoScriptError
        self._reserve = _Script(scripts.RESERVE)
        self._release = _Script(scripts.RELEASE)
        self._failed_script = _Script(scripts.FAILED)
        self._secret_script = _Script(scripts.SECRET)
        self._lock = threading.Lock()
        # The current failure episode (S-1402): its warning, when the server
        # is tried again, and whether a call is trying it now.
        self._failing: str | None = None
        self._retry_at = 0.0
        self._retry_pause = RETRY_FIRST
        self._probing = False
        self._secret_lock = threading.Lock()
        self._secret: bytes | None = None
        self._secret_checked = -SECRET_RECHECK
        self._name_key: tuple[bytes, bytes] | None = None  # (the secret, the key made from it)
        #: S-1402: while Redis fails, login delays still hold in this process
        #: (and a success forgets a name's failures in both).
        self.fallback = Throttle(clock=clock)

    # -- commands on this process's connections ------------------------------------------
    def _eval(self, script: _Script, keys: list[bytes], args: list[Any]) -> Any:
        """Run ``script`` on the server: EVALSHA, and after NOSCRIPT (the
        server's script cache emptied by a restart, a failover or SCRIPT
        FLUSH) SCRIPT LOAD and EVALSHA again, as redis-py's
        ``register_script`` does."""
        try:
            return self._command("EVALSHA", script.sha, len(keys), *keys, *args)
        except self._no_script:
            self._command("SCRIPT", "LOAD", script.text)
            return self._command("EVALSHA", script.sha, len(keys), *keys, *args)

    def _command(self, *command: Any) -> Any:
        """One command and its reply, on one of this process's connections
        (at most POOL_SIZE; a call finding none free waits state_timeout at
        most). Two of these run for every message (S-1201), so they skip
        the client's per-command machinery and the pool's check of every
        connection taken (a system call, and a wait for the GIL on a busy
        process): a connection the server closed while it lay idle (a
        restart, its idle timeout) fails at once, and the command goes once
        more on a new one. Never sent twice after a timeout."""
        if not self._slots.acquire(timeout=self.timeout):
            raise self._connection_error("every connection to Redis is busy")
        try:
            if self._pid != os.getpid():  # a forked child never shares its parent's connections
                self._idle, self._pid = [], os.getpid()
            try:
                conn, fresh = self._idle.pop(), False
            except IndexError:
                conn, fresh = self._connect(), True
            while True:
                try:
                    conn.send_command(*command)
                    reply = conn.read_response()
                except self._response_error:
                    self._idle.append(conn)  # an error reply: the connection is in step
                    raise
                except self._connection_error:
                    conn.disconnect()
                    if fresh:
                        raise
                    conn, fresh = self._connect(), True
                    continue
                except BaseException:
                    conn.disconnect()  # a timeout: never reused half-read
                    raise
                self._idle.append(conn)
                return reply
        finally:
            self._slots.release()

    # -- keys -----------------------------------------------------------------------
    def _key(self, *parts: str) -> bytes:
        return self.prefix + b":".join(_key_part(p) for p in parts)

    def _window(self, kind: str, user: str) -> bytes:
        return self._key("sent", kind, user)

    # -- failure episodes (S-1402) --------------------------------------------------------
    def _run(self, what: str, action: Callable[[], Any], default: Any) -> Any:
        probe = False
        if self._failing is not None:
            with self._lock:
                if self._failing is not None:
                    if self._probing or time.monotonic() < self._retry_at:
                        return default  # the episode's pause: fail open at once
                    self._probing = probe = True
        try:
            result = action()
        except self._errors as e:
            self._failed(what, e)
            return default
        finally:
            if probe:
                self._probing = False
        if self._failing is not None:
            self._worked()
        return result

    def _failed(self, what: str, error: BaseException) -> None:
        with self._lock:
            now = time.monotonic()
            if self._failing is not None:  # one warning per episode
                self._retry_pause = min(self._retry_pause * 2, RETRY_MAX)
                self._retry_at = now + self._retry_pause
                return
            self._failing = _why(error)
            self._retry_pause = RETRY_FIRST
            self._retry_at = now + RETRY_FIRST
        maillog.warning(
            f"state store {self.where}: cannot {what}: {self._failing}; until it works again sending "
            "limits are not applied and login delays hold in this process only"
        )

    def _worked(self) -> None:
        with self._lock:
            if self._failing is None:
                return
            self._failing = None
            self._retry_at = 0.0
        maillog.info(f"state store {self.where} works again")

    def mark_failing(self, why: str) -> None:
        """Start an episode whose warning was already logged (serve's start-up
        check), so that the first failing call does not warn again."""
        with self._lock:
            if self._failing is None:
                self._failing = why
                self._retry_pause = RETRY_FIRST
                self._retry_at = 0.0  # try at once: it may work by the first message

    @property
    def failing(self) -> bool:
        return self._failing is not None

    def problem(self) -> str | None:
        """Why the server cannot serve as the store now, or None: it answers
        PING and runs a script within state_timeout, and is Redis 6 or later
        (S-1403: check; serve's start-up check). Never raises."""
        try:
            self._redis.ping()
            self._redis.eval(scripts.PROBE, 0)  # Redis EVAL of our fixed Lua script (no input in it)
        except self._errors as e:
            return f"{self.where}: {_why(e)}"
        try:
            version = str(self._redis.info("server").get("redis_version", ""))
        except self._errors:
            return None  # INFO may be refused (ACLs, managed services): the scripts run, enough
        major = version.split(".", 1)[0]
        if major.isdigit() and int(major) < MIN_REDIS_MAJOR:
            return f"{self.where}: Redis {version}; msa needs Redis {MIN_REDIS_MAJOR} or later (or Valkey)"
        return None

    def close(self) -> None:
        idle, self._idle = self._idle, []
        for conn in idle:
            try:
                conn.disconnect()
            except self._errors:
                pass
        try:
            self._redis.connection_pool.disconnect()
        except self._errors:
            pass

    # -- the secret (S-514) ---------------------------------------------------------------
    def secret(self) -> bytes:
        """The secret every host shares: Redis's (set once with SET NX, from
        this host's local copy when it has one), kept in ``state_dir/secret``
        so that an outage cannot change it here. While Redis cannot be
        asked: the local copy, made now on a host that never had one (its
        own until Redis answers; then Redis's wins, said once). OSError when
        Redis cannot be asked and no local copy can be read or made."""
        with self._secret_lock:
            if self._secret is not None and time.monotonic() - self._secret_checked < SECRET_RECHECK:
                return self._secret
            local, damaged = self._secret, None
            if local is None and self.directory is not None:
                try:
                    local = read_secret(self.directory)
                except OSError as e:  # replaced by the shared one if Redis answers, else said
                    damaged = e
            candidate = local if local is not None else os.urandom(SECRET_OCTETS)
            shared = self._run("read the shared secret", lambda: self._eval(
                self._secret_script, [self._key("secret")], [candidate, SECRET_TTL_MS, SECRET_OCTETS]), None)
            if isinstance(shared, bytes) and len(shared) == SECRET_OCTETS:
                self._secret_checked = time.monotonic()
                if shared != local:
                    self._keep_locally(shared, replacing=local is not None or damaged is not None)
                self._secret = shared
                return shared
            if local is None:
                if damaged is not None:
                    raise damaged
                if self.directory is None:
                    raise OSError("the state store cannot be reached and there is no state_dir for a secret")
                # A first start while Redis cannot be reached: a secret of this
                # host's own, the same in all its processes, until Redis answers.
                local = load_secret(self.directory, make=lambda n: candidate)
                maillog.warning(f"state store {self.where} cannot be reached: unknown users' SCRAM salts on this "
                                f"host come from a secret of its own ({self.directory}/{SECRET_FILENAME}) until "
                                "it can; then from the shared one")
            self._secret = local
            return local

    def _keep_locally(self, value: bytes, replacing: bool) -> None:
        if self.directory is None:
            return
        try:
            replace_secret(self.directory, value)
        except OSError as e:
            maillog.warning(f"state_dir {self.directory}: cannot keep a copy of the shared secret: "
                            f"{e.strerror or e}")
            return
        if replacing:
            maillog.warning(f"state store {self.where} holds another secret than {self.directory}/secret: "
                            "using the shared one, so unknown users' SCRAM salts on this host change once")

    def _hashed(self, name: str) -> str | None:
        """A failed login's name as the store keeps it: a hash keyed with a
        key made from the shared secret, so every host hashes alike and a
        password typed as a name never reaches Redis (S-1202)."""
        if name == THROTTLE_OTHER_NAMES:
            return name  # the bucket of folded names holds no name
        try:
            secret = self.secret()
        except OSError:
            return None
        if self._name_key is None or self._name_key[0] != secret:
            self._name_key = (secret, hashlib.blake2b(secret, digest_size=32, person=b"msa-login-names").digest())
        return hashlib.blake2b(name.encode("utf-8", "surrogatepass"), key=self._name_key[1],
                               digest_size=16).hexdigest()

    # -- login failures (S-511) -----------------------------------------------------------
    def delay(self, client: str) -> float:
        """Seconds to wait before answering the next AUTH from ``client``:
        its failures in Redis, or those this process kept while Redis could
        not take them, whichever are more."""
        values = self._run("read login failures", lambda: self._command("HVALS", self._key("fail", client)), [])
        stored = 0
        for value in values:
            head = value.split(b":", 1)[0]
            stored += int(head) if head.isdigit() else 0
        failures = min(max(stored, self.fallback.failures(client)), THROTTLE_MAX_COUNTED_FAILURES)
        if failures == 0:
            return 0.0
        return min(THROTTLE_FIRST_DELAY_SECONDS * 2 ** (failures - 1), THROTTLE_MAX_DELAY_SECONDS)

    def failed(self, client: str, name: str) -> None:
        """One failed AUTH from ``client`` for user ``name`` (S-511): in
        Redis, or, when Redis cannot take it, in this process's memory (so
        that a success on another host, which Redis sees, is not undone
        here by a copy this host kept)."""
        hashed = self._hashed(name)
        recorded = hashed is not None and self._run("record a login failure", lambda: self._eval(
            self._failed_script, [self._key("fail", client)],
            [hashed, THROTTLE_OTHER_NAMES, THROTTLE_MAX_NAMES, THROTTLE_MAX_COUNTED_FAILURES,
             int(THROTTLE_FORGET_SECONDS * 1000)]) is not None, False)
        if not recorded:
            self.fallback.failed(client, name)

    def succeeded(self, client: str, name: str) -> None:
        """A success forgets that name's failures from that address only."""
        self.fallback.succeeded(client, name)
        hashed = self._hashed(name)
        if hashed is None:
            return
        self._run("forget login failures", lambda: self._command("HDEL", self._key("fail", client), hashed), None)

    # -- sending reservations (S-1201) ----------------------------------------------------
    def reserve(self, user: str, kind: str, limit: int, period: float, step: float = 1.0) -> Hold | None:
        """Count one message (``kind`` "messages") or one recipient
        ("recipients") for ``user`` if fewer than ``limit`` were counted in
        the last ``period`` seconds of the server's clock: one script. The
        hold; None when the limit is reached; NOT_COUNTED when Redis fails
        (the limits fail open, S-1402)."""
        kind = "messages" if kind == "messages" else "recipients"
        step_ms = max(1, round(step * 1000))
        at = self._run("reserve sending counts", lambda: self._eval(
            self._reserve, [self._window(kind, user)], [limit, max(1, round(period * 1000)), step_ms]), None)
        if at is None:
            return NOT_COUNTED
        if int(at) < 0:
            return None
        messages, recipients = (1, 0) if kind == "messages" else (0, 1)
        return Hold(user, int(at) / 1000, messages, recipients)

    def release(self, holds: Iterable[Hold]) -> None:
        """Give reservations back (the message was not accepted)."""
        back: dict[tuple[bytes, str], int] = {}
        for h in holds:
            if not h.counted:
                continue
            at = str(round(h.at * 1000))
            for kind, n in (("messages", h.messages), ("recipients", h.recipients)):
                if n:
                    back[(self._window(kind, h.user), at)] = back.get((self._window(kind, h.user), at), 0) + n
        if not back:
            return
        keys = [key for key, _ in back]
        args: list[Any] = []
        for (_, at), n in back.items():
            args += [at, n]
        self._run("give back sending counts", lambda: self._eval(self._release, keys, args), None)

    def first_refusal(self, user: str, kind: str, period: float) -> bool:
        """True for the first limit refusal of ``user`` in a window of
        ``period`` seconds (S-1201: logged once); fails towards logging."""
        return bool(self._run("note a limit refusal", lambda: self._command(
            "SET", self._key("noted", kind, user), b"1", "NX", "PX", max(1, round(period * 1000))), True))

    def _usage(self, user: str, periods: tuple[float, float], now_ms: int) -> Usage:
        counts = []
        for kind, period in zip(("messages", "recipients"), periods, strict=True):
            since = now_ms - period * 1000
            steps = self._redis.hgetall(self._window(kind, user))
            counts.append(sum(int(n) for at, n in steps.items() if at.isdigit() and int(at) > since))
        return Usage(*counts)

    def _now_ms(self) -> int:
        seconds, micros = self._redis.time()
        return int(seconds) * 1000 + int(micros) // 1000

    def usage(self, user: str, messages_period: float, recipients_period: float) -> Usage | None:
        """What ``user`` holds in the two windows, or None when Redis fails."""
        return self._run("read sending counts",
                         lambda: self._usage(user, (messages_period, recipients_period), self._now_ms()), None)

    def counts(self, user: str | None, periods: tuple[float, float]) -> dict[str, Usage]:
        """``msa.py limits``: every user's (or one user's) usage in the
        windows; raises redis-py's errors (the admin command reports them)."""
        now = self._now_ms()
        if user is not None:
            users = {user}
        else:
            users = set()
            for kind in ("messages", "recipients"):
                start = self._window(kind, "")
                for key in self._redis.scan_iter(match=_escape_glob(start) + b"*", count=1000):
                    try:
                        users.add(key[len(start):].decode("utf-8", "surrogatepass"))
                    except UnicodeDecodeError:
                        continue  # not a key msa wrote
        found = {name: self._usage(name, periods, now) for name in sorted(users)}
        return {name: usage for name, usage in found.items() if usage.messages or usage.recipients}

    def reset(self, user: str) -> int:
        """``msa.py limits reset USER``: forget the user's counts and refusal
        notes in one transaction; how many messages were counted."""
        pipe = self._redis.pipeline(transaction=True)
        pipe.hget(self._window("messages", user), "total")
        pipe.delete(self._window("messages", user), self._window("recipients", user),
                    self._key("noted", "messages", user), self._key("noted", "recipients", user))
        total, _ = pipe.execute()
        return int(total) if total is not None and total.isdigit() else 0
