"""What the salvage at a node's start does with journals that have nothing to give, or
cannot give it: never an endless retry, never a failed start. (What it recovers is
tested on a real process: tests/reliability/test_stop_and_kill.py.)"""

from __future__ import annotations

from pathlib import Path

from castway.catalog import open_catalog
from castway.model import Broadcast, BroadcastState, Channel, Visibility, Vod, VodState
from castway.settings import Settings
from castway.storage.local import LocalStorage
from transcoder.journal import JournalHeader, SourceJournal, journal_dir, journal_path
from transcoder.salvage import salvage_journals


def journal(data_dir: Path, broadcast_id: str) -> Path:
    j = SourceJournal(journal_path(data_dir, broadcast_id))
    j.rewrite(JournalHeader(broadcast_id), [])
    j.close()
    return j.path


def test_journals_with_nothing_to_salvage_are_removed_and_broken_ones_set_aside(
        tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path / "data")
    catalog = open_catalog(settings)
    storage = LocalStorage(tmp_path / "storage")
    catalog.create_channel(Channel("alpha"))
    catalog.save_broadcast(Broadcast("done", "alpha", "n1", BroadcastState.ENDED))
    catalog.save_vod(Vod("done", "done", "alpha", Visibility.PUBLIC, VodState.COMPLETE, 10.0))
    journal(settings.data_dir, "done")  # its VOD is complete
    journal(settings.data_dir, "unknown")  # no such broadcast
    corrupt = journal_path(settings.data_dir, "corrupt")
    corrupt.write_bytes(b"not a journal")
    stuck = journal_dir(settings.data_dir) / "crashed.journal.salvaging"
    stuck.write_bytes(b"")  # the salvage before this one died working on it

    results = salvage_journals(settings, catalog, storage)

    assert [r.broadcast_id for r in results if r.error] == ["corrupt"]
    assert sorted(p.name for p in journal_dir(settings.data_dir).iterdir()) == [
        "corrupt.journal.failed", "crashed.journal.failed"]
    assert salvage_journals(settings, catalog, storage) == []  # never retried
    catalog.close()
