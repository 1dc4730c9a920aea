"""A scripted SMTP server on a real loopback socket, standing in for the MTA
where a real Postfix cannot be made to misbehave on cue: close after the
final dot, stall, lack SMTPUTF8, drop a kept connection, break the protocol
(replies nobody asked for, a malformed EHLO reply). Used by tests of
the SMTP hand-off (SPEC.md S-806 to S-810) beside the real Postfix ones.

Behaviour is set per test through `FakeMta` attributes; every command and
message it receives is recorded per connection.
"""

from __future__ import annotations

import socket
import threading
import time
from dataclasses import dataclass, field


@dataclass
class Connection:
    commands: list[str] = field(default_factory=list)
    messages: list[bytes] = field(default_factory=list)


class FakeMta:
    def __init__(self) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.port = self.sock.getsockname()[1]
        self.extensions = ["PIPELINING", "SIZE 10240000", "8BITMIME", "SMTPUTF8", "DSN",
                           "XFORWARD NAME ADDR PROTO HELO SOURCE PORT IDENT"]
        self.replies: dict[str, str] = {}  # "MAIL", "RCPT:addr", "DATA", "DOT" -> reply line
        self.raw: dict[str, bytes] = {}  # the same keys -> bytes sent as they are, in one write
        self.after_ehlo = ""  # sent in the same write as the EHLO reply: a reply nobody asked for
        self.close_after_dot = False  # read the dot, then close without a reply
        self.stall: str | None = None  # "GREETING", "MAIL", "DOT": never answer there
        self.close_kept_at_mail = False  # on a connection's 2nd MAIL: close at once
        self.connections: list[Connection] = []
        self._stop = False
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    @property
    def handoff(self) -> str:
        return f"smtp:127.0.0.1:{self.port}"

    def stop(self) -> None:
        self._stop = True
        try:
            socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
        except OSError:
            pass
        self.sock.close()

    def messages(self) -> list[bytes]:
        return [m for c in self.connections for m in c.messages]

    def _reply(self, key: str, default: str) -> bytes:
        if key in self.raw:
            return self.raw[key]
        return (self.replies.get(key, default) + "\r\n").encode()

    # -- the server -------------------------------------------------------------------
    def _serve(self) -> None:
        while not self._stop:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            if self._stop:
                conn.close()
                return
            record = Connection()
            self.connections.append(record)
            threading.Thread(target=self._session, args=(conn, record), daemon=True).start()

    def _session(self, conn: socket.socket, record: Connection) -> None:
        conn.settimeout(60)
        f = conn.makefile("rb")
        try:
            if self.stall == "GREETING":
                time.sleep(60)
                return
            conn.sendall(b"220 fake.mta ESMTP\r\n")
            mails = 0
            while True:
                line = f.readline()
                if not line:
                    return
                text = line.decode("utf-8", "replace").rstrip("\r\n")
                record.commands.append(text)
                verb = text.split(" ", 1)[0].upper()
                if verb == "EHLO":
                    lines = ["fake.mta", *self.extensions]
                    conn.sendall("".join(f"250{'-' if i < len(lines) - 1 else ' '}{x}\r\n"
                                         for i, x in enumerate(lines)).encode() + self.after_ehlo.encode())
                elif verb == "MAIL":
                    mails += 1
                    if mails > 1 and self.close_kept_at_mail:
                        return
                    if self.stall == "MAIL":
                        time.sleep(60)
                        return
                    conn.sendall(self._reply("MAIL", "250 2.1.0 Ok"))
                elif verb == "RCPT":
                    addr = text[text.find("<") + 1 : text.find(">")]
                    conn.sendall(self._reply(f"RCPT:{addr}", "250 2.1.5 Ok"))
                elif verb == "DATA":
                    reply = self._reply("DATA", "354 End data with <CR><LF>.<CR><LF>")
                    conn.sendall(reply)
                    if not reply.startswith(b"354"):
                        continue
                    data = bytearray()
                    while True:
                        chunk = f.readline()
                        if not chunk:
                            return
                        if chunk == b".\r\n":
                            break
                        data += chunk[1:] if chunk.startswith(b".") else chunk
                    if self.close_after_dot:
                        return
                    if self.stall == "DOT":
                        time.sleep(60)
                        return
                    reply = self._reply("DOT", f"250 2.0.0 Ok: queued as FAKE{len(self.messages())}")
                    if reply.startswith(b"250"):
                        record.messages.append(bytes(data))
                    conn.sendall(reply)
                elif verb == "QUIT":
                    conn.sendall(b"221 2.0.0 Bye\r\n")
                    return
                else:  # XFORWARD, RSET, NOOP
                    conn.sendall(b"250 2.0.0 Ok\r\n")
        except OSError:
            return
        finally:
            try:
                conn.close()
            except OSError:
                pass
