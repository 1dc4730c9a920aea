"""DKIM signing end to end (SPEC.md S-1101 to S-1103, S-1105): keys made by
the real `msa.py dkim keygen`, messages through a real `msa.py serve`, the
delivered bytes verified with dkimpy (a local dnsfunc serving the printed
TXT records) and with OpenDKIM's `opendkim -t`."""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest

import msatest
from msatest import Wire, b64

dkim = pytest.importorskip("dkim", reason="dkimpy is a test dependency (requirements-dev.txt)")

PASSWORD = "alice dkim pw"


#: Keys `msa.py dkim keygen` made, by its arguments: another test's key
#: directory gets a copy (an RSA key and a Python start cost about 0.5 s).
_KEYS: dict[tuple, tuple[bytes, str]] = {}


def keygen(conf: Path, domain: str, *args: str) -> str:
    """`msa.py dkim keygen` (once per distinct key, then its file copied);
    the zone-file line it prints."""
    import configparser
    import tempfile

    cfg = configparser.ConfigParser()
    cfg.read(conf)
    keys = Path(conf).parent / cfg["msa"]["dkim_keys"]
    selector = args[args.index("--selector") + 1]
    if (domain, args) not in _KEYS:
        with tempfile.TemporaryDirectory() as scratch:
            scratch_conf = msatest.write_config(Path(scratch), None, dkim_keys=Path(scratch) / "keys")
            p = subprocess.run([sys.executable, msatest.MSA, "dkim", "keygen", domain, *args, "-c",
                                str(scratch_conf)], capture_output=True, text=True, timeout=60)
            assert p.returncode == 0, p.stderr
            [made] = (Path(scratch) / "keys").glob(f"*/{selector}.key")
            _KEYS[(domain, args)] = (made.read_bytes(), p.stdout.strip())
    pem, line = _KEYS[(domain, args)]
    sub = keys / made_dir(domain)
    sub.mkdir(parents=True, exist_ok=True)
    (sub / f"{selector}.key").write_bytes(pem)
    (sub / f"{selector}.key").chmod(0o600)
    return line


def made_dir(domain: str) -> str:
    import idna

    return domain if domain.isascii() else idna.encode(domain, uts46=True).decode()


def records(conf: Path) -> dict[str, str]:
    """`msa.py dkim dns`: {"sel._domainkey.domain.": TXT value joined}."""
    p = subprocess.run([sys.executable, msatest.MSA, "dkim", "dns", "-c", str(conf)], capture_output=True,
                       text=True, timeout=60)
    assert p.returncode == 0, p.stderr
    out = {}
    for line in p.stdout.splitlines():
        name, _, rest = line.partition(" IN TXT ")
        out[name] = "".join(re.findall(r'"([^"]*)"', rest))
    return out


def dnsfunc_for(recs: dict[str, str]):
    def dnsfunc(name: bytes, timeout: int = 5) -> bytes:
        return recs.get(name.decode().rstrip(".") + ".", "").encode()

    return dnsfunc


def signatures(message: bytes) -> list[bytes]:
    return re.findall(rb"^DKIM-Signature:.*?(?=\r\n[^ \t])", message, re.S | re.M)


def verify_all(message: bytes, recs: dict[str, str]) -> list[bool]:
    """dkimpy's verdict on each DKIM-Signature field, top to bottom."""
    d = dkim.DKIM(message)
    out = []
    for i in range(len(signatures(message))):
        try:
            out.append(bool(d.verify(idx=i, dnsfunc=dnsfunc_for(recs))))
        except dkim.ValidationError:  # a body hash mismatch, among others
            out.append(False)
    return out


def opendkim_verdicts(tmp: Path, message: bytes, recs: dict[str, str]) -> str:
    """`opendkim -t`'s output (it exits 0 whatever the verdict)."""
    opendkim = shutil.which("opendkim") or "/usr/sbin/opendkim"
    if not os.access(opendkim, os.X_OK):
        pytest.skip("OpenDKIM is not installed (package opendkim)")
    keys = tmp / "opendkim-keys.txt"
    keys.write_text("".join(f"{name.rstrip('.')} {value}\n" for name, value in recs.items()))
    conf = tmp / "opendkim.conf"
    conf.write_text(f"Mode v\nTestPublicKeys {keys}\nSyslog no\nLogResults yes\n")
    msg = tmp / "message.eml"
    msg.write_bytes(message.replace(b"\r\n", b"\n"))
    p = subprocess.run([opendkim, "-x", str(conf), "-vvv", "-t", str(msg)], capture_output=True, text=True,
                       timeout=60)
    return p.stdout + p.stderr


