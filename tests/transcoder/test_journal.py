"""The source journal on disk: what it holds after a rewrite and appends, what a
process killed mid-write leaves readable, and a full disk that costs the journal, never
the broadcast."""

from __future__ import annotations

from pathlib import Path

from castway.media import Codec, MediaKind, MediaPacket
from tests.fixtures.tiny_disk import fill
from transcoder.journal import JournalHeader, SourceJournal, journal_path, read_journal
from transcoder.replay import BREAK

CONFIG = MediaPacket(MediaKind.VIDEO, Codec.H264, False, True, 0, 0, b"avcC")
KEY = MediaPacket(MediaKind.VIDEO, Codec.H264, True, False, 2000, 2033, b"k" * 300)
AAC = MediaPacket(MediaKind.AUDIO, Codec.AAC, False, False, 2005, 2005, b"a" * 20)
HEADER = JournalHeader("b1", {"source": 3, "360p": 2}, default_msn=3, replay_from_pts_ms=2033)


def test_a_rewrite_and_appends_read_back_in_order(tmp_path: Path) -> None:
    journal = SourceJournal(journal_path(tmp_path, "b1"))
    journal.rewrite(HEADER, [CONFIG, KEY])
    journal.append(AAC)
    journal.append(BREAK)
    journal.close()
    assert read_journal(journal.path) == (HEADER, [CONFIG, KEY, AAC, BREAK])
    journal.rewrite(JournalHeader("b1", {"source": 4}), [KEY])  # the boundary moved on
    assert read_journal(journal.path) == (JournalHeader("b1", {"source": 4}), [KEY])
    journal.remove()
    assert not journal.path.exists() and not list(tmp_path.rglob("*.tmp"))


def test_a_record_cut_short_by_a_kill_ends_the_journal(tmp_path: Path) -> None:
    journal = SourceJournal(journal_path(tmp_path, "b1"))
    journal.rewrite(HEADER, [CONFIG, KEY, AAC])
    journal.close()
    data = journal.path.read_bytes()
    journal.path.write_bytes(data[:-7])  # the last packet half written
    assert read_journal(journal.path) == (HEADER, [CONFIG, KEY])


def test_a_full_disk_gives_up_the_journal_quietly(tiny_disk: Path) -> None:
    journal = SourceJournal(journal_path(tiny_disk, "b1"))
    journal.rewrite(HEADER, [CONFIG])
    filler = fill(tiny_disk)
    try:
        for _ in range(100):
            journal.append(KEY)  # never raises
        assert journal.failed
        journal.rewrite(HEADER, [CONFIG])  # nor does a rewrite after it
    finally:
        filler.unlink()
    journal.remove()
