"""Stopping the daemons bindpkcs11 starts (named, the device simulators): one way to do it.

A daemon gets SIGTERM and time to clean up (named writes its journal, pkcsslotd removes its
socket), then SIGKILL. A process counts as gone once it is absent or a zombie; a child of ours
is reaped on the way, so it does not linger as one.
"""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

_POLL = 0.05


def alive(pid: int) -> bool:
    """True while `pid` exists and is not a zombie (reaping it if it is our child)."""
    try:
        os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        pass
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state != "Z"


def terminate(pid: int, timeout: float) -> bool:
    """SIGTERM, then SIGKILL after `timeout`, then wait until the process is gone; False when
    there was no such process to signal."""
    try:
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        return False
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not alive(pid):
            return True
        time.sleep(_POLL)
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        return True
    while alive(pid):
        time.sleep(_POLL)
    return True


def uptime(pid: int) -> float | None:
    """Seconds since process `pid` started; None when it is gone."""
    try:
        start_ticks = int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[19])
        since_boot = float(Path("/proc/uptime").read_text().split()[0])
    except (OSError, IndexError, ValueError):
        return None
    return max(0.0, since_boot - start_ticks / os.sysconf("SC_CLK_TCK"))
