"""`msa.py pgp keygen|export USER`: per-user OpenPGP keys for PGP/MIME
signing (CONTRACT.md "Command line", SPEC.md S-1104).

`keygen USER` asks the SOP command (`pgp_sop`, default sqop) for an Ed25519
key with one user ID per exact address among USER's senders, writes it to
`pgp_keys/USER.key` (mode 0600, created exclusively: a key is never
overwritten) and prints the public key; `export USER` prints the public key
again. Exit codes: 0 done, 1 bad input or a failing SOP command, 2 usage.
"""

from __future__ import annotations

import argparse
import os
import sys
from typing import Any, TextIO

from . import config_option

#: How long the SOP command may take to make or export a key.
SOP_WAIT = 60.0


def build_parser(pgp_parser: argparse.ArgumentParser) -> None:
    location = config_option()
    commands = pgp_parser.add_subparsers(dest="pgp_command", metavar="COMMAND", required=True)
    sp = commands.add_parser("keygen", parents=[location], help="make USER's signing key; print its public key")
    sp.add_argument("user", metavar="USER")
    sp = commands.add_parser("export", parents=[location], help="print USER's public key")
    sp.add_argument("user", metavar="USER")


def _sop(cfg: Any, args: list[str], stdin: bytes = b"") -> tuple[bytes, str | None]:
    from delivery import child
    argv = [*cfg.pgp_sop, *args]
    done = child.run(argv, (stdin,), SOP_WAIT, stdout_limit=1024 * 1024)
    if isinstance(done, OSError):
        return b"", f"cannot run {argv[0]}: {done.strerror or done} (pgp_sop; Debian: apt install sqop)"
    if done.status != 0:
        err = done.stderr.decode("utf-8", "replace").strip()[:300]
        return b"", f"{argv[0]} {args[0]}: " + ("timeout" if done.status is None else f"exit {done.status}: {err}")
    return done.stdout, None


def run(args: argparse.Namespace, cfg: Any, out: TextIO = sys.stdout, err: TextIO = sys.stderr) -> int:
    if cfg.pgp_keys is None:
        print(f"{args.config}: pgp_keys is not set: add `pgp_keys = /etc/msa/pgp` to [msa]", file=err)
        return 1
    from delivery.pgp import key_path

    path = key_path(cfg.pgp_keys, args.user)
    if path is None:
        print(f"msa.py pgp: {args.user!r} cannot name a key file", file=err)
        return 1
    if args.pgp_command == "export":
        try:
            from util import files
            key = files.read_regular(path, files.TLS_MAX_OCTETS)
        except Exception as e:  # noqa: BLE001 - FileProblem and its kind, reported as PATH: why
            print(str(e), file=err)
            return 1
        cert, why = _sop(cfg, ["extract-cert"], key)
        if why:
            print(why, file=err)
            return 1
        _write_armor(out, cert)
        return 0
    return _keygen(args, cfg, path, out, err)


def _write_armor(out: TextIO, armor: bytes) -> None:
    """The armored key as the SOP command wrote it: its `Comment:` lines
    name the user IDs in UTF-8 (RFC 9580 §6.2.2), so the octets go out
    unchanged where the stream takes octets, else decoded as UTF-8."""
    buffer = getattr(out, "buffer", None)
    if buffer is not None:
        out.flush()
        buffer.write(armor)
        buffer.flush()
    else:
        out.write(armor.decode("utf-8", "replace"))


def _keygen(args: argparse.Namespace, cfg: Any, path: str, out: TextIO, err: TextIO) -> int:
    from server import runtime

    problems: list[str] = []
    try:
        db = runtime.load_users(cfg, problems.append)
    except Exception as e:  # noqa: BLE001 - sasl.UserDBError, PATH:LINE: why
        print(str(e), file=err)
        return 1
    user = db.get(args.user)
    if user is None:
        print(f"{cfg.users}: no user {args.user}", file=err)
        return 1
    addresses = [s for s in user.senders if not s.startswith("@")]
    if not addresses:
        print(f"msa.py pgp keygen: user {user.name} has no exact sender address (only @domain entries): "
              "add one with msa.py user senders", file=err)
        return 1
    if os.path.exists(path):
        print(f"{path}: exists; a key is never overwritten (remove it first to make a new one)", file=err)
        return 1
    key, why = _sop(cfg, ["generate-key", *addresses])
    if why:
        print(why, file=err)
        return 1
    cert, why = _sop(cfg, ["extract-cert"], key)
    if why:
        print(why, file=err)
        return 1
    try:
        os.makedirs(cfg.pgp_keys, mode=0o700, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
        with os.fdopen(fd, "wb") as f:
            f.write(key)
            f.flush()
            os.fsync(f.fileno())
    except FileExistsError:
        print(f"{path}: exists; a key is never overwritten", file=err)
        return 1
    except OSError as e:
        print(f"{path}: cannot write: {e.strerror}", file=err)
        return 1
    print(f"wrote {path} for {', '.join(addresses)}; publish this public key (WKD, a keyserver, "
          f"or send it to your correspondents):", file=err)
    _write_armor(out, cert)
    return 0
