"""metrics_listen's configuration, `check`, inetd mode and a port in use
(SPEC.md S-1501), against the real commands; no Prometheus needed."""

from __future__ import annotations

import socket
import subprocess
import sys
from pathlib import Path

import pytest

import msatest
from msatest import MSA

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
from admin.check import inetd_units  # noqa: E402


def _check(conf: Path) -> tuple[int, str]:
    p = subprocess.run([sys.executable, MSA, "check", "-c", str(conf)], capture_output=True, text=True, timeout=60)
    return p.returncode, p.stdout + p.stderr


@pytest.mark.parametrize("value", ["9100", "localhost", "127.0.0.1:", "127.0.0.1:70000", "[::1:9100",
                                   "[nothost]:9100", "bad_host!:9100", "127.0.0.1:9100 extra"])
def test_a_bad_metrics_listen_is_file_line_why(tmp_path, value):  # S-1501, CONTRACT metrics_listen
    conf = msatest.write_config(tmp_path, None, metrics_listen=value)
    code, out = _check(conf)
    assert code == 1
    line = conf.read_text().splitlines().index(f"metrics_listen = {value}") + 1
    assert f"{conf}:{line}: metrics_listen" in out, out
    assert "Traceback" not in out
    p = subprocess.run([sys.executable, MSA, "serve", "-c", str(conf)], capture_output=True, text=True, timeout=60)
    assert p.returncode == 1 and f"{conf}:{line}: metrics_listen" in p.stderr and "Traceback" not in p.stderr


def test_check_says_inetd_exports_nothing(tmp_path):  # S-1501
    conf = msatest.write_config(tmp_path, None, metrics_listen="127.0.0.1:9587")
    code, out = _check(conf)
    assert "metrics_listen: `msa.py serve` exports metrics on http://127.0.0.1:9587/metrics; sessions served by " \
           "`msa.py inetd` export nothing" in out, out


def test_inetd_units_of_this_configuration_are_found(tmp_path):  # S-1501: check names them
    conf = msatest.write_config(tmp_path, None)
    other = tmp_path / "other.conf"
    other.write_text("[msa]\n")
    xinetd = tmp_path / "xinetd.d"
    xinetd.mkdir()
    (xinetd / "msa").write_text("service submission\n{\n    server = /usr/bin/python3\n"
                                f"    server_args = /usr/local/sbin/msa inetd -c {conf}\n}}\n")
    (xinetd / "other").write_text(f"service x\n{{\n    server_args = /usr/local/sbin/msa inetd -c {other}\n}}\n")
    inetd_conf = tmp_path / "inetd.conf"
    inetd_conf.write_text(f"# submission stream tcp nowait msa /usr/bin/python3 python3 msa inetd -c {conf}\n"
                          f"submissions stream tcp nowait msa /usr/bin/python3 python3 /usr/local/sbin/msa inetd --tls --config {conf}\n")
    systemd = tmp_path / "systemd"
    systemd.mkdir()
    (systemd / "msa-inetd@.service").write_text(f"[Service]\nExecStart=/usr/bin/python3 /usr/local/sbin/msa inetd -c {conf}\n")
    (systemd / "msa.service").write_text(f"[Service]\nExecStart=/usr/bin/python3 /usr/local/sbin/msa serve -c {conf}\n")
    found = inetd_units(str(conf), (str(inetd_conf), str(xinetd), str(systemd), str(tmp_path / "missing")))
    assert found == [f"{inetd_conf}:2", f"{xinetd / 'msa'}:4", f"{systemd / 'msa-inetd@.service'}:2"]
    assert inetd_units(str(other), (str(xinetd),)) == [f"{xinetd / 'other'}:3"]


def test_inetd_mode_serves_and_opens_no_metrics_port(tmp_path, certs):  # S-1501
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    conf = msatest.write_config(tmp_path, None, metrics_listen=f"127.0.0.1:{port}")
    p = subprocess.run([sys.executable, MSA, "inetd", "-c", str(conf)], input=b"EHLO x\r\nQUIT\r\n",
                       capture_output=True, timeout=60)
    assert p.returncode == 0, p.stderr
    assert p.stdout.startswith(b"220 ") and b"221 " in p.stdout
    assert b"metrics" not in p.stderr
    assert not (tmp_path / "spool" / "metrics").exists()


def test_serve_refuses_a_metrics_port_in_use(tmp_path, certs):  # S-1501: a clear start-up error
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        conf = msatest.write_config(tmp_path, certs, metrics_listen=f"127.0.0.1:{port}")
        p = subprocess.run([sys.executable, MSA, "serve", "-c", str(conf)], capture_output=True, text=True,
                           timeout=60)
    assert p.returncode == 1
    line = conf.read_text().splitlines().index(f"metrics_listen = 127.0.0.1:{port}") + 1
    assert f"{conf}:{line}: metrics_listen: Address already in use" in p.stderr, p.stderr
    assert "Traceback" not in p.stderr


