"""Whether a process id names a running process (for pid files and child watchdogs)."""

from __future__ import annotations

import os
from pathlib import Path


def pid_alive(pid: int) -> bool:
    """True while ``pid`` runs (also when it belongs to another user); False once it has
    exited, including as a zombie not yet reaped, which still answers ``kill(pid, 0)``."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return True  # no procfs (or it vanished between the calls): kill(0) said alive
    return state != "Z"
