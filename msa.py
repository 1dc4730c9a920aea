#!/usr/bin/env python3
"""msa: a standalone Mail Submission Agent (RFC 6409).

Command-line interface and wiring only (CONTRACT.md "Command line");
`main()` is also the entry point of the zipapp built by `make dist`.
Imports are lazy so that `inetd` mode starts fast.
"""

from __future__ import annotations

import importlib
import sys

# typing itself is not imported: inetd mode would pay for it before its greeting
# (TYPE_CHECKING as a plain False, the idiom of PEP 781; type checkers read it as True).
TYPE_CHECKING = False
if TYPE_CHECKING:
    import argparse

__version__ = "0.1.0"
DEFAULT_CONFIG = "/etc/msa/msa.conf"

#: (command, module in admin/, help)
_ADMIN_COMMANDS = (
    ("user", "usercmd", "edit the users database"),
    ("dkim", "dkimcmd", "DKIM keys: make one, print the DNS records"),
    ("pgp", "pgpcmd", "per-user OpenPGP signing keys: make one, print the public key"),
    ("app", "appcmd", "app passwords: one revocable password per device"),
    ("limits", "limitscmd", "sending counts per user in the current windows; reset USER clears them"),
)


def _parser(with_user: bool = True) -> argparse.ArgumentParser:
    import argparse

    p = argparse.ArgumentParser(
        prog="msa.py",
        description="A mail submission agent: authenticates users, checks their senders, "
        "completes the message and hands it to the local MTA's sendmail.",
    )
    p.add_argument("--version", action="version", version=f"msa {__version__}")
    sub = p.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True

    def conf(sp: argparse.ArgumentParser) -> None:
        sp.add_argument("-c", "--config", default=DEFAULT_CONFIG, metavar="CONF",
                        help=f"configuration file (default {DEFAULT_CONFIG})")

    sp = sub.add_parser("serve", help="run the daemon in the foreground")
    conf(sp)
    sp = sub.add_parser("inetd", help="serve one SMTP session on standard input/output")
    conf(sp)
    sp.add_argument("--tls", action="store_true", help="implicit TLS (port 465 style)")
    sp = sub.add_parser("check", help="validate the configuration, users database, TLS files and sendmail")
    conf(sp)
    # The admin commands (admin/); building their sub-commands costs imports
    # that inetd mode need not pay, so only when one of them may run.
    for name, module, text in _ADMIN_COMMANDS:
        sp = sub.add_parser(name, help=text)
        conf(sp)
        if name == "user":
            sp.add_argument("--users", metavar="FILE", help="the users database (default: from the configuration)")
        if with_user:
            importlib.import_module(f"admin.{module}").build_parser(sp)
    return p


def _load_config(path: str, inetd: bool = False) -> object:
    from server import config

    try:
        return config.load(path)
    except config.ConfigError as e:
        if inetd:
            from server import inetd as inetd_mode

            inetd_mode.config_failed(e.problems)
        else:
            for problem in e.problems:
                print(problem, file=sys.stderr)
        return None


def _inetd_words(words: list[str]) -> tuple[str, bool] | None:
    """(config, --tls) of `inetd` given in one of its plain spellings (-c
    CONF, --config CONF, --config=CONF, --tls), else None and argparse
    reads the words. inetd starts a process per connection, and building
    the parser costs more than a third of a bare interpreter's start-up
    (argparse, gettext, shutil); any other spelling, an abbreviation, -h
    or a mistake still goes through argparse, so nothing reads differently."""
    if not words or words[0] != "inetd":
        return None
    config, tls = DEFAULT_CONFIG, False
    rest = iter(words[1:])
    for word in rest:
        if word == "--tls":
            tls = True
        elif word in ("-c", "--config"):
            value = next(rest, None)
            if value is None or value.startswith("-"):
                return None
            config = value
        elif word.startswith("--config=") and len(word) > len("--config="):
            config = word[len("--config="):]
        else:
            return None
    return config, tls


def _inetd(config: str, tls: bool) -> int:
    cfg = _load_config(config, inetd=True)
    if cfg is None:
        return 1
    from server import inetd

    return inetd.run(cfg, tls)  # type: ignore[arg-type]


def main(argv: list[str] | None = None) -> int:
    words = sys.argv[1:] if argv is None else argv
    if (plain := _inetd_words(words)) is not None:
        return _inetd(*plain)
    daemon = bool(words) and words[0] in ("serve", "inetd", "check") and not {"-h", "--help"} & set(words)
    args = _parser(with_user=not daemon).parse_args(argv)
    if args.command == "check":
        from admin import check

        return check.run(args.config, sys.stdout)
    if args.command == "user":
        from admin import usercmd

        path, apps = args.users, None
        if path is None:
            cfg = _load_config(args.config)
            if cfg is None:
                return 1
            path = cfg.users  # type: ignore[attr-defined]
            apps = cfg.app_passwords or None  # type: ignore[attr-defined]
        return usercmd.run(args, path, apps_path=apps)
    if args.command in ("app", "dkim", "pgp", "limits"):
        module = importlib.import_module(f"admin.{dict((c, m) for c, m, _ in _ADMIN_COMMANDS)[args.command]}")
        cfg = _load_config(args.config)
        if cfg is None:
            return 1
        if args.command == "dkim":  # it needs the key directory alone
            return module.run(args, cfg.dkim_keys)  # type: ignore[attr-defined]
        return module.run(args, cfg)
    if args.command == "inetd":
        return _inetd(args.config, args.tls)
    cfg = _load_config(args.config)
    if cfg is None:
        return 1
    from server import lifecycle

    return lifecycle.serve(cfg, __version__)  # type: ignore[arg-type]


if __name__ == "__main__":
    sys.exit(main())
