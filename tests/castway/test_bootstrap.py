"""Secrets kept in the data directory: created once, shared by every process that
opens the directory, even when several start at the same moment."""

from __future__ import annotations

import multiprocessing
import os
from pathlib import Path

from castway.bootstrap import load_or_create_secret


def test_a_secret_is_created_once_and_read_back_after(tmp_path: Path) -> None:
    secret, created = load_or_create_secret(tmp_path, "key", None, generate=lambda: "s1")
    assert (secret, created) == ("s1", True)
    assert load_or_create_secret(tmp_path, "key", None, generate=lambda: "s2") == ("s1", False)
    assert (tmp_path / "key").stat().st_mode & 0o777 == 0o600
    assert [p.name for p in tmp_path.iterdir()] == ["key"]  # no draft left behind


def test_a_process_that_loses_the_race_uses_the_winners_secret(tmp_path: Path) -> None:
    # Another node, started at the same moment, writes the secret after this one found
    # none and before it writes its own (two local fleet nodes did: one crashed).
    def generate_while_another_wins() -> str:
        (tmp_path / "key").write_text("theirs\n")
        return "mine"

    assert load_or_create_secret(tmp_path, "key", None,
                                 generate=generate_while_another_wins) == ("theirs", False)


def _load(data_dir: str, out: multiprocessing.Queue[str]) -> None:
    out.put(load_or_create_secret(Path(data_dir), "key", None,
                                  generate=lambda: os.urandom(8).hex())[0])


def test_processes_starting_together_all_get_the_same_secret(tmp_path: Path) -> None:
    ctx = multiprocessing.get_context("spawn")
    out: multiprocessing.Queue[str] = ctx.Queue()
    procs = [ctx.Process(target=_load, args=(str(tmp_path), out)) for _ in range(6)]
    for p in procs:
        p.start()
    secrets = {out.get(timeout=30) for _ in procs}
    for p in procs:
        p.join(30)
    assert len(secrets) == 1
    assert secrets == {(tmp_path / "key").read_text().strip()}
