"""`castway serve` as a real process on free ports, for tests that use it as a user
would (and stop, signal or kill it)."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from tests.support import free_ports, wait_for_port


@dataclass
class Served:
    proc: subprocess.Popen[str]
    data_dir: Path
    rtmp_port: int
    http_port: int
    banner: str

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"

    def stream_key(self) -> str:
        match = re.search(r"Stream Key:\s+(cw_\S+)", self.banner)
        assert match, self.banner
        return match.group(1)

    def admin_headers(self) -> dict[str, str]:
        token = (self.data_dir / "admin_token").read_text().strip()
        return {"Authorization": f"Bearer {token}"}


def clean_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CASTWAY_")}
    env.update(extra)
    return env


@contextmanager
def serve(data_dir: Path, *, preexec_fn: Callable[[], None] | None = None,
          **env: str) -> Iterator[Served]:
    """A running ``castway serve``; stopped with SIGINT at the end if still running
    (killed if it does not stop within 30 s). ``preexec_fn`` runs in the child before
    castway starts (resource limits); ``env`` adds to (or overrides) its environment."""
    # Distinct from each other and from the ports the caller chose for other listeners.
    chosen = frozenset(int(v) for k, v in env.items() if k.endswith("_PORT") and v.isdigit())
    rtmp_port, http_port = free_ports(2, avoid=chosen)
    proc = subprocess.Popen(
        [sys.executable, "-m", "launch.cli", "serve", "--data-dir", str(data_dir),
         "--rtmp-port", str(rtmp_port), "--http-port", str(http_port)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, preexec_fn=preexec_fn,
        env=clean_env(**{"CASTWAY_RECONNECT_GRACE_S": "1", "CASTWAY_LOG_JSON": "true", **env}))
    try:
        wait_for_port(http_port, timeout_s=60, proc=proc)  # type: ignore[arg-type]
        assert proc.stdout is not None
        lines = []
        for line in proc.stdout:  # the banner is printed once everything listens
            lines.append(line)
            if line.startswith("Stop with"):
                break
        yield Served(proc, data_dir, rtmp_port, http_port, "".join(lines))
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGINT)
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
