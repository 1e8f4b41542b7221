"""Numbered, append-only schema migrations of the catalog: :data:`MIGRATIONS`, applied by
:func:`migrate` in one transaction, safe when two processes start at once.

Design: docs/architecture.md, "The catalog".
"""

from __future__ import annotations

import logging
import zlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

from sqlalchemy import (
    JSON,
    Boolean,
    Column,
    Connection,
    Engine,
    Float,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    select,
    text,
)

from castway.catalog.schema import UtcDateTime

logger = logging.getLogger(__name__)

# Key of the PostgreSQL advisory lock serialising migrate() across processes.
ADVISORY_LOCK_ID = zlib.crc32(b"castway.catalog.migrate")


@dataclass(frozen=True, slots=True)
class Migration:
    version: int
    description: str
    apply: Callable[[Connection], None] | tuple[str, ...]


@dataclass(frozen=True, slots=True)
class AppliedMigration:
    version: int
    description: str
    applied_at: datetime


def _version_table(metadata: MetaData) -> Table:
    return Table(
        "schema_version", metadata,
        Column("version", Integer, primary_key=True, autoincrement=False),
        Column("description", Text, nullable=False),
        Column("applied_at", UtcDateTime, nullable=False),
    )


_versions = _version_table(MetaData())


def _v1_initial_schema(conn: Connection) -> None:
    md = MetaData()
    Table(
        "channels", md,
        Column("name", String(200), primary_key=True),
        Column("title", Text, nullable=False),
        Column("vod_visibility", String(16), nullable=False),
        Column("created_at", UtcDateTime, nullable=False),
    )
    Table(
        "stream_keys", md,
        Column("id", Integer, primary_key=True, autoincrement=True),
        Column("channel", String(200), ForeignKey("channels.name", ondelete="CASCADE"),
               nullable=False),
        Column("key_hash", String(128), nullable=False),
        Column("created_at", UtcDateTime, nullable=False),
        Column("revoked_at", UtcDateTime, nullable=True),
        Index("ux_stream_keys_key_hash", "key_hash", unique=True),
        Index("ix_stream_keys_channel", "channel"),
    )
    Table(
        "broadcasts", md,
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
    Table(
        "vods", md,
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
    md.create_all(conn)


def _v2_segment_records(conn: Connection) -> None:
    md = MetaData()
    Table(
        "segment_records", md,
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
    md.create_all(conn)


def _v3_webhooks(conn: Connection) -> None:
    md = MetaData()
    Table(
        "webhook_endpoints", md,
        Column("id", String(64), primary_key=True),
        Column("url", Text, nullable=False),
        Column("events", JSON, nullable=False),
        Column("secret", Text, nullable=False),
        Column("created_at", UtcDateTime, nullable=False),
    )
    Table(
        "webhook_deliveries", md,
        Column("endpoint_id", String(64),
               ForeignKey("webhook_endpoints.id", ondelete="CASCADE"), primary_key=True),
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
    md.create_all(conn)


def _v5_restream_targets(conn: Connection) -> None:
    md = MetaData()
    Table("channels", md, Column("name", String(200), primary_key=True))
    Table(
        "restream_targets", md,
        Column("id", String(64), primary_key=True),
        Column("channel", String(200), ForeignKey("channels.name", ondelete="CASCADE"),
               nullable=False),
        Column("url", Text, nullable=False),
        Column("sealed_key", Text, nullable=False),
        Column("key_mask", String(16), nullable=False),
        Column("created_at", UtcDateTime, nullable=False),
        Index("ix_restream_targets_channel", "channel", "created_at"),
    )
    md.tables["restream_targets"].create(conn)


# Never edit a released step, only append one. A step describes its own DDL (it never
# imports ``schema.py``, which moves on). Keep a step backward compatible with the
# previous release where you can (add columns with defaults): old ingest nodes keep
# running during a drain.
MIGRATIONS: tuple[Migration, ...] = (
    Migration(1, "channels, stream keys, broadcasts, VODs", _v1_initial_schema),
    Migration(2, "segment records: the durable segment log of each broadcast",
              _v2_segment_records),
    Migration(3, "webhook endpoints and their delivery log", _v3_webhooks),
    Migration(4, "channels.live_visibility: private live channels",
              ("ALTER TABLE channels ADD COLUMN live_visibility VARCHAR(16) "
               "NOT NULL DEFAULT 'public'",)),
    Migration(5, "restream targets of channels (keys sealed)", _v5_restream_targets),
)


def _check_sequence(migrations: Sequence[Migration]) -> None:
    versions = [m.version for m in migrations]
    if versions != list(range(1, len(versions) + 1)):
        raise ValueError(f"migration versions must be 1..N without gaps, got {versions}")


def migrate(engine: Engine, migrations: Sequence[Migration] = MIGRATIONS) -> int:
    """Apply the pending ``migrations`` in one transaction; returns the version in force.

    A database already at a newer version than any step known here (a newer castway
    migrated it) is left alone with a warning: steps are meant to be backward compatible.
    """
    _check_sequence(migrations)
    with engine.connect() as conn:
        conn.execution_options(castway_sqlite_begin="IMMEDIATE")
        with conn.begin():
            if conn.dialect.name == "postgresql":
                conn.execute(text("SELECT pg_advisory_xact_lock(:id)"),
                             {"id": ADVISORY_LOCK_ID})
            _versions.create(conn, checkfirst=True)
            applied = set(conn.execute(select(_versions.c.version)).scalars())
            for m in migrations:
                if m.version in applied:
                    continue
                logger.info("applying catalog migration",
                            extra={"version": m.version, "description": m.description})
                if callable(m.apply):
                    m.apply(conn)
                else:
                    for statement in m.apply:
                        conn.exec_driver_sql(statement)
                conn.execute(_versions.insert().values(
                    version=m.version, description=m.description,
                    applied_at=datetime.now(UTC)))
                applied.add(m.version)
    current = max(applied, default=0)
    if current > len(migrations):
        logger.warning("catalog schema is newer than this castway",
                       extra={"schema_version": current, "known_version": len(migrations)})
    return current


def history(engine: Engine) -> list[AppliedMigration]:
    """The migrations recorded in the database, oldest first."""
    with engine.connect() as conn:
        if not engine.dialect.has_table(conn, "schema_version"):
            return []
        rows = conn.execute(select(_versions).order_by(_versions.c.version)).all()
    return [AppliedMigration(r.version, r.description, r.applied_at) for r in rows]


__all__ = ["ADVISORY_LOCK_ID", "MIGRATIONS", "AppliedMigration", "Migration", "history",
           "migrate"]
