"""Profiling one bench case (`make bench PROFILE=caseN`).

py-spy (from requirements-bench.txt) attaches to the running msa for the
measured part of the case and writes raw collapsed stacks; the summary
below ranks functions by cumulative and by own samples. Without py-spy,
msa runs under bench/cprofile_serve.py (cProfile in every thread) and the
summary is pstats' top 25 by cumulative time.
"""

from __future__ import annotations

import io
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from collections import Counter

BENCH = os.path.dirname(os.path.abspath(__file__))


def py_spy() -> str | None:
    exe = os.path.join(os.path.dirname(sys.executable), "py-spy")
    if os.access(exe, os.X_OK):
        return exe
    return shutil.which("py-spy")


class Sampler:
    """py-spy attached to a pid between start() and stop()."""

    def __init__(self, pid: int, out: str, rate: int = 200, gil: bool = False) -> None:
        self.pid = pid
        self.out = out
        self.rate = rate
        self.gil = gil
        self.proc: subprocess.Popen | None = None
        self.log = out + ".log"
        self.stats = ""

    def start(self) -> bool:
        exe = py_spy()
        if exe is None:
            return False
        argv = [exe, "record", "--pid", str(self.pid), "--rate", str(self.rate), "--format", "raw",
                "--output", self.out]
        if self.gil:
            argv.append("--gil")  # only the thread holding the GIL
        with open(self.log, "wb") as log:
            self.proc = subprocess.Popen(argv, stdout=log, stderr=log, stdin=subprocess.DEVNULL)
        time.sleep(1.0)  # attach
        if self.proc.poll() is not None:
            return False
        return True

    def stop(self) -> bool:
        if self.proc is None:
            return False
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        try:
            with open(self.log, errors="replace") as f:
                m = re.search(r"Samples: (\d+) Errors: (\d+)", f.read())
            self.stats = f"py-spy: {m.group(1)} samples, {m.group(2)} errors" if m else ""
            os.unlink(self.log)
        except OSError:
            pass
        return os.path.exists(self.out) and os.path.getsize(self.out) > 0


_FRAME = re.compile(r"^(?P<func>.*?) \((?P<file>[^()]*?)(?::(?P<line>\d+))?\)$")


def _short(path: str) -> str:
    root = os.path.dirname(BENCH) + os.sep
    if path.startswith(root):
        return path[len(root):]
    m = re.search(r"(?:site-packages|python3\.\d+)/(.*)$", path)
    return m.group(1) if m else path


def summarize_collapsed(path: str, top: int = 25, what: str = "busy (non-idle) msa threads") -> str:
    """Top functions of a py-spy raw (collapsed stacks) file."""
    own: Counter[str] = Counter()
    cum: Counter[str] = Counter()
    total = 0
    with open(path, errors="replace") as f:
        for line in f:
            line = line.rstrip("\n")
            stack, _, count = line.rpartition(" ")
            if not stack or not count.isdigit():
                continue
            n = int(count)
            total += n
            names = []
            for frame in stack.split(";"):
                m = _FRAME.match(frame)
                if m:
                    names.append(f"{m.group('func')} ({_short(m.group('file'))})")
                else:
                    names.append(frame)
            if not names:
                continue
            own[names[-1]] += n
            for name in set(names):
                cum[name] += n
    if total == 0:
        return "  (no samples: msa was idle or py-spy could not read it)\n"
    out = io.StringIO()
    out.write(f"  {total} samples of {what}\n")
    out.write(f"  top {top} by cumulative samples (function and everything it called):\n")
    for name, n in cum.most_common(top):
        out.write(f"    {100 * n / total:5.1f}%  {n:7d}  {name}\n")
    out.write(f"  top {top} by own samples (the function itself):\n")
    for name, n in own.most_common(top):
        out.write(f"    {100 * n / total:5.1f}%  {n:7d}  {name}\n")
    return out.getvalue()


def summarize_pstats(path: str, top: int = 25) -> str:
    import pstats

    out = io.StringIO()
    st = pstats.Stats(path, stream=out)
    st.strip_dirs().sort_stats("cumulative").print_stats(top)
    return out.getvalue()


def summarize_importtime(stderr: str, top: int = 25) -> str:
    """`python -X importtime` lines: the slowest imports, cumulative."""
    rows = []
    for line in stderr.splitlines():
        m = re.match(r"import time:\s+(\d+) \|\s+(\d+) \|(\s*)(\S+)", line)
        if m:
            rows.append((int(m.group(2)), int(m.group(1)), len(m.group(3)), m.group(4)))
    rows.sort(reverse=True)
    total_self = sum(r[1] for r in rows)
    out = io.StringIO()
    out.write(f"  {len(rows)} modules imported, {total_self / 1000:.1f} ms in all (own times added)\n")
    out.write(f"  top {top} by cumulative import time:\n")
    for cum, own, _depth, name in rows[:top]:
        out.write(f"    {cum / 1000:7.1f} ms cum  {own / 1000:6.1f} ms own  {name}\n")
    return out.getvalue()
