"""What the benchmarks (``castway bench ...``) and the tests share: free loopback ports,
waiting for a server to listen, and where the reference peers' start scripts live."""

from __future__ import annotations

import contextlib
import socket
import subprocess
import time
from pathlib import Path

# The nginx-rtmp peer script sits in the team's shared folder beside the checkout
# (``../shared/peers/``); /work/shared is where that folder lives on the dev machines.
_PEER_DIRS = (Path(__file__).resolve().parents[2] / "shared" / "peers",
              Path("/work/shared/peers"))


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def free_ports(count: int, host: str = "127.0.0.1", *,
               avoid: frozenset[int] = frozenset()) -> tuple[int, ...]:
    """``count`` distinct free ports, none in ``avoid``. Each socket stays bound until all
    are chosen: ``free_port()`` twice in a row can be handed the same port (the kernel
    may reuse the one just released), and two servers then fight over it."""
    with contextlib.ExitStack() as held:
        ports: list[int] = []
        while len(ports) < count:
            s = held.enter_context(socket.socket(socket.AF_INET, socket.SOCK_STREAM))
            s.bind((host, 0))
            port = int(s.getsockname()[1])
            if port not in avoid:
                ports.append(port)
        return tuple(ports)


def wait_for_port(port: int, host: str = "127.0.0.1", timeout_s: float = 15.0,
                  proc: subprocess.Popen[bytes] | None = None) -> None:
    """Block until something accepts on host:port (a server we started is up)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"process exited with {proc.returncode} before listening")
        try:
            with socket.create_connection((host, port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.02)
    raise TimeoutError(f"nothing listening on {host}:{port} after {timeout_s}s")


def peer_script(name: str) -> Path | None:
    """The shared folder's ``peers/NAME`` start script, if this machine has it."""
    for directory in _PEER_DIRS:
        path = directory / name
        if path.exists():
            return path
    return None


NGINX_RTMP = "nginx-rtmp.sh"
