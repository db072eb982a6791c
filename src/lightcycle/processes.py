"""Whether a process of this host still runs: how a lock or a temp file left by a killed process is told
from one whose writer is alive (run-folder locks, cache-building locks, checkpoint temp files)."""

from __future__ import annotations

import os


def process_running(pid: int) -> bool:
    """False only when the OS says no process `pid` exists. Another user's process, a pid that cannot be
    asked about, and Windows (where `os.kill(pid, 0)` would send CTRL_C_EVENT) count as running, so
    nothing of a live writer is ever taken over or deleted."""
    if os.name == "nt":
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (OSError, OverflowError, ValueError):
        return True
    return True
