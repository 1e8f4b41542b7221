"""The catalog contract, run against SQLite and a real PostgreSQL server."""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import pytest
from sqlalchemy import inspect, text

from castway.catalog import open_catalog
from castway.catalog.base import AlreadyExists, CatalogError, NotFound, SegmentRecord
from castway.catalog.migrations import MIGRATIONS, Migration, history
from castway.catalog.schema import metadata
from castway.catalog.sql import CatalogUnavailable, SqlCatalog, create_catalog_engine
from castway.keys import generate_stream_key, hash_stream_key
from castway.model import (
    Broadcast,
    BroadcastState,
    Channel,
    InvalidChannelName,
    Rendition,
    Segment,
    SourceInfo,
    StreamKey,
    Visibility,
    Vod,
    VodState,
)
from castway.restream.targets import RestreamTarget
from castway.settings import Settings
from castway.webhooks.records import DeliveryState, WebhookDelivery, WebhookEndpoint
from tests.support import free_port

T0 = datetime(2026, 3, 1, 12, 0, 0, 123456, tzinfo=UTC)


@pytest.fixture(params=["sqlite", "postgresql"])
def catalog_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """URL of an empty database, not migrated yet."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'data' / 'castway.db'}"
    return str(request.getfixturevalue("postgres_schema_url"))


@pytest.fixture
def make_catalog(catalog_url: str) -> Iterator[Callable[..., SqlCatalog]]:
    """Opens more catalogs on the same database (like more processes would)."""
    opened: list[SqlCatalog] = []

    def make(migrations: tuple[Migration, ...] = MIGRATIONS) -> SqlCatalog:
        c = SqlCatalog(catalog_url, migrations=migrations)
        opened.append(c)
        return c

    yield make
    for c in opened:
        c.close()


@pytest.fixture
def catalog(make_catalog: Callable[..., SqlCatalog]) -> SqlCatalog:
    c = make_catalog()
    c.migrate()
    return c


def broadcast(id: str, channel: str = "alice", *, minutes: int = 0,
              state: BroadcastState = BroadcastState.LIVE) -> Broadcast:
    return Broadcast(id=id, channel=channel, node_id="node-1", state=state,
                     started_at=T0 + timedelta(minutes=minutes))


def vod(id: str, channel: str = "alice", *, minutes: int = 0) -> Vod:
    return Vod(id=id, broadcast_id=id, channel=channel, visibility=Visibility.PUBLIC,
               state=VodState.PENDING, duration_s=12.5,
               created_at=T0 + timedelta(minutes=minutes))


# --- migrations ---------------------------------------------------------------------------

def test_migrate_records_every_step_and_is_idempotent(catalog: SqlCatalog) -> None:
    recorded = history(catalog.engine)
    assert [(m.version, m.description) for m in recorded] == \
        [(m.version, m.description) for m in MIGRATIONS]
    assert all(m.applied_at.tzinfo is not None for m in recorded)

    assert catalog.migrate() == len(MIGRATIONS)
    assert catalog.migrate() == len(MIGRATIONS)
    assert history(catalog.engine) == recorded


def test_migrated_schema_has_every_table_column_and_index(catalog: SqlCatalog) -> None:
    inspector = inspect(catalog.engine)
    for table in metadata.sorted_tables:
        columns = {c["name"] for c in inspector.get_columns(table.name)}
        assert columns == {c.name for c in table.columns}, table.name
        indexes = {i["name"] for i in inspector.get_indexes(table.name)}
        assert indexes == {i.name for i in table.indexes}, table.name
    unique = {i["name"]: i["unique"] for i in inspector.get_indexes("stream_keys")}
    assert unique["ux_stream_keys_key_hash"]


def test_migrate_applies_only_the_pending_steps(
        catalog: SqlCatalog, make_catalog: Callable[..., SqlCatalog]) -> None:
    step2 = Migration(len(MIGRATIONS) + 1, "extra table",
                      ("CREATE TABLE extra (id INTEGER PRIMARY KEY)",
                       "INSERT INTO extra (id) VALUES (7)"))
    newer = make_catalog((*MIGRATIONS, step2))

    assert newer.migrate() == step2.version
    assert newer.migrate() == step2.version  # the insert did not run twice
    assert [m.version for m in history(newer.engine)][-1] == step2.version
    with newer.engine.connect() as conn:
        assert conn.execute(text("SELECT id FROM extra")).scalars().all() == [7]
    # An older castway on the newer schema keeps working.
    assert catalog.migrate() == step2.version


def test_a_failing_step_rolls_back_the_whole_migration(
        catalog: SqlCatalog, make_catalog: Callable[..., SqlCatalog]) -> None:
    bad = Migration(len(MIGRATIONS) + 1, "broken",
                    ("CREATE TABLE half_done (id INTEGER PRIMARY KEY)",
                     "INSERT INTO no_such_table (id) VALUES (1)"))
    broken = make_catalog((*MIGRATIONS, bad))

    with pytest.raises(CatalogError):
        broken.migrate()
    assert [m.version for m in history(catalog.engine)] == [m.version for m in MIGRATIONS]
    assert not inspect(catalog.engine).has_table("half_done")


def test_migration_versions_must_be_contiguous(make_catalog: Callable[..., SqlCatalog]) -> None:
    gap = Migration(len(MIGRATIONS) + 2, "gap", ("SELECT 1",))
    with pytest.raises(ValueError, match="without gaps"):
        make_catalog((*MIGRATIONS, gap)).migrate()


def test_two_processes_migrating_at_once_apply_each_step_once(
        make_catalog: Callable[..., SqlCatalog]) -> None:
    a, b = make_catalog(), make_catalog()
    barrier = threading.Barrier(2)

    def run(c: SqlCatalog) -> int:
        barrier.wait()
        return c.migrate()

    with ThreadPoolExecutor(2) as pool:
        versions = list(pool.map(run, [a, b]))

    assert versions == [len(MIGRATIONS)] * 2
    assert [m.version for m in history(a.engine)] == [m.version for m in MIGRATIONS]
    a.create_channel(Channel("alice"))
    assert b.get_channel("alice") is not None


def test_open_catalog_creates_the_data_dir_and_migrates(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path / "fresh" / "data")
    catalog = open_catalog(settings)
    try:
        assert (tmp_path / "fresh" / "data" / "castway.db").is_file()
        assert [m.version for m in history(catalog.engine)] == [m.version for m in MIGRATIONS]
        with catalog.engine.connect() as conn:
            assert conn.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
            assert conn.exec_driver_sql("PRAGMA foreign_keys").scalar() == 1
            assert (conn.exec_driver_sql("PRAGMA busy_timeout").scalar() or 0) >= 1000
    finally:
        catalog.close()


def test_unreachable_postgres_is_unavailable_not_a_crash() -> None:
    catalog = SqlCatalog(f"postgresql://postgres@127.0.0.1:{free_port()}/nothing")
    try:
        assert catalog.ping() is False
        with pytest.raises(CatalogUnavailable):
            catalog.get_channel("alice")
        with pytest.raises(CatalogUnavailable):
            catalog.migrate()
    finally:
        catalog.close()


def test_unsupported_database_is_a_clear_error() -> None:
    with pytest.raises(ValueError, match="unsupported catalog database"):
        SqlCatalog("mysql://root@localhost/castway")


# --- channels -----------------------------------------------------------------------------

def test_channel_round_trip(catalog: SqlCatalog) -> None:
    created = catalog.create_channel(Channel("alice", "Alice plays", Visibility.PRIVATE, T0))
    assert created == Channel("alice", "Alice plays", Visibility.PRIVATE, T0)
    got = catalog.get_channel("alice")
    assert got == created
    assert got is not None and got.created_at.tzinfo == UTC
    assert catalog.get_channel("bob") is None


def test_creating_a_taken_channel_name_raises_already_exists(catalog: SqlCatalog) -> None:
    catalog.create_channel(Channel("alice", "first"))
    with pytest.raises(AlreadyExists):
        catalog.create_channel(Channel("alice", "second"))
    assert catalog.get_channel("alice") == catalog.list_channels()[0]
    assert catalog.list_channels()[0].title == "first"


@pytest.mark.parametrize("name", ["Bad Name/../x", "Demo", "-demo", "a/b", "a" * 65, ""])
def test_a_channel_name_outside_the_rule_is_refused(catalog: SqlCatalog, name: str) -> None:
    """Every way of creating a channel (API, CLI, the embedded default) comes here."""
    with pytest.raises(InvalidChannelName, match="channel name"):
        catalog.create_channel(Channel(name))
    assert catalog.list_channels() == []


def test_channels_are_listed_by_name(catalog: SqlCatalog) -> None:
    for name in ["carol", "alice", "bob"]:
        catalog.create_channel(Channel(name))
    assert [c.name for c in catalog.list_channels()] == ["alice", "bob", "carol"]


def test_update_channel_changes_title_and_visibility_only(catalog: SqlCatalog) -> None:
    catalog.create_channel(Channel("alice", "old", Visibility.PUBLIC, T0))
    updated = catalog.update_channel(Channel("alice", "new", Visibility.PRIVATE,
                                             T0 + timedelta(days=3)))
    assert updated == Channel("alice", "new", Visibility.PRIVATE, T0)
    assert catalog.get_channel("alice") == updated
    with pytest.raises(NotFound):
        catalog.update_channel(Channel("bob"))


def test_delete_channel_removes_it_and_its_keys(catalog: SqlCatalog) -> None:
    catalog.create_channel(Channel("alice"))
    key_hash = hash_stream_key(generate_stream_key())
    catalog.add_stream_key(StreamKey("alice", key_hash))

    catalog.delete_channel("alice")

    assert catalog.get_channel("alice") is None
    assert catalog.channel_for_key_hash(key_hash) is None
    with pytest.raises(NotFound):
        catalog.delete_channel("alice")
    # The name and the hash are free again.
    catalog.create_channel(Channel("alice"))
    catalog.add_stream_key(StreamKey("alice", key_hash))
    assert catalog.channel_for_key_hash(key_hash) == "alice"


def test_datetimes_are_utc_aware_in_and_out(catalog: SqlCatalog) -> None:
    tokyo = timezone(timedelta(hours=9))
    created = catalog.create_channel(Channel("alice", created_at=T0.astimezone(tokyo)))
    got = catalog.get_channel("alice")
    assert created.created_at == T0 and created.created_at.tzinfo == UTC
    assert got is not None and got.created_at == T0 and got.created_at.tzinfo == UTC

    with pytest.raises(ValueError, match="naive"):
        catalog.create_channel(Channel("bob", created_at=datetime(2026, 1, 1)))
    assert catalog.get_channel("bob") is None


# --- stream keys --------------------------------------------------------------------------

def test_an_active_key_hash_resolves_to_its_channel(catalog: SqlCatalog) -> None:
    catalog.create_channel(Channel("alice"))
    key = generate_stream_key()
    catalog.add_stream_key(StreamKey("alice", hash_stream_key(key)))
    assert catalog.channel_for_key_hash(hash_stream_key(key)) == "alice"
    assert catalog.channel_for_key_hash(hash_stream_key(generate_stream_key())) is None


def test_key_rotation_revokes_the_old_key(catalog: SqlCatalog) -> None:
    catalog.create_channel(Channel("alice"))
    old, new = hash_stream_key(generate_stream_key()), hash_stream_key(generate_stream_key())
    catalog.add_stream_key(StreamKey("alice", old))

    assert catalog.revoke_stream_keys("alice") == 1
    catalog.add_stream_key(StreamKey("alice", new))

    assert catalog.channel_for_key_hash(old) is None
    assert catalog.channel_for_key_hash(new) == "alice"
    assert catalog.revoke_stream_keys("alice") == 1  # only the new one was still active
    assert catalog.revoke_stream_keys("alice") == 0
    assert catalog.channel_for_key_hash(new) is None


def test_revoking_touches_only_that_channel(catalog: SqlCatalog) -> None:
    for name in ["alice", "bob"]:
        catalog.create_channel(Channel(name))
    a, b = hash_stream_key("a-key"), hash_stream_key("b-key")
    catalog.add_stream_key(StreamKey("alice", a))
    catalog.add_stream_key(StreamKey("bob", b))
    assert catalog.revoke_stream_keys("alice") == 1
    assert catalog.channel_for_key_hash(b) == "bob"
    assert catalog.revoke_stream_keys("nobody") == 0


def test_a_hash_is_stored_once(catalog: SqlCatalog) -> None:
    for name in ["alice", "bob"]:
        catalog.create_channel(Channel(name))
    key_hash = hash_stream_key(generate_stream_key())
    catalog.add_stream_key(StreamKey("alice", key_hash))
    with pytest.raises(AlreadyExists):
        catalog.add_stream_key(StreamKey("bob", key_hash))
    assert catalog.channel_for_key_hash(key_hash) == "alice"


def test_a_key_for_a_missing_channel_is_not_found(catalog: SqlCatalog) -> None:
    with pytest.raises(NotFound):
        catalog.add_stream_key(StreamKey("nobody", hash_stream_key(generate_stream_key())))


def test_an_already_revoked_key_does_not_resolve(catalog: SqlCatalog) -> None:
    catalog.create_channel(Channel("alice"))
    key_hash = hash_stream_key(generate_stream_key())
    catalog.add_stream_key(StreamKey("alice", key_hash, created_at=T0, revoked_at=T0))
    assert catalog.channel_for_key_hash(key_hash) is None


# --- broadcasts ---------------------------------------------------------------------------

def test_broadcast_round_trip_with_source_and_renditions(catalog: SqlCatalog) -> None:
    b = Broadcast(
        id="b1", channel="alice", node_id="node-1", state=BroadcastState.LIVE, started_at=T0,
        source=SourceInfo(video_codec="h264", audio_codec="aac", width=1920, height=1080,
                          fps=29.97, video_bitrate_kbps=6000.0, audio_sample_rate=48000,
                          audio_channels=2, encoder="obs-output module (libobs 30.0)"),
        renditions=(Rendition("source", 1920, 1080, 29.97, None, "avc1.640028,mp4a.40.2",
                              6_600_000, 6_100_000),
                    Rendition("720p", 1280, 720, 30.0, 3000.0, "avc1.64001f,mp4a.40.2")),
        segment_format="mpegts",
    )
    catalog.save_broadcast(b)
    assert catalog.get_broadcast("b1") == b
    assert catalog.get_broadcast("nope") is None


def test_save_broadcast_updates_an_existing_one(catalog: SqlCatalog) -> None:
    catalog.save_broadcast(broadcast("b1"))
    ended = Broadcast(id="b1", channel="alice", node_id="node-1", state=BroadcastState.ENDED,
                      started_at=T0, ended_at=T0 + timedelta(hours=24),
                      renditions=(Rendition("source", None, None, None, None),))
    catalog.save_broadcast(ended)
    assert catalog.get_broadcast("b1") == ended
    assert catalog.list_broadcasts() == [ended]


def test_broadcasts_are_listed_newest_first_with_filters(catalog: SqlCatalog) -> None:
    catalog.save_broadcast(broadcast("a1", "alice", minutes=1, state=BroadcastState.ENDED))
    catalog.save_broadcast(broadcast("b1", "bob", minutes=2))
    catalog.save_broadcast(broadcast("a2", "alice", minutes=3, state=BroadcastState.FAILED))
    catalog.save_broadcast(broadcast("a3", "alice", minutes=4))

    def ids(bs: list[Broadcast]) -> list[str]:
        return [b.id for b in bs]

    assert ids(catalog.list_broadcasts()) == ["a3", "a2", "b1", "a1"]
    assert ids(catalog.list_broadcasts(channel="alice")) == ["a3", "a2", "a1"]
    assert ids(catalog.list_broadcasts(state=BroadcastState.LIVE)) == ["a3", "b1"]
    assert ids(catalog.list_broadcasts(channel="alice", state=BroadcastState.LIVE)) == ["a3"]
    assert ids(catalog.list_broadcasts(limit=2)) == ["a3", "a2"]
    assert catalog.list_broadcasts(limit=0) == []
    assert catalog.list_broadcasts(channel="nobody") == []
    with pytest.raises(ValueError):
        catalog.list_broadcasts(limit=-1)


def test_broadcasts_starting_at_the_same_instant_have_a_stable_order(
        catalog: SqlCatalog) -> None:
    for id in ["x2", "x1", "x3"]:
        catalog.save_broadcast(broadcast(id))
    assert [b.id for b in catalog.list_broadcasts()] == ["x3", "x2", "x1"]


# --- VODs ---------------------------------------------------------------------------------

def segment(msn: int, *, rendition: str = "source", discontinuity: bool = False) -> Segment:
    return Segment(msn=msn, duration_s=2.002, key=f"broadcasts/b1/{rendition}/{msn}.m4s",
                   start_pts_s=msn * 2.002,
                   program_date_time=T0 + timedelta(seconds=msn * 2.002),
                   discontinuity=discontinuity, discontinuity_seq=1 if discontinuity else 0,
                   init_key=f"broadcasts/b1/{rendition}/init.mp4", size=1000 + msn)


def test_segment_records_come_back_in_order_by_rendition(catalog: SqlCatalog) -> None:
    catalog.record_segments([SegmentRecord("b1", "source", segment(1)),
                             SegmentRecord("b1", "360p", segment(0, rendition="360p")),
                             SegmentRecord("b1", "source", segment(0))])
    catalog.record_segments([SegmentRecord("b1", "source", segment(2, discontinuity=True)),
                             SegmentRecord("b2", "source", segment(0))])
    logs = catalog.segment_records("b1")
    assert sorted(logs) == ["360p", "source"]
    assert logs["source"] == [segment(0), segment(1), segment(2, discontinuity=True)]
    assert logs["360p"] == [segment(0, rendition="360p")]
    assert catalog.segment_records("nope") == {}


def test_recording_a_segment_twice_keeps_one_record(catalog: SqlCatalog) -> None:
    """A retried batch (the writer could not tell whether its commit landed) does no harm."""
    batch = [SegmentRecord("b1", "source", segment(0)), SegmentRecord("b1", "source", segment(1))]
    catalog.record_segments(batch)
    catalog.record_segments([*batch, SegmentRecord("b1", "source", segment(2))])
    assert [s.msn for s in catalog.segment_records("b1")["source"]] == [0, 1, 2]


def test_dropping_segment_records_touches_only_that_broadcast(catalog: SqlCatalog) -> None:
    catalog.record_segments([SegmentRecord("b1", "source", segment(0)),
                             SegmentRecord("b2", "source", segment(0))])
    catalog.drop_segment_records("b1")
    assert catalog.segment_records("b1") == {}
    assert len(catalog.segment_records("b2")["source"]) == 1


def test_broadcasts_to_archive_are_those_ended_or_failed_with_records(
        catalog: SqlCatalog) -> None:
    for b in (broadcast("live", minutes=0),
              broadcast("ended", minutes=1, state=BroadcastState.ENDED),
              broadcast("failed", minutes=2, state=BroadcastState.FAILED),
              broadcast("done", minutes=3, state=BroadcastState.ENDED),
              broadcast("empty", minutes=4, state=BroadcastState.ENDED)):
        catalog.save_broadcast(b)
    catalog.record_segments([SegmentRecord(b, "source", segment(0))
                             for b in ("live", "ended", "failed", "done")])
    catalog.drop_segment_records("done")  # its VOD was completed
    assert [b.id for b in catalog.broadcasts_to_archive()] == ["ended", "failed"]
    assert [b.id for b in catalog.broadcasts_to_archive(limit=1)] == ["ended"]


def test_set_renditions_replaces_the_ladder_of_a_recorded_broadcast(catalog: SqlCatalog) -> None:
    catalog.save_broadcast(broadcast("b1"))
    ladder = (Rendition("source", 1280, 720, 30.0, None, "avc1.64001f,mp4a.40.2", 2_500_000),
              Rendition("360p", 640, 360, 30.0, 800.0, "avc1.4d401e,mp4a.40.2", 900_000))
    catalog.set_renditions("b1", ladder)
    catalog.set_renditions("unknown", ladder)  # nothing recorded: nothing to do
    stored = catalog.get_broadcast("b1")
    assert stored is not None and stored.renditions == ladder
    assert catalog.get_broadcast("unknown") is None


def test_set_source_updates_a_live_broadcast_and_never_one_that_ended(
        catalog: SqlCatalog) -> None:
    catalog.save_broadcast(broadcast("b1"))
    catalog.set_source("b1", SourceInfo(width=1280, height=720, video_codec="h264"))
    stored = catalog.get_broadcast("b1")
    assert stored is not None and stored.source == SourceInfo(width=1280, height=720,
                                                              video_codec="h264")
    catalog.save_broadcast(replace(stored, state=BroadcastState.ENDED, source=None))
    catalog.set_source("b1", SourceInfo(width=640))  # late: the end stands as it is
    stored = catalog.get_broadcast("b1")
    assert stored is not None and stored.state is BroadcastState.ENDED
    assert stored.source is None


def test_vod_round_trip_and_update(catalog: SqlCatalog) -> None:
    v = vod("v1")
    catalog.save_vod(v)
    assert catalog.get_vod("v1") == v
    exporting = Vod(id="v1", broadcast_id="v1", channel="alice",
                    visibility=Visibility.PRIVATE, state=VodState.COMPLETE, duration_s=3600.0,
                    created_at=T0, mp4_key="broadcasts/v1/export.mp4", mp4_progress=0.25)
    catalog.save_vod(exporting)
    assert catalog.get_vod("v1") == exporting
    assert catalog.list_vods() == [exporting]
    assert catalog.get_vod("nope") is None


def test_vods_are_listed_newest_first_by_channel(catalog: SqlCatalog) -> None:
    catalog.save_vod(vod("a1", "alice", minutes=1))
    catalog.save_vod(vod("b1", "bob", minutes=2))
    catalog.save_vod(vod("a2", "alice", minutes=3))
    assert [v.id for v in catalog.list_vods()] == ["a2", "b1", "a1"]
    assert [v.id for v in catalog.list_vods(channel="alice")] == ["a2", "a1"]
    assert [v.id for v in catalog.list_vods(limit=1)] == ["a2"]


def test_delete_vod_is_idempotent(catalog: SqlCatalog) -> None:
    catalog.save_vod(vod("v1"))
    catalog.save_vod(vod("v2"))
    catalog.delete_vod("v1")
    catalog.delete_vod("v1")
    assert catalog.get_vod("v1") is None
    assert [v.id for v in catalog.list_vods()] == ["v2"]


# --- webhooks -----------------------------------------------------------------------------

SECRET = "whsec_" + "A" * 32  # 24 bytes of base64: the shortest secret the spec allows


def endpoint(id: str, *events: str, minutes: int = 0) -> WebhookEndpoint:
    return WebhookEndpoint(id=id, url=f"https://hooks.example.com/{id}",
                           events=events or ("broadcast.started",), secret=SECRET,
                           created_at=T0 + timedelta(minutes=minutes))


def delivery(endpoint_id: str, msg_id: str, *, due_s: float = 0.0,
             created_s: float = 0.0) -> WebhookDelivery:
    return WebhookDelivery(endpoint_id=endpoint_id, msg_id=msg_id,
                           event_type="broadcast.started", body='{"type":"x"}',
                           next_attempt_at=T0 + timedelta(seconds=due_s),
                           created_at=T0 + timedelta(seconds=created_s))


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


def test_webhook_endpoints_round_trip_oldest_first_without_duplicates(
        catalog: SqlCatalog) -> None:
    catalog.create_webhook(endpoint("w2", "vod.ready", "broadcast.ended", minutes=1))
    catalog.create_webhook(endpoint("w1"))
    with pytest.raises(AlreadyExists):
        catalog.create_webhook(endpoint("w1", "vod.deleted"))

    assert catalog.get_webhook("w2") == endpoint("w2", "vod.ready", "broadcast.ended",
                                                 minutes=1)
    assert catalog.get_webhook("nope") is None
    assert [e.id for e in catalog.list_webhooks()] == ["w1", "w2"]
    assert catalog.get_webhook("w1") == endpoint("w1")  # the first one, untouched


def test_deleting_an_endpoint_deletes_its_delivery_log(catalog: SqlCatalog) -> None:
    catalog.create_webhook(endpoint("w1"))
    catalog.create_webhook(endpoint("w2"))
    catalog.add_deliveries([delivery("w1", "msg_1"), delivery("w2", "msg_1")])

    catalog.delete_webhook("w1")
    with pytest.raises(NotFound):
        catalog.delete_webhook("w1")

    assert catalog.get_webhook("w1") is None
    assert catalog.list_deliveries("w1") == []
    assert catalog.get_delivery("w1", "msg_1") is None
    assert catalog.get_delivery("w2", "msg_1") is not None
    assert [d.endpoint_id for d in catalog.due_deliveries(at(0))] == ["w2"]


def test_a_delivery_is_recorded_once_per_endpoint_and_message(catalog: SqlCatalog) -> None:
    catalog.create_webhook(endpoint("w1"))
    catalog.create_webhook(endpoint("w2"))
    first = delivery("w1", "msg_1")

    assert catalog.add_deliveries([first, delivery("w2", "msg_1")]) == \
        [first, delivery("w2", "msg_1")]
    # a second dispatcher reading the same event: nothing new, the first record kept
    again = replace(first, body='{"type":"other"}')
    assert catalog.add_deliveries([again, delivery("w1", "msg_2")]) == \
        [delivery("w1", "msg_2")]
    assert catalog.get_delivery("w1", "msg_1") == first
    assert catalog.add_deliveries([]) == []


def test_no_delivery_is_recorded_for_an_endpoint_that_is_gone(catalog: SqlCatalog) -> None:
    catalog.create_webhook(endpoint("w1"))
    assert catalog.add_deliveries([delivery("gone", "msg_1"), delivery("w1", "msg_1")]) == \
        [delivery("w1", "msg_1")]
    assert catalog.get_delivery("gone", "msg_1") is None


def test_the_delivery_log_is_newest_first_and_limited(catalog: SqlCatalog) -> None:
    catalog.create_webhook(endpoint("w1"))
    catalog.add_deliveries([delivery("w1", f"msg_{n}", created_s=n) for n in range(5)])

    assert [d.msg_id for d in catalog.list_deliveries("w1", limit=3)] == \
        ["msg_4", "msg_3", "msg_2"]
    assert catalog.list_deliveries("other") == []


def test_saving_a_delivery_records_its_state_with_aware_datetimes(
        catalog: SqlCatalog) -> None:
    catalog.create_webhook(endpoint("w1"))
    catalog.add_deliveries([delivery("w1", "msg_1")])
    done = replace(delivery("w1", "msg_1"), state=DeliveryState.FAILED, attempts=3,
                   next_attempt_at=None, last_attempt_at=at(30).astimezone(
                       timezone(timedelta(hours=9))), last_status=500, last_error="HTTP 500")

    catalog.save_delivery(done)

    got = catalog.get_delivery("w1", "msg_1")
    assert got == replace(done, last_attempt_at=at(30))
    assert got is not None and got.last_attempt_at is not None
    assert got.last_attempt_at.tzinfo is not None
    catalog.save_delivery(replace(done, endpoint_id="gone"))  # no endpoint: no-op
    assert catalog.get_delivery("gone", "msg_1") is None


def test_due_deliveries_are_the_pending_ones_due_longest_due_first(
        catalog: SqlCatalog) -> None:
    catalog.create_webhook(endpoint("w1"))
    catalog.add_deliveries([delivery("w1", "msg_late", due_s=10),
                            delivery("w1", "msg_old", due_s=-5),
                            delivery("w1", "msg_now", due_s=0),
                            delivery("w1", "msg_done", due_s=-9)])
    catalog.save_delivery(replace(delivery("w1", "msg_done"), state=DeliveryState.DELIVERED,
                                  next_attempt_at=None))

    assert [d.msg_id for d in catalog.due_deliveries(at(0))] == ["msg_old", "msg_now"]
    assert [d.msg_id for d in catalog.due_deliveries(at(0), limit=1)] == ["msg_old"]
    assert catalog.next_delivery_due() == at(-5)
    for d in catalog.due_deliveries(at(60)):
        catalog.save_delivery(replace(d, state=DeliveryState.DELIVERED, next_attempt_at=None))
    assert catalog.due_deliveries(at(60)) == []
    assert catalog.next_delivery_due() is None


def test_a_claim_takes_a_due_pending_delivery_until_its_lease_ends(
        catalog: SqlCatalog) -> None:
    catalog.create_webhook(endpoint("w1"))
    catalog.add_deliveries([delivery("w1", "msg_1", due_s=5)])

    assert catalog.claim_delivery("w1", "msg_1", at(4), at(30)) is None  # not due yet
    claimed = catalog.claim_delivery("w1", "msg_1", at(5), at(30))

    assert claimed == replace(delivery("w1", "msg_1"), next_attempt_at=at(30))
    assert catalog.claim_delivery("w1", "msg_1", at(6), at(40)) is None  # held
    assert catalog.due_deliveries(at(29)) == []
    # its sender died: due again when the lease ends, and another may take it
    assert catalog.next_delivery_due() == at(30)
    again = catalog.claim_delivery("w1", "msg_1", at(30), at(60))
    assert again is not None and again.next_attempt_at == at(60)
    assert catalog.claim_delivery("w1", "nope", at(60), at(90)) is None
    with pytest.raises(ValueError, match="lease"):
        catalog.claim_delivery("w1", "msg_1", at(90), at(90))


def test_delivered_or_failed_deliveries_cannot_be_claimed(catalog: SqlCatalog) -> None:
    catalog.create_webhook(endpoint("w1"))
    catalog.add_deliveries([delivery("w1", "msg_ok"), delivery("w1", "msg_failed")])
    catalog.save_delivery(replace(delivery("w1", "msg_ok"), state=DeliveryState.DELIVERED,
                                  next_attempt_at=at(0)))
    catalog.save_delivery(replace(delivery("w1", "msg_failed"),
                                  state=DeliveryState.FAILED, next_attempt_at=at(0)))

    assert catalog.claim_delivery("w1", "msg_ok", at(1), at(30)) is None
    assert catalog.claim_delivery("w1", "msg_failed", at(1), at(30)) is None


def test_of_senders_claiming_at_once_exactly_one_gets_each_delivery(
        catalog: SqlCatalog, make_catalog: Callable[..., SqlCatalog]) -> None:
    """Separate catalogs (as separate worker processes have) racing for the same
    deliveries: every delivery is taken once, never twice."""
    catalog.create_webhook(endpoint("w1"))
    rounds = 30
    catalog.add_deliveries([delivery("w1", f"msg_{n}") for n in range(rounds)])
    senders = [catalog, make_catalog(), make_catalog()]
    barrier = threading.Barrier(len(senders))

    def claim_all(i: int) -> list[str]:
        won = []
        for n in range(rounds):
            barrier.wait()
            if senders[i].claim_delivery("w1", f"msg_{n}", at(1), at(30 + i)) is not None:
                won.append(f"msg_{n}")
        return won

    with ThreadPoolExecutor(len(senders)) as pool:
        won = [m for ms in pool.map(claim_all, range(len(senders))) for m in ms]

    assert sorted(won) == sorted(f"msg_{n}" for n in range(rounds))


def test_an_attempt_settles_only_while_its_claim_holds(catalog: SqlCatalog) -> None:
    catalog.create_webhook(endpoint("w1"))
    catalog.add_deliveries([delivery("w1", "msg_1"), delivery("w1", "msg_2"),
                            delivery("w1", "msg_3")])

    def outcome(claimed: WebhookDelivery, status: int) -> WebhookDelivery:
        return replace(claimed, state=DeliveryState.DELIVERED, attempts=1,
                       next_attempt_at=None, last_attempt_at=at(2), last_status=status)

    # held: recorded
    mine = catalog.claim_delivery("w1", "msg_1", at(1), at(30))
    assert mine is not None
    assert catalog.settle_delivery(mine, outcome(mine, 204)) is True
    assert catalog.get_delivery("w1", "msg_1") == outcome(mine, 204)
    assert catalog.settle_delivery(mine, outcome(mine, 200)) is False  # settled already

    # the lease ran out and another sender took it: the late outcome is dropped
    slow = catalog.claim_delivery("w1", "msg_2", at(1), at(30))
    fast = catalog.claim_delivery("w1", "msg_2", at(30), at(60))
    assert slow is not None and fast is not None
    assert catalog.settle_delivery(slow, outcome(slow, 500)) is False
    assert catalog.settle_delivery(fast, outcome(fast, 204)) is True
    assert catalog.get_delivery("w1", "msg_2") == outcome(fast, 204)

    # a redelivery asked for meanwhile wins over the attempt in flight
    held = catalog.claim_delivery("w1", "msg_3", at(1), at(30))
    assert held is not None
    catalog.save_delivery(replace(held, next_attempt_at=at(5)))
    assert catalog.settle_delivery(held, outcome(held, 204)) is False
    assert catalog.get_delivery("w1", "msg_3") == replace(held, next_attempt_at=at(5))
    with pytest.raises(ValueError):
        catalog.settle_delivery(held, replace(held, msg_id="msg_1"))


# --- operations ---------------------------------------------------------------------------

def test_ping(catalog: SqlCatalog) -> None:
    assert catalog.ping() is True


def test_concurrent_writers_from_several_processes_do_not_fail(
        catalog: SqlCatalog, make_catalog: Callable[..., SqlCatalog]) -> None:
    """Separate catalogs (separate pools, as separate processes would have) writing at
    once wait for each other instead of failing with 'database is locked'."""
    writers = [catalog, make_catalog(), make_catalog()]
    barrier = threading.Barrier(len(writers))

    def write(i: int) -> None:
        c = writers[i]
        barrier.wait()
        for n in range(20):
            c.create_channel(Channel(f"ch-{i}-{n}"))
            c.save_broadcast(broadcast(f"b-{i}-{n}", f"ch-{i}-{n}", minutes=n))

    with ThreadPoolExecutor(len(writers)) as pool:
        list(pool.map(write, range(len(writers))))

    assert len(catalog.list_channels()) == 60
    assert len(catalog.list_broadcasts(limit=1000)) == 60


def test_over_long_or_empty_values_are_refused_alike_on_both_databases(
        catalog: SqlCatalog) -> None:
    with pytest.raises(ValueError, match="longer"):
        catalog.create_channel(Channel("c" * 201))
    with pytest.raises(ValueError, match="empty"):
        catalog.create_channel(Channel(""))
    with pytest.raises(ValueError, match="longer"):
        catalog.save_broadcast(broadcast("b" * 65))
    with pytest.raises(ValueError, match="longer"):
        catalog.save_vod(vod("v" * 65))
    assert catalog.list_channels() == []
    assert catalog.list_broadcasts() == []
    assert catalog.list_vods() == []
    catalog.create_channel(Channel("c" * 64))  # the longest channel name (castway.model)
    # history keeps a channel's name whatever it was when the record was made
    catalog.save_broadcast(broadcast("b" * 64, "c" * 200))
    assert catalog.get_broadcast("b" * 64) is not None


def test_an_in_memory_sqlite_catalog_works_for_tools() -> None:
    with SqlCatalog("sqlite://") as catalog:
        assert catalog.migrate() == len(MIGRATIONS)
        catalog.create_channel(Channel("alice"))
        assert [c.name for c in catalog.list_channels()] == ["alice"]


def test_a_fresh_sqlite_catalog_opens_while_another_process_holds_its_lock(
        tmp_path: Path) -> None:
    # Switching a fresh file to WAL needs it to itself; SQLite answers "locked" at once
    # there (no busy handler), which failed one of two processes starting together.
    path = tmp_path / "fresh.db"
    holder = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    holder.execute("BEGIN IMMEDIATE")
    holder.execute("CREATE TABLE other_process (x)")
    release = threading.Timer(0.3, lambda: holder.execute("COMMIT"))
    release.start()
    engine = create_catalog_engine(f"sqlite:///{path}")
    try:
        with engine.connect() as conn:
            assert conn.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
    finally:
        release.join()
        engine.dispose()
        holder.close()


def test_restream_targets_are_kept_per_channel_oldest_first_and_deleted_by_id(
        catalog: SqlCatalog) -> None:
    catalog.create_channel(Channel("alice"))
    catalog.create_channel(Channel("bob"))
    t0 = datetime(2026, 1, 1, tzinfo=UTC)
    first = RestreamTarget("t1", "alice", "rtmp://a.example/live2", "sealed-1", "****abcd",
                           created_at=t0)
    second = RestreamTarget("t2", "alice", "rtmps://b.example/app", "sealed-2", "****",
                            created_at=t0 + timedelta(seconds=1))
    catalog.add_restream_target(second)
    catalog.add_restream_target(first)
    catalog.add_restream_target(RestreamTarget("t3", "bob", "rtmp://c/x", "s", "****"))
    assert catalog.list_restream_targets("alice") == [first, second]
    catalog.delete_restream_target("alice", "t1")
    assert catalog.list_restream_targets("alice") == [second]
    with pytest.raises(NotFound):
        catalog.delete_restream_target("alice", "t3")  # bob's, not alice's
    with pytest.raises(NotFound):
        catalog.add_restream_target(RestreamTarget("t4", "nobody", "rtmp://c/x", "s", "****"))
    catalog.delete_channel("alice")
    assert catalog.list_restream_targets("alice") == []
    assert [t.id for t in catalog.list_restream_targets("bob")] == ["t3"]
