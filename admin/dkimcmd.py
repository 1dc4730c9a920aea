"""`msa.py dkim keygen|dns`: DKIM keys and the DNS records to publish
(CONTRACT.md "Command line", SPEC.md S-1103).

`keygen DOMAIN [--selector SEL] [--algorithm rsa|ed25519]` writes a new
key to `dkim_keys/DOMAIN/SEL.key` (mode 0600, created exclusively: an
existing selector is never overwritten) and prints the zone-file line to
publish; `dns [DOMAIN...]` prints the line of every key there is. Exit
codes: 0 done, 1 bad input or a key that cannot sign (`PATH: why` on
stderr), 2 usage.
"""

from __future__ import annotations

import argparse
import datetime
import os
import sys
from typing import TextIO

from . import config_option

#: RSA keys msa makes (RFC 8301 §3.2 recommends at least 2048 bits).
RSA_BITS = 2048


def build_parser(dkim_parser: argparse.ArgumentParser) -> None:
    """The subcommands; each also takes `-c CONF` after its arguments, as
    CONTRACT.md writes them, without overriding the one given before."""
    location = config_option()
    commands = dkim_parser.add_subparsers(dest="dkim_command", metavar="COMMAND", required=True)
    sp = commands.add_parser("keygen", parents=[location], help="make a DKIM key for DOMAIN and print its DNS record")
    sp.add_argument("domain", metavar="DOMAIN")
    sp.add_argument("--selector", metavar="SEL", help="the selector (default msaYYYYMM)")
    sp.add_argument("--algorithm", choices=("rsa", "ed25519"), default="rsa",
                    help=f"rsa ({RSA_BITS} bits, the default; every verifier knows it) or ed25519 (RFC 8463)")
    sp = commands.add_parser("dns", parents=[location],
                             help="print the DNS TXT record of every key (or those of DOMAIN...)")
    sp.add_argument("domains", nargs="*", metavar="DOMAIN")


def _a_label(domain: str) -> str | None:
    domain = domain.strip().rstrip(".")
    if not domain.isascii():
        import idna

        try:
            domain = idna.encode(domain, uts46=True, transitional=False).decode("ascii")
        except idna.IDNAError:
            return None
    return domain.lower()


def run(args: argparse.Namespace, directory: str | None, out: TextIO = sys.stdout, err: TextIO = sys.stderr) -> int:
    from delivery import dkim_keys
    if directory is None:
        print(f"{args.config}: dkim_keys is not set: add `dkim_keys = /etc/msa/dkim` to [msa]", file=err)
        return 1
    if (missing := dkim_keys.cryptography_problem()) is not None:
        print(f"msa.py dkim: {missing}", file=err)
        return 1
    if args.dkim_command == "keygen":
        return _keygen(args, directory, out, err)
    return _dns(args, directory, out, err)


def _keygen(args: argparse.Namespace, directory: str, out: TextIO, err: TextIO) -> int:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ed25519, rsa

    from delivery import dkim_keys
    from signing import key_from_private

    domain = _a_label(args.domain)
    if domain is None or not dkim_keys._DOMAIN.match(domain):
        print(f"msa.py dkim keygen: {args.domain!r} is not a domain name", file=err)
        return 1
    selector = args.selector or datetime.date.today().strftime("msa%Y%m")
    if not dkim_keys._SELECTOR.match(selector):
        print(f"msa.py dkim keygen: {selector!r} is not a selector (letters, digits, '-', dots)", file=err)
        return 1
    private = (ed25519.Ed25519PrivateKey.generate() if args.algorithm == "ed25519"
               else rsa.generate_private_key(public_exponent=65537, key_size=RSA_BITS))
    pem = private.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption())
    sub = os.path.join(directory, domain)
    path = os.path.join(sub, selector + dkim_keys.SUFFIX)
    try:
        os.makedirs(sub, mode=0o700, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
    except FileExistsError:
        print(f"{path}: exists; choose another --selector (a key is never overwritten)", file=err)
        return 1
    except OSError as e:
        print(f"{path}: cannot create: {e.strerror}", file=err)
        return 1
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(pem)
            f.flush()
            os.fsync(f.fileno())
    except OSError as e:
        print(f"{path}: cannot write: {e.strerror}", file=err)
        return 1
    key = key_from_private(domain, selector, private)
    assert not isinstance(key, str)
    print(f"wrote {path}; publish this record, then reload msa (SIGHUP):", file=err)
    print(key.zone_line(), file=out)
    return 0


def _dns(args: argparse.Namespace, directory: str, out: TextIO, err: TextIO) -> int:
    from delivery import dkim_keys
    keys, problems = dkim_keys.load(directory)
    wanted = {d for d in (_a_label(x) for x in args.domains) if d} if args.domains else None
    for p in problems:
        print(p, file=err)
    shown = 0
    for domain in sorted(keys.by_domain):
        if wanted is not None and domain not in wanted:
            continue
        for key in sorted(keys.by_domain[domain], key=lambda k: k.selector):
            print(key.zone_line(), file=out)
            shown += 1
    if wanted is not None and (missing := wanted - set(keys.by_domain)):
        print(f"msa.py dkim dns: no key for {', '.join(sorted(missing))}", file=err)
        return 1
    return 1 if problems else 0
