"""`msa.py app add|list|del`: app passwords (CONTRACT.md, SPEC.md S-515).

`add USER LABEL [--sender ADDR]...` makes a secret (sasl.apppass), prints
it once on standard output and stores only its hash; `--sender` narrows
what that device may send as, within the user's own senders. `list [USER]`
shows labels, creation times and senders, never a secret. `del USER LABEL`
revokes one. Edits are atomic under a lock, keep comments and order, and
write mode 0600, as `msa.py user` does for users.db (admin/usercmd.py); a
running daemon picks the change up like a users.db change.

Exit codes: 0 done, 1 bad input, 2 usage, 75 when the file stays locked.
"""

from __future__ import annotations

import argparse
import datetime
import os
import sys
from typing import Any, TextIO

from sasl import UserDBError, apppass
from util.files import USERS_MAX_OCTETS, FileMissing, FileProblem, read_regular

from . import config_option, edit


def build_parser(app_parser: argparse.ArgumentParser) -> None:
    location = config_option()
    commands = app_parser.add_subparsers(dest="app_command", metavar="COMMAND", required=True)
    add = commands.add_parser("add", parents=[location], help="make an app password for USER (printed once)")
    add.add_argument("user", metavar="USER")
    add.add_argument("label", metavar="LABEL", help="names the device: letters, digits, '.', '_', '-'")
    add.add_argument("--sender", action="append", default=[], metavar="ADDR",
                     help="narrow what it may send as (one of the user's senders or inside one); repeatable")
    listing = commands.add_parser("list", parents=[location], help="list app passwords (never the secrets)")
    listing.add_argument("user", metavar="USER", nargs="?")
    delete = commands.add_parser("del", parents=[location], help="revoke USER's app password LABEL")
    delete.add_argument("user", metavar="USER")
    delete.add_argument("label", metavar="LABEL")


def _read(path: str) -> str:
    try:
        return apppass.decode(read_regular(path, USERS_MAX_OCTETS), path)
    except FileMissing:
        return ""
    except FileProblem as error:
        raise edit.Fail(1, str(error)) from None
    except apppass.AppPasswordError as error:
        raise edit.Fail(1, *error.problems) from None


def _edit(path: str, change: Any) -> None:
    """``change`` applied to the file's text under the lock, atomically."""
    real = os.path.realpath(path)
    lock_fd = edit.lock(real)
    try:
        text = _read(real)
        try:
            new_text = change(text)
        except (apppass.AppPasswordError, UserDBError) as error:
            raise edit.Fail(1, *error.problems) from None
        try:
            edit.write(real, new_text.encode("utf-8"))
        except OSError as error:
            raise edit.Fail(1, f"{path}: cannot write: {error.strerror or error}") from None
    finally:
        os.close(lock_fd)


def revoke_user(path: str, user: str) -> int:
    """``msa.py user del``: remove every app password of ``user``; how many."""
    if not os.path.exists(path):
        return 0
    try:
        count = len(apppass.parse(_read(path), path).for_user(user))
    except apppass.AppPasswordError as error:
        raise edit.Fail(1, *error.problems) from None
    if count:
        _edit(path, lambda text: apppass.delete_user(text, user, path=path))
    return count


def run(args: argparse.Namespace, cfg: Any, out: TextIO = sys.stdout, err: TextIO = sys.stderr) -> int:
    try:
        _COMMANDS[args.app_command](args, cfg, out, err)
    except edit.Fail as failure:
        for message in failure.messages:
            print(message, file=err)
        return failure.code
    return 0


def _user(cfg: Any, name: str) -> Any:
    """The user an app password is for: a users.db user, or (S-1305) a
    user of the configured SQL or Dovecot directory, under the name it logs
    in as, with the senders that directory gives it."""
    users = edit.database(cfg.users, missing_ok=not (cfg.sql or cfg.auth_dovecot))
    user = users.get(name)
    if user is not None:
        return user
    if not (cfg.sql or cfg.auth_dovecot):
        raise edit.Fail(1, f"{cfg.users}: no user {name}")
    from sasl import User, name_problem
    from sasl.senders import check_sender

    name = name.lower()
    if why := name_problem(name):
        raise edit.Fail(1, f"msa.py app add: bad user name: {why}")
    senders: tuple[str, ...] | None = None
    if cfg.sql:
        senders = _sql_senders(cfg, name)
    if senders is None:  # as the daemon decides (S-1305): the name, when it is an address
        senders = (name,) if "@" in name and check_sender(name) is None else ()
    return User(name, "", None, senders)


def _sql_senders(cfg: Any, name: str) -> tuple[str, ...] | None:
    from directory import Unavailable, sql

    try:
        directory = sql.SqlDirectory(sql.load(cfg.sql), warn=lambda _: None)
    except sql.SqlConfigError as e:
        raise edit.Fail(1, *e.problems) from None
    try:
        return directory.senders(name)
    except Unavailable as e:
        raise edit.Fail(75, f"sql: {e}") from None
    finally:
        directory.close()


def _add(args: argparse.Namespace, cfg: Any, out: TextIO, err: TextIO) -> None:
    user = _user(cfg, args.user)
    if why := apppass.label_problem(args.label):
        raise edit.Fail(1, f"msa.py app add: bad label: {why}")
    problems = [why for sender in args.sender if (why := apppass.narrowing_problem(sender, user.senders))]
    if problems:
        raise edit.Fail(1, *(f"msa.py app add: {why}" for why in problems))
    shown: list[str] = []
    path = cfg.app_passwords

    def change(text: str) -> str:
        existing = {entry.ident for entry in apppass.parse(text, path)}
        secret, ident, digest = apppass.generate(existing)
        created = datetime.datetime.now(datetime.timezone.utc).replace(microsecond=0)
        entry = apppass.AppPassword(user.name, args.label, ident, digest, created,
                                    tuple(sender.lower() for sender in args.sender))
        shown.append(secret)
        return apppass.add(text, entry, path=path)

    _edit(path, change)
    narrowed = f", sending only as {', '.join(args.sender)}" if args.sender else ""
    print(f"app password {args.label} for {user.name}{narrowed}: use it instead of the password on that "
          "device; it is shown only now", file=err)
    print(shown[0], file=out)


def _list(args: argparse.Namespace, cfg: Any, out: TextIO, err: TextIO) -> None:
    path = cfg.app_passwords
    if not os.path.exists(path):
        print(f"{path}: no such file: no app passwords", file=err)
        return
    try:
        apps = apppass.parse(_read(path), path)
    except apppass.AppPasswordError as error:
        raise edit.Fail(1, *error.problems) from None
    entries = apps.for_user(args.user) if args.user else tuple(apps)
    for entry in entries:
        created = entry.created.strftime("%Y-%m-%d %H:%M:%SZ")
        senders = " ".join(entry.senders) or "(the user's senders)"
        print(f"{entry.user}  {entry.label}  created {created}  {senders}", file=out)


def _delete(args: argparse.Namespace, cfg: Any, out: TextIO, err: TextIO) -> None:
    path = cfg.app_passwords
    if not os.path.exists(path):
        raise edit.Fail(1, f"{path}: no such file: no app passwords")
    _edit(path, lambda text: apppass.delete(text, args.user, args.label, path=path))
    print(f"revoked app password {args.label} of {args.user.lower()}", file=out)


_COMMANDS = {"add": _add, "list": _list, "del": _delete}