@pytest.fixture
def signer(start_msa, tmp_path):
    """msa with DKIM keys: example.org (RSA and Ed25519), second.example
    (Ed25519), bücher.example (RSA); alice may send as all of them and as
    alice@nokey.example."""
    return make_signer(start_msa, tmp_path)


def make_signer(start_msa, tmp_path, **overrides):
    conf_dir = tmp_path / "msa"
    conf_dir.mkdir()
    users = tmp_path / "users.db"
    msatest.add_user(users, "alice", PASSWORD, ["alice@example.org", "@second.example", "@nokey.example",
                                                "alice@bücher.example"])
    keys = tmp_path / "keys"
    conf = msatest.write_config(conf_dir, None, dkim_keys=keys)
    keygen(conf, "example.org", "--selector", "rsa1")
    keygen(conf, "example.org", "--selector", "ed1", "--algorithm", "ed25519")
    keygen(conf, "second.example", "--selector", "s2", "--algorithm", "ed25519")
    keygen(conf, "bücher.example", "--selector", "idn")
    m = start_msa(users=users, trusted_networks="", dkim_keys=keys, **overrides)
    return m, records(conf), conf


def submit(m, sender: str, message: bytes, rcpt: str = "bob@example.net", utf8: bool = False) -> tuple[int, str]:
    w = Wire.connect(m.ports["tls"], tls_ctx=m.client_ctx, timeout=60)
    try:
        w.reply()
        w.expect("EHLO laptop.example", 250)
        w.expect("AUTH PLAIN " + b64("\0alice\0" + PASSWORD), 235)
        w.expect(f"MAIL FROM:<{sender}>" + (" SMTPUTF8" if utf8 else " BODY=8BITMIME"), 250)
        w.expect(f"RCPT TO:<{rcpt}>".encode(), 250)
        w.expect("DATA", 354)
        w.send(msatest.stuff(message) + b".\r\n")
        return w.reply()
    finally:
        w.close()


def message(frm: str, body: bytes = b"Hello,\r\n\r\nthis is signed.\r\n", extra: bytes = b"") -> bytes:
    return (f"From: Alice <{frm}>\r\nTo: Bob <bob@example.net>\r\nSubject: dkim test\r\n".encode()
            + b"Date: Tue, 01 Dec 2026 10:00:00 +0000\r\nMessage-ID: <dkim.1@example.org>\r\n"
            + b"MIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\n" + extra + b"\r\n" + body)


def test_rsa_and_ed25519_signatures_verify_with_dkimpy_and_opendkim(signer, tmp_path):  # S-1103, S-1105
    m, recs, _ = signer
    code, text = submit(m, "alice@example.org", message("alice@example.org"))
    assert code == 250, (text, m.log()[-1500:])
    [d] = m.outbox.messages()
    sigs = signatures(d.data)
    assert len(sigs) == 2
    # Right below msa's Received: (the first field), b= last.
    assert d.data.startswith(b"Received: ")
    head = d.data.split(b"\r\n\r\n")[0]
    names = [line.split(b":")[0] for line in head.split(b"\r\n") if line[:1] not in (b" ", b"\t")]
    assert names[:3] == [b"Received", b"DKIM-Signature", b"DKIM-Signature"]
    for sig in sigs:
        assert re.search(rb"\bc=relaxed/relaxed;", sig) and re.search(rb"\bd=example\.org;", sig)
        assert re.search(rb";\s+b=[A-Za-z0-9+/=\s]+$", sig)
        assert b"l=" not in sig and b"x=" not in sig
        h = re.search(rb"h=([^;]*);", sig).group(1).replace(b"\r\n\t ", b"").split(b":")
        assert h.count(b"from") == 2 and h.count(b"subject") == 2 and b"received" not in h  # oversigned
        assert h.count(b"reply-to") == 1  # absent: listed once
    assert {re.search(rb"a=([a-z0-9-]+);", s).group(1) for s in sigs} == {b"rsa-sha256", b"ed25519-sha256"}
    assert verify_all(d.data, recs) == [True, True]
    out = opendkim_verdicts(tmp_path, d.data, recs)
    assert re.search(r"dkim=pass \(2048-bit key\) header\.d=example\.org .*header\.a=rsa-sha256 header\.s=rsa1\b",
                     out), out
    assert re.search(r"dkim=pass header\.d=example\.org .*header\.a=ed25519-sha256 header\.s=ed1\b", out), out
    m.wait_log(r"[0-9A-F]{10}: dkim=signed, d=example\.org, s=(rsa1|ed1) \(.*\), s=(rsa1|ed1) \(")


