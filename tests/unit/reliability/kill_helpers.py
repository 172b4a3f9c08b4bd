"""Start `python -m autoseg ...` and SIGKILL its whole process group when a condition becomes true (not a test)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

ENV = {**os.environ, "AUTOSEG_NO_PROGRESS": "1"}


def autoseg(*args: str) -> list[str]:
    return [sys.executable, "-m", "autoseg", *args]


def run_and_kill(cmd: list[str], ready: Callable[[], bool], env=None, timeout: float = 120) -> tuple[int, str]:
    """Run `cmd` in its own session; kill the group as soon as `ready()` (polled every 2 ms). (returncode, stderr)."""
    proc = subprocess.Popen(
        cmd, env=env or ENV, start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True
    )
    deadline = time.monotonic() + timeout
    while proc.poll() is None and time.monotonic() < deadline:
        if ready():
            os.killpg(proc.pid, signal.SIGKILL)
            break
        time.sleep(0.002)
    _, err = proc.communicate()
    _wait_group_gone(proc.pid)
    return proc.returncode, err


def _live_members(pgid: int) -> list[int]:
    """Pids of the processes of group `pgid` that are not zombies (from /proc)."""
    live = []
    for d in os.listdir("/proc"):
        if d.isdigit():
            try:
                fields = Path(f"/proc/{d}/stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[2]) == pgid and fields[0] != "Z":
                live.append(int(d))
    return live


def _wait_group_gone(pgid: int, timeout: float = 30.0) -> None:
    """Wait until every process of the killed group (worker processes too) has exited, so no straggler writes a
    file after the test has looked or while the next run starts."""
    deadline = time.monotonic() + timeout
    while _live_members(pgid) and time.monotonic() < deadline:
        time.sleep(0.01)
    left = _live_members(pgid)
    assert not left, f"processes {left} of the killed group {pgid} still alive after {timeout} s"


def after(seconds: float, condition: Callable[[], bool] = lambda: True) -> Callable[[], bool]:
    """A ready() that is true `seconds` after `condition` first held."""
    start: list[float] = []

    def ready() -> bool:
        if not start and condition():
            start.append(time.monotonic())
        return bool(start) and time.monotonic() - start[0] >= seconds

    return ready


def hidden_temp_files(folder: Path) -> list[Path]:
    return [p for p in folder.rglob(".*") if p.is_file() and ".tmp" in p.name]
