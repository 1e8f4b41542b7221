"""Ingest nodes as ``castway ingest`` processes on this machine, and edge nodes as
``castway edge`` processes (scheduler.tiers).

Each launched node is recorded in ``DATA_DIR/scheduler/local/<node id>.json`` (pid,
version, port), so a one-shot ``castway scheduler tick`` sees the nodes an earlier tick
started; children run in their own session and outlive the tick that started them.
There is no load balancer here: publishers pick a node themselves (the address the
node heartbeats: it binds any free port), and
the node's own admission refuses them while it drains.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from datetime import datetime
from pathlib import Path

from castway.model import Node, NodeTier, new_id, utcnow
from castway.pids import pid_alive
from castway.settings import Settings
from scheduler.backends.base import BackendError, Instance

logger = logging.getLogger(__name__)

STOP_GRACE_S = 10.0


class LocalBackend:
    register_delay_s = 0.0  # publishers reach the node at its own address

    def __init__(self, settings: Settings, *, command: Sequence[str] | None = None,
                 edge_command: Sequence[str] | None = None,
                 env: Mapping[str, str] | None = None, state_dir: Path | None = None) -> None:
        self.settings = settings
        self.command = list(command or [sys.executable, "-m", "launch.cli", "ingest"])
        self.edge_command = list(edge_command or [sys.executable, "-m", "launch.cli", "edge"])
        self.env = dict(env) if env is not None else dict(os.environ)
        self.state_dir = state_dir or settings.data_dir / "scheduler" / "local"
        self.state_dir.mkdir(parents=True, exist_ok=True)
        self._children: dict[str, subprocess.Popen[bytes]] = {}

    def _record(self, node_id: str) -> Path:
        return self.state_dir / f"{node_id}.json"

    def _load(self) -> list[dict[str, object]]:
        out = []
        for path in sorted(self.state_dir.glob("*.json")):
            try:
                out.append(json.loads(path.read_text()))
            except (OSError, ValueError):
                logger.warning("unreadable local node record", extra={"path": str(path)})
        return out

    def _running(self, record: Mapping[str, object]) -> bool:
        node_id = str(record["node_id"])
        child = self._children.get(node_id)
        if child is not None:
            return child.poll() is None
        pid = record.get("pid")
        return isinstance(pid, int) and pid_alive(pid)

    def list_instances(self) -> list[Instance]:
        out = []
        for record in self._load():
            node_id = str(record["node_id"])
            if not self._running(record):
                self._record(node_id).unlink(missing_ok=True)
                self._children.pop(node_id, None)
                continue
            out.append(Instance(node_id=node_id, version=str(record["version"]),
                                launched_at=datetime.fromisoformat(str(record["launched_at"])),
                                address=str(record.get("address", "")),
                                tier=NodeTier(str(record.get("tier", NodeTier.TRANSCODE)))))
        return out

    def start(self, count: int, version: str,
              tier: NodeTier = NodeTier.TRANSCODE) -> list[Instance]:
        if not self.settings.redis_url:
            # a child's heartbeats would never reach an in-process live state: it would
            # look lost after the start timeout and be replaced, forever
            raise BackendError("the local backend's nodes need a shared live state: set "
                               "CASTWAY_REDIS_URL")
        started = []
        for _ in range(count):
            node_id = f"local-{new_id()}"
            env = {**self.env,
                   "CASTWAY_NODE_ID": node_id,
                   "CASTWAY_IMAGE_VERSION": version,
                   # The node binds any free port and heartbeats its address: a port
                   # picked here and bound there could be taken in between (it was, in
                   # a parallel test run, and the node never came up).
                   "CASTWAY_RTMP_PORT": "0",
                   "CASTWAY_HOST": self.settings.host,
                   "CASTWAY_DATA_DIR": str(self.settings.data_dir),
                   "CASTWAY_HEARTBEAT_TTL_S": str(self.settings.heartbeat_ttl_s)}
            if tier == NodeTier.EDGE:  # its capacity is in publishers
                env["CASTWAY_EDGE_CAPACITY"] = str(self.settings.edge_capacity)
            else:
                env["CASTWAY_NODE_CAPACITY"] = str(self.settings.node_capacity)
            if self.settings.redis_url:
                env["CASTWAY_REDIS_URL"] = self.settings.redis_url
            command = self.edge_command if tier == NodeTier.EDGE else self.command
            log = (self.state_dir / f"{node_id}.log").open("ab")
            try:
                child = subprocess.Popen(command, env=env, stdin=subprocess.DEVNULL,
                                         stdout=log, stderr=subprocess.STDOUT,
                                         start_new_session=True)
            except OSError as exc:
                raise BackendError(f"cannot start {command[0]}: {exc}") from exc
            finally:
                log.close()
            self._children[node_id] = child
            instance = Instance(node_id, version, utcnow(), tier=tier)
            self._record(node_id).write_text(json.dumps({
                "node_id": node_id, "version": version, "pid": child.pid, "tier": tier.value,
                "launched_at": instance.launched_at.isoformat()}))
            logger.info("local node started", extra={"node": node_id, "version": version,
                                                     "pid": child.pid, "tier": tier.value})
            started.append(instance)
        return started

    def stop(self, node_id: str) -> None:
        path = self._record(node_id)
        try:
            record = json.loads(path.read_text())
        except (OSError, ValueError):
            return
        pid = record.get("pid")
        child = self._children.get(node_id)
        if self._running(record) and isinstance(pid, int):
            self._terminate(pid, child)
        self._children.pop(node_id, None)
        path.unlink(missing_ok=True)
        logger.info("local node stopped", extra={"node": node_id})

    def _terminate(self, pid: int, child: subprocess.Popen[bytes] | None) -> None:
        if child is not None:
            if child.poll() is None:
                child.terminate()
                try:
                    child.wait(STOP_GRACE_S)
                except subprocess.TimeoutExpired:
                    child.kill()
                    child.wait()
            return
        try:
            os.kill(pid, signal.SIGTERM)
        except ProcessLookupError:
            return
        deadline = time.monotonic() + STOP_GRACE_S
        while time.monotonic() < deadline and pid_alive(pid):
            time.sleep(0.05)  # not our child: no wait() to block on
        if pid_alive(pid):
            os.kill(pid, signal.SIGKILL)

    def set_routable(self, node: Node, routable: bool) -> None:
        """No load balancer on one machine: admission on the node does the refusing."""

    def close(self) -> None:
        """Children outlive the backend object (they are the fleet); only forget them."""
        self._children.clear()

    def stop_all(self) -> None:
        """Stop every node (``castway serve`` shutting down, tests)."""
        for instance in self.list_instances():
            self.stop(instance.node_id)
