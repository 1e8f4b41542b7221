"""`castway channels ...` run from another directory works on the data of the server that
runs, or says which data it used -- never an empty new catalog in silence."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from tests.serve_process import clean_env, serve


def channels(cwd: Path, state: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "launch.cli", "channels", *args],
                          cwd=cwd, capture_output=True, text=True, timeout=60,
                          env=clean_env(XDG_STATE_HOME=str(state)))


def test_channels_from_elsewhere_use_the_running_servers_data(tmp_path: Path) -> None:
    state, elsewhere = tmp_path / "state", tmp_path / "elsewhere"
    elsewhere.mkdir()
    data_dir = tmp_path / "server-data"
    with serve(data_dir, XDG_STATE_HOME=str(state)):
        listed = channels(elsewhere, state, "list", "--json")
        assert listed.returncode == 0, listed.stderr
        assert [c["name"] for c in json.loads(listed.stdout)] == ["default"]
        assert str(data_dir.resolve()) in listed.stderr  # it says which data it used
        created = channels(elsewhere, state, "create", "second", "--json")
        assert created.returncode == 0, created.stderr
    assert not (elsewhere / "data").exists()  # nothing made where the command ran
    # The server is gone: from elsewhere there is nothing to list, and it says so.
    listed = channels(elsewhere, state, "list")
    assert listed.returncode == 1 and "no castway data here" in listed.stderr
    assert not (elsewhere / "data").exists()
    # Named, the data directory is used as it is.
    named = channels(elsewhere, state, "list", "--json", "--data-dir", str(data_dir))
    assert [c["name"] for c in json.loads(named.stdout)] == ["default", "second"]
