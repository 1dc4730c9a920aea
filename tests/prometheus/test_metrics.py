"""The Prometheus endpoint (SPEC.md S-1501) and the Grafana dashboard
(S-1502), against a real `msa.py serve`, a real Prometheus scraping it and
`promtool check metrics`.

One daemon serves a known workload once per module: N accepted messages
(DKIM-signed), K refused senders, one sending-limit refusal and M failed
AUTH PLAIN logins; the tests then read the endpoint, Prometheus's query
API and the dashboard's queries.
"""

from __future__ import annotations

import json
import re
import signal
import subprocess
import sys
from pathlib import Path

import pytest

import msatest
import promtest
from msatest import MSA, Wire, b64

pytestmark = pytest.mark.xdist_group("prometheus")
prometheus_client = pytest.importorskip("prometheus_client")
from prometheus_client.parser import text_string_to_metric_families  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
DASHBOARD = ROOT / "contrib" / "grafana" / "msa.json"

N, K, M = 3, 2, 2  # accepted messages, refused senders, failed PLAIN logins
RCPTS = ("bob@example.net", "carol@example.net")
PRIVATE = ("alice", "bob", "mallory", "example", "127.0.0.1", "::1", "pw-")


def message(i: int) -> bytes:
    return (b"From: alice@example.org\r\nTo: bob@example.net\r\nSubject: metrics %d\r\n\r\n" % i
            + b"line of the body\r\n" * (10 + 50 * i))


def keygen(directory: Path) -> None:
    """An Ed25519 DKIM key for example.org, made by `msa.py dkim keygen`."""
    conf = msatest.write_config(directory, None, dkim_keys=directory / "keys")
    p = subprocess.run([sys.executable, MSA, "dkim", "keygen", "example.org", "--selector", "m1",
                        "--algorithm", "ed25519", "-c", str(conf)], capture_output=True, text=True, timeout=60)
    assert p.returncode == 0, p.stderr


def login(m: msatest.MsaProcess, user: str, password: str) -> Wire:
    w = Wire.connect(m.ports["starttls"])
    w.reply()
    w.expect("EHLO client.example", 250)
    w.starttls(m.client_ctx)
    w.expect("EHLO client.example", 250)
    code, text = w.cmd("AUTH PLAIN " + b64(f"\0{user}\0{password}"))
    assert code in (235, 535), text
    return w


def samples(text: bytes) -> dict[tuple[str, tuple], float]:
    out = {}
    for family in text_string_to_metric_families(text.decode()):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def total(found: dict, name: str, **labels: str) -> float:
    """The sum of `name`'s samples whose labels include `labels`."""
    return sum(v for (n, ls), v in found.items() if n == name and set(labels.items()) <= set(ls))


@pytest.fixture(scope="module")
def busy(tmp_path_factory, certs):
    """A daemon with metrics after the workload: (process, metrics port, sizes of the accepted messages)."""
    d = tmp_path_factory.mktemp("metrics")
    keygen(d)
    msatest.add_user(d / "users.db", "alice", "pw-alice-1", ["alice@example.org"])
    msatest.add_user(d / "users.db", "bob", "pw-bob-1", ["bob@example.org"])
    m = msatest.start(d, certs, metrics_listen="127.0.0.1:0", limit_messages=f"{N}/1h", dkim_keys=d / "keys",
                      trusted_networks="")
    port = int(m.wait_log(r"metrics on http://127\.0\.0\.1:(\d+)/metrics").group(1))
    for i in range(N):  # N accepted, one session each
        w = login(m, "alice", "pw-alice-1")
        w.transaction("alice@example.org", *RCPTS)
        w.send(msatest.stuff(message(i)) + b".\r\n")
        assert w.reply()[0] == 250
        w.expect("QUIT", 221)
    w = login(m, "alice", "pw-alice-1")
    for _ in range(K):  # S-601: not alice's addresses
        assert w.cmd("MAIL FROM:<mallory@example.com>")[0] == 550
    assert w.cmd("MAIL FROM:<alice@example.org>")[0] == 450  # S-1201: the N+1th message
    w.expect("QUIT", 221)
    for user, password in (("alice", "wrong"), ("nobody", "pw-nobody"))[:M]:
        w = login(m, user, password)
        w.close()
    sizes = [int(s) for s in re.findall(r"from=<alice@example\.org>, size=(\d+)", m.log())]
    assert len(sizes) == N
    msatest.wait_until(lambda: total(samples(promtest.scrape(port)[1]), "msa_sessions_active") == 0)
    yield m, port, sizes
    m.stop()


