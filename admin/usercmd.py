"""``msa.py user ...``: editing the users database (CONTRACT.md "Command line").

This module owns the ``user`` subcommands (add, passwd, senders, del, list,
import): reading passwords (twice with getpass on a terminal, or one line
with ``--password-stdin``), and atomic edits: an exclusive ``flock`` on
``PATH.lock`` (waited for up to ``edit.LOCK_WAIT_SECONDS``, then exit 75), read,
edit the text with ``sasl.userdb``'s functions, which keep comments and
line order, write a temporary file in the same directory (mode 0600, or
0640 when the old file was group-readable and its group can be kept,
SPEC.md S-1012), ``fsync``, ``rename``, ``fsync`` the directory. The file
format and every rule about names, hashes and senders belong to ``sasl``.
It never prints a hash. Exit codes (CONTRACT.md): 0 done, 1 bad input or a
broken database (``PATH:LINE: why`` on stderr), 75 the database is locked.
"""

from __future__ import annotations

import argparse
import getpass
import os
import re
import sys
from collections.abc import Callable
from dataclasses import dataclass
from typing import TextIO

from sasl import (
    User, UserDB, UserDBError, add_users, check_sender, delete_user, hash_password, hash_problem, name_problem,
    nondefault_params, parse, replace_user,
)  # fmt: skip
from sasl import scram
from sasl.limits import MAX_PASSWORD_OCTETS, SCRAM_DEFAULT_ITERATIONS, SCRAM_MAX_ITERATIONS, SCRAM_MIN_ITERATIONS
from sasl.md5state import cram_md5_credential
from sasl.phc import argon2_problem

from .edit import Fail as _Fail, database as _database, lock as _lock, read_users as _read, write as _write

__all__ = ["build_parser", "run"]

_SENDER_HELP = "permitted sender: user@domain (and user+tag@domain) or @domain; repeatable"


@dataclass(frozen=True, slots=True)
class _Streams:
    stdin: TextIO | None
    stdout: TextIO
    stderr: TextIO


def build_parser(user_parser: argparse.ArgumentParser) -> None:
    """Add the ``user`` subcommands to ``user_parser`` (dest ``user_command``).

    Each subcommand also accepts ``-c/--config`` and ``--users`` after its
    arguments, as CONTRACT.md writes them (``user add NAME -c CONF``), with
    ``default=SUPPRESS`` so that the values and defaults the caller defines
    on ``user_parser`` itself are kept when they are not given there.
    """
    location, hidden = argparse.ArgumentParser(add_help=False), argparse.SUPPRESS
    location.add_argument("-c", "--config", default=hidden, metavar="CONF", help="configuration file")
    location.add_argument("--users", default=hidden, metavar="FILE", help="users database (instead of -c)")
    commands = user_parser.add_subparsers(dest="user_command", metavar="COMMAND", required=True)

    def command(name: str, text: str) -> argparse.ArgumentParser:
        return commands.add_parser(name, help=text, description=text, parents=[location])

    add, passwd, senders, delete = (
        command("add", "add a user with an argon2id hash"),
        command("passwd", "change a user's password"),
        command("senders", "replace a user's permitted senders"),
        command("del", "remove a user"),
    )
    for sub in (add, passwd, senders, delete):
        sub.add_argument("name", metavar="NAME")
    add.add_argument("--sender", action="append", default=[], metavar="ADDR", help=_SENDER_HELP)
    for sub in (add, passwd):
        sub.add_argument("--cram-md5", action="store_true", help="also store a CRAM-MD5 credential")
        sub.add_argument("--scram", action="store_true", help="also store a SCRAM-SHA-256 credential")
        sub.add_argument("--scram-iterations", type=_iterations, default=None, metavar="N",
                         help=f"PBKDF2 iterations of the SCRAM credential (default {SCRAM_DEFAULT_ITERATIONS}, "
                         f"at most {SCRAM_MAX_ITERATIONS})")
        sub.add_argument("--password-stdin", action="store_true", help="read the password from stdin")
    senders.add_argument("addresses", nargs="+", metavar="ADDR")
    command("list", "list users and their senders (never hashes)")
    imports = command("import", "add users from Dovecot passwd-files ({ARGON2ID}, {CRAM-MD5}, {SCRAM-SHA-256})")
    imports.add_argument("files", nargs="+", metavar="FILE")


