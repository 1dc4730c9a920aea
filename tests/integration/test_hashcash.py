"""Hashcash stamps end to end (SPEC.md S-1106): minted by msa's child
process while the message arrives, checked with the real `hashcash` tool
(Debian package hashcash), never naming a Bcc recipient, bounded by the
time budget, never changing the reply."""

from __future__ import annotations

import re
import shutil
import subprocess
import time

import pytest

import msatest
from msatest import Wire, b64

HASHCASH = shutil.which("hashcash")
PASSWORD = "alice hashcash pw"
BITS = 16  # 20 is the convention; 16 keeps the tests fast (about 0.1 s a stamp)


def start(start_msa, tmp_path, **overrides):
    users = tmp_path / "users.db"
    msatest.add_user(users, "alice", PASSWORD, ["alice@example.org"])
    overrides.setdefault("hashcash_bits", BITS)
    overrides.setdefault("hashcash_time_budget", 20)
    return start_msa(users=users, trusted_networks="", **overrides)


def send(m, recipients, header: bytes, body: bytes = b"hello\r\n") -> tuple[int, str, float]:
    """(code, text, seconds from the final dot to the reply)."""
    w = Wire.connect(m.ports["tls"], tls_ctx=m.client_ctx, timeout=120)
    try:
        w.reply()
        w.expect("EHLO laptop.example", 250)
        w.expect("AUTH PLAIN " + b64("\0alice\0" + PASSWORD), 235)
        w.transaction("alice@example.org", *recipients)
        w.send(header + b"\r\n" + body if body is not None else header)
        t0 = time.monotonic()
        w.send(b".\r\n")
        code, text = w.reply()
        return code, text, time.monotonic() - t0
    finally:
        w.close()


def stamps_of(data: bytes) -> list[str]:
    head = data.partition(b"\r\n\r\n")[0].decode()
    return re.findall(r"^X-Hashcash: (\S+)\r$", head, re.M)


def check(tmp_path, stamp: str, resource: str, bits: int = BITS) -> subprocess.CompletedProcess:
    """`hashcash -cd -b BITS -r RESOURCE`, with a double-spend database."""
    return subprocess.run([HASHCASH, "-c", "-d", "-b", str(bits), "-r", resource, "-f", str(tmp_path / "spent.db"),
                           stamp], capture_output=True, text=True, timeout=30)


HEADER = (b"From: Alice <alice@example.org>\r\nTo: Carol <carol@example.net>, dave@example.net\r\n"
          b"Cc: erin@example.net, Carol@Example.net\r\nSubject: stamps\r\n")


@pytest.mark.skipif(HASHCASH is None, reason="hashcash is not installed (Debian package hashcash)")
def test_stamps_check_with_the_hashcash_tool_and_never_name_a_bcc(start_msa, tmp_path):  # S-1106
    m = start(start_msa, tmp_path)
    # dave is in To: but not an envelope recipient; frank is a Bcc (envelope only).
    code, text, _ = send(m, ["carol@example.net", "erin@example.net", "frank@example.net"], HEADER)
    assert code == 250, text
    [d] = m.outbox.messages()
    stamps = stamps_of(d.data)
    assert [s.split(":")[3] for s in stamps] == ["carol@example.net", "erin@example.net"]  # To: then Cc:, once
    assert b"frank" not in d.data.partition(b"\r\n\r\n")[0]
    for stamp in stamps:
        assert stamp.startswith(f"1:{BITS}:{time.strftime('%y%m%d', time.gmtime())}:")
        p = check(tmp_path, stamp, stamp.split(":")[3])
        assert p.returncode == 0, p.stdout + p.stderr
    again = check(tmp_path, stamps[0], "carol@example.net")
    assert again.returncode != 0  # the tool's double-spend database saw it: the check above could fail
    wrong = check(tmp_path / "x", stamps[1], "carol@example.net")
    assert wrong.returncode != 0
    # Right below msa's Received: (no DKIM here).
    lines = d.data.split(b"\r\n")
    first = next(i for i, line in enumerate(lines) if line.startswith(b"X-Hashcash:"))
    assert lines[0].startswith(b"Received:") and all(line[:1] in b" \t" for line in lines[1:first])
    m.wait_log(rf"[0-9A-F]{{10}}: hashcash=2 stamps \({BITS} bits\)")


