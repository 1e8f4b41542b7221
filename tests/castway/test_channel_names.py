"""The channel-name rule (castway.model): one definition, enforced by the catalog for every
way of creating a channel. A channel name is a URL slug (/watch/{name}, /hls/{name}/...,
/chat/{name}): a name outside the rule would make a channel whose URLs answer 404."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from castway.model import (
    CHANNEL_NAME_PATTERN,
    check_channel_name,
    valid_channel_name,
)
from tests.serve_process import clean_env

# The rule as origin.schemas and chat.protocol each spelled it before it had one home.
OLD_RULE = r"^[a-z0-9](?:[a-z0-9_-]{0,62}[a-z0-9])?$"
BAD_NAMES = ["Bad Name/../x", "", "Demo", "-demo", "demo-", "a" * 65, "de mo", "demo\n",
             "../x", "a/b", "ü", "a.b"]
EDGE_NAMES = ["a", "0", "my_channel-2", "a" * 64, "9-_-x"]


@pytest.mark.parametrize(("name", "ok"), [*((n, True) for n in EDGE_NAMES),
                                          *((n, False) for n in BAD_NAMES)])
def test_the_rule(name: str, ok: bool) -> None:
    assert valid_channel_name(name) is ok


@settings(max_examples=500, deadline=None)
@given(st.from_regex(OLD_RULE, fullmatch=True))
def test_every_name_the_old_rule_accepted_is_still_a_channel_name(name: str) -> None:
    assert check_channel_name(name) == name


@settings(max_examples=500, deadline=None)
@given(st.text(max_size=70))
def test_the_rule_is_the_old_rule(name: str) -> None:
    assert valid_channel_name(name) is (re.fullmatch(OLD_RULE, name) is not None)
    assert CHANNEL_NAME_PATTERN == OLD_RULE  # what the API and its OpenAPI schema check


def _castway(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "launch.cli", *args], capture_output=True,
                          text=True, timeout=60, env=clean_env(), check=False)


def test_the_cli_refuses_a_bad_name_and_creates_nothing(tmp_path: Path) -> None:
    data = str(tmp_path / "data")
    refused = _castway("channels", "create", "Bad Name/../x", "--data-dir", data)
    assert refused.returncode == 2
    assert refused.stdout == ""  # no stream key, no watch URL
    assert "invalid channel name 'Bad Name/../x'" in refused.stderr
    assert "lowercase letters, digits, '-' and '_'" in refused.stderr
    listed = _castway("channels", "list", "--json", "--data-dir", data)
    assert listed.returncode == 0 and json.loads(listed.stdout) == []


def test_the_cli_creates_channels_at_the_edges_of_the_rule(tmp_path: Path) -> None:
    data = str(tmp_path / "data")
    for name in EDGE_NAMES[:2] + EDGE_NAMES[3:4]:  # one process each: keep it short
        created = _castway("channels", "create", name, "--json", "--data-dir", data)
        assert created.returncode == 0, created.stderr
        assert json.loads(created.stdout)["channel"] == name
    listed = _castway("channels", "list", "--json", "--data-dir", data)
    assert sorted(c["name"] for c in json.loads(listed.stdout)) == \
        sorted(EDGE_NAMES[:2] + EDGE_NAMES[3:4])
