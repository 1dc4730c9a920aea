"""The shell side of AUTH: throttle, cache, argon2 slots, verify, log.

Order (DESIGN.md): the per-IP delay first (it never holds an argon2 slot,
S-511), then the verified-credential cache (S-512), then a bounded wait
for an argon2 slot (30 s, else 454 4.7.0, S-503), then `sasl.verify`.
Login failures live in the state store (state/sqlite.py), so the delay
holds across restarts and inetd processes; the cache is a pure object from
sasl/ and this module holds its lock.
"""

from __future__ import annotations

import threading
import time
from collections import Counter, deque
from typing import Any
from collections.abc import Callable

import sasl
import sasl.scram
from sasl import AuthResult, CredentialCache, Failure, client_key
from sasl.limits import SCRAM_DEFAULT_ITERATIONS

from . import maillog

SLOT_WAIT = 30.0  # seconds (DESIGN.md "Argon2")
#: S-1306: failures remembered per path, and the longest a failure is padded
#: (a directory that hangs ends in its own timeout, a temporary failure).
PAD_SAMPLES = 16
PAD_MAX = 15.0


class Authenticator:
    def __init__(self, server: Any, cache_ttl: float) -> None:
        self.server = server
        self._lock = threading.Lock()
        self._secret: bytes | None = None  # S-514's salt secret when the store has none (derived)
        self._fake_for: Any = None  # the UserDB _fake_iterations was counted in
        self._fake_iterations = SCRAM_DEFAULT_ITERATIONS
        self.cache = CredentialCache(cache_ttl)
        self.pad = FailurePad()

    def mechanism_factory(self, hostname: str) -> Callable[[str], Any]:
        def make(name: str) -> Any:
            return sasl.new_mechanism(name, hostname=hostname, scram_lookup=self._scram_lookup,
                                      scram_fake=self._scram_fake)

        return make

    # -- SCRAM-SHA-256 (S-514) ------------------------------------------------------
    def _scram_lookup(self, name: str) -> Any:
        users = self.server.runtime.users
        user = users.get(name) if users is not None else None
        if user is None or not user.scram:
            return None
        cred = sasl.scram.parse_credential(user.scram)
        return cred if isinstance(cred, sasl.scram.ScramCredential) else None

    def _scram_fake(self, name: str) -> Any:
        """What an unknown user seems to have: a salt from the state store's
        secret (the same in every process and after restarts) and the
        iteration count most users have, so it cannot be told apart."""
        users = self.server.runtime.users
        with self._lock:
            if self._fake_for is not users:
                counts = Counter(
                    cred.iterations for user in (users or ()) if user.scram
                    if isinstance(cred := sasl.scram.parse_credential(user.scram), sasl.scram.ScramCredential)
                )
                self._fake_iterations = counts.most_common(1)[0][0] if counts else SCRAM_DEFAULT_ITERATIONS
                self._fake_for = users
            iterations = self._fake_iterations
        return sasl.scram.fake_credential(self._salt_secret(users), name, iterations)

    def _salt_secret(self, users: Any) -> bytes:
        """S-514 amended: the same in every process and after restarts,
        whatever the state store's health: ``state_dir/secret``, made once
        (with Redis, the secret every host shares, S-1401, asked of the
        store each time: it keeps it, and a host that made its own while
        Redis was down takes the shared one); should the store have none, a
        secret derived from what msa holds anyway (the TLS key, else the
        users' SCRAM keys), warned once. Never a random one per process:
        that would tell unknown names (a new salt on every connection) from
        real ones."""
        import hashlib

        try:
            return self.server.state.secret()
        except OSError as e:
            why = e.strerror or str(e)
        if self._secret is not None:
            return self._secret
        cfg = self.server.runtime.config
        source = b""
        if cfg.tls_key:
            from util import files

            try:
                source = files.read_regular(cfg.tls_key, files.TLS_MAX_OCTETS)
            except files.FileProblem:
                source = b""
        if not source:
            source = "\n".join(sorted(user.scram for user in (users or ()) if user.scram)).encode()
        maillog.warning(f"state_dir {cfg.state_dir}: cannot read or make its secret ({why}); unknown users' "
                        "SCRAM salts come from a secret derived from " + ("tls_key" if cfg.tls_key else "users.db"))
        self._secret = hashlib.blake2b(source, digest_size=32, person=b"msa-scram-salt").digest()
        return self._secret

    def check(self, session: Any, ev: Any) -> AuthResult:
        key = client_key(session.ip)
        store = self.server.state
        delay = store.delay(key)
        if delay > 0:
            time.sleep(delay)
        creds = ev.credentials
        login = _FAILED
        if isinstance(creds, Failure):
            name = ""
        else:
            name = creds.username.lower()
            login = self._login(session, creds)
        result = login.result
        if result.ok:
            senders = self._senders(login)
            if senders is None:  # the directory that says what the user may send as cannot answer
                result = AuthResult(False, result.username, temporary=True)
                login = _Login(result, login.directory, reason=f"{login.directory}: cannot read the senders")
            else:
                session.policy.logged_in(login.app, *senders)  # S-515: an app password's senders narrow these
                session.directory = login.directory
        if result.ok:
            if delay > 0:  # S-511: a success forgets only its own name's failures (if any)
                store.succeeded(key, name)
        elif not result.temporary:
            store.failed(key, name)
        result_word = "success" if result.ok else "tempfail" if result.temporary else "failure"
        self.server.metrics.auth(ev.mechanism, result_word, "app" if login.app is not None else login.directory,
                                 delay > 0)
        if result.ok:
            maillog.auth_ok(session.sid, session.client, ev.mechanism, result.username or "",
                            login.app.label if login.app is not None else None, login.directory)
        elif result.temporary:
            maillog.warning(f"{session.client}: SASL {ev.mechanism} authentication aborted: "
                            f"{login.reason or 'no verification slot'}")
        else:
            maillog.auth_failed(session.client, ev.mechanism, result.username, "authentication failure")
            if login.reason and login.directory == "dovecot":  # Dovecot's reason=, for the log only (S-1302)
                maillog.info(f"{session.sid}: {login.directory}: {maillog.esc(login.reason)}")
        return result

    # -- PLAIN and LOGIN: the directories (S-1301) ---------------------------------
    def _login(self, session: Any, creds: Any) -> _Login:
        if creds.password is None:  # CRAM-MD5 and SCRAM-SHA-256: users.db's own credentials
            return _Login(self._verify(creds), "users.db")
        runtime = self.server.runtime
        app = self._app_password(creds)
        if app is not None:  # S-515: one fast hash, no argon2 slot
            return _Login(AuthResult(True, app.user), self._directory_of(app.user), app=app)
        start = time.monotonic()
        login = self._password(session, creds)
        pad = self.pad if len(runtime.directories) > 1 else None
        if pad is not None and not login.result.ok and not login.result.temporary:
            # S-1306: a failure's reply waits as long as the slowest path to
            # one, so that no time tells which directory holds the name.
            pad.wait(login.directory, start)
        return login

    def _password(self, session: Any, creds: Any) -> _Login:
        from directory import Client

        runtime = self.server.runtime
        directories = runtime.directories
        client = Client(session.sid, session.local_ip, session.local_port, session.ip, session.port,
                        session.tls_info is not None)
        name, password = creds.username, creds.password
        for directory in directories:
            last = directory is directories[-1]
            if directory.name == "users.db" and not (directory.knows(name) or last):
                continue  # S-1301: asked first only for a name it holds a credential for
            verdict = self._ask(directory, name, password, client)
            if verdict.temporary:
                return _Login(AuthResult(False, None, temporary=True), directory.name, reason=verdict.reason)
            if verdict.known:
                user = (verdict.user or name).lower()
                return _Login(AuthResult(verdict.ok, user), directory.name, reason=verdict.reason)
        return _Login(AuthResult(False, None), "unknown")

    def _ask(self, directory: Any, name: str, password: bytes, client: Any) -> Any:
        """One directory's verdict: users.db and SQL hash locally, inside an
        argon2 slot and past the credential cache (S-512: the stored hash is
        part of its key); Dovecot waits on its socket, holding no slot."""
        from directory import Verdict

        if directory.name == "dovecot":
            return directory.authenticate(name, password, client)
        stored = directory.stored(name) if directory.name == "users.db" else None
        if stored:
            with self._lock:
                if self.cache.hit(name.lower(), password, stored):
                    return Verdict(known=True, ok=True, user=name.lower())
        if not self.server.argon2_slots.acquire(timeout=SLOT_WAIT):
            return Verdict(known=False, temporary=True, reason="no verification slot")
        try:
            with self.server.affinity.wide():  # argon2's lanes may use every core
                verdict = directory.authenticate(name, password, client)
        finally:
            self.server.argon2_slots.release()
        if verdict.ok and stored:
            with self._lock:
                self.cache.remember(name.lower(), password, stored)
        return verdict

    def _directory_of(self, user: str) -> str:
        """Which directory a user belongs to, for an app password's log line."""
        for directory in self.server.runtime.directories:
            if directory.name == "users.db":
                if directory.users.get(user) is not None:
                    return "users.db"
            else:
                return directory.name
        return "users.db"

    def _senders(self, login: _Login) -> tuple[str, Any] | None:
        """S-1305: where the user's senders come from and the rules (None:
        users.db's, read at each check so a reload applies); None when the
        directory that should say cannot answer now."""
        from directory import Unavailable
        from sasl.senders import SenderRules, check_sender

        user = login.result.username or ""
        runtime = self.server.runtime
        if runtime.users is not None and runtime.users.get(user) is not None:
            return "users.db", None
        for directory in runtime.directories:
            if directory.name == "users.db":
                continue
            try:
                found = directory.senders(user)
            except Unavailable as e:
                maillog.warning(f"{directory.name}: cannot read the senders of {maillog.esc(user)}: {e}")
                return None
            if found is not None:
                return directory.name, SenderRules(found)
        if "@" in user and not user.startswith("@") and check_sender(user) is None:
            return "the login name", SenderRules((user,))
        return "nowhere", SenderRules(())

    def _app_password(self, creds: Any) -> Any:
        """The app password PLAIN or LOGIN sent, or None (S-515): found by
        its identifier, one fast hash, no argon2 slot. It belongs to the
        name it was made for, in whichever directory (S-1305). Anything
        else, a revoked one included, is then checked as the main password
        and fails like a wrong one, with the same delay."""
        runtime = self.server.runtime
        if creds.password is None or not runtime.apps:
            return None
        return runtime.apps.find(creds.username.lower(), creds.password)

    def _verify(self, creds: Any) -> AuthResult:
        """CRAM-MD5 and SCRAM-SHA-256 against users.db (HMACs only for
        SCRAM: no argon2 slot)."""
        users = self.server.runtime.users
        if creds.mechanism == "SCRAM-SHA-256":
            return sasl.verify(users, creds, scram_fake=self._scram_fake)
        if not self.server.argon2_slots.acquire(timeout=SLOT_WAIT):
            user = users.get(creds.username)
            return AuthResult(False, user.name if user else None, temporary=True)
        try:
            return sasl.verify(users, creds)
        finally:
            self.server.argon2_slots.release()


