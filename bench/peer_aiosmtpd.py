"""The aiosmtpd peer for `make bench`: an asyncio SMTP server on loopback
whose handler writes each message to its own file, as a minimal real
receiver would. Run as its own process (its own GIL, its own RSS):

    python bench/peer_aiosmtpd.py DIR [--tls CERT KEY] [--auth USER PASSWORD]

It prints `port N` on standard output once listening (and `tls-port N`
for implicit TLS when --tls is given), then serves until SIGTERM. With
--auth, AUTH PLAIN/LOGIN accept that one user and password (a plain
comparison: no password hashing, like msa with its credential cache hit).
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import os
import signal
import ssl
import sys

import hmac

from aiosmtpd.smtp import SMTP, AuthResult, LoginPassword


class FileHandler:
    def __init__(self, directory: str) -> None:
        self.directory = directory
        self.counter = itertools.count(1)

    async def handle_DATA(self, server, session, envelope) -> str:  # noqa: ANN001 - aiosmtpd hook
        path = os.path.join(self.directory, f"{next(self.counter)}.eml")
        with open(path, "wb") as f:
            f.write(envelope.original_content or envelope.content)
        return "250 2.0.0 OK"


async def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("directory")
    ap.add_argument("--tls", nargs=2, metavar=("CERT", "KEY"))
    ap.add_argument("--auth", nargs=2, metavar=("USER", "PASSWORD"))
    args = ap.parse_args()
    authenticator = None
    if args.auth:
        want_user, want_pw = args.auth[0].encode(), args.auth[1].encode()

        def authenticator(server, session, envelope, mechanism, auth_data):  # noqa: ANN001, ANN202
            ok = (isinstance(auth_data, LoginPassword) and hmac.compare_digest(auth_data.login, want_user)
                  and hmac.compare_digest(auth_data.password, want_pw))
            return AuthResult(success=ok)

    os.makedirs(args.directory, exist_ok=True)
    handler = FileHandler(args.directory)
    loop = asyncio.get_running_loop()
    ctx = None
    if args.tls:
        ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        ctx.load_cert_chain(*args.tls)

    def factory() -> SMTP:
        return SMTP(handler, data_size_limit=None, enable_SMTPUTF8=True, hostname="aiosmtpd.bench",
                    tls_context=ctx, require_starttls=False, timeout=300, loop=loop,
                    authenticator=authenticator)

    server = await loop.create_server(factory, "127.0.0.1", 0, backlog=1024)
    print(f"port {server.sockets[0].getsockname()[1]}", flush=True)
    if ctx is not None:
        # implicit TLS: aiosmtpd does not see the TLS layer, so AUTH must
        # not demand STARTTLS here (the connection is encrypted all the same)
        tls_server = await loop.create_server(
            lambda: SMTP(handler, data_size_limit=None, hostname="aiosmtpd.bench", timeout=300, loop=loop,
                         authenticator=authenticator, auth_require_tls=False),
            "127.0.0.1", 0, ssl=ctx, backlog=1024)
        print(f"tls-port {tls_server.sockets[0].getsockname()[1]}", flush=True)
    stop = asyncio.Event()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    loop.add_signal_handler(signal.SIGINT, stop.set)
    await stop.wait()
    server.close()


if __name__ == "__main__":
    import logging

    logging.getLogger("mail.log").setLevel(logging.WARNING)
    asyncio.run(main())
    sys.exit(0)
