"""The shell side of AUTH: throttle, cache, argon2 slots, verify, log.

Order (DESIGN.md): the per-IP delay first (it never holds an argon2 slot,
S-511), then the verified-credential cache (S-512), then a bounded wait
for an argon2 slot (30 s, else 454 4.7.0, S-503), then `sasl.verify`.
The tables are pure objects from sasl/; this module holds their lock.
"""

from __future__ import annotations

import threading
import time
from typing import Any
from collections.abc import Callable

import sasl
from sasl import AuthResult, CredentialCache, Failure, Throttle, client_key

from . import maillog

SLOT_WAIT = 30.0  # seconds (DESIGN.md "Argon2")


class Authenticator:
    def __init__(self, server: Any, cache_ttl: float) -> None:
        self.server = server
        self._lock = threading.Lock()
        self.throttle = Throttle()
        self.cache = CredentialCache(cache_ttl)

    def mechanism_factory(self, hostname: str) -> Callable[[str], Any]:
        def make(name: str) -> Any:
            return sasl.new_mechanism(name, hostname=hostname)

        return make

    def check(self, session: Any, ev: Any) -> AuthResult:
        key = client_key(session.ip)
        with self._lock:
            delay = self.throttle.delay(key)
        if delay > 0:
            time.sleep(delay)
        creds = ev.credentials
        if isinstance(creds, Failure):
            result = AuthResult(False, None)
            name = ""
        else:
            result = self._verify(creds)
            name = creds.username.lower()
        with self._lock:  # S-511: a success forgets only its own name's failures
            if result.ok:
                self.throttle.succeeded(key, name)
            elif not result.temporary:
                self.throttle.failed(key, name)
        if result.ok:
            maillog.auth_ok(session.sid, session.client, ev.mechanism, result.username or "")
        elif result.temporary:
            maillog.warning(f"{session.client}: SASL {ev.mechanism} authentication aborted: no verification slot")
        else:
            maillog.auth_failed(session.client, ev.mechanism, result.username, "authentication failure")
        return result

    def _verify(self, creds: Any) -> AuthResult:
        users = self.server.runtime.users
        user = users.get(creds.username)
        if user is not None and creds.password is not None:
            with self._lock:
                if self.cache.hit(user.name, creds.password, user.argon2):
                    return AuthResult(True, user.name)
        if not self.server.argon2_slots.acquire(timeout=SLOT_WAIT):
            return AuthResult(False, user.name if user else None, temporary=True)
        try:
            with self.server.affinity.wide():  # argon2's lanes may use every core
                result = sasl.verify(users, creds)
        finally:
            self.server.argon2_slots.release()
        if result.ok and user is not None and creds.password is not None:
            with self._lock:
                self.cache.remember(user.name, creds.password, user.argon2)
        return result