def _iterations(text: str) -> int:
    if not text.isdigit() or not SCRAM_MIN_ITERATIONS <= int(text) <= SCRAM_MAX_ITERATIONS:
        raise argparse.ArgumentTypeError(f"must be a whole number from {SCRAM_MIN_ITERATIONS} to "
                                         f"{SCRAM_MAX_ITERATIONS} (S-514)")  # fmt: skip
    return int(text)


def _scram(args: argparse.Namespace, password: bytes, before: User | None = None) -> str | None:
    """The SCRAM credential to store: with --scram, or when the user had one
    (kept, it would keep the old password valid), at the iterations asked
    for, else those it had, else the default."""
    iterations = getattr(args, "scram_iterations", None)
    old = scram.parse_credential(before.scram) if before is not None and before.scram else None
    if not getattr(args, "scram", False) and iterations is None and not isinstance(old, scram.ScramCredential):
        return None
    if iterations is None:
        iterations = old.iterations if isinstance(old, scram.ScramCredential) else SCRAM_DEFAULT_ITERATIONS
    return scram.format_credential(scram.make_credential(password, iterations))


def run(
    args: argparse.Namespace, users_path: str, *,
    stdin: TextIO | None = None, stdout: TextIO | None = None, stderr: TextIO | None = None,
    apps_path: str | None = None,
) -> int:  # fmt: skip
    """Run the parsed ``user`` subcommand on ``users_path``; the exit status.
    ``apps_path``: the app passwords file, whose lines ``del`` removes too."""
    streams = _Streams(stdin or sys.stdin, stdout or sys.stdout, stderr or sys.stderr)
    args.apps_path = apps_path
    try:
        _COMMANDS[args.user_command](args, users_path, streams)
    except _Fail as failure:
        for message in failure.messages:
            print(message, file=streams.stderr)
        return failure.code
    return 0


def _name(raw: str) -> str:
    why = name_problem(raw) or name_problem(raw.lower())
    if why:
        raise _Fail(1, f"bad user name: {why}")
    return raw.lower()


def _senders(addresses: list[str]) -> tuple[str, ...]:
    problems = [f"bad sender {a!r}: {why}" for a in addresses if (why := check_sender(a))]
    if problems:
        raise _Fail(1, *problems)
    return tuple(address.lower() for address in addresses)


def _password(args: argparse.Namespace, name: str, streams: _Streams) -> bytes:
    """The new password as UTF-8 octets (S-509); refused if empty or too long."""
    if streams.stdin is None:
        raise _Fail(1, "no standard input to read the password from")
    if args.password_stdin:
        binary = getattr(streams.stdin, "buffer", None)  # the octets as sent
        line = binary.readline().decode("utf-8", "surrogateescape") if binary else streams.stdin.readline()
        text = line[:-2] if line.endswith("\r\n") else line.removesuffix("\n")  # the newline only
    else:
        if not streams.stdin.isatty():
            raise _Fail(1, "no terminal to ask for the password on: use --password-stdin")
        try:
            text = getpass.getpass(f"New password for {name}: ")
            if getpass.getpass("Same password again: ") != text:
                raise _Fail(1, "the two passwords differ; nothing changed")
        except (EOFError, KeyboardInterrupt):
            raise _Fail(1, "no password given; nothing changed") from None
    try:
        password = text.encode("utf-8")
    except UnicodeEncodeError:
        raise _Fail(1, "the password is not valid UTF-8") from None
    if not password:
        raise _Fail(1, "empty password refused")
    if len(password) > MAX_PASSWORD_OCTETS:  # RFC 4616 §2, S-505
        raise _Fail(1, "password longer than 255 octets refused (PLAIN and LOGIN cannot send it)")
    return password


# --- atomic edits -------------------------------------------------------------


def _edit(path: str, change: Callable[[str], str], *, create: bool = False) -> None:
    """Apply ``change`` to the database text under the lock, atomically."""
    real = os.path.realpath(path)  # a symlinked users.db stays a symlink
    lock_fd = _lock(real)
    try:
        text = _read(real, missing_ok=create)
        try:
            new_text = change(text)
        except UserDBError as error:
            raise _Fail(1, *error.problems) from None
        try:
            _write(real, new_text.encode("utf-8"))
        except OSError as error:
            raise _Fail(1, f"{path}: cannot write: {error.strerror or error}") from None
    finally:
        os.close(lock_fd)


