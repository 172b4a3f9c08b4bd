"""Run a command and print, with timestamps, its stderr lines and the resident memory of its whole process tree.

    python benchmarks/memtrace.py python -m autoseg predict -v -i IN -o OUT ...

The tree's RSS (the command and every child, from /proc) is sampled every 50 ms and printed every 2 s with the peak
so far; stderr lines are printed as they come (with `-v`, autoseg logs each case's read, network and export
seconds), so the peak can be placed in a phase. Ends with the exit code, the wall time and the peak.
"""

from __future__ import annotations

import subprocess
import sys
import threading
import time

from nnunet_models import tree_rss


def main() -> None:
    cmd = sys.argv[1:]
    if not cmd:
        raise SystemExit(__doc__)
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True)

    def echo() -> None:
        for line in proc.stderr:
            print(f"[{time.perf_counter() - t0:6.1f}s] {line.rstrip()[:200]}", flush=True)

    reader = threading.Thread(target=echo, daemon=True)
    reader.start()
    peak, last = 0.0, 0.0
    while proc.poll() is None:
        rss = tree_rss(proc.pid) / 1e9
        peak = max(peak, rss)
        if time.perf_counter() - last > 2:
            print(f"[{time.perf_counter() - t0:6.1f}s] rss {rss:.2f} GB (peak {peak:.2f})", flush=True)
            last = time.perf_counter()
        time.sleep(0.05)
    reader.join()
    print(f"exit {proc.returncode}, wall {time.perf_counter() - t0:.1f} s, peak {peak:.2f} GB")


if __name__ == "__main__":
    main()