def test_metrics_after_run_as_are_the_daemon_users_files(tmp_path, certs):  # S-1501, CONTRACT run_as
    """serve switches user before it makes the metrics files (spool/metrics),
    so a daemon run_as nobody still counts and serves them."""
    import os
    import pwd
    import shutil

    import promtest

    if os.getuid() != 0:
        pytest.skip("run_as needs root to switch users")
    nobody = pwd.getpwnam("nobody")
    base, outbox = msatest.run_as_scratch()
    try:
        stale = base / "spool" / "metrics"
        stale.mkdir(parents=True)
        (stale / "counter_1.db").write_bytes(b"\0" * 16)  # a previous run's, root's: removed at start
        m = msatest.start(tmp_path / "m", certs, run_as="nobody", spool=str(base / "spool"),
                          state_dir=str(base / "state"), metrics_listen="127.0.0.1:0",
                          sendmail=f"/bin/sh -c 'cat > \"$0/message\"' {outbox}")
        try:
            port = int(m.wait_log(r"metrics on http://127\.0\.0\.1:(\d+)/metrics").group(1))
            w = msatest.Wire.connect(m.ports["starttls"])
            w.reply()
            w.expect("EHLO x.example", 250)
            w.transaction("alice@example.org", "bob@example.net")  # a trusted client (127.0.0.0/8)
            w.send(msatest.HDR + b"Subject: as nobody\r\n\r\nok\r\n.\r\n")
            assert w.reply()[0] == 250
            w.close()
            status, text = promtest.scrape(port)
            assert status == 200
            assert b'msa_messages_total{result="accepted"} 1.0' in text
            files = list((base / "spool" / "metrics").iterdir())
            assert files and all(f.stat().st_uid == nobody.pw_uid for f in files), files
        finally:
            m.stop()
    finally:
        shutil.rmtree(base, ignore_errors=True)


def _gauge(port: int, name: str, label: str) -> float | None:
    import re as _re

    import promtest

    text = promtest.scrape(port)[1].decode()
    m = _re.search(rf'^{name}\{{{label}\}} (\S+)$', text, _re.M)
    return float(m.group(1)) if m else None


def test_store_and_directory_health_follow_outages(tmp_path, certs):  # S-1501: msa_store_up, msa_directory_up
    """A Redis that does not answer is msa_store_up 0; a Dovecot whose socket
    is missing is msa_directory_up 0 once a login needed it; users.db is 1."""
    pytest.importorskip("redis")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        closed = s.getsockname()[1]  # nothing listens there once closed
    (tmp_path / "m").mkdir()
    msatest.add_user(tmp_path / "m" / "users.db", "alice", "pw-alice-1", ["alice@example.org"])
    m = msatest.start(tmp_path / "m", certs, metrics_listen="127.0.0.1:0", state=f"redis://127.0.0.1:{closed}/0",
                      auth_dovecot=f"unix:{tmp_path / 'no-dovecot'}", auth_dovecot_timeout=2, trusted_networks="")
    try:
        port = int(m.wait_log(r"metrics on http://127\.0\.0\.1:(\d+)/metrics").group(1))
        assert msatest.wait_until(lambda: _gauge(port, "msa_store_up", 'store="redis"') == 0)
        assert _gauge(port, "msa_directory_up", 'directory="users.db"') == 1
        assert _gauge(port, "msa_directory_up", 'directory="dovecot"') == 1  # not asked yet
        w = msatest.Wire.connect(m.ports["tls"], tls_ctx=m.client_ctx)
        w.reply()
        w.expect("EHLO x.example", 250)
        assert w.cmd("AUTH PLAIN " + msatest.b64("\0dora@example.org\0pw"))[0] == 454  # S-1302
        w.close()
        assert msatest.wait_until(lambda: _gauge(port, "msa_directory_up", 'directory="dovecot"') == 0)
        text = __import__("promtest").scrape(port)[1].decode()
        assert 'msa_auth_attempts_total{directory="dovecot",mechanism="PLAIN",result="tempfail"} 1.0' in text
    finally:
        m.stop()


def test_metrics_sum_over_workers_and_keep_a_dead_workers_counts(tmp_path, certs):  # S-1501, S-1601
    """With workers = 2 the master serves /metrics: the sum over both
    workers, and a worker killed and replaced keeps its counts in the sum."""
    import os
    import re as _re
    import signal as _signal

    import promtest

    m = msatest.start(tmp_path / "m", certs, metrics_listen="127.0.0.1:0", workers=2)
    try:
        port = int(m.wait_log(r"metrics on http://127\.0\.0\.1:(\d+)/metrics").group(1))
        m.wait_log(r"ready: .*2 workers")
        sent = 0

        def send() -> None:
            w = msatest.Wire.connect(m.ports["starttls"])
            w.reply()
            w.expect("EHLO x.example", 250)
            w.transaction("alice@example.org", "bob@example.net")  # a trusted client
            w.send(msatest.HDR + b"Subject: w\r\n\r\nok\r\n.\r\n")
            assert w.reply()[0] == 250
            w.expect("QUIT", 221)

        def serving() -> set[str]:
            return set(_re.findall(r"msa\[(\d+)\]: \w+: to=<bob@example\.net>.*status=sent", m.log()))

        while len(serving()) < 2 and sent < 200:
            send()
            sent += 1
        assert len(serving()) == 2, "one worker took every connection"
        accepted = lambda: _total(promtest.scrape(port)[1], 'msa_messages_total{result="accepted"}')  # noqa: E731
        assert msatest.wait_until(lambda: accepted() == sent), (accepted(), sent)
        victim = int(sorted(serving())[0])
        os.kill(victim, _signal.SIGKILL)
        m.wait_log(rf"pid {victim} killed by signal 9.*starting another")
        assert accepted() == sent  # the dead worker's counts stay in the sum
        send()
        assert msatest.wait_until(lambda: accepted() == sent + 1)
        text = promtest.scrape(port)[1]
        assert _total(text, "msa_sessions_active") == 0
        assert promtest.promtool_check(text).returncode == 0
    finally:
        m.stop()


def _total(text: bytes, series: str) -> float | None:
    import re as _re

    found = _re.search(rb"^" + _re.escape(series.encode()) + rb" (\S+)$", text, _re.M)
    return float(found.group(1)) if found else None
