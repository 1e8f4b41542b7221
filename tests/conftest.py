"""Suite-wide fixtures. Real peers live in tests/fixtures/ (one module per peer).

The session ends with a check that no test left a child process running (a sleeper
standing in for a node, a transcoder, a server): the run fails and names them.
"""

from __future__ import annotations

import atexit
import os
import shutil
import signal
import tempfile
import time
from pathlib import Path

import pytest

from tests.support import make_test_media

pytest_plugins = [
    "tests.fixtures.redis_server",
    "tests.fixtures.s3_server",
    "tests.fixtures.postgres",
    "tests.fixtures.tiny_disk",
    "tests.fixtures.fault_proxy",
    "tests.fixtures.webhook_receiver",
]

# `castway serve` processes the tests start record themselves for the CLI
# (launch/running.py): in a state directory of the test session's, never the user's.
os.environ["XDG_STATE_HOME"] = tempfile.mkdtemp(prefix="castway-test-state-")
atexit.register(shutil.rmtree, os.environ["XDG_STATE_HOME"], ignore_errors=True)

# Children that belong to the interpreter, not to a test: multiprocessing's helper
# processes live as long as pytest and end with it.
_INTERPRETER_HELPERS = ("multiprocessing.resource_tracker", "multiprocessing.forkserver")
# A child being stopped as the session ends (a server fixture's last teardown) may
# still be exiting: it gets this long before it counts as left behind.
LEFTOVER_GRACE_S = 10.0


def running_children(pid: int) -> dict[int, str]:
    """The running child processes of ``pid`` (pid -> command line), from /proc.
    Zombies are left out: they have exited and go with their parent."""
    found: dict[int, str] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            # "pid (comm) state ppid ...": comm may hold spaces and parentheses
            state, ppid = (entry / "stat").read_text().rsplit(")", 1)[1].split()[:2]
            if int(ppid) != pid or state == "Z":
                continue
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ")
        except (OSError, ValueError):
            continue  # gone meanwhile
        command = cmdline.decode(errors="replace").strip()
        if not any(helper in command for helper in _INTERPRETER_HELPERS):
            found[int(entry.name)] = command
    return found


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    if not Path("/proc/self/stat").exists():
        return  # no /proc to look in
    deadline = time.monotonic() + LEFTOVER_GRACE_S
    left = running_children(os.getpid())
    while left and time.monotonic() < deadline:
        time.sleep(0.1)
        left = running_children(os.getpid())
    if not left:
        return
    reporter = session.config.pluginmanager.get_plugin("terminalreporter")
    for pid, command in left.items():
        line = f"child process left behind by the tests: pid {pid}: {command[:200]}"
        if reporter is not None:
            reporter.write_line(line, red=True)
        try:
            os.kill(pid, signal.SIGKILL)  # ours: nothing may outlive the run
        except ProcessLookupError:
            pass
    session.exitstatus = pytest.ExitCode.TESTS_FAILED


@pytest.fixture(scope="session")
def media_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("media")


@pytest.fixture(scope="session")
def h264_aac_flv(media_dir: Path) -> Path:
    """4 s of 640x360p30 H.264 (keyframe every 2 s, no B-frames) + AAC stereo, in FLV."""
    return make_test_media(media_dir / "h264_aac.flv")