def test_a_non_ascii_recipient_gets_no_stamp_and_the_log_says_so(start_msa, tmp_path):  # S-1106
    m = start(start_msa, tmp_path)
    for rcpts, stamped, note in (
        (["jörg@example.net", "carol@example.net"], ["carol@example.net"], "hashcash=1 stamp"),
        (["jörg@example.net"], [], "hashcash=0 stamps"),
    ):
        w = Wire.connect(m.ports["tls"], tls_ctx=m.client_ctx, timeout=60)
        w.reply()
        w.expect("EHLO laptop.example", 250)
        w.expect("AUTH PLAIN " + b64("\0alice\0" + PASSWORD), 235)
        w.expect("MAIL FROM:<alice@example.org> SMTPUTF8", 250)
        for r in rcpts:
            w.expect(f"RCPT TO:<{r}>", 250)
        w.expect("DATA", 354)
        header = "From: alice@example.org\r\nTo: " + ", ".join(rcpts) + "\r\nSubject: utf8\r\n\r\nhi\r\n.\r\n"
        w.send(header.encode())
        assert w.reply()[0] == 250
        w.close()
        d = m.outbox.messages()[-1]
        assert [st.split(":")[3] for st in stamps_of(d.data)] == stamped
        # The log never claims a stamp that is not there, and says what was left out and why.
        m.wait_log(rf"{note} \({BITS} bits; 1 recipient left out: not ASCII\)")


def test_at_most_max_stamps(start_msa, tmp_path):  # S-1106
    m = start(start_msa, tmp_path, hashcash_max_stamps=2)
    rcpts = [f"r{i}@example.net" for i in range(5)]
    header = b"From: alice@example.org\r\nTo: " + ", ".join(rcpts).encode() + b"\r\n"
    assert send(m, rcpts, header)[0] == 250
    [d] = m.outbox.messages()
    assert [s.split(":")[3] for s in stamps_of(d.data)] == rcpts[:2]


def test_a_hundred_recipients_finish_within_the_budget(start_msa, tmp_path):  # S-1106
    budget = 1.0
    m = start(start_msa, tmp_path, hashcash_bits=20, hashcash_max_stamps=100, hashcash_time_budget=budget,
              max_recipients=100)
    rcpts = [f"r{i}@example.net" for i in range(100)]
    header = b"From: alice@example.org\r\nTo: " + ",\r\n ".join(rcpts).encode() + b"\r\n"
    code, text, waited = send(m, rcpts, header)
    assert code == 250, text  # Hashcash never changes the reply
    # 100 stamps of 20 bits take about 100 s: the reply came at the budget's end, with what was minted.
    assert waited < budget + 5
    [d] = m.outbox.messages()
    got = stamps_of(d.data)
    assert len(got) < 100 and [s.split(":")[3] for s in got] == rcpts[: len(got)]
    for stamp in got:  # the conventional 20 bits, as the tool checks them
        if HASHCASH is not None:
            p = check(tmp_path, stamp, stamp.split(":")[3], 20)
            assert p.returncode == 0, p.stdout + p.stderr
    m.wait_log(rf"hashcash={len(got)} stamps? \(20 bits; time budget reached, {100 - len(got)} left out\)")
    assert msatest.wait_until(lambda: not m.children()), m.children()  # the minter was killed