class _Login:
    """One AUTH's outcome, with what the log and the policy need of it."""

    __slots__ = ("app", "directory", "reason", "result")

    def __init__(self, result: AuthResult, directory: str, reason: str = "", app: Any = None) -> None:
        self.result = result
        self.directory = directory  # "users.db", "sql", "dovecot", "unknown" (S-1301)
        self.reason = reason  # the directory's words, for the log only
        self.app = app  # sasl.apppass.AppPassword used, if any


_FAILED = _Login(AuthResult(False, None), "unknown")


def _median(samples: deque[float]) -> float:
    """statistics.median of a few samples, without the module: with random,
    decimal and fractions it cost every inetd session about 4 ms."""
    ordered = sorted(samples)
    middle = len(ordered) // 2
    return ordered[middle] if len(ordered) % 2 else (ordered[middle - 1] + ordered[middle]) / 2


class FailurePad:
    """S-1306: how long a failed password check takes on each path
    (`users.db`, `sql`, `dovecot`, `unknown`: every directory asked), as
    the median of its last PAD_SAMPLES failures; a failure waits until the
    slowest path's time has passed since its start. Padding successes is
    not needed (the name is then proven), and none is kept per client."""

    def __init__(self) -> None:
        self._times: dict[str, deque[float]] = {}
        self._lock = threading.Lock()

    def target(self) -> float:
        with self._lock:
            medians = [_median(t) for t in self._times.values() if t]
        return max(medians, default=0.0)

    def wait(self, path: str, start: float) -> None:
        took = time.monotonic() - start
        target = self.target()
        with self._lock:
            self._times.setdefault(path, deque(maxlen=PAD_SAMPLES)).append(took)
        if target > took:
            time.sleep(min(target - took, PAD_MAX))
