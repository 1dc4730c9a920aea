#!/usr/bin/env python3
"""A sendmail stand-in for tests: records argv and stdin in DIR.

Usage (as msa's `sendmail`): recording_sendmail.py DIR [sendmail args...]
Files in DIR steer it: `exit_code` (exit with that status after reading
stdin), `delay` (seconds to sleep before reading), `read_limit` (read only
that many bytes, then exit). A message is recorded as N.msg/N.argv only
when it exits 0, so "delivered" means exactly what msa was told.
"""

import json
import os
import sys
import time


def setting(directory: str, name: str, default: str = "") -> str:
    try:
        with open(os.path.join(directory, name)) as f:
            return f.read().strip()
    except FileNotFoundError:
        return default


def main() -> int:
    directory = sys.argv[1]
    args = sys.argv[2:]
    delay = float(setting(directory, "delay", "0") or 0)
    if delay:
        time.sleep(delay)
    limit = setting(directory, "read_limit")
    data = sys.stdin.buffer.read(int(limit)) if limit else sys.stdin.buffer.read()
    code = int(setting(directory, "exit_code", "0") or 0)
    if code != 0:
        sys.stderr.write(f"recording sendmail: exiting {code} as told\n")
        return code
    n = 0
    while True:
        try:
            fd = os.open(os.path.join(directory, f"{n}.lock"), os.O_CREAT | os.O_EXCL | os.O_WRONLY)
            os.close(fd)
            break
        except FileExistsError:
            n += 1
    with open(os.path.join(directory, f"{n}.argv.tmp"), "w") as f:
        json.dump(args, f)
    with open(os.path.join(directory, f"{n}.msg.tmp"), "wb") as f:
        f.write(data)
    with open(os.path.join(directory, f"{n}.cpus"), "w") as f:  # the cores it may run on
        f.write(",".join(str(c) for c in sorted(os.sched_getaffinity(0))))
    os.rename(os.path.join(directory, f"{n}.argv.tmp"), os.path.join(directory, f"{n}.argv"))
    os.rename(os.path.join(directory, f"{n}.msg.tmp"), os.path.join(directory, f"{n}.msg"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