def test_a_message_without_a_body_is_stamped_too(start_msa, tmp_path):  # S-1106
    m = start(start_msa, tmp_path)
    code, _, _ = send(m, ["carol@example.net"], b"From: alice@example.org\r\nTo: carol@example.net\r\n", None)
    assert code == 250
    [d] = m.outbox.messages()
    assert [s.split(":")[3] for s in stamps_of(d.data)] == ["carol@example.net"]


def test_a_client_leaving_mid_message_stops_the_minter(start_msa, tmp_path):  # S-1106
    m = start(start_msa, tmp_path, hashcash_bits=30)  # would take minutes
    w = Wire.connect(m.ports["tls"], tls_ctx=m.client_ctx, timeout=60)
    w.reply()
    w.expect("EHLO laptop.example", 250)
    w.expect("AUTH PLAIN " + b64("\0alice\0" + PASSWORD), 235)
    w.transaction("alice@example.org", "carol@example.net")
    w.send(b"From: alice@example.org\r\nTo: carol@example.net\r\n\r\nbody\r\n")
    assert msatest.wait_until(lambda: any(" -c " in c for c in m.children())), m.children()
    w.close()
    assert msatest.wait_until(lambda: not m.children()), m.children()
    assert m.outbox.messages() == []


def test_hashcash_with_dkim_stamps_below_the_signatures_and_dkim_verifies(start_msa, tmp_path):  # S-1101, S-1106
    dkim = pytest.importorskip("dkim")
    keys = tmp_path / "dkim"
    conf = msatest.write_config(tmp_path / "kc", None, dkim_keys=keys)
    p = subprocess.run([msatest.sys.executable, msatest.MSA, "dkim", "keygen", "example.org", "--selector", "s1",
                        "--algorithm", "ed25519", "-c", str(conf)], capture_output=True, text=True, timeout=60)
    assert p.returncode == 0, p.stderr
    record = "".join(re.findall(r'"([^"]*)"', p.stdout)).encode()
    m = start(start_msa, tmp_path, dkim_keys=keys)
    assert send(m, ["carol@example.net"], b"From: alice@example.org\r\nTo: carol@example.net\r\n")[0] == 250
    [d] = m.outbox.messages()
    names = [line.split(b":")[0] for line in d.data.partition(b"\r\n\r\n")[0].split(b"\r\n") if line[:1] not in b" \t"]
    assert names[:3] == [b"Received", b"DKIM-Signature", b"X-Hashcash"]
    assert dkim.verify(d.data, dnsfunc=lambda name, timeout=5: record)


def test_minters_on_a_host_are_bounded_by_its_cores(start_msa, tmp_path):  # S-1106
    # Sessions that stop after their header each want a minter; at most one
    # per core runs, and the others wait within their time budget.
    from delivery.slots import cores

    m = start(start_msa, tmp_path, hashcash_bits=30, hashcash_time_budget=1)  # 30 bits: minutes each
    sessions = []
    for _ in range(cores() + 4):
        w = Wire.connect(m.ports["tls"], tls_ctx=m.client_ctx, timeout=60)
        w.reply()
        w.expect("EHLO laptop.example", 250)
        w.expect("AUTH PLAIN " + b64("\0alice\0" + PASSWORD), 235)
        w.transaction("alice@example.org", "carol@example.net")
        w.send(b"From: alice@example.org\r\nTo: carol@example.net\r\n\r\nbody\r\n")
        sessions.append(w)
    assert msatest.wait_until(lambda: sum(" -c " in c for c in m.children()) == cores())
    most = 0
    deadline = time.monotonic() + 1.5
    while time.monotonic() < deadline:
        most = max(most, sum(" -c " in c for c in m.children()))
        time.sleep(0.05)
    assert most == cores(), most
    for w in sessions:  # each ends within its budget, stamped or not; the reply never depends on it
        w.send(b".\r\n")
    for w in sessions:
        assert w.reply()[0] == 250
        w.close()
    assert "no minting slot free within the time budget, 1 left out" in m.log()
    assert msatest.wait_until(lambda: not m.children()), m.children()
