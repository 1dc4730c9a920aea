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
from collections import Counter
from typing import Any
from collections.abc import Callable

import sasl
import sasl.scram
from sasl import AuthResult, CredentialCache, Failure, client_key
from sasl.limits import SCRAM_DEFAULT_ITERATIONS

from . import maillog

SLOT_WAIT = 30.0  # seconds (DESIGN.md "Argon2")


class Authenticator:
    def __init__(self, server: Any, cache_ttl: float) -> None:
        self.server = server
        self._lock = threading.Lock()
        self._secret: bytes | None = None  # S-514's salt secret when the store has none (derived)
        self._fake_for: Any = None  # the UserDB _fake_iterations was counted in
        self._fake_iterations = SCRAM_DEFAULT_ITERATIONS
        self.cache = CredentialCache(cache_ttl)

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
        app = None
        if isinstance(creds, Failure):
            result = AuthResult(False, None)
            name = ""
        else:
            app = self._app_password(creds)
            result = AuthResult(True, app.user) if app is not None else self._verify(creds)
            name = creds.username.lower()
        if result.ok:
            if delay > 0:  # S-511: a success forgets only its own name's failures (if any)
                store.succeeded(key, name)
        elif not result.temporary:
            store.failed(key, name)
        if result.ok:
            session.policy.app = app  # S-515: its senders narrow the user's
            maillog.auth_ok(session.sid, session.client, ev.mechanism, result.username or "",
                            app.label if app is not None else None)
        elif result.temporary:
            maillog.warning(f"{session.client}: SASL {ev.mechanism} authentication aborted: no verification slot")
        else:
            maillog.auth_failed(session.client, ev.mechanism, result.username, "authentication failure")
        return result

    def _app_password(self, creds: Any) -> Any:
        """The app password PLAIN or LOGIN sent for an existing user, or None
        (S-515): found by its identifier, one fast hash, no argon2 slot.
        Anything else, a revoked one included, is then checked as the main
        password and fails like a wrong one, with the same delay."""
        runtime = self.server.runtime
        if creds.password is None or not runtime.apps or runtime.users is None:
            return None
        user = runtime.users.get(creds.username)
        return runtime.apps.find(user.name, creds.password) if user is not None else None

    def _password_check(self, creds: Any) -> AuthResult:
        """PLAIN and LOGIN: the directories in S-1301's order (directory/)."""
        from directory import Client

        verdict = None
        for directory in self.server.runtime.directories:
            verdict = directory.authenticate(creds.username, creds.password, Client())
            if verdict.known or verdict.temporary:
                break
        if verdict is None or not verdict.known:
            return AuthResult(False, None, temporary=bool(verdict and verdict.temporary))
        return AuthResult(verdict.ok, verdict.user, temporary=verdict.temporary)

    def _verify(self, creds: Any) -> AuthResult:
        users = self.server.runtime.users
        user = users.get(creds.username)
        if creds.mechanism == "SCRAM-SHA-256":  # HMACs only: no argon2 slot
            return sasl.verify(users, creds, scram_fake=self._scram_fake)
        stored = (user.argon2 or user.scram or "") if user is not None else ""  # S-512: a change misses
        if user is not None and creds.password is not None:
            with self._lock:
                if self.cache.hit(user.name, creds.password, stored):
                    return AuthResult(True, user.name)
        if not self.server.argon2_slots.acquire(timeout=SLOT_WAIT):
            return AuthResult(False, user.name if user else None, temporary=True)
        try:
            with self.server.affinity.wide():  # argon2's lanes may use every core
                result = self._password_check(creds) if creds.password is not None else sasl.verify(users, creds)
        finally:
            self.server.argon2_slots.release()
        if result.ok and user is not None and creds.password is not None:
            with self._lock:
                self.cache.remember(user.name, creds.password, stored)
        return result
