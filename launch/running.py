"""The castway servers running on this machine for this user, so that the CLI run from
another directory works on the data of the one that runs, not on an empty new catalog.

``castway serve`` writes a small record (``{state dir}/castway/running/{pid}.json``; the
state directory is ``$XDG_STATE_HOME``, by default ``~/.local/state``) at start and removes
it at exit; a record whose process is gone (a SIGKILL) is ignored and removed.
"""

from __future__ import annotations

import contextlib
import json
import os
from dataclasses import dataclass
from pathlib import Path

from castway.pids import pid_alive


def running_dir() -> Path:
    state = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(state) / "castway" / "running"


@dataclass(frozen=True, slots=True)
class RunningServer:
    pid: int
    data_dir: Path
    public_url: str


def register(pid: int, data_dir: Path, public_url: str) -> Path | None:
    """Record a running server; None when the state directory cannot be written (the
    server runs all the same: only the CLI's convenience is lost)."""
    path = running_dir() / f"{pid}.json"
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps({"pid": pid, "data_dir": str(data_dir.resolve()),
                                    "public_url": public_url}))
    except OSError:
        return None
    return path


def unregister(path: Path | None) -> None:
    if path is not None:
        with contextlib.suppress(OSError):
            path.unlink()


def running_servers() -> list[RunningServer]:
    """Servers whose process still runs, oldest record first."""
    servers = []
    directory = running_dir()
    records = sorted(directory.glob("*.json"), key=_mtime) if directory.is_dir() else []
    for path in records:
        try:
            raw = json.loads(path.read_text())
            server = RunningServer(int(raw["pid"]), Path(raw["data_dir"]),
                                   str(raw["public_url"]))
        except (OSError, ValueError, KeyError, TypeError):
            continue
        if pid_alive(server.pid):
            servers.append(server)
        else:
            with contextlib.suppress(OSError):
                path.unlink()  # left by a server that was killed
    return servers


def _mtime(path: Path) -> float:
    try:
        return path.stat().st_mtime
    except OSError:
        return 0.0

