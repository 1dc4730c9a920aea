"""Test support: a private Prometheus (Debian package prometheus) started by
the tests on a loopback port with its own data directory, scraping every
second the targets written into its file_sd directory (SPEC.md §15), and
promtool; stopped by its pid."""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import time
import urllib.parse
import urllib.request
from pathlib import Path

PROMETHEUS = shutil.which("prometheus")
PROMTOOL = shutil.which("promtool")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def scrape(port: int, path: str = "/metrics") -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=10) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()


def promtool_check(text: bytes) -> subprocess.CompletedProcess:
    """`promtool check metrics` on an exposition (its lint of names, units, HELP)."""
    assert PROMTOOL is not None, "promtool is not installed (apt install prometheus)"
    return subprocess.run([PROMTOOL, "check", "metrics"], input=text, capture_output=True, timeout=30)


class Prometheus:
    def __init__(self, directory: Path) -> None:
        self.dir = directory
        self.targets = directory / "targets"
        self.targets.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.proc: subprocess.Popen | None = None

    def start(self, timeout: float = 30.0) -> Prometheus:
        assert PROMETHEUS is not None, "prometheus is not installed (apt install prometheus)"
        conf = self.dir / "prometheus.yml"
        conf.write_text(
            "global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\n  evaluation_interval: 1s\n"
            "scrape_configs:\n  - job_name: msa\n    file_sd_configs:\n"
            f"      - files: ['{self.targets}/*.json']\n        refresh_interval: 1s\n"
        )
        log = open(self.dir / "prometheus.log", "wb")
        self.proc = subprocess.Popen(
            [PROMETHEUS, f"--config.file={conf}", f"--storage.tsdb.path={self.dir / 'data'}",
             f"--web.listen-address=127.0.0.1:{self.port}", "--storage.tsdb.retention.time=1d",
             "--log.level=warn"],
            stdin=subprocess.DEVNULL, stdout=log, stderr=log, cwd=self.dir,
        )
        log.close()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"prometheus exited {self.proc.returncode}: {self.log()[-800:]}")
            try:
                if scrape(self.port, "/-/ready")[0] == 200:
                    return self
            except OSError:
                pass
            time.sleep(0.1)
        self.stop()
        raise RuntimeError(f"prometheus not ready: {self.log()[-800:]}")

    def log(self) -> str:
        return (self.dir / "prometheus.log").read_text(errors="replace")

    def add_target(self, name: str, port: int, labels: dict[str, str] | None = None) -> None:
        tmp = self.targets / f".{name}.tmp"
        tmp.write_text(json.dumps([{"targets": [f"127.0.0.1:{port}"], "labels": labels or {}}]))
        tmp.rename(self.targets / f"{name}.json")

    def query(self, expr: str) -> list[dict]:
        url = f"http://127.0.0.1:{self.port}/api/v1/query?" + urllib.parse.urlencode({"query": expr})
        with urllib.request.urlopen(url, timeout=10) as r:
            answer = json.load(r)
        assert answer["status"] == "success", answer
        return answer["data"]["result"]

    def value(self, expr: str) -> float | None:
        """The single value `expr` gives now, or None when it gives nothing."""
        result = self.query(expr)
        if not result:
            return None
        assert len(result) == 1, result
        return float(result[0]["value"][1])

    def wait_value(self, expr: str, expected: float, timeout: float = 30.0) -> float | None:
        deadline = time.monotonic() + timeout
        value = None
        while time.monotonic() < deadline:
            value = self.value(expr)
            if value == expected:
                return value
            time.sleep(0.25)
        return value

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