def test_a_changed_body_byte_or_an_added_from_fails(signer, tmp_path):  # S-1103, S-1105
    m, recs, _ = signer
    assert submit(m, "alice@example.org", message("alice@example.org"))[0] == 250
    [d] = m.outbox.messages()
    tampered = d.data.replace(b"this is signed", b"this is signeD")
    assert verify_all(tampered, recs) == [False, False]
    out = opendkim_verdicts(tmp_path, tampered, recs)
    assert "dkim=pass" not in out and "dkim=fail" in out, out
    head, _, body = d.data.partition(b"\r\n\r\n")
    added = head + b"\r\nFrom: ceo@example.org\r\n\r\n" + body  # oversigned: no From: can be added
    assert verify_all(added, recs) == [False, False]
    stamp = head + b"\r\nX-Hashcash: 1:20:261201:bob@example.net::abc:def\r\n\r\n" + body
    assert verify_all(stamp, recs) == [True, True]  # not signed, may be added later


def test_domain_without_keys_is_sent_unsigned(signer):  # S-1103
    m, _, _ = signer
    assert submit(m, "alice@nokey.example", message("alice@nokey.example"))[0] == 250
    [d] = m.outbox.messages()
    assert signatures(d.data) == []
    m.wait_log(r"[0-9A-F]{10}: dkim=none, d=nokey\.example")


def test_a_user_of_two_domains_is_signed_by_the_from_domain(signer):  # S-1103
    m, recs, _ = signer
    assert submit(m, "alice@example.org", message("carol@second.example"))[0] == 250
    [d] = m.outbox.messages()
    [sig] = signatures(d.data)
    assert b"d=second.example;" in sig and b"s=s2;" in sig
    assert verify_all(d.data, recs) == [True]


@pytest.mark.parametrize(
    ("body", "extra", "utf8"),
    [
        (b"Gr\xc3\xbc\xc3\x9fe \xe2\x98\x83\r\nlatin-1 caf\xe9\r\n", b"Content-Transfer-Encoding: 8bit\r\n", False),
        (b"x" * 5000 + b"  \t \r\n" + b"y" * 70000 + b"\r\n\r\n\r\n", b"", False),  # long lines, WSP, empty lines
        (b".leading dot\r\n..two\r\n.\r\n\r\n", b"", False),
        (b"", b"", False),  # no body at all
        ("Unicode addresses \u2603\r\n".encode(), b"", True),
    ],
)
def test_eight_bit_long_line_dot_and_utf8_bodies_verify(signer, body, extra, utf8):  # S-1103
    m, recs, _ = signer
    frm = "alice@bücher.example" if utf8 else "alice@example.org"
    code, text = submit(m, frm, message(frm, body, extra), rcpt="bø@example.net" if utf8 else "bob@example.net",
                        utf8=utf8)
    assert code == 250, text
    [d] = m.outbox.messages()
    sigs = signatures(d.data)
    assert sigs and all(v for v in verify_all(d.data, recs)), d.data[:2000]
    if utf8:
        assert b"d=xn--bcher-kva.example;" in sigs[0]  # the A-label


def test_fifty_mib_signs_with_flat_memory(start_msa, tmp_path):  # S-1102, S-1103
    m, recs, _ = make_signer(start_msa, tmp_path, max_message_size=64 * 1024 * 1024)
    w = Wire.connect(m.ports["tls"], tls_ctx=m.client_ctx, timeout=120)
    w.reply()
    w.expect("EHLO laptop.example", 250)
    w.expect("AUTH PLAIN " + b64("\0alice\0" + PASSWORD), 235)
    w.expect("MAIL FROM:<alice@example.org>", 250)
    w.expect("RCPT TO:<bob@example.net>", 250)
    w.expect("DATA", 354)
    code, growth = msatest.send_large_body(m, w, message("alice@example.org", b""))
    assert code == 250
    assert growth < 32
    [d] = m.outbox.messages()
    assert verify_all(d.data, recs) == [True, True]


def test_key_that_cannot_sign_is_451_and_never_sent_unsigned(start_msa, tmp_path):  # S-1103
    users = tmp_path / "users.db"
    msatest.add_user(users, "alice", PASSWORD, ["@example.org"])
    keys = tmp_path / "keys"
    (keys / "example.org").mkdir(parents=True)
    (keys / "example.org" / "broken.key").write_text("-----BEGIN PRIVATE KEY-----\nnot a key\n-----END PRIVATE KEY-----\n")
    m = start_msa(users=users, trusted_networks="", dkim_keys=keys)
    m.wait_log(r"error: dkim: .*broken\.key: not a PEM private key .*; skipped")
    code, text = submit(m, "alice@example.org", message("alice@example.org"))
    assert (code, text) == (451, "451 4.3.0 Temporary failure handing the message on; try again later")
    assert m.outbox.messages() == []
    m.wait_log(r"dkim=failed, d=example\.org: no usable key")


