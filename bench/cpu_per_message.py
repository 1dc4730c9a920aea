#!/usr/bin/env python3
"""CPU that msa's own process spends per message, bench case 3's load.

    python bench/cpu_per_message.py [--messages N] [--rounds R] [--sessions S]

Starts msa as `bench/run.py` does (null sendmail, trusted plaintext client),
warms it up, then sends N 4 KiB messages with smtp-source R times and prints
the user+system CPU of msa's process (all threads, not its sendmail
children, from /proc/PID/stat) per message for each round, and their
median. A figure that does not depend on how busy the machine is the way
a rate does: the number to compare before and after a change to msa's
per-message work (the rate then follows on a core-bound load).
"""

from __future__ import annotations

import argparse
import os
import shlex
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH.parent / "tests"))
sys.path.insert(0, str(BENCH))

import msatest  # noqa: E402

import loadgen  # noqa: E402
import peer_postfix  # noqa: E402
from run import NULL_SENDMAIL, proc_cpu  # noqa: E402


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--messages", type=int, default=3000)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--sessions", type=int, default=8)
    ap.add_argument("--size", type=int, default=4096)
    ap.add_argument("--spool", metavar="DIR", default="",
                    help="the spool directory (default: in the temporary directory, as the bench has it)")
    ap.add_argument("--msa", metavar="MSA_PY", default="",
                    help="another tree's msa.py (an A/B comparison against a copy of an older commit)")
    ap.add_argument("--cprofile", metavar="OUT", default="",
                    help="run msa under bench/cprofile_serve.py, the statistics into OUT (the CPU figures then "
                         "include cProfile's own cost)")
    ap.add_argument("--perf", metavar="OUT", default="",
                    help="also `perf record -e cpu-clock -g` msa during the rounds into OUT, and print "
                         "its context switches and migrations per message (`perf stat`)")
    ap.add_argument("--attach", metavar="CMD", default="",
                    help="run CMD during the rounds, {pid} replaced by msa's pid (e.g. strace -f -c -p {pid}); "
                         "stopped with SIGINT")
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="msacpu."))
    msgfile = str(tmp / "message.txt")
    loadgen.lf_message_file(msgfile, args.size)
    msatest.add_user(tmp / "users.db", "bench", "bench correct horse battery", senders=["bench@example.org"])
    argv = [sys.executable, args.msa] if args.msa else None
    if args.cprofile:
        argv = [sys.executable, str(BENCH / "cprofile_serve.py"), args.cprofile]
    m = msatest.start(tmp / "msa", None, argv=argv, hostname="msa.bench", listen="127.0.0.1:0 starttls",
                      users=str(tmp / "users.db"), sendmail=NULL_SENDMAIL, trusted_networks="127.0.0.1/32",
                      max_message_size=600 * 1024 * 1024, max_connections=3000, max_connections_per_ip=3000,
                      timeout=300, sendmail_timeout=120, **({"spool": args.spool} if args.spool else {}))
    try:
        port = next(iter(m.ports.values()))
        peer_postfix.smtp_source(port, msgfile, args.sessions, 400, timeout=120)  # warm-up
        pid = str(m.proc.pid)
        stat = None  # perf stat: context switches and migrations, when perf works here
        if shutil.which("perf"):
            stat = subprocess.Popen(["perf", "stat", "-x", ",", "-e", "context-switches,cpu-migrations", "-p", pid],
                                    stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        extra = []
        if args.perf:
            extra.append(subprocess.Popen(["perf", "record", "-q", "-e", "cpu-clock", "-g", "-p", pid,
                                           "-o", args.perf], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        if args.attach:
            extra.append(subprocess.Popen(shlex.split(args.attach.replace("{pid}", pid)),
                                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True))
        if stat or extra:
            time.sleep(0.5)
        figures = []
        for rnd in range(args.rounds):
            c0 = proc_cpu(m.proc.pid)
            secs, rc, err = peer_postfix.smtp_source(port, msgfile, args.sessions, args.messages, timeout=300)
            cpu = proc_cpu(m.proc.pid) - c0
            if rc != 0:
                print(f"smtp-source failed: exit {rc}: {err[:300]}")
                return 1
            figures.append(1000 * cpu / args.messages)
            print(f"round {rnd + 1}: {figures[-1]:.3f} ms CPU per message, {args.messages / secs:.0f} msg/s",
                  flush=True)
        for p in extra:
            p.send_signal(signal.SIGINT)
            out = p.communicate(timeout=600)[0]
            if out:
                print(out)
        if stat is not None:
            stat.send_signal(signal.SIGINT)
            for line in stat.communicate(timeout=60)[1].splitlines():
                value, _, event, *_ = line.split(",") + ["", "", ""]
                if event in ("context-switches", "cpu-migrations") and value.isdigit():
                    print(f"{event}: {int(value) / (args.rounds * args.messages):.1f} per message")
        sent = m.log().count("status=sent")
        expected = 400 + args.rounds * args.messages
        print(f"median {statistics.median(figures):.3f} ms CPU per message (msa's process, "
              f"{args.messages} messages x {args.rounds} rounds, {args.sessions} sessions; "
              f"{sent}/{expected} delivered)")
        return 0 if sent == expected else 1
    finally:
        m.stop(timeout=30)
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    os.environ.setdefault("PYTHONHASHSEED", "0")
    sys.exit(main())
