"""The catalog's tables as they are at the newest migration, for queries.

Migrations (``castway/catalog/migrations.py``) never import these: each migration
describes the DDL of its own step, so an old step stays correct after the tables here
move on. ``tests/castway/test_catalog.py`` checks that migrating an empty database
produces exactly these tables and columns.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    Boolean,
    Column,
    DateTime,
    Dialect,
    Float,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
)
from sqlalchemy.types import TypeDecorator


class UtcDateTime(TypeDecorator[datetime]):
    """A timezone-aware UTC datetime on every database.

    PostgreSQL stores ``timestamptz``; SQLite has no time zones, so the value is stored
    as naive UTC text (which sorts correctly) and comes back with ``tzinfo=UTC``.
    Callers convert and reject naive datetimes before binding (see ``sql._utc``).
    """

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> Any:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime: the catalog stores timezone-aware UTC only")
        value = value.astimezone(UTC)
        if dialect.name == "sqlite":
            return value.replace(tzinfo=None)
        return value

    def process_result_value(self, value: Any, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if not isinstance(value, datetime):
            raise TypeError(f"expected a datetime from the driver, got {value!r}")
        if value.tzinfo is None:
            return value.replace(tzinfo=UTC)
        return value.astimezone(UTC)


metadata = MetaData()

schema_version = Table(
    "schema_version", metadata,
    Column("version", Integer, primary_key=True, autoincrement=False),
    Column("description", Text, nullable=False),
    Column("applied_at", UtcDateTime, nullable=False),
)

channels = Table(
    "channels", metadata,
    Column("name", String(200), primary_key=True),
    Column("title", Text, nullable=False),
    Column("vod_visibility", String(16), nullable=False),
    Column("created_at", UtcDateTime, nullable=False),
    Column("live_visibility", String(16), nullable=False, server_default="public"),
)

stream_keys = Table(
    "stream_keys", metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("channel", String(200), ForeignKey("channels.name", ondelete="CASCADE"),
           nullable=False),
    Column("key_hash", String(128), nullable=False),
    Column("created_at", UtcDateTime, nullable=False),
    Column("revoked_at", UtcDateTime, nullable=True),
    Index("ux_stream_keys_key_hash", "key_hash", unique=True),
    Index("ix_stream_keys_channel", "channel"),
)

# Broadcasts and VODs are history: they keep their channel name after the channel is
# deleted, so there is deliberately no foreign key to channels.
broadcasts = Table(
    "broadcasts", metadata,
    Column("id", String(64), primary_key=True),
    Column("channel", String(200), nullable=False),
    Column("node_id", String(200), nullable=False),
    Column("state", String(16), nullable=False),
    Column("started_at", UtcDateTime, nullable=False),
    Column("ended_at", UtcDateTime, nullable=True),
    Column("source", JSON, nullable=True),
    Column("renditions", JSON, nullable=False),
    Column("segment_format", String(16), nullable=False),
    Index("ix_broadcasts_channel_started_at", "channel", "started_at"),
    Index("ix_broadcasts_state_started_at", "state", "started_at"),
    Index("ix_broadcasts_started_at", "started_at"),
)

vods = Table(
    "vods", metadata,
    Column("id", String(64), primary_key=True),
    Column("broadcast_id", String(64), nullable=False),
    Column("channel", String(200), nullable=False),
    Column("visibility", String(16), nullable=False),
    Column("state", String(16), nullable=False),
    Column("duration_s", Float, nullable=False),
    Column("created_at", UtcDateTime, nullable=False),
    Column("mp4_key", Text, nullable=True),
    Column("mp4_progress", Float, nullable=True),
    Index("ix_vods_channel_created_at", "channel", "created_at"),
    Index("ix_vods_created_at", "created_at"),
)

# The durable segment log: every complete segment of every rendition once its bytes are
# durable (in storage, or in the uploader's spool). The live state's segment log is a
# cache of it; the archiver makes VODs from it after any fault (docs/reliability.md).
segment_records = Table(
    "segment_records", metadata,
    Column("broadcast_id", String(64), primary_key=True),
    Column("rendition", String(64), primary_key=True),
    Column("msn", Integer, primary_key=True, autoincrement=False),
    Column("duration_s", Float, nullable=False),
    Column("key", Text, nullable=False),
    Column("start_pts_s", Float, nullable=False),
    Column("program_date_time", UtcDateTime, nullable=False),
    Column("discontinuity", Boolean, nullable=False),
    Column("discontinuity_seq", Integer, nullable=False),
    Column("init_key", Text, nullable=True),
    Column("size", Integer, nullable=False),
)

# Restream targets (castway.restream): where a channel's live broadcasts are also sent.
restream_targets = Table(
    "restream_targets", metadata,
    Column("id", String(64), primary_key=True),
    Column("channel", String(200), ForeignKey("channels.name", ondelete="CASCADE"),
           nullable=False),
    Column("url", Text, nullable=False),
    Column("sealed_key", Text, nullable=False),
    Column("key_mask", String(16), nullable=False),
    Column("created_at", UtcDateTime, nullable=False),
    Index("ix_restream_targets_channel", "channel", "created_at"),
)

# Outbound webhooks (castway.webhooks): the receivers, and every event owed to each.
webhook_endpoints = Table(
    "webhook_endpoints", metadata,
    Column("id", String(64), primary_key=True),
    Column("url", Text, nullable=False),
    Column("events", JSON, nullable=False),
    Column("secret", Text, nullable=False),
    Column("created_at", UtcDateTime, nullable=False),
)

webhook_deliveries = Table(
    "webhook_deliveries", metadata,
    Column("endpoint_id", String(64), ForeignKey("webhook_endpoints.id", ondelete="CASCADE"),
           primary_key=True),
    Column("msg_id", String(64), primary_key=True),
    Column("event_type", String(64), nullable=False),
    Column("body", Text, nullable=False),
    Column("state", String(16), nullable=False),
    Column("attempts", Integer, nullable=False),
    Column("next_attempt_at", UtcDateTime, nullable=True),
    Column("created_at", UtcDateTime, nullable=False),
    Column("last_attempt_at", UtcDateTime, nullable=True),
    Column("last_status", Integer, nullable=True),
    Column("last_error", Text, nullable=False),
    Index("ix_webhook_deliveries_state_next", "state", "next_attempt_at"),
    Index("ix_webhook_deliveries_endpoint_created", "endpoint_id", "created_at"),
)