def test_counters_are_exactly_the_workload(busy):  # S-1501
    m, port, sizes = busy
    status, text = promtest.scrape(port)
    assert status == 200
    found = samples(text)
    assert total(found, "msa_messages_total", result="accepted") == N
    assert total(found, "msa_messages_total", result="refused") == 0
    assert total(found, "msa_messages_total", result="deferred") == 0
    assert total(found, "msa_recipients_total") == N * len(RCPTS)
    assert total(found, "msa_refusals_total", reason="sender") == K
    assert total(found, "msa_refusals_total", reason="limit") == 1
    assert total(found, "msa_refusals_total") == K + 1
    assert total(found, "msa_auth_attempts_total", mechanism="PLAIN", result="failure") == M
    assert total(found, "msa_auth_attempts_total", mechanism="PLAIN", result="failure", directory="users.db") == 1
    assert total(found, "msa_auth_attempts_total", mechanism="PLAIN", result="failure", directory="unknown") == 1
    assert total(found, "msa_auth_attempts_total", mechanism="PLAIN", result="success", directory="users.db") == N + 1
    assert total(found, "msa_auth_delayed_total") >= 1  # the second failure from 127.0.0.1 waited (S-511)
    assert total(found, "msa_signatures_total", kind="dkim", result="signed") == N
    # histograms: one observation per accepted message
    assert total(found, "msa_message_bytes_count") == N
    assert total(found, "msa_message_bytes_sum") == sum(sizes)
    assert total(found, "msa_message_bytes_bucket", le="+Inf") == N
    assert total(found, "msa_handoff_seconds_count", handoff="sendmail", result="sent") == N
    assert total(found, "msa_handoff_seconds_bucket", handoff="sendmail", result="sent", le="+Inf") == N
    assert 0 < total(found, "msa_handoff_seconds_sum") < 60
    sessions = N + 1 + M
    assert total(found, "msa_tls_handshakes_total", version="TLSv1.3") == sessions
    assert total(found, "msa_connections_total") == sessions
    assert total(found, "msa_connections_refused_total") == 0
    assert total(found, "msa_sessions_active") == 0
    assert total(found, "msa_store_up", store="sqlite") == 1
    assert total(found, "msa_directory_up", directory="users.db") == 1
    assert total(found, "msa_build_info") == 1
    assert total(found, "process_resident_memory_bytes") > 0
    assert total(found, "process_cpu_seconds_total") > 0
    assert total(found, "process_open_fds") > 0


def test_promtool_accepts_the_exposition(busy):  # S-1501
    _, port, _ = busy
    p = promtest.promtool_check(promtest.scrape(port)[1])
    assert p.returncode == 0, p.stdout + p.stderr
    assert not p.stdout.strip() and not p.stderr.strip(), p.stdout + p.stderr  # no lint remark either


def test_no_label_names_a_user_an_address_or_an_ip(busy):  # S-1501
    _, port, _ = busy
    found = samples(promtest.scrape(port)[1])
    values = {v for (_, labels) in found for _, v in labels}
    assert values  # there are labels to look at
    for value in values:
        for private in PRIVATE:
            assert private not in value.lower(), (value, private)
        assert not re.search(r"\d+\.\d+\.\d+\.\d+", value) or value.startswith("3."), value  # python="3.x.y" only


def test_other_paths_are_404(busy):  # S-1501
    _, port, _ = busy
    for path in ("/", "/metric", "/metrics/x", "/favicon.ico", "/../metrics"):
        assert promtest.scrape(port, path)[0] == 404, path
    assert promtest.scrape(port, "/metrics?name[]=msa_messages_total")[0] == 200


def test_a_real_prometheus_scrapes_the_same_counts_and_every_panel_has_data(busy, prometheus):  # S-1501, S-1502
    _, port, _ = busy
    prometheus.add_target("busy", port)
    got = prometheus.wait_value('sum(msa_messages_total{job="msa",result="accepted"})', N)
    assert got == N, prometheus.log()[-2000:]
    assert prometheus.value('sum(msa_refusals_total{reason="sender"})') == K
    assert prometheus.value('sum(msa_auth_attempts_total{mechanism="PLAIN",result="failure"})') == M
    # rate() needs two samples inside its range: a few scrapes of the same counts
    prometheus.wait_value('count_over_time(msa_build_info[1m])', 4)
    dashboard = json.loads(DASHBOARD.read_text())
    exprs = [(panel["title"], t["expr"]) for panel in dashboard["panels"] for t in panel["targets"]]
    assert len(exprs) >= 15
    empty = []
    for title, expr in exprs:
        query = expr.replace("$__rate_interval", "1m").replace("$instance", ".+").replace("$job", ".+")
        assert "$" not in query, query
        if not prometheus.query(query):
            empty.append((title, query))
    assert not empty, empty
    for var in dashboard["templating"]["list"][1:]:  # the job and host choices
        query = var["definition"].replace("$job", ".+")
        name = re.match(r"label_values\((.*), (\w+)\)", query)
        assert prometheus.query(f"count by ({name.group(2)}) ({name.group(1)})"), query


def test_counters_survive_a_reload(busy):  # S-1501: "Counters persist across reloads"
    m, port, _ = busy
    before = samples(promtest.scrape(port)[1])
    m.proc.send_signal(signal.SIGHUP)
    m.wait_log(r"reloaded: ")
    after = samples(promtest.scrape(port)[1])
    for key in ("msa_messages_total", "msa_refusals_total", "msa_auth_attempts_total", "msa_message_bytes_count"):
        assert total(after, key) == total(before, key) > 0, key
    w = login(m, "bob", "pw-bob-1")  # another user: alice is at her limit
    w.transaction("bob@example.org", "carol@example.net")
    w.send(b"From: bob@example.org\r\n\r\nhi\r\n.\r\n")
    assert w.reply()[0] == 250
    w.expect("QUIT", 221)
    assert total(samples(promtest.scrape(port)[1]), "msa_messages_total", result="accepted") == N + 1
