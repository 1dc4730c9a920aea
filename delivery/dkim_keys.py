"""The DKIM keys of `dkim_keys/DOMAIN/SELECTOR.key` (CONTRACT.md "App
passwords, keys and state", SPEC.md S-1103).

Loaded at start and on reload, each file through files.read_regular (a
FIFO or /dev/zero never hangs or floods msa) and `cryptography`'s PEM
loader. A file that cannot sign (unreadable, not a PEM private key, a
passphrase, RSA under 1024 bits) is a `PATH: why` problem and is skipped;
on reload its last good version stays in force. A domain that has key
files but no usable key is `broken`: its mail gets 451 4.3.0 rather than
leaving unsigned (S-1103). `cryptography` is imported only when there is a
key file to load.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable
from dataclasses import dataclass, field

from signing import Key, key_from_private

from util import files

#: A domain directory: lower-case LDH labels (the A-label form).
_DOMAIN = re.compile(r"[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?(?:\.[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?)+\Z")
#: A selector (RFC 6376 §3.1): dot-separated sub-domain labels.
_SELECTOR = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*\Z")
SUFFIX = ".key"
#: Key files looked at per directory, at most (a directory is not a dump).
MAX_FILES = 1000


@dataclass(frozen=True, slots=True)
class KeySet:
    """Usable keys by domain, and the domains whose keys all failed."""

    by_domain: dict[str, tuple[Key, ...]] = field(default_factory=dict)
    by_path: dict[str, Key] = field(default_factory=dict, repr=False)
    broken: dict[str, tuple[str, ...]] = field(default_factory=dict)  # domain -> unusable files

    def keys_for(self, domain: str) -> tuple[Key, ...]:
        return self.by_domain.get(domain, ())


class CryptographyMissing(Exception):
    """There are keys, but not the package that can use them."""


def cryptography_problem() -> str | None:
    try:
        import cryptography  # noqa: F401
    except ImportError:
        return "the cryptography package is missing (Debian: apt install python3-cryptography)"
    return None


def key_files(directory: str) -> tuple[list[tuple[str, str, str]], list[str]]:
    """(path, domain, selector) of every key file, and the problems of
    names that cannot be a domain or a selector."""
    found: list[tuple[str, str, str]] = []
    problems: list[str] = []
    try:
        domains = sorted(os.listdir(directory))
    except FileNotFoundError:
        return [], [f"{directory}: no such directory"]
    except OSError as e:
        return [], [f"{directory}: cannot read: {e.strerror}"]
    for name in domains:
        sub = os.path.join(directory, name)
        if not os.path.isdir(sub):
            continue
        if not _DOMAIN.match(name):
            problems.append(f"{sub}: not a domain in A-label form (lower case, xn-- for IDN)")
            continue
        try:
            entries = sorted(os.listdir(sub))[:MAX_FILES]
        except OSError as e:
            problems.append(f"{sub}: cannot read: {e.strerror}")
            continue
        for entry in entries:
            if not entry.endswith(SUFFIX):
                continue
            selector = entry[: -len(SUFFIX)]
            path = os.path.join(sub, entry)
            if not _SELECTOR.match(selector):
                problems.append(f"{path}: {selector!r} is not a selector (RFC 6376 §3.1)")
                continue
            found.append((path, name, selector))
    return found, problems


def load_key(path: str, domain: str, selector: str) -> Key | str:
    """One key file, or why it cannot sign."""
    from cryptography.exceptions import UnsupportedAlgorithm
    from cryptography.hazmat.primitives import serialization

    try:
        data = files.read_regular(path, files.TLS_MAX_OCTETS)
    except files.FileProblem as e:
        return e.why
    try:
        private = serialization.load_pem_private_key(data, password=None)
    except TypeError:
        return "the key has a passphrase; msa runs unattended and needs it without one"
    except (ValueError, UnsupportedAlgorithm) as e:
        return f"not a PEM private key ({type(e).__name__})"
    return key_from_private(domain, selector, private)


def load(directory: str, previous: KeySet | None = None) -> tuple[KeySet, list[str]]:
    """Every key under `directory`, the last good version of those that
    fail now, and the problems as `PATH: why`."""
    found, problems = key_files(directory)
    if found and (missing := cryptography_problem()):
        raise CryptographyMissing(f"{directory}: {missing}")
    by_path: dict[str, Key] = {}
    failed: dict[str, list[str]] = {}
    for path, domain, selector in found:
        got = load_key(path, domain, selector)
        if isinstance(got, Key):
            by_path[path] = got
            continue
        old = previous.by_path.get(path) if previous is not None else None
        if old is not None:
            by_path[path] = old
            problems.append(f"{path}: {got}; the key loaded before stays in force")
        else:
            problems.append(f"{path}: {got}; skipped")
            failed.setdefault(domain, []).append(path)
    by_domain: dict[str, list[Key]] = {}
    for key in by_path.values():
        by_domain.setdefault(key.domain, []).append(key)
    broken = {d: tuple(paths) for d, paths in failed.items() if d not in by_domain}
    return KeySet({d: tuple(k) for d, k in by_domain.items()}, by_path, broken), problems


class LazyKeySet:
    """A KeySet loaded at its first use: inetd mode starts one process per
    connection, and most sessions send nothing, so none should pay for
    `cryptography` and the key checks (about 40 ms per RSA key) before
    the greeting. Problems go to `warn` when the keys are loaded."""

    def __init__(self, directory: str, warn: Callable[[str], None]) -> None:
        self._directory = directory
        self._warn = warn
        self._keys: KeySet | None = None

    def _load(self) -> KeySet:
        if self._keys is None:
            keys, problems = load(self._directory)  # `cryptography` was checked for at start
            for p in problems:
                self._warn(f"dkim: {p}")
            self._keys = keys
        return self._keys

    @property
    def by_domain(self) -> dict[str, tuple[Key, ...]]:
        return self._load().by_domain

    @property
    def broken(self) -> dict[str, tuple[str, ...]]:
        return self._load().broken

    def keys_for(self, domain: str) -> tuple[Key, ...]:
        return self._load().keys_for(domain)
