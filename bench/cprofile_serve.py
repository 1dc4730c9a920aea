"""Fallback profiler for `make bench PROFILE=...` when py-spy is missing:
run `msa.py` with cProfile enabled in every thread (msa serves each
connection in its own thread, which `python -m cProfile` would miss).

    python bench/cprofile_serve.py OUT.pstats serve -c CONF

The merged statistics are written to OUT.pstats when msa exits (SIGTERM
makes `serve` drain and return normally).
"""

from __future__ import annotations

import atexit
import cProfile
import os
import pstats
import sys
import threading

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def main() -> int:
    out = sys.argv[1]
    args = sys.argv[2:]
    sys.path.insert(0, ROOT)  # as when msa.py runs: its directory first
    sys.path = [p for p in sys.path if os.path.abspath(p or ".") != os.path.dirname(os.path.abspath(__file__))]
    profiles: list[cProfile.Profile] = []
    lock = threading.Lock()
    original_run = threading.Thread.run

    def profiled_run(self: threading.Thread) -> None:
        prof = cProfile.Profile()
        with lock:
            profiles.append(prof)
        prof.enable()
        try:
            original_run(self)
        finally:
            prof.disable()

    threading.Thread.run = profiled_run  # type: ignore[method-assign]

    def dump() -> None:
        stats = None
        with lock:
            for prof in profiles:
                try:
                    prof.disable()
                    prof.create_stats()
                except Exception:  # noqa: BLE001 - a thread still running
                    continue
                if not prof.stats:  # type: ignore[attr-defined]
                    continue
                if stats is None:
                    stats = pstats.Stats(prof)
                else:
                    stats.add(prof)
        if stats is not None:
            stats.dump_stats(out)

    atexit.register(dump)
    import msa

    main_prof = cProfile.Profile()
    with lock:
        profiles.append(main_prof)
    main_prof.enable()
    try:
        return msa.main(args)
    finally:
        main_prof.disable()


if __name__ == "__main__":
    sys.exit(main())