def _current(text: str, path: str, name: str) -> User:
    if (user := parse(text, path).get(name)) is None:
        raise UserDBError([f"{path}: no user {name}"])
    return user


# --- the commands -------------------------------------------------------------


def _add(args: argparse.Namespace, path: str, streams: _Streams) -> None:
    name = _name(args.name)
    senders = _senders(args.sender)
    if _database(path).get(name) is not None:
        raise _Fail(1, f"{path}: user {name} already exists")
    password = _password(args, name, streams)
    cram = cram_md5_credential(password) if args.cram_md5 else None
    scram_text = _scram(args, password)
    user = User(name, hash_password(password), cram, senders, scram_text)
    _edit(path, lambda text: add_users(text, [user], path=path), create=True)
    extra = [kind for kind, have in (("CRAM-MD5", cram), ("SCRAM-SHA-256", scram_text)) if have]
    print(f"added user {name}" + (f" with a {' and a '.join(extra)} credential" if extra else ""),
          file=streams.stdout)


def _passwd(args: argparse.Namespace, path: str, streams: _Streams) -> None:
    name = _name(args.name)
    before = _database(path, missing_ok=False).get(name)
    if before is None:
        raise _Fail(1, f"{path}: no user {name}")
    password = _password(args, name, streams)
    phc = hash_password(password)  # a SCRAM-only (imported) user gets an argon2id hash again (S-514)
    cram = cram_md5_credential(password) if args.cram_md5 else None
    scram_text = _scram(args, password, before)

    def change(text: str) -> str:
        user = _current(text, path, name)
        return replace_user(text, User(user.name, phc, cram, user.senders, scram_text), path=path)

    _edit(path, change)
    print(f"changed the password of {name}" + (" and its SCRAM-SHA-256 credential" if scram_text else ""),
          file=streams.stdout)
    if before.cram and not cram:  # kept, it would keep the old password valid
        print(f"removed the old CRAM-MD5 credential of {name}: use --cram-md5 to store a new one"
              " (CRAM-MD5 is offered only while every user has one)", file=streams.stdout)  # fmt: skip


def _set_senders(args: argparse.Namespace, path: str, streams: _Streams) -> None:
    name = _name(args.name)
    senders = _senders(args.addresses)

    def change(text: str) -> str:
        user = _current(text, path, name)
        return replace_user(text, User(user.name, user.argon2, user.cram, senders, user.scram), path=path)

    _edit(path, change)
    print(f"{name} may now send as: {' '.join(senders)}", file=streams.stdout)


def _delete(args: argparse.Namespace, path: str, streams: _Streams) -> None:
    name = _name(args.name)
    _edit(path, lambda text: delete_user(text, name, path=path))
    print(f"deleted user {name}", file=streams.stdout)
    if getattr(args, "apps_path", None):
        from . import appcmd

        if revoked := appcmd.revoke_user(args.apps_path, name):
            print(f"revoked {revoked} app password(s) of {name}", file=streams.stdout)


def _list(args: argparse.Namespace, path: str, streams: _Streams) -> None:
    if not os.path.exists(path):
        print(f"{path}: no such file: no users", file=streams.stderr)
    for user in _database(path):
        marks = "".join(mark for mark, have in (("  [cram-md5]", user.cram), ("  [scram-sha-256]", user.scram),
                                               ("  [no argon2id hash]", not user.argon2)) if have)
        print(f"{user.name}  {' '.join(user.senders) or '(no senders)'}{marks}", file=streams.stdout)


_SCHEME = re.compile(r"\{([A-Za-z0-9._-]+)\}(.*)", re.DOTALL)
_OTHER_HASHES = ("ARGON2I", "BLF-CRYPT", "SHA512-CRYPT", "SHA256-CRYPT", "CRYPT")
_IMPORTABLE = ("{ARGON2ID}, {ARGON2I}, {BLF-CRYPT}, {SHA512-CRYPT}, {SHA256-CRYPT} or {SCRAM-SHA-256}, "
               "and {CRAM-MD5} beside them")


