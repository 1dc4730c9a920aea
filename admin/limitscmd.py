"""`msa.py limits [USER]` and `msa.py limits reset USER` (CONTRACT.md,
SPEC.md S-1201): the sending counts in the current windows, read from the
state store the daemon and every inetd process write (with ``state =
redis://...``, the Redis server every host shares, S-1403), and clearing
one user's counts (after a hijacked account was secured, say).

Exit codes: 0 done, 1 bad input or a store that cannot be read, 2 usage,
75 (EX_TEMPFAIL) when the store stays locked or Redis cannot be reached.
"""

from __future__ import annotations

import argparse
import os
import sqlite3
import sys
from typing import Any, TextIO

EX_TEMPFAIL = 75
#: Seconds the admin command waits for Redis at least (an operator's
#: command, not a message: state_timeout may be tighter than a remote
#: server's first connection).
ADMIN_TIMEOUT = 5.0


def build_parser(limits_parser: argparse.ArgumentParser) -> None:
    # `limits [USER]` and `limits reset USER`: one optional verb, so plain
    # words rather than sub-commands (argparse would take USER for a verb).
    limits_parser.add_argument("words", nargs="*", metavar="[reset] USER",
                               help="USER: only this user's counts; reset USER: clear them")


def _words(args: argparse.Namespace) -> tuple[bool, str | None] | str:
    words = list(args.words)
    if words[:1] == ["reset"]:
        if len(words) != 2:
            return "usage: msa.py limits reset USER"
        return True, words[1].lower()
    if len(words) > 1:
        return "usage: msa.py limits [USER] | msa.py limits reset USER"
    return False, words[0].lower() if words else None


def _shown(limit: Any) -> str:
    return "no limit" if limit is None else f"limit {limit}"


def _periods(cfg: Any) -> tuple[float, float]:
    return (
        cfg.limit_messages.seconds if cfg.limit_messages else 0.0,
        cfg.limit_recipients.seconds if cfg.limit_recipients else 0.0,
    )


def _show(cfg: Any, name: str | None, counts: dict[str, Any], out: TextIO) -> int:
    print(f"messages: {_shown(cfg.limit_messages)}; recipients: {_shown(cfg.limit_recipients)}", file=out)
    if name is not None and name not in counts:
        print(f"{name}: 0 messages, 0 recipients in the current windows", file=out)
        return 0
    if not counts:
        print("no user sent anything in the current windows", file=out)
    for user, usage in counts.items():
        print(f"{user}: {usage.messages} messages, {usage.recipients} recipients in the current windows", file=out)
    return 0


def _run_redis(cfg: Any, reset: bool, name: str | None, out: TextIO, err: TextIO) -> int:
    """The same against Redis (S-1403): what every host counts together."""
    from state.redis import module_problem, shown_url

    where = f"{cfg.where('state')}: state {shown_url(cfg.state)}"
    if why := module_problem():
        print(f"{cfg.where('state')}: state: {why}", file=err)
        return 1
    import redis

    from state.redis import RedisStore

    store = RedisStore(cfg.state, cfg.state_prefix, max(cfg.state_timeout, ADMIN_TIMEOUT), cfg.state_dir)
    try:
        if reset:
            assert name is not None
            removed = store.reset(name)
            print(f"reset {name}: {removed} message(s) forgotten", file=out)
            return 0
        counts = store.counts(name, _periods(cfg))
    except (redis.ConnectionError, redis.TimeoutError, OSError) as e:
        print(f"{where}: {e}", file=err)
        return EX_TEMPFAIL
    except redis.RedisError as e:
        print(f"{where}: {e}", file=err)
        return 1
    finally:
        store.close()
    return _show(cfg, name, counts, out)


def run(args: argparse.Namespace, cfg: Any, out: TextIO = sys.stdout, err: TextIO = sys.stderr) -> int:
    parsed = _words(args)
    if isinstance(parsed, str):
        print(parsed, file=err)
        return 2
    reset, name = parsed
    if name is not None and ("\0" in name or len(name.encode("utf-8", "surrogatepass")) > 255):
        print(f"msa.py limits: {name[:40]!r} is not a user name", file=err)
        return 1
    if cfg.state != "sqlite":
        return _run_redis(cfg, reset, name, out, err)
    from state.sqlite import FILENAME, SqliteStore

    path = os.path.join(cfg.state_dir, FILENAME)
    if not os.path.isfile(path):
        if os.path.exists(path):
            print(f"{path}: not a regular file", file=err)
            return 1
        if reset:
            print(f"{path}: no state store yet; nothing to reset", file=err)
            return 0
        print(f"{path}: no state store yet: nothing was sent through msa with limits on", file=err)
        return 0
    store = SqliteStore(cfg.state_dir)
    try:
        if reset:
            assert name is not None
            removed = store.reset(name)
            print(f"reset {name}: {removed} message(s) forgotten", file=out)
            return 0
        counts = store.counts(name, _periods(cfg))
    except sqlite3.OperationalError as e:
        locked = "locked" in str(e) or "busy" in str(e)
        print(f"{path}: {e}", file=err)
        return EX_TEMPFAIL if locked else 1
    except (sqlite3.Error, OSError) as e:
        print(f"{path}: {e}", file=err)
        return 1
    finally:
        store.close()
    return _show(cfg, name, counts, out)
