"""Interoperability with real submission clients (SPEC.md §3–§7): swaks, curl,
msmtp and s-nail talk to a real `msa.py serve` over loopback, with AUTH PLAIN,
LOGIN and CRAM-MD5, over STARTTLS (port "starttls") and implicit TLS (port
"tls"), verifying msa's certificate against the test CA.

Each test checks what the recording sendmail received: the envelope, the
`Received:` field msa prepends (`with ESMTPSA`, S-706), and the message
byte for byte against what the client puts on the wire after its own
transformations (swaks' trailing empty line, curl's dot-stuffing only after
CRLF, s-nail's own header). Each test skips only when its program is missing.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path
from urllib.parse import quote

import pytest

import msatest
from msatest import strip_received

USER = "alice"
# An apostrophe, an @, a space and UTF-8: exercises each client's quoting
# (shell-free argv, msmtp's config syntax, s-nail's percent-encoded URL).
PASSWORD = "alice's p@ss wörd"
SENDER = "alice@example.org"
RCPTS = ["bob@example.net", "carol@example.com"]
NOT_OWNED = "mallory@example.org"

BODY = (
    "Hello Bob, grüße aus Köln — 8-bit UTF-8\r\n".encode()
    + b".a line that starts with a dot\r\n"
    + b"..two dots\r\n"
    + b".\r\n"
    + b"\r\n"
    + b"bye\r\n"
)
#: A complete header, so that msa adds nothing but Received: (S-705).
MESSAGE = (
    b"From: Alice <alice@example.org>\r\n"
    b"To: bob@example.net, carol@example.com\r\n"
    b"Subject: interop\r\n"
    b"Date: Wed, 25 Nov 2026 18:48:03 +0100\r\n"
    b"Message-ID: <interop.1@example.org>\r\n"
    b"\r\n" + BODY
)
#: The same message as a Unix text file.
LF_MESSAGE = MESSAGE.replace(b"\r\n", b"\n")

MECHANISMS = ["PLAIN", "LOGIN", "CRAM-MD5"]
MODES = ["starttls", "tls"]


def needs(program: str) -> pytest.MarkDecorator:
    """Skip, before msa is even started, only when the client is missing
    (the Debian package has the program's name)."""
    return pytest.mark.skipif(shutil.which(program) is None,
                              reason=f"{program} is not installed (CI installs the {program} package)")


needs_swaks = needs("swaks")
needs_curl = needs("curl")
needs_msmtp = needs("msmtp")
needs_snail = needs("s-nail")


# -- fixtures ----------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def users_db(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One user with an argon2id hash and a CRAM-MD5 credential, so that msa
    advertises AUTH PLAIN LOGIN CRAM-MD5 (S-202). Made once: argon2 is slow."""
    path = tmp_path_factory.mktemp("interop-users") / "users.db"
    msatest.add_user(path, USER, PASSWORD, [SENDER], cram=True)
    return path


@pytest.fixture
def imsa(start_msa, users_db: Path) -> msatest.MsaProcess:
    """msa where every client must authenticate (no trusted network)."""
    return start_msa(users=users_db, trusted_networks="")


@pytest.fixture
def home(tmp_path: Path) -> Path:
    """A HOME of its own, so no ~/.swaksrc, ~/.curlrc or dead.letter of the
    person running the tests gets involved."""
    h = tmp_path / "home"
    h.mkdir()
    return h


def run(argv: list[str], home: Path, input: bytes | None = None) -> subprocess.CompletedProcess:
    env = {**os.environ, "HOME": str(home), "LC_ALL": "C.UTF-8"}
    return subprocess.run(argv, input=input, capture_output=True, env=env, timeout=60)


def transcript(p: subprocess.CompletedProcess) -> str:
    return (f"exit {p.returncode}\n--- stdout\n{p.stdout.decode(errors='replace')}"
            f"\n--- stderr\n{p.stderr.decode(errors='replace')}")


def check_delivery(m: msatest.MsaProcess, p: subprocess.CompletedProcess, *, mechanism: str,
                   data: bytes | None = None, recipients: list[str] = RCPTS,
                   sender: str = SENDER) -> msatest.Delivered:
    """Exactly one message, with this envelope, msa's Received: and (if
    given) exactly `data` after it; and the session used `mechanism`."""
    assert p.returncode == 0, transcript(p) + "\n--- msa log\n" + m.log()
    msgs = m.outbox.messages()
    assert len(msgs) == 1, transcript(p) + "\n--- msa log\n" + m.log()
    [d] = msgs
    assert d.sender == sender  # S-601, S-801
    assert d.recipients == recipients  # S-205, S-801
    assert d.data.startswith(b"Received: ")  # S-706: prepended, first field
    received = d.data[: len(d.data) - len(strip_received(d.data))]
    assert b"\r\n\t(using TLSv1." in received  # S-706: TLS clause
    assert re.search(rb"\r\n\tby msa\.test \(msa\) with ESMTPSA id [0-9A-F]+", received), received
    if len(recipients) == 1:
        assert f"\r\n\tfor <{recipients[0]}>; ".encode() in received
    else:
        assert b"\tfor <" not in received  # S-706: `for` only with one recipient
    if data is not None:
        assert strip_received(d.data) == data  # S-302, S-704, S-708: byte for byte
    # README "Logs": the mechanism the client really chose.
    m.wait_log(rf"client=unknown\[127\.0\.0\.1\]:\d+, "
               rf"sasl_method={re.escape(mechanism)}, sasl_username={USER}, directory=users.db\n")
    return d


def check_refused(m: msatest.MsaProcess, p: subprocess.CompletedProcess, reply: str) -> None:
    out = transcript(p)
    assert p.returncode != 0, out
    assert reply in out, out + "\n--- msa log\n" + m.log()
    assert m.outbox.messages() == []


# -- swaks -------------------------------------------------------------------------------------
def swaks(m: msatest.MsaProcess, certs: msatest.Certs, home: Path, mode: str, mechanism: str,
          data_file: Path, sender: str = SENDER) -> subprocess.CompletedProcess:
    return run([
        "swaks", "--server", "127.0.0.1", "--port", str(m.ports[mode]),
        "--tls" if mode == "starttls" else "--tls-on-connect",
        "--tls-verify", "--tls-ca-path", certs.ca,
        "--auth", mechanism, "--auth-user", USER, "--auth-password", PASSWORD,
        "--from", sender, "--to", ",".join(RCPTS),
        "--data", f"@{data_file}",
    ], home)


@needs_swaks
@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("mechanism", MECHANISMS)
def test_swaks(imsa, certs, home, tmp_path, mode, mechanism):  # S-401, S-403, S-505..S-507, S-706
    f = tmp_path / "message.eml"
    f.write_bytes(MESSAGE)
    p = swaks(imsa, certs, home, mode, mechanism, f)
    # swaks keeps a full --data header as it is, dot-stuffs, and appends
    # "\r\n." after the data: a file ending in CRLF gains one empty line.
    check_delivery(imsa, p, mechanism=mechanism, data=MESSAGE + b"\r\n")


@needs_swaks
def test_swaks_lf_file(imsa, certs, home, tmp_path):  # S-302
    f = tmp_path / "message.eml"
    f.write_bytes(LF_MESSAGE)
    p = swaks(imsa, certs, home, "starttls", "PLAIN", f)
    # swaks turns LF into CRLF and stuffs dots itself: same wire bytes as above.
    check_delivery(imsa, p, mechanism="PLAIN", data=MESSAGE + b"\r\n")


@needs_swaks
def test_swaks_envelope_sender_not_owned(imsa, certs, home, tmp_path):  # S-601
    f = tmp_path / "message.eml"
    f.write_bytes(MESSAGE)
    p = swaks(imsa, certs, home, "tls", "PLAIN", f, sender=NOT_OWNED)
    check_refused(imsa, p, f"550 5.7.1 Sender address <{NOT_OWNED}> not owned by user {USER}")


@needs_swaks
def test_swaks_from_header_not_owned(imsa, certs, home, tmp_path):  # S-602
    f = tmp_path / "message.eml"
    f.write_bytes(MESSAGE.replace(b"From: Alice <alice@example.org>", f"From: <{NOT_OWNED}>".encode()))
    p = swaks(imsa, certs, home, "starttls", "CRAM-MD5", f)
    check_refused(imsa, p, f"550 5.7.1 From: address <{NOT_OWNED}> not owned by user {USER}")


# -- curl --------------------------------------------------------------------------------------
def curl(m: msatest.MsaProcess, certs: msatest.Certs, home: Path, mode: str, upload: Path,
         *options: str, sender: str = SENDER) -> subprocess.CompletedProcess:
    port = m.ports[mode]
    # The URL path is the EHLO name; --resolve lets curl check the certificate
    # against a real name (msa.test) while connecting to 127.0.0.1.
    url = (f"smtp://msa.test:{port}/client.example" if mode == "starttls"
           else f"smtps://msa.test:{port}/client.example")
    argv = ["curl", "-q", "-sS", "-v", "--resolve", f"msa.test:{port}:127.0.0.1",
            "--cacert", certs.ca, "--user", f"{USER}:{PASSWORD}",
            "--mail-from", sender]
    if mode == "starttls":
        argv.append("--ssl-reqd")
    for r in RCPTS:
        argv += ["--mail-rcpt", r]
    return run([*argv, *options, "--upload-file", str(upload), url], home)


@needs_curl
@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("mechanism", MECHANISMS)
def test_curl(imsa, certs, home, tmp_path, mode, mechanism):  # S-202, S-401, S-403, S-505..S-507
    f = tmp_path / "message.eml"
    f.write_bytes(MESSAGE)
    # Without --login-options curl takes the strongest advertised mechanism,
    # CRAM-MD5 (S-202); PLAIN and LOGIN must be asked for.
    options = [] if mechanism == "CRAM-MD5" else ["--login-options", f"AUTH={mechanism}"]
    p = curl(imsa, certs, home, mode, f, *options)
    # A CRLF file: curl stuffs dots after CRLF and ends with ".\r\n" only.
    d = check_delivery(imsa, p, mechanism=mechanism, data=MESSAGE)
    assert d.data.startswith(b"Received: from client.example ([127.0.0.1])\r\n")  # S-706, S-707


@needs_curl
def test_curl_lf_file_with_crlf_option(imsa, certs, home, tmp_path):  # S-302
    f = tmp_path / "message.eml"
    f.write_bytes(LF_MESSAGE)
    p = curl(imsa, certs, home, "tls", f, "--crlf")
    # --crlf converts before stuffing: the wire carries exactly MESSAGE.
    check_delivery(imsa, p, mechanism="CRAM-MD5", data=MESSAGE)


@needs_curl
def test_curl_lf_file_stored_with_crlf(imsa, certs, home, tmp_path):  # S-302
    f = tmp_path / "message.eml"
    f.write_bytes(b"From: alice@example.org\nTo: bob@example.net\nSubject: unix file\n"
                  b"Date: Wed, 25 Nov 2026 18:48:03 +0100\nMessage-ID: <lf.1@example.org>\n"
                  b"\nfirst line\n\n" + "8-bit: grüße\n".encode() + b"last line\n")
    p = curl(imsa, certs, home, "starttls", f, "--login-options", "AUTH=PLAIN")
    # `curl -T file` sends the LF bytes as they are; as the data does not end
    # in CRLF, it closes with "\r\n.\r\n", one empty line more. msa stores
    # every bare LF as CRLF.
    expected = f.read_bytes().replace(b"\n", b"\r\n") + b"\r\n"
    check_delivery(imsa, p, mechanism="PLAIN", data=expected)


@needs_curl
def test_curl_lf_file_dot_lines_are_unstuffed(imsa, certs, home, tmp_path):  # S-302
    f = tmp_path / "message.eml"
    f.write_bytes(LF_MESSAGE)
    p = curl(imsa, certs, home, "tls", f, "--login-options", "AUTH=LOGIN")
    # curl dot-stuffs only after CRLF, so ".a line" after a bare LF reaches
    # msa unstuffed, and S-302 (as Postfix, and as smtplib stuffs) takes the
    # first dot of every line after either line ending away. An LF file with
    # lines starting with "." loses those dots: use `curl --crlf` (above).
    expected = re.sub(rb"(?m)^\.", b"", LF_MESSAGE).replace(b"\n", b"\r\n") + b"\r\n"
    check_delivery(imsa, p, mechanism="LOGIN", data=expected)


@needs_curl
def test_curl_envelope_sender_not_owned(imsa, certs, home, tmp_path):  # S-601
    f = tmp_path / "message.eml"
    f.write_bytes(MESSAGE)
    p = curl(imsa, certs, home, "starttls", f, sender=NOT_OWNED)
    check_refused(imsa, p, f"550 5.7.1 Sender address <{NOT_OWNED}> not owned by user {USER}")
    assert b"curl: (55) MAIL failed: 550" in p.stderr


# -- msmtp -------------------------------------------------------------------------------------
def msmtp_conf(path: Path, m: msatest.MsaProcess, certs: msatest.Certs, mode: str, mechanism: str,
               from_: str = SENDER) -> Path:
    """An ~/.msmtprc as a user writes it."""
    path.write_text(
        "# msa submission account\n"
        "account default\n"
        "host localhost\n"
        f"port {m.ports[mode]}\n"
        "tls on\n"
        f"tls_starttls {'on' if mode == 'starttls' else 'off'}\n"
        f"tls_trust_file {certs.ca}\n"
        f"auth {mechanism.lower()}\n"
        f"user {USER}\n"
        f'password "{PASSWORD}"\n'
        f"from {from_}\n",
        encoding="utf-8",
    )
    path.chmod(0o600)  # msmtp refuses a config with a password readable by others
    return path


def msmtp(conf: Path, home: Path, message: bytes, *args: str) -> subprocess.CompletedProcess:
    return run(["msmtp", "-C", str(conf), *args], home, input=message)


@needs_msmtp
@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("mechanism", MECHANISMS)
def test_msmtp(imsa, certs, home, tmp_path, mode, mechanism):  # S-401, S-403, S-505..S-507
    conf = msmtp_conf(tmp_path / "msmtprc", imsa, certs, mode, mechanism)
    p = msmtp(conf, home, MESSAGE, "--", *RCPTS)
    # msmtp sends a complete header as it is and stuffs dots: exactly MESSAGE.
    check_delivery(imsa, p, mechanism=mechanism, data=MESSAGE)


@needs_msmtp
def test_msmtp_lf_stdin(imsa, certs, home, tmp_path):  # S-302
    conf = msmtp_conf(tmp_path / "msmtprc", imsa, certs, "starttls", "plain")
    p = msmtp(conf, home, LF_MESSAGE, "--", *RCPTS)
    # msmtp turns LF into CRLF before stuffing, as a sendmail(1) should.
    check_delivery(imsa, p, mechanism="PLAIN", data=MESSAGE)


@needs_msmtp
def test_msmtp_read_recipients_and_envelope_from(imsa, certs, home, tmp_path):  # S-601, S-704
    # The account's own `from` is not alice's: only --read-envelope-from
    # makes this message acceptable.
    conf = msmtp_conf(tmp_path / "msmtprc", imsa, certs, "tls", "cram-md5", from_="nobody@example.org")
    header = (b"From: Alice <alice@example.org>\n"
              b"To: bob@example.net\n"
              b"Cc: carol@example.com\n"
              b"Bcc: dave@example.net\n"
              b"Subject: msmtp -t\n"
              b"Date: Wed, 25 Nov 2026 18:48:03 +0100\n"
              b"Message-ID: <interop.t@example.org>\n\n")
    p = msmtp(conf, home, header + BODY.replace(b"\r\n", b"\n"), "-t", "--read-envelope-from")
    expected = (header.replace(b"Bcc: dave@example.net\n", b"") + BODY.replace(b"\r\n", b"\n")
                ).replace(b"\n", b"\r\n")
    d = check_delivery(imsa, p, mechanism="CRAM-MD5", data=expected,
                       recipients=["bob@example.net", "carol@example.com", "dave@example.net"])
    assert b"dave@" not in d.data  # Bcc: gone (msmtp drops it, msa would too)


@needs_msmtp
def test_msmtp_envelope_sender_not_owned(imsa, certs, home, tmp_path):  # S-601
    conf = msmtp_conf(tmp_path / "msmtprc", imsa, certs, "starttls", "login", from_=NOT_OWNED)
    p = msmtp(conf, home, MESSAGE, "--", *RCPTS)
    check_refused(imsa, p, f"550 5.7.1 Sender address <{NOT_OWNED}> not owned by user {USER}")


# -- s-nail ------------------------------------------------------------------------------------
SNAIL_BODY = BODY.replace(b"\r\n", b"\n")  # what a user pipes in


def snail(m: msatest.MsaProcess, certs: msatest.Certs, home: Path, mode: str, mechanism: str,
          sender: str = SENDER) -> subprocess.CompletedProcess:
    scheme = "smtp" if mode == "starttls" else "smtps"
    # v15-compat URL form; user and password percent-encoded.
    url = f"{scheme}://{quote(USER, safe='')}:{quote(PASSWORD, safe='')}@localhost:{m.ports[mode]}"
    argv = ["s-nail", "-:/", "-Sv15-compat", "-Sverbose", "-Snosave", f"-Smta={url}",
            f"-Ssmtp-auth={mechanism.lower()}", f"-Stls-ca-file={certs.ca}", "-Stls-ca-no-defaults",
            "-Sttycharset=utf-8", "-Smime-encoding=8bit"]
    if mode == "starttls":
        argv.append("-Ssmtp-use-starttls")
    return run([*argv, "-r", sender, "-s", "interop s-nail", *RCPTS], home, input=SNAIL_BODY)


def header_fields(header: bytes) -> list[tuple[str, bytes]]:
    fields = []
    for line in header.split(b"\r\n"):
        if line[:1] in (b" ", b"\t"):
            name, value = fields[-1]
            fields[-1] = (name, value + b"\r\n" + line)
        else:
            name, _, value = line.partition(b":")
            fields.append((name.decode().lower(), value.strip()))
    return fields


@needs_snail
@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("mechanism", MECHANISMS)
def test_snail(imsa, certs, home, mode, mechanism):  # S-401, S-403, S-505..S-507, S-704, S-705
    p = snail(imsa, certs, home, mode, mechanism)
    d = check_delivery(imsa, p, mechanism=mechanism)
    header, sep, body = strip_received(d.data).partition(b"\r\n\r\n")
    assert sep
    # s-nail writes its own header; the body it sends as 8bit, stuffed on the
    # wire and unstuffed by msa: byte for byte what was piped in, CRLF.
    assert body == BODY  # S-302, S-708
    fields = header_fields(header)
    names = [n for n, _ in fields]
    values = dict(fields)
    assert values["from"] == SENDER.encode()
    assert values["to"] == b"bob@example.net, carol@example.com"
    assert values["subject"] == b"interop s-nail"
    assert names.count("date") == 1 and names.count("message-id") == 1  # S-705
    assert names.count("received") == 0  # only msa's own, stripped above
    assert re.fullmatch(rb"<[^<>\s]+@[^<>\s]+>", values["message-id"]), values["message-id"]
    assert values["content-transfer-encoding"] == b"8bit"


@needs_snail
def test_snail_envelope_sender_not_owned(imsa, certs, home):  # S-601
    p = snail(imsa, certs, home, "starttls", "PLAIN", sender=NOT_OWNED)
    check_refused(imsa, p, f"550 5.7.1 Sender address <{NOT_OWNED}> not owned by user {USER}")