def _imported_value(scheme: str, value: str) -> tuple[str, str, str | None]:
    """``(slot, value, why not)`` for one Dovecot password field."""
    if scheme == "ARGON2ID":
        why = argon2_problem(value)
        return "argon2", value, why and f"bad argon2 hash: {why}"
    if scheme in _OTHER_HASHES:  # S-1304: kept as Dovecot wrote them, prefix and all
        why = hash_problem(f"{{{scheme}}}{value}")
        return "argon2", f"{{{scheme}}}{value}", why
    if scheme == "SCRAM-SHA-256":
        parsed = scram.parse_credential(value)
        if isinstance(parsed, str):
            return "scram", value, f"bad SCRAM-SHA-256 credential: {parsed}"
        return "scram", scram.format_credential(parsed), None
    if scheme in ("CRAM-MD5", "HMAC-MD5"):  # Dovecot's two names for it
        bad = len(value) != 64 or not all(c in "0123456789abcdefABCDEF" for c in value)
        return "cram", value.lower(), "bad CRAM-MD5 credential: expected 64 hex digits" if bad else None
    return "", value, f"scheme {{{scheme}}} cannot be imported (only {_IMPORTABLE})"


def _read_passwd_files(files: list[str]) -> tuple[dict[str, dict[str, tuple[str, str]]], list[str]]:
    """Dovecot passwd-file entries: name -> {"argon2"|"cram": (value, FILE:LINE)}."""
    found: dict[str, dict[str, tuple[str, str]]] = {}
    problems: list[str] = []
    broken: set[str] = set()  # names with a bad line: no second complaint
    for file in files:
        try:
            # A BOM an editor put at the start is no part of the first name,
            # as in users.db; any other U+FEFF is refused in the name (S-509).
            lines = _read(file, missing_ok=False).removeprefix("\ufeff").split("\n")
        except _Fail as failure:
            problems.extend(failure.messages)
            continue
        for number, raw in enumerate(lines, 1):
            line, where = raw.strip(" \t\r"), f"{file}:{number}"
            if not line or line.startswith("#"):
                continue
            fields = line.split(":")  # user:password:uid:gid:gecos:home:shell:extra
            name, match = fields[0].lower(), _SCHEME.fullmatch(fields[1]) if len(fields) > 1 else None
            why = name_problem(fields[0]) or name_problem(name)
            if why or match is None:
                why = f"bad user name: {why}" if why else "expected user:{SCHEME}password"
                problems.append(f"{where}: {why}")
                continue
            scheme = match.group(1).upper()
            slot, value, why = _imported_value(scheme, match.group(2))
            entry = found.setdefault(name, {})
            if why:
                problems.append(f"{where}: {why}")
                broken.add(name)
            elif slot in entry:
                problems.append(f"{where}: second {{{scheme}}} line for {name} (first at {entry[slot][1]})")
            else:
                entry[slot] = (value, where)
    for name, entry in found.items():
        if "argon2" not in entry and "scram" not in entry and "cram" in entry and name not in broken:
            problems.append(f"{entry['cram'][1]}: user {name} has only a {{CRAM-MD5}} credential; "
                            "an {ARGON2ID} or {SCRAM-SHA-256} one is needed for PLAIN and LOGIN")  # fmt: skip
    return found, problems


def _import(args: argparse.Namespace, path: str, streams: _Streams) -> None:
    found, problems = _read_passwd_files(args.files)
    if problems:
        raise _Fail(1, *problems, "nothing imported")
    users = [User(name, e.get("argon2", ("",))[0], e.get("cram", (None,))[0], (), e.get("scram", (None,))[0])
             for name, e in found.items()]  # fmt: skip

    def change(text: str) -> str:
        db = parse(text, path)
        taken = [
            f"{next(iter(found[u.name].values()))[1]}: user {u.name} exists in {path}" for u in users if u.name in db
        ]
        if taken:
            raise UserDBError([*taken, "nothing imported"])
        return add_users(text, users, path=path)

    _edit(path, change, create=True)
    print(f"imported {len(users)} users: {' '.join(u.name for u in users)}", file=streams.stdout)
    print("they have no permitted senders yet: set them with 'msa.py user senders NAME ADDR...'",
          file=streams.stdout)  # fmt: skip
    if slow := nondefault_params(UserDB(path, users)):
        print(f"{len(slow)} imported hashes are not argon2id with the default parameters, so their"
              " check takes a different time (SPEC.md S-510); 'msa.py user passwd' rehashes them",
              file=streams.stdout)  # fmt: skip


_COMMANDS: dict[str, Callable[[argparse.Namespace, str, _Streams], None]] = {
    "add": _add, "passwd": _passwd, "senders": _set_senders, "del": _delete, "list": _list, "import": _import,
}  # fmt: skip
