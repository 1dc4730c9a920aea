"""PGP/MIME signing end to end (SPEC.md S-1101, S-1104, S-1105): keys made
by the real `msa.py pgp keygen` (through sqop), messages through a real
`msa.py serve`, the delivered message cut by RFC 1847's rules and its
signature checked with `gpg --verify` and `sqop verify`, and whole by a
GMime-based reader (`notmuch show --verify`), which rebuilds the signed
entity from its parse as every GMime reader does."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

import msatest
from msatest import Wire, b64

SQOP = shutil.which("sqop")
GPG = shutil.which("gpg")
NOTMUCH = shutil.which("notmuch")
needs_notmuch = pytest.mark.skipif(NOTMUCH is None or GPG is None,
                                   reason="notmuch or gpg is not installed (Debian packages notmuch, gnupg)")
pytestmark = pytest.mark.skipif(SQOP is None, reason="sqop is not installed (Debian package sqop)")

PASSWORD = "alice pgp pw"


def pgp(conf: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, msatest.MSA, "pgp", *args, "-c", str(conf)], capture_output=True,
                          timeout=120)


@pytest.fixture
def pgp_msa(start_msa, tmp_path):
    """msa with a PGP key for alice (made by `msa.py pgp keygen`) and none
    for bob; returns (msa, alice's public key)."""
    return make(start_msa, tmp_path)


def make(start_msa, tmp_path, **overrides):
    users = tmp_path / "users.db"
    msatest.add_user(users, "alice", PASSWORD, ["alice@example.org", "@alice.example"])
    msatest.add_user(users, "bob", PASSWORD, ["bob@example.org"])
    keys = tmp_path / "pgp"
    conf_dir = tmp_path / "msa"
    conf_dir.mkdir(exist_ok=True)
    conf = msatest.write_config(conf_dir, None, users=users, pgp_keys=keys)
    cert = _keygen_once(conf, keys)
    overrides.setdefault("trusted_networks", "")
    m = start_msa(users=users, pgp_keys=keys, **overrides)
    return m, cert


_KEYS: dict[str, tuple[bytes, bytes]] = {}


def _keygen_once(conf: Path, keys: Path) -> bytes:
    """alice's key, made by the real `msa.py pgp keygen` the first time,
    then copied (keygen itself is tested below); her public key."""
    if "alice" not in _KEYS:
        made = pgp(conf, "keygen", "alice")
        assert made.returncode == 0, made.stderr
        assert made.stdout.startswith(b"-----BEGIN PGP PUBLIC KEY BLOCK-----")
        _KEYS["alice"] = ((keys / "alice.key").read_bytes(), made.stdout)
        return made.stdout
    secret, cert = _KEYS["alice"]
    keys.mkdir(mode=0o700, exist_ok=True)
    (keys / "alice.key").write_bytes(secret)
    (keys / "alice.key").chmod(0o600)
    return cert


def submit(m, user: str, sender: str, message: bytes) -> tuple[int, str]:
    w = Wire.connect(m.ports["tls"], tls_ctx=m.client_ctx, timeout=120)
    try:
        w.reply()
        w.expect("EHLO laptop.example", 250)
        w.expect("AUTH PLAIN " + b64(f"\0{user}\0{PASSWORD}"), 235)
        w.expect(f"MAIL FROM:<{sender}> BODY=8BITMIME", 250)
        w.expect("RCPT TO:<carol@example.net>", 250)
        w.expect("DATA", 354)
        w.send(msatest.stuff(message) + b".\r\n")
        return w.reply()
    finally:
        w.close()


def message(body: bytes = b"Hello Carol,\r\n\r\nsigned by msa.\r\n", mime: bytes = b"", frm: str = "alice@example.org") -> bytes:
    return (f"From: Alice <{frm}>\r\nTo: Carol <carol@example.net>\r\n".encode()
            + b"Subject: pgp test\r\nDate: Tue, 01 Dec 2026 10:00:00 +0000\r\nMessage-ID: <pgp.1@example.org>\r\n"
            + mime + b"\r\n" + body)


def split_signed(data: bytes) -> tuple[bytes, bytes, bytes, bytes]:
    """(outer header, signed part, signature, micalg) by RFC 1847 §2.1: the
    signed part runs from after the CRLF that ends the first delimiter line
    up to, not including, the CRLF before the next one."""
    head, _, body = data.partition(b"\r\n\r\n")
    unfolded = re.sub(rb"\r\n[ \t]+", b" ", head)
    ct = re.search(rb"\r\nContent-Type: multipart/signed;([^\r\n]*)", unfolded)
    assert ct, head
    boundary = re.search(rb'boundary="([^"]+)"', ct.group(1)).group(1)
    micalg = re.search(rb'micalg="?([a-z0-9-]+)', ct.group(1)).group(1)
    assert b'protocol="application/pgp-signature"' in ct.group(1)
    delimiter = b"--" + boundary
    first = body.index(delimiter + b"\r\n") + len(delimiter) + 2
    second = body.index(b"\r\n" + delimiter + b"\r\n", first)
    signed = body[first:second]
    sig_part = body[second + len(delimiter) + 4 :]
    sig_start = sig_part.index(b"-----BEGIN PGP SIGNATURE-----")
    sig_end = sig_part.index(b"-----END PGP SIGNATURE-----") + len(b"-----END PGP SIGNATURE-----")
    assert body.rstrip(b"\r\n").endswith(delimiter + b"--")
    return head, signed, sig_part[sig_start:sig_end] + b"\r\n", micalg


def verify(tmp: Path, signed: bytes, signature: bytes, cert: bytes) -> tuple[bool, bool, str]:
    """(sqop verify, gpg --verify, gpg's output)."""
    (tmp / "part").write_bytes(signed)
    (tmp / "sig.asc").write_bytes(signature)
    (tmp / "cert.asc").write_bytes(cert)
    sq = subprocess.run([SQOP, "verify", str(tmp / "sig.asc"), str(tmp / "cert.asc")], input=signed,
                        capture_output=True, timeout=60)
    if GPG is None:
        return sq.returncode == 0, True, ""
    home = tmp / "gnupg"
    home.mkdir(mode=0o700, exist_ok=True)
    env = {**os.environ, "GNUPGHOME": str(home)}
    try:
        subprocess.run([GPG, "--batch", "--import", str(tmp / "cert.asc")], capture_output=True, env=env, timeout=60)
        g = subprocess.run([GPG, "--batch", "--verify", str(tmp / "sig.asc"), str(tmp / "part")],
                           capture_output=True, text=True, env=env, timeout=60)
    finally:  # gpg leaves an agent behind for its home; none may outlive the test
        subprocess.run(["gpgconf", "--homedir", str(home), "--kill", "gpg-agent"], capture_output=True, timeout=30)
    return sq.returncode == 0, g.returncode == 0, g.stderr


def notmuch_show(tmp: Path, data: bytes, cert: bytes) -> dict:
    """The message as `notmuch show --verify --format=json` reports it (its
    top-level "body" part), from a throwaway notmuch database holding only
    it, with the signer's public key in a temporary GNUPGHOME for GMime."""
    root = tmp / "notmuch"
    mail = root / "mail"
    for sub in ("cur", "new", "tmp"):
        (mail / sub).mkdir(parents=True, exist_ok=True)
    (mail / "new" / "1.msa:2,").write_bytes(data)
    config = root / "config"
    config.write_text(f"[database]\npath={mail}\n[user]\nname=t\nprimary_email=t@example.net\n"
                      "[new]\ntags=new\n[maildir]\nsynchronize_flags=false\n")
    home = root / "gnupg"
    home.mkdir(mode=0o700, exist_ok=True)
    (root / "cert.asc").write_bytes(cert)
    env = {**os.environ, "NOTMUCH_CONFIG": str(config), "GNUPGHOME": str(home), "HOME": str(root)}
    try:
        subprocess.run([GPG, "--batch", "--import", str(root / "cert.asc")], capture_output=True, env=env,
                       timeout=60, check=True)
        subprocess.run([NOTMUCH, "new", "--quiet"], capture_output=True, env=env, timeout=60, check=True)
        shown = subprocess.run([NOTMUCH, "show", "--verify", "--format=json", "--entire-thread=false", "*"],
                               capture_output=True, env=env, timeout=60, check=True)
    finally:  # gpg and GMime's gpgme leave agents behind for the home; none may outlive the test
        subprocess.run(["gpgconf", "--homedir", str(home), "--kill", "all"], capture_output=True, timeout=30)
    [[[message, _]]] = json.loads(shown.stdout)
    [body] = message["body"]
    return body


def notmuch_parts(part: dict) -> list[dict]:
    """The leaf parts of a notmuch JSON part, depth first."""
    content = part.get("content")
    if isinstance(content, list):
        return [leaf for sub in content for leaf in notmuch_parts(sub)]
    return [part]


def assert_notmuch_good(tmp: Path, data: bytes, cert: bytes) -> dict:
    """notmuch (GMime) reports the signature good; the signed part's JSON."""
    body = notmuch_show(tmp, data, cert)
    assert body["content-type"] == "multipart/signed", body
    assert [s["status"] for s in body["sigstatus"]] == ["good"], body["sigstatus"]
    return body["content"][0]


def test_signed_message_verifies_with_gpg_and_sqop(pgp_msa, tmp_path):  # S-1104, S-1105
    m, cert = pgp_msa
    code, text = submit(m, "alice", "alice@example.org", message())
    assert code == 250, text
    [d] = m.outbox.messages()
    head, signed, sig, micalg = split_signed(d.data)
    assert micalg.startswith(b"pgp-sha")
    ok_sq, ok_gpg, out = verify(tmp_path, signed, sig, cert)
    assert ok_sq and ok_gpg, out
    assert 'Good signature from "alice@example.org"' in out or GPG is None
    # The outer header keeps the reader's fields and says MIME-Version once.
    assert head.count(b"\r\nMIME-Version: 1.0") == 1 and b"\r\nSubject: pgp test" in head
    # Protected headers (RFC 9788): the signed part carries copies, and says so.
    part_head = signed.partition(b"\r\n\r\n")[0]
    assert re.search(rb'^Content-Type: text/plain; charset=us-ascii; protected-headers="v1"; hp="clear"', part_head)
    for name in (b"From: Alice <alice@example.org>", b"To: Carol <carol@example.net>", b"Subject: pgp test",
                 b"Date: Tue, 01 Dec 2026 10:00:00 +0000", b"Message-ID: <pgp.1@example.org>"):
        assert b"\r\n" + name + b"\r\n" in b"\r\n" + part_head + b"\r\n"
    # S-1104 (amended): the body's last line break stays in part one, and
    # the delimiter brings a line break of its own, not signed.
    assert signed.endswith(b"signed by msa.\r\n")
    assert d.data.count(signed + b"\r\n--") == 1
    m.wait_log(r"[0-9A-F]{10}: pgp=signed \(pgp-sha\d+\)")


def test_a_flipped_body_byte_fails(pgp_msa, tmp_path):  # S-1105
    m, cert = pgp_msa
    assert submit(m, "alice", "alice@example.org", message())[0] == 250
    [d] = m.outbox.messages()
    _, signed, sig, _ = split_signed(d.data)
    ok_sq, ok_gpg, _ = verify(tmp_path, signed.replace(b"signed by msa", b"signed by msb"), sig, cert)
    assert not ok_sq and not ok_gpg


@pytest.mark.parametrize(
    "mime",
    [
        b'MIME-Version: 1.0\r\nContent-Type: multipart/signed; protocol="application/pgp-signature"; micalg=pgp-sha256;'
        b' boundary="x"\r\n',
        b'MIME-Version: 1.0\r\nContent-Type: multipart/encrypted; protocol="application/pgp-encrypted"; boundary="x"\r\n',
        b"MIME-Version: 1.0\r\nContent-Type: application/pkcs7-mime; smime-type=enveloped-data\r\n",
    ],
)
def test_already_signed_or_encrypted_passes_unchanged(pgp_msa, mime):  # S-1104
    m, _ = pgp_msa
    original = message(b"--x\r\nopaque\r\n--x--\r\n", mime)
    assert submit(m, "alice", "alice@example.org", original)[0] == 250
    [d] = m.outbox.messages()
    assert msatest.strip_received(d.data) == original
    m.wait_log(r"pgp=left \(already protected\)")


def test_inline_pgp_in_the_first_text_part_passes_unchanged(pgp_msa):  # S-1104
    m, _ = pgp_msa
    original = message(b"-----BEGIN PGP SIGNED MESSAGE-----\r\nHash: SHA256\r\n\r\nhi\r\n")
    assert submit(m, "alice", "alice@example.org", original)[0] == 250
    [d] = m.outbox.messages()
    assert msatest.strip_received(d.data) == original


def test_eight_bit_body_is_reencoded_and_verifies(pgp_msa, tmp_path):  # S-1104: the 7-bit rule
    m, cert = pgp_msa
    body = "Grüße aus Köln ☃\r\nFrom the start of a line\r\ntrailing space \r\n=equals\r\n".encode()
    mime = b"MIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: 8bit\r\n"
    assert submit(m, "alice", "alice@example.org", message(body, mime))[0] == 250
    [d] = m.outbox.messages()
    _, signed, sig, _ = split_signed(d.data)
    assert signed.isascii()
    part_head, _, encoded = signed.partition(b"\r\n\r\n")
    assert b"\r\nContent-Transfer-Encoding: quoted-printable" in b"\r\n" + part_head
    assert b"8bit" not in part_head
    assert b"=46rom the start" in encoded and b"trailing space=20" in encoded and b"=3Dequals" in encoded
    import quopri

    assert quopri.decodestring(encoded).replace(b"\r\n", b"\n") == body.replace(b"\r\n", b"\n")
    ok_sq, ok_gpg, out = verify(tmp_path, signed, sig, cert)
    assert ok_sq and ok_gpg, out
    m.wait_log(r"pgp=signed \(pgp-sha\d+, quoted-printable\)")


def test_seven_bit_multipart_with_attachment_verifies(pgp_msa, tmp_path):  # S-1104
    m, cert = pgp_msa
    mime = b'MIME-Version: 1.0\r\nContent-Type: multipart/mixed;\r\n boundary="b1"\r\n'
    body = (b"--b1\r\nContent-Type: text/plain\r\n\r\nsee attached\r\n--b1\r\n"
            b"Content-Type: application/octet-stream\r\nContent-Transfer-Encoding: base64\r\n\r\n"
            + b"QUJDREVGR0hJSktMTU5PUFFSU1RVVldYWVo=\r\n" * 100 + b"--b1--\r\n")
    assert submit(m, "alice", "alice@example.org", message(body, mime))[0] == 250
    [d] = m.outbox.messages()
    _, signed, sig, _ = split_signed(d.data)
    part_head = re.sub(rb"\r\n[ \t]+", b" ", signed.partition(b"\r\n\r\n")[0])  # unfolded
    assert re.search(rb'^Content-Type: multipart/mixed; boundary="b1"; protected-headers="v1"; hp="clear"', part_head)
    assert signed.partition(b"\r\n\r\n")[2] == body  # S-1104 (amended): whole, its last CRLF included
    ok_sq, ok_gpg, out = verify(tmp_path, signed, sig, cert)
    assert ok_sq and ok_gpg, out


def test_a_user_without_a_key_is_not_signed(pgp_msa):  # S-1104
    m, _ = pgp_msa
    original = message(frm="bob@example.org")
    assert submit(m, "bob", "bob@example.org", original)[0] == 250
    [d] = m.outbox.messages()
    assert msatest.strip_received(d.data) == original


def test_mail_from_a_trusted_network_is_not_signed(start_msa, tmp_path):  # S-1104
    m, _ = make(start_msa, tmp_path, trusted_networks="127.0.0.0/8")
    original = message()  # From: alice, who has a key; but nobody logged in
    w = Wire.connect(m.ports["starttls"], timeout=30)
    w.reply()
    w.expect("EHLO relay.example", 250)
    w.transaction("alice@example.org", "carol@example.net")
    w.send(msatest.stuff(original) + b".\r\n")
    assert w.reply()[0] == 250
    w.close()
    [d] = m.outbox.messages()
    assert msatest.strip_received(d.data) == original


def test_failing_sop_is_451_and_nothing_delivered(start_msa, tmp_path):  # S-1104
    m, _ = make(start_msa, tmp_path, pgp_sop="/bin/false")
    code, text = submit(m, "alice", "alice@example.org", message())
    assert (code, text) == (451, "451 4.3.0 Temporary failure handing the message on; try again later")
    assert m.outbox.messages() == []
    assert m.spool_files() == []
    m.wait_log(r"pgp=failed \(/bin/false exit 1")


def test_pgp_and_dkim_together_both_verify(start_msa, tmp_path):  # S-1101, S-1105
    dkim = pytest.importorskip("dkim")
    keys = tmp_path / "dkim"
    conf = msatest.write_config(tmp_path / "kc", None, dkim_keys=keys)
    p = subprocess.run([sys.executable, msatest.MSA, "dkim", "keygen", "example.org", "--selector", "s1",
                        "--algorithm", "ed25519", "-c", str(conf)], capture_output=True, text=True, timeout=60)
    assert p.returncode == 0, p.stderr
    record = "".join(re.findall(r'"([^"]*)"', p.stdout)).encode()
    m, cert = make(start_msa, tmp_path, dkim_keys=keys)
    assert submit(m, "alice", "alice@example.org", message())[0] == 250
    [d] = m.outbox.messages()
    assert dkim.verify(d.data, dnsfunc=lambda name, timeout=5: record)  # computed last, over the wrapped message
    _, signed, sig, _ = split_signed(d.data)
    ok_sq, ok_gpg, out = verify(tmp_path, signed, sig, cert)
    assert ok_sq and ok_gpg, out


def test_fifty_mib_signed_with_flat_memory(start_msa, tmp_path):  # S-1102, S-1104
    m, cert = make(start_msa, tmp_path, max_message_size=64 * 1024 * 1024)
    w = Wire.connect(m.ports["tls"], tls_ctx=m.client_ctx, timeout=120)
    w.reply()
    w.expect("EHLO laptop.example", 250)
    w.expect("AUTH PLAIN " + b64("\0alice\0" + PASSWORD), 235)
    w.transaction("alice@example.org", "carol@example.net")
    code, growth = msatest.send_large_body(m, w, message(b""))
    assert code == 250
    assert growth < 32
    [d] = m.outbox.messages()
    _, signed, sig, _ = split_signed(d.data)
    ok_sq, ok_gpg, out = verify(tmp_path, signed, sig, cert)
    assert ok_sq and ok_gpg, out


def test_pgp_keygen_refuses_to_overwrite_and_needs_an_exact_sender(tmp_path):  # CONTRACT pgp keygen
    users = tmp_path / "users.db"
    msatest.add_user(users, "alice", PASSWORD, ["alice@example.org"])
    msatest.add_user(users, "dora", PASSWORD, ["@dora.example"])
    conf = msatest.write_config(tmp_path / "msa", None, users=users, pgp_keys=tmp_path / "pgp")
    assert pgp(conf, "keygen", "alice").returncode == 0
    again = pgp(conf, "keygen", "alice")
    assert again.returncode == 1 and b"exists; a key is never overwritten" in again.stderr
    wild = pgp(conf, "keygen", "dora")
    assert wild.returncode == 1 and b"no exact sender address" in wild.stderr
    export = pgp(conf, "export", "alice")
    assert export.returncode == 0 and export.stdout.startswith(b"-----BEGIN PGP PUBLIC KEY BLOCK-----")
    assert oct((tmp_path / "pgp" / "alice.key").stat().st_mode & 0o777) == "0o600"


def test_keygen_and_export_print_utf8_user_ids_in_the_armor(tmp_path):  # CONTRACT pgp keygen, RFC 9580 §6.2.2
    # Armor headers are UTF-8: a user ID with ö is printed as written, not as "?".
    users = tmp_path / "users.db"
    msatest.add_user(users, "joran", PASSWORD, ["jöran@exämple.org"])
    conf = msatest.write_config(tmp_path / "msa", None, users=users, pgp_keys=tmp_path / "pgp")
    made = pgp(conf, "keygen", "joran")
    assert made.returncode == 0, made.stderr
    export = pgp(conf, "export", "joran")
    for out in (made.stdout, export.stdout):
        assert "Comment: <jöran@exämple.org>".encode() in out or "jöran@exämple.org".encode() in out, out[:300]
        assert b"?" not in out.split(b"\n\n", 1)[0]


def test_check_reads_each_key_and_its_user_ids(tmp_path, certs):  # S-1104, CONTRACT check
    users = tmp_path / "users.db"
    msatest.add_user(users, "alice", PASSWORD, ["alice@example.org", "alice@other.example"])
    msatest.add_user(users, "bob", PASSWORD, ["bob@example.org"])
    msatest.add_user(users, "dora", PASSWORD, ["dora@example.org"])
    keys = tmp_path / "pgp"
    conf = msatest.write_config(tmp_path / "msa", certs, users=users, pgp_keys=keys)
    assert pgp(conf, "keygen", "bob").returncode == 0
    # alice's key names only one of her two addresses (made by sqop directly).
    alice = subprocess.run([SQOP, "generate-key", "Alice <alice@example.org>"], capture_output=True, check=True,
                           timeout=60).stdout
    (keys / "alice.key").write_bytes(alice)
    (keys / "alice.key").chmod(0o600)
    (keys / "carol.key").write_bytes(pgp(conf, "export", "bob").stdout)  # a public key, and no user carol
    (keys / "dora.key").write_bytes(b"not a key\n")
    checked = subprocess.run([sys.executable, msatest.MSA, "check", "-c", str(conf)], capture_output=True,
                             text=True, timeout=120)
    out = checked.stdout
    assert checked.returncode == 1, out
    assert re.search(r"msa\.conf:\d+: pgp_keys: bob signs as bob@example\.org\n", out)
    assert re.search(r"msa\.conf:\d+: pgp_keys: alice signs as alice@example\.org\n", out)
    assert f"warning: {keys / 'alice.key'}: no user ID for alice@other.example" in out
    assert f"{keys / 'carol.key'}: a public key (PUBLIC KEY BLOCK), not a secret key" in out
    assert f"warning: {keys / 'carol.key'}: no user 'carol'" in out
    assert f"{keys / 'dora.key'}: not an OpenPGP key: no ASCII-armored OpenPGP block" in out
    assert "Traceback" not in out + checked.stderr


@pytest.mark.skipif(GPG is None, reason="gpg is not installed (Debian package gnupg)")
def test_check_refuses_a_key_with_a_passphrase(tmp_path, certs):  # CONTRACT "PGP keys": no passphrase
    users = tmp_path / "users.db"
    msatest.add_user(users, "alice", PASSWORD, ["alice@example.org"])
    keys = tmp_path / "pgp"
    keys.mkdir()
    home = tmp_path / "gnupg"
    home.mkdir(mode=0o700)
    gpg = [GPG, "--batch", "--homedir", str(home), "--pinentry-mode", "loopback", "--passphrase", "secret"]
    try:
        subprocess.run([*gpg, "--quick-gen-key", "alice@example.org", "ed25519", "sign", "never"], check=True,
                       capture_output=True, timeout=60)
        locked = subprocess.run([*gpg, "--armor", "--export-secret-keys", "alice@example.org"], check=True,
                                capture_output=True, timeout=60).stdout
    finally:  # gpg leaves its agent running
        subprocess.run(["gpgconf", "--homedir", str(home), "--kill", "gpg-agent"], capture_output=True, timeout=30)
    (keys / "alice.key").write_bytes(locked)
    (keys / "alice.key").chmod(0o600)
    conf = msatest.write_config(tmp_path / "msa", certs, users=users, pgp_keys=keys)
    checked = subprocess.run([sys.executable, msatest.MSA, "check", "-c", str(conf)], capture_output=True,
                             text=True, timeout=120)
    assert checked.returncode == 1
    assert re.search(rf"{re.escape(str(keys / 'alice.key'))}: sqop cannot sign with it \(exit \d+: .*\); "
                     r"a key with a passphrase cannot be used unattended", checked.stdout), checked.stdout


def _wrapper(tmp_path: Path) -> tuple[Path, Path]:
    """A pgp_sop that notes each start in a file, then runs sqop."""
    starts = tmp_path / "starts"
    script = tmp_path / "sop-wrapper"
    script.write_text(f"#!/bin/sh\necho \"$@\" >> {starts}\nexec {SQOP} \"$@\"\n")
    script.chmod(0o755)
    return script, starts


def _open_data(m) -> Wire:
    w = Wire.connect(m.ports["tls"], tls_ctx=m.client_ctx, timeout=60)
    w.reply()
    w.expect("EHLO laptop.example", 250)
    w.expect("AUTH PLAIN " + b64("\0alice\0" + PASSWORD), 235)
    w.transaction("alice@example.org", "carol@example.net")
    return w


def test_the_signer_starts_at_the_end_of_the_header_and_signs_what_follows(start_msa, tmp_path):  # S-1104
    script, starts = _wrapper(tmp_path)
    m, cert = make(start_msa, tmp_path, pgp_sop=script)
    w = _open_data(m)
    w.send(message(b"first part of the body\r\n"))
    # The signer runs before the final dot: it was started when the header ended.
    assert msatest.wait_until(lambda: starts.exists() and any("sqop" in c or "sop-wrapper" in c for c in m.children()))
    w.send(b"the rest, sent after the signer started\r\n.\r\n")
    assert w.reply()[0] == 250
    w.close()
    assert len(starts.read_text().splitlines()) == 1  # the guess was right: signed once
    [d] = m.outbox.messages()
    _, signed, sig, _ = split_signed(d.data)
    assert signed.endswith(b"first part of the body\r\nthe rest, sent after the signer started\r\n")
    ok_sq, ok_gpg, out = verify(tmp_path, signed, sig, cert)
    assert ok_sq and ok_gpg, out


def test_a_wrong_guess_is_signed_again_and_verifies(start_msa, tmp_path):  # S-1104: the 7-bit rule
    script, starts = _wrapper(tmp_path)
    m, cert = make(start_msa, tmp_path, pgp_sop=script)
    w = _open_data(m)
    w.send(message(b"plain so far\r\n"))
    assert msatest.wait_until(starts.exists)
    w.send("then 8-bit: Grüße\r\n.\r\n".encode())  # the early signer's header said 7bit: stopped
    assert w.reply()[0] == 250
    w.close()
    assert len(starts.read_text().splitlines()) == 2
    [d] = m.outbox.messages()
    _, signed, sig, _ = split_signed(d.data)
    assert b"Content-Transfer-Encoding: quoted-printable" in signed and b"Gr=C3=BC=C3=9Fe" in signed
    ok_sq, ok_gpg, out = verify(tmp_path, signed, sig, cert)
    assert ok_sq and ok_gpg, out
    assert msatest.wait_until(lambda: not m.children())


def test_a_client_leaving_mid_body_stops_the_signer(start_msa, tmp_path):  # S-1104, S-1102
    script, starts = _wrapper(tmp_path)
    m, _ = make(start_msa, tmp_path, pgp_sop=script)
    w = _open_data(m)
    w.send(message(b"x" * 1000 + b"\r\n"))
    assert msatest.wait_until(lambda: bool(m.children()))
    w.close()
    assert msatest.wait_until(lambda: not m.children()), m.children()
    assert msatest.wait_until(lambda: m.spool_files() == []), m.spool_files()
    assert m.outbox.messages() == []


@needs_notmuch
def test_notmuch_verifies_a_signed_text_and_keeps_its_last_line_break(pgp_msa, tmp_path):  # S-1104 (amended)
    m, cert = pgp_msa
    assert submit(m, "alice", "alice@example.org", message())[0] == 250
    [d] = m.outbox.messages()
    signed_part = assert_notmuch_good(tmp_path, d.data, cert)
    assert signed_part["content-type"] == "text/plain"
    assert signed_part["content"] == "Hello Carol,\n\nsigned by msa.\n"


ALTERNATIVE = (b'MIME-Version: 1.0\r\nContent-Type: multipart/alternative; boundary="alt1"\r\n',
               b"--alt1\r\nContent-Type: text/plain; charset=us-ascii\r\n\r\nHello Carol,\r\n\r\nin two forms.\r\n"
               b"\r\n--alt1\r\nContent-Type: text/html; charset=us-ascii\r\n\r\n<p>Hello Carol,</p>\r\n"
               b"<p>in two forms.</p>\r\n\r\n--alt1--\r\n")
ATTACHMENT = (b'MIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary="mix1"\r\n',
              b"This is a multi-part message in MIME format.\r\n--mix1\r\n"
              b"Content-Type: text/plain; charset=us-ascii\r\n\r\nsee attached\r\n\r\n--mix1\r\n"
              b"Content-Type: application/octet-stream\r\nContent-Transfer-Encoding: base64\r\n"
              b'Content-Disposition: attachment; filename="abc.bin"\r\n\r\n'
              + b"QUJDREVGR0hJSktMTU5PUFFSU1RVVldYWVo=\r\n" * 20 + b"\r\n--mix1--\r\n")


@needs_notmuch
@pytest.mark.parametrize(("mime", "body", "text"), [(*ALTERNATIVE, "Hello Carol,\n\nin two forms.\n"),
                                                   (*ATTACHMENT, "see attached\n")], ids=["alternative", "attachment"])
def test_notmuch_verifies_a_signed_multipart(pgp_msa, tmp_path, mime, body, text):  # S-1104 (amended), S-1105
    m, cert = pgp_msa
    assert submit(m, "alice", "alice@example.org", message(body, mime))[0] == 250
    [d] = m.outbox.messages()
    signed_part = assert_notmuch_good(tmp_path, d.data, cert)
    leaves = notmuch_parts(signed_part)
    assert len(leaves) == 2
    assert leaves[0]["content-type"] == "text/plain"
    assert leaves[0]["content"] == text  # decoded, its last line break kept
    _, signed, sig, _ = split_signed(d.data)
    assert signed.partition(b"\r\n\r\n")[2] == body
    ok_sq, ok_gpg, out = verify(tmp_path, signed, sig, cert)
    assert ok_sq and ok_gpg, out


def test_an_empty_body_gets_a_line_break_inside_the_signed_part(pgp_msa, tmp_path):  # S-1104 (amended)
    m, cert = pgp_msa
    assert submit(m, "alice", "alice@example.org", message(b""))[0] == 250
    [d] = m.outbox.messages()
    _, signed, sig, _ = split_signed(d.data)
    assert signed.endswith(b"\r\n\r\n\r\n")  # the end of the header, its empty line, the body's line break
    ok_sq, ok_gpg, out = verify(tmp_path, signed, sig, cert)
    assert ok_sq and ok_gpg, out


def parsed_leaves(data: bytes) -> list[tuple[str, dict, bytes]]:
    """(type, parameters but RFC 9788's, decoded payload, text content) of
    every leaf part, by Python's email parser."""
    import email
    import email.policy

    msg = email.message_from_bytes(data, policy=email.policy.default)
    return [(p.get_content_type(),
             {k: v for k, v in (p["content-type"].params if p["content-type"] else {}).items()
              if k not in ("protected-headers", "hp")},
             p.get_payload(decode=True), p.get_content() if p.get_content_maintype() == "text" else None)
            for p in msg.walk() if not p.is_multipart()]


def signed_entity(data: bytes) -> bytes:
    """Part one of a delivered multipart/signed message, as an entity."""
    return split_signed(data)[1]


@pytest.mark.parametrize(
    ("mime", "body"),
    [
        (b'MIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary="a  b"\r\n',
         b"--a  b\r\nContent-Type: text/plain\r\n\r\nfirst\r\n--a  b\r\nContent-Type: text/plain\r\n\r\n"
         b"second\r\n--a  b--\r\n"),
        (b'MIME-Version: 1.0\r\nContent-Type: application/octet-stream; name="a;b"\r\n'
         b"Content-Transfer-Encoding: base64\r\n", b"QUJD\r\n"),
    ],
    ids=["boundary-with-two-spaces", "name-with-a-semicolon"],
)
def test_the_content_type_is_kept_byte_for_byte(pgp_msa, tmp_path, mime, body):  # S-1104
    m, cert = pgp_msa
    original = message(body, mime)
    assert submit(m, "alice", "alice@example.org", original)[0] == 250
    [d] = m.outbox.messages()
    _, signed, sig, _ = split_signed(d.data)
    part_head = signed.partition(b"\r\n\r\n")[0]
    ct = re.search(rb"Content-Type: [^\r]*\r\n", mime).group(0)[:-2]
    assert part_head.startswith(ct + b";")
    cte = re.search(rb"Content-Transfer-Encoding: [^\r]*\r\n", mime)
    assert cte is None or cte.group(0) in part_head
    assert parsed_leaves(signed) == parsed_leaves(original)  # every part kept, named as sent
    ok_sq, ok_gpg, out = verify(tmp_path, signed, sig, cert)
    assert ok_sq and ok_gpg, out
    if NOTMUCH is not None and GPG is not None:
        assert_notmuch_good(tmp_path, d.data, cert)


def _python_email_message() -> bytes:
    """What Python's email package sends: 8-bit parts (policy SMTP, cte_type 8bit)."""
    import email.message
    import email.policy

    msg = email.message.EmailMessage()
    msg["From"] = "Alice <alice@example.org>"
    msg["To"] = "Carol <carol@example.net>"
    msg["Subject"] = "pgp test"
    msg["Date"] = "Tue, 01 Dec 2026 10:00:00 +0000"
    msg["Message-ID"] = "<pgp.1@example.org>"
    msg.set_content("Grüße aus Köln,\nFrom Alice\nwith a trailing space \n")
    msg.add_alternative("<p>Grüße aus Köln</p>\n", subtype="html")
    msg.add_attachment(bytes(range(256)) * 8, maintype="application", subtype="octet-stream", filename="data.bin")
    return msg.as_bytes(policy=email.policy.SMTP)


_MUTT = (b'MIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary="qDbmr5VvAoA1Wj5E"\r\n'
         b"Content-Disposition: inline\r\nContent-Transfer-Encoding: 8bit\r\n",
         b"\r\n--qDbmr5VvAoA1Wj5E\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Disposition: inline\r\n"
         b"Content-Transfer-Encoding: 8bit\r\n\r\nHallo Carol,\r\n\r\nGr\xc3\xbc\xc3\x9fe aus K\xc3\xb6ln.\r\n\r\n"
         b"-- \r\nAlice\r\n\r\n--qDbmr5VvAoA1Wj5E\r\nContent-Type: application/octet-stream\r\n"
         b'Content-Disposition: attachment; filename="data.bin"\r\nContent-Transfer-Encoding: base64\r\n\r\n'
         + b"AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8gISIjJCUmJygpKissLS4vMDEyMzQ1Njc4\r\n" * 30
         + b"\r\n--qDbmr5VvAoA1Wj5E--\r\n")
_NESTED = (b'MIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary="outer"\r\n',
           b"--outer\r\nContent-Type: multipart/alternative; boundary=\"inner\"\r\n\r\n"
           b"--inner\r\nContent-Type: text/plain; charset=us-ascii\r\n\r\nHello Carol\r\n\r\n"
           b"--inner\r\nContent-Type: text/html; charset=utf-8\r\nContent-Transfer-Encoding: 8bit\r\n\r\n"
           b"<p>Gr\xc3\xbc\xc3\x9fe, Carol</p>\r\n\r\n--inner--\r\n\r\n--outer\r\n"
           b"Content-Type: text/plain; charset=us-ascii\r\nContent-Disposition: attachment; filename=\"n.txt\"\r\n\r\n"
           b"notes\r\n\r\n--outer--\r\n")
_FORWARD = (b'MIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary="fw"\r\n',
            b"--fw\r\nContent-Type: text/plain\r\n\r\nforwarded below\r\n\r\n--fw\r\nContent-Type: message/rfc822\r\n"
            b"Content-Transfer-Encoding: 8bit\r\nContent-Disposition: attachment\r\n\r\n"
            b"From: Dora <dora@example.com>\r\nSubject: original\r\nMIME-Version: 1.0\r\n"
            b"Content-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: 8bit\r\n\r\n"
            b"D\xc3\xa9j\xc3\xa0 vu\r\nFrom here\r\n\r\n--fw--\r\n")
_QP_FROM = (b"MIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\n"
            b"Content-Transfer-Encoding: quoted-printable\r\n",
            b"Hello Carol,\r\nFrom the start of a line, caf=C3=A9 and a soft =\r\nbreak.\r\n")
_OCTETS = (b"MIME-Version: 1.0\r\nContent-Type: application/octet-stream\r\nContent-Transfer-Encoding: 8bit\r\n"
           b'Content-Disposition: attachment; filename="raw.bin"\r\n',
           bytes(c for c in range(1, 256) if c not in (10, 13)) * 10 + b"\r\nFrom \r\n")
REENCODED = {
    "mutt": (_MUTT, r"1 part re-encoded"),
    "python-email": (None, r"2 parts re-encoded"),
    "nested-alternative": (_NESTED, r"1 part re-encoded"),
    "message-rfc822": (_FORWARD, r"1 part re-encoded"),
    "quoted-printable-from-line": (_QP_FROM, r"quoted-printable"),
    "eight-bit-octet-stream": (_OCTETS, r"base64"),
}


def assert_seven_bit_safe(data: bytes) -> None:  # RFC 3156 §3
    assert data.isascii()
    for line in data.split(b"\r\n"):
        assert not line.startswith(b"From ") and not line.endswith((b" ", b"\t")), line


@pytest.mark.parametrize("case", list(REENCODED))
def test_what_clients_send_is_reencoded_signed_and_decodes_the_same(pgp_msa, tmp_path, case):  # S-1104 (amended)
    m, cert = pgp_msa
    parts, note = REENCODED[case]
    original = _python_email_message() if parts is None else message(parts[1], parts[0])
    assert submit(m, "alice", "alice@example.org", original)[0] == 250
    [d] = m.outbox.messages()
    _, signed, sig, _ = split_signed(d.data)
    assert_seven_bit_safe(signed)
    assert parsed_leaves(signed) == parsed_leaves(original)  # every part decodes to what was sent
    ok_sq, ok_gpg, out = verify(tmp_path, signed, sig, cert)
    assert ok_sq and ok_gpg, out
    if NOTMUCH is not None and GPG is not None:
        assert_notmuch_good(tmp_path, d.data, cert)
    m.wait_log(rf"pgp=signed \(pgp-sha\d+, {note}\)")


def test_a_container_labelled_eight_bit_is_labelled_seven_bit_once_reencoded(pgp_msa):  # S-1104
    m, _ = pgp_msa
    assert submit(m, "alice", "alice@example.org", message(_FORWARD[1], _FORWARD[0]))[0] == 250
    [d] = m.outbox.messages()
    signed = split_signed(d.data)[1]
    assert b"Content-Type: message/rfc822\r\nContent-Transfer-Encoding: 7bit\r\nContent-Disposition: attachment\r\n" \
        in signed  # the rest of its header as it was
    assert b"Subject: original\r\nMIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\n" \
        b"Content-Transfer-Encoding: quoted-printable\r\n\r\nD=C3=A9j=C3=A0 vu\r\n=46rom here\r\n" in signed
    # The mutt message's top-level label goes into the signed part's header, changed the same way.
    assert submit(m, "alice", "alice@example.org", message(_MUTT[1], _MUTT[0]))[0] == 250
    part_head = split_signed(m.outbox.messages()[1].data)[1].partition(b"\r\n\r\n")[0]
    assert b"\r\nContent-Transfer-Encoding: 7bit\r\n" in part_head + b"\r\n" and b"8bit" not in part_head


def test_a_body_past_the_walkers_bounds_is_sent_unsigned_with_the_reason(pgp_msa):  # S-1102, S-1104
    m, _ = pgp_msa
    deep = b"".join(b"--b%d\r\nContent-Type: multipart/mixed; boundary=b%d\r\n\r\n" % (i, i + 1) for i in range(60))
    original = message(deep + b"--b60\r\n\r\ncaf\xc3\xa9\r\n",
                       b"MIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=b0\r\n")
    assert submit(m, "alice", "alice@example.org", original)[0] == 250
    [d] = m.outbox.messages()
    assert msatest.strip_received(d.data) == original
    m.wait_log(r"pgp=skipped \(parts nested deeper than 50\)")


def test_an_eight_bit_part_inside_a_signed_part_is_not_touched(pgp_msa):  # S-1104, RFC 1847 §2.1
    m, _ = pgp_msa
    body = (b"--b\r\nContent-Type: text/plain\r\n\r\nsee the signed part\r\n--b\r\n"
            b'Content-Type: multipart/signed; protocol="application/pgp-signature"; boundary=s\r\n\r\n'
            b"--s\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: 8bit\r\n\r\n"
            b"caf\xc3\xa9\r\n--s\r\nContent-Type: application/pgp-signature\r\n\r\nSIG\r\n--s--\r\n--b--\r\n")
    original = message(body, b"MIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=b\r\n")
    assert submit(m, "alice", "alice@example.org", original)[0] == 250
    [d] = m.outbox.messages()
    assert msatest.strip_received(d.data) == original
    m.wait_log(r"pgp=skipped \(an 8-bit or unsafe part inside a signed or encrypted part\)")


def test_fifty_mib_part_reencoded_with_flat_memory(start_msa, tmp_path):  # S-1102, S-1104
    m, cert = make(start_msa, tmp_path, max_message_size=128 * 1024 * 1024)
    w = Wire.connect(m.ports["tls"], tls_ctx=m.client_ctx, timeout=300)
    w.reply()
    w.expect("EHLO laptop.example", 250)
    w.expect("AUTH PLAIN " + b64("\0alice\0" + PASSWORD), 235)
    w.transaction("alice@example.org", "carol@example.net")
    mime = b'MIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary="big"\r\n'
    opening = b"--big\r\nContent-Type: text/plain; charset=us-ascii\r\nContent-Transfer-Encoding: 8bit\r\n\r\n"
    code, growth = msatest.send_large_body(m, w, message(opening, mime))  # declared 8bit: re-encoded
    assert code == 250
    assert growth < 32
    [d] = m.outbox.messages()
    _, signed, sig, _ = split_signed(d.data)
    assert b"Content-Transfer-Encoding: quoted-printable\r\n" in signed
    ok_sq, ok_gpg, out = verify(tmp_path, signed, sig, cert)
    assert ok_sq and ok_gpg, out
    m.wait_log(r"pgp=signed \(pgp-sha\d+, 1 part re-encoded\)")


def test_signers_on_a_host_are_bounded_by_its_cores(start_msa, tmp_path):  # S-1106's bound, S-1104
    # Sessions that stop after their header each want an early signer; at
    # most one per core runs; the others are signed at the dot, each waiting
    # for a slot within its time budget, and every message still verifies.
    from delivery.slots import cores

    script, starts = _wrapper(tmp_path)
    m, cert = make(start_msa, tmp_path, pgp_sop=script)
    sessions = [_open_data(m) for _ in range(cores() + 3)]
    for w in sessions:
        w.send(message(b"a body that is still arriving\r\n"))

    def signers() -> int:
        return sum("sop-wrapper" in c or "sqop" in c for c in m.children())

    assert msatest.wait_until(lambda: signers() == cores())
    most = 0
    deadline = time.monotonic() + 1.0
    while time.monotonic() < deadline:
        most = max(most, signers())
        time.sleep(0.05)
    assert most == cores(), most
    for w in sessions:
        w.send(b"the end\r\n.\r\n")
    for w in sessions:
        assert w.reply()[0] == 250
        w.close()
    for d in m.outbox.messages():
        _, signed, sig, _ = split_signed(d.data)
        assert verify(tmp_path, signed, sig, cert)[:2] == (True, True)