def test_rsa_under_1024_bits_is_refused(tmp_path):  # S-1103, RFC 8301
    # cryptography will not make such a key; OpenSSL's genrsa still can.
    if shutil.which("openssl") is None:
        pytest.skip("openssl is not installed")
    keys = tmp_path / "keys"
    (keys / "example.org").mkdir(parents=True)
    subprocess.run(["openssl", "genrsa", "-out", str(keys / "example.org" / "old.key"), "768"],
                   capture_output=True, check=True, timeout=60)
    conf = msatest.write_config(tmp_path / "msa", None, dkim_keys=keys)
    p = subprocess.run([sys.executable, msatest.MSA, "check", "-c", str(conf)], capture_output=True, text=True,
                       timeout=60)
    assert p.returncode == 1
    assert re.search(r"old\.key: an RSA key of 768 bits; at least 1024 sign \(RFC 8301\); skipped", p.stdout), p.stdout


def test_reload_adds_a_key_and_keeps_the_last_good_one(signer, tmp_path):  # S-1103, CONTRACT reload
    m, recs, conf = signer
    line = keygen(conf, "nokey.example", "--selector", "late", "--algorithm", "ed25519")
    recs = records(conf)
    path = tmp_path / "keys" / "example.org" / "rsa1.key"
    good = path.read_bytes()
    path.write_text("garbage\n")
    m.proc.send_signal(signal.SIGHUP)
    m.wait_log(r"dkim: .*rsa1\.key: not a PEM private key .*; the key loaded before stays in force")
    m.wait_log(r"reloaded: ")
    assert "late._domainkey.nokey.example." in line
    assert submit(m, "alice@nokey.example", message("alice@nokey.example"))[0] == 250
    assert submit(m, "alice@example.org", message("alice@example.org"))[0] == 250
    first, second = m.outbox.messages()
    assert verify_all(first.data, recs) == [True]
    path.write_bytes(good)
    assert verify_all(second.data, recs) == [True, True]  # rsa1 still signs, from memory


def test_check_says_which_domains_sign_and_names_a_missing_cryptography(signer, tmp_path):  # S-1103
    _, _, conf = signer
    p = subprocess.run([sys.executable, msatest.MSA, "check", "-c", str(conf)], capture_output=True, text=True,
                       timeout=60)
    assert re.search(r"dkim_keys: example\.org signs with ed1 \(ed25519-sha256\), rsa1 \(rsa-sha256, 2048 bits\)",
                     p.stdout), p.stdout
    assert "dkim_keys: second.example signs with s2 (ed25519-sha256)" in p.stdout
    # Without the package (a stand-in that fails to import), check names it.
    shim = tmp_path / "shim" / "cryptography"
    shim.mkdir(parents=True)
    (shim / "__init__.py").write_text("raise ImportError('no cryptography here')\n")
    p = subprocess.run([sys.executable, msatest.MSA, "check", "-c", str(conf)], capture_output=True, text=True,
                       timeout=60, env={**os.environ, "PYTHONPATH": str(shim.parent)})
    assert p.returncode == 1
    assert "dkim_keys: the cryptography package is missing (Debian: apt install python3-cryptography)" in p.stdout



def test_inetd_session_signs_and_loads_keys_only_for_mail(signer, tmp_path, certs):  # S-1103, CONTRACT inetd
    import socket

    m, recs, conf = signer
    conf_text = m.conf.read_text()
    ours, theirs = socket.socketpair()
    proc = subprocess.Popen([sys.executable, msatest.MSA, "inetd", "-c", str(m.conf)], stdin=theirs, stdout=theirs,
                            stderr=subprocess.PIPE, env={**os.environ, "TCPREMOTEIP": "127.0.0.1"})
    theirs.close()
    w = Wire(ours)
    w.reply()
    w.expect("EHLO laptop.example", 250)
    w.starttls(m.client_ctx)
    w.expect("EHLO laptop.example", 250)
    w.expect("AUTH PLAIN " + b64("\0alice\0" + PASSWORD), 235)
    w.transaction("alice@example.org", "bob@example.net")
    w.send(msatest.stuff(message("alice@example.org")) + b".\r\n")
    assert w.reply()[0] == 250
    w.expect("QUIT", 221)
    assert proc.wait(20) == 0
    [d] = m.outbox.messages()
    assert verify_all(d.data, recs) == [True, True]
    assert "dkim_keys" in conf_text
