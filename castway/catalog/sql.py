"""The catalog on SQLAlchemy 2 Core: SQLite (embedded default) and PostgreSQL, every
database error a :class:`castway.catalog.base.CatalogError`.

Design: docs/architecture.md, "The catalog"; the PostgreSQL deadline:
docs/reliability.md, "Known limits".
"""

from __future__ import annotations

import heapq
import itertools
import logging
import math
import os
import socket
import sqlite3
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from contextvars import ContextVar
from datetime import UTC, datetime
from pathlib import Path
from types import TracebackType
from typing import Any

import psycopg
from psycopg.abc import PQGen
from sqlalchemy import (
    Connection,
    Engine,
    Row,
    Table,
    create_engine,
    delete,
    event,
    func,
    null,
    select,
    update,
)
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Dialect, make_url
from sqlalchemy.exc import (
    DBAPIError,
    IntegrityError,
    InterfaceError,
    OperationalError,
    SQLAlchemyError,
)
from sqlalchemy.exc import TimeoutError as PoolTimeout
from sqlalchemy.pool import ConnectionPoolEntry, StaticPool

from castway.catalog.base import AlreadyExists, CatalogError, NotFound, SegmentRecord
from castway.catalog.migrations import MIGRATIONS, Migration
from castway.catalog.migrations import migrate as run_migrations
from castway.catalog.schema import (
    broadcasts,
    channels,
    restream_targets,
    segment_records,
    stream_keys,
    vods,
    webhook_deliveries,
    webhook_endpoints,
)
from castway.model import (
    Broadcast,
    BroadcastState,
    Channel,
    Rendition,
    Segment,
    SourceInfo,
    StreamKey,
    Visibility,
    Vod,
    VodState,
    check_channel_name,
)
from castway.restream.targets import RestreamTarget
from castway.serde import from_jsonable, to_jsonable
from castway.webhooks.records import DeliveryState, WebhookDelivery, WebhookEndpoint

logger = logging.getLogger(__name__)

SQLITE_BUSY_TIMEOUT_S = 15.0  # a writer waits this long for another writer's lock
PG_CONNECT_TIMEOUT_S = 5  # outside a catalog call (migrate); a call's deadline lowers it
DEFAULT_TIMEOUT_S = 5.0  # a PostgreSQL catalog call's deadline (Settings.catalog_timeout_s)


class CatalogUnavailable(CatalogError):
    """The database cannot be reached, or stayed locked past the busy timeout."""


# Column widths of schema.py, checked here so both databases refuse the same values
# (SQLite would store an over-long string that PostgreSQL rejects).
MAX_NAME = 200  # node ids, and the channel a record names (its own rule: model.py)
MAX_ID = 64  # broadcast and VOD ids
MAX_KEY_HASH = 128
MAX_ENUM = 16
MAX_RENDITION = 64


def _text(value: str, field: str, limit: int) -> str:
    if not isinstance(value, str):
        raise TypeError(f"{field} must be str, not {type(value).__name__}")
    if not value:
        raise ValueError(f"{field} is empty")
    if len(value) > limit:
        raise ValueError(f"{field} is longer than {limit} characters")
    return value


def _utc(value: datetime, field: str) -> datetime:
    if value.tzinfo is None:
        raise ValueError(f"{field} is a naive datetime; the catalog takes aware datetimes")
    return value.astimezone(UTC)


def _utc_opt(value: datetime | None, field: str) -> datetime | None:
    return None if value is None else _utc(value, field)


# --- engine -------------------------------------------------------------------------------

_BEGIN_MODES = frozenset({"DEFERRED", "IMMEDIATE"})


def _sqlite_on_connect(dbapi_conn: Any, _record: ConnectionPoolEntry) -> None:
    # Take transaction control away from the sqlite3 module (see _sqlite_begin).
    dbapi_conn.isolation_level = None
    cursor = dbapi_conn.cursor()
    try:
        cursor.execute(f"PRAGMA busy_timeout = {int(SQLITE_BUSY_TIMEOUT_S * 1000)}")
        cursor.execute("PRAGMA foreign_keys = ON")
        _enable_wal(cursor)
        # In WAL mode NORMAL is durable across application crashes; only an OS crash
        # can lose the last transactions, which the next start tolerates.
        cursor.execute("PRAGMA synchronous = NORMAL")
    finally:
        cursor.close()


def _enable_wal(cursor: Any) -> None:
    """WAL mode (persistent in the file: only the first connection ever switches it).
    Switching needs the database to itself, and SQLite answers "database is locked" at
    once instead of calling the busy handler when another connection holds a lock (two
    processes opening a fresh catalog together), so wait for it here, as long as the
    busy timeout allows."""
    deadline = time.monotonic() + SQLITE_BUSY_TIMEOUT_S
    delay = 0.01
    while True:
        try:
            mode = cursor.execute("PRAGMA journal_mode").fetchone()[0]
            if str(mode).lower() == "wal" or mode == "memory":
                return
            cursor.execute("PRAGMA journal_mode = WAL")
            return
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or time.monotonic() + delay > deadline:
                raise
        time.sleep(delay)
        delay = min(0.25, delay * 2)


def _sqlite_begin(conn: Connection) -> None:
    mode = conn.get_execution_options().get("castway_sqlite_begin", "DEFERRED")
    if mode not in _BEGIN_MODES:
        raise ValueError(f"castway_sqlite_begin must be one of {sorted(_BEGIN_MODES)}")
    conn.exec_driver_sql(f"BEGIN {mode}")


# --- PostgreSQL deadlines -----------------------------------------------------------------

#: The monotonic deadline of the catalog call running in this thread (None: unbounded,
#: as migrations are: a second node waits for the first one's migration lock).
_call_deadline: ContextVar[float | None] = ContextVar("castway_catalog_deadline",
                                                      default=None)


class _Watch:
    __slots__ = ("done", "fd", "fired")

    def __init__(self, fd: int) -> None:
        self.fd = fd
        self.done = False
        self.fired = False


class _Watchdog:
    """One thread that shuts down the socket of every wait outliving its deadline.

    ``shutdown``, not ``close``: the descriptor stays libpq's to close, and a poll blocked
    on it in another thread returns at once with end-of-file. A socket is only shut down
    between ``arm`` and ``disarm``, under the lock, while its owner is blocked in the
    wait, so the descriptor cannot have been closed and reused meanwhile.
    """

    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:  # also in a forked child, where the thread did not follow
        self._cond = threading.Condition()
        self._heap: list[tuple[float, int, _Watch]] = []
        self._seq = itertools.count()
        self._thread: threading.Thread | None = None

    def arm(self, deadline: float, fd: int) -> _Watch:
        watch = _Watch(fd)
        with self._cond:
            heapq.heappush(self._heap, (deadline, next(self._seq), watch))
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="catalog-watchdog",
                                                daemon=True)
                self._thread.start()
            self._cond.notify()
        return watch

    def disarm(self, watch: _Watch) -> bool:
        """Ends the watch; True if its deadline passed first (the socket is shut down)."""
        with self._cond:
            watch.done = True
            return watch.fired

    def _run(self) -> None:
        with self._cond:
            while True:
                now = time.monotonic()
                while self._heap and (self._heap[0][2].done or self._heap[0][0] <= now):
                    _, _, watch = heapq.heappop(self._heap)
                    if not watch.done:
                        watch.fired = True
                        _shutdown(watch.fd)
                self._cond.wait(self._heap[0][0] - now if self._heap else None)


def _shutdown(fd: int) -> None:
    try:
        sock = socket.socket(fileno=fd)
    except OSError:
        return
    try:
        sock.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass  # already shut down or reset: the wait ends anyway
    finally:
        sock.detach()  # the descriptor is libpq's


_WATCHDOG = _Watchdog()
os.register_at_fork(after_in_child=_WATCHDOG.reset)


class _BoundedConnection(psycopg.Connection[Any]):
    """A psycopg connection whose waits for the server end at the catalog call's
    deadline. Every exchange with the server (a statement, a commit, the pool's
    pre-ping and reset) goes through :meth:`wait`. Past the deadline the socket is shut
    down and the connection closed: SQLAlchemy then sees a closed connection and
    discards it rather than pooling it."""

    def wait(self, gen: PQGen[Any], *args: Any, **kwargs: Any) -> Any:
        deadline = _call_deadline.get()
        if deadline is None:
            return super().wait(gen, *args, **kwargs)
        watch = _WATCHDOG.arm(deadline, self.pgconn.socket)
        try:
            return super().wait(gen, *args, **kwargs)
        except psycopg.OperationalError as e:
            if _WATCHDOG.disarm(watch):
                raise psycopg.OperationalError(
                    "no answer from PostgreSQL within the catalog timeout") from e
            raise
        finally:
            if _WATCHDOG.disarm(watch):
                self.pgconn.finish()  # the exchange may be half done: never reuse it


def _pg_connect(_dialect: Dialect, _record: Any, cargs: Any,
                cparams: dict[str, Any]) -> _BoundedConnection:
    """SQLAlchemy's ``do_connect``: a :class:`_BoundedConnection`, started only while the
    call has time left, with a connect timeout no longer than that (libpq counts whole
    seconds, 2 at least)."""
    deadline = _call_deadline.get()
    if deadline is not None:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise psycopg.OperationalError(
                "no answer from PostgreSQL within the catalog timeout")
        configured = int(cparams.get("connect_timeout") or PG_CONNECT_TIMEOUT_S)
        cparams["connect_timeout"] = min(configured, max(2, math.ceil(remaining)))
    return _BoundedConnection.connect(*cargs, **cparams)


def create_catalog_engine(url: str, *, timeout_s: float = DEFAULT_TIMEOUT_S) -> Engine:
    """An engine for a ``sqlite:///path`` or ``postgresql+psycopg://`` URL.

    ``postgresql://`` and ``postgres://`` mean psycopg 3 (the only driver installed).
    For a SQLite file the parent directory is created if absent. ``sqlite://`` (memory)
    shares one connection and is for single-threaded tools only. On PostgreSQL a call
    waits at most ``timeout_s`` for a pooled connection (see :class:`SqlCatalog` for the
    rest of its deadline).
    """
    u = make_url(url)
    if u.drivername in ("postgresql", "postgres"):
        u = u.set(drivername="postgresql+psycopg")
    backend = u.get_backend_name()
    engine: Engine
    if backend == "sqlite":
        database = u.database or ""
        if database in ("", ":memory:"):
            engine = create_engine(u, poolclass=StaticPool,
                                   connect_args={"check_same_thread": False})
        else:
            Path(database).expanduser().parent.mkdir(parents=True, exist_ok=True)
            engine = create_engine(u, connect_args={"timeout": SQLITE_BUSY_TIMEOUT_S})
        event.listen(engine, "connect", _sqlite_on_connect)
        event.listen(engine, "begin", _sqlite_begin)
    elif backend == "postgresql":
        engine = create_engine(u, pool_pre_ping=True, pool_timeout=timeout_s,
                               connect_args={"connect_timeout": PG_CONNECT_TIMEOUT_S})
        event.listen(engine, "do_connect", _pg_connect)
    else:
        raise ValueError(f"unsupported catalog database {backend!r}: use sqlite or postgresql")
    return engine


# --- row mapping --------------------------------------------------------------------------

def _channel(r: Row[Any]) -> Channel:
    return Channel(name=r.name, title=r.title, vod_visibility=Visibility(r.vod_visibility),
                   created_at=r.created_at, live_visibility=Visibility(r.live_visibility))


def _broadcast_values(b: Broadcast) -> dict[str, Any]:
    return {
        "id": _text(b.id, "broadcast id", MAX_ID),
        "channel": _text(b.channel, "channel", MAX_NAME),
        "node_id": _text(b.node_id, "node_id", MAX_NAME),
        "state": BroadcastState(b.state).value,
        "started_at": _utc(b.started_at, "started_at"),
        "ended_at": _utc_opt(b.ended_at, "ended_at"),
        "source": null() if b.source is None else to_jsonable(b.source),
        "renditions": to_jsonable(list(b.renditions)),
        "segment_format": _text(b.segment_format, "segment_format", MAX_ENUM),
    }


def _broadcast(r: Row[Any]) -> Broadcast:
    return Broadcast(
        id=r.id, channel=r.channel, node_id=r.node_id, state=BroadcastState(r.state),
        started_at=r.started_at, ended_at=r.ended_at,
        source=None if r.source is None else from_jsonable(SourceInfo, r.source),
        renditions=tuple(from_jsonable(Rendition, x) for x in r.renditions),
        segment_format=r.segment_format,
    )


def _segment_values(record: SegmentRecord) -> dict[str, Any]:
    s = record.segment
    return {
        "broadcast_id": _text(record.broadcast_id, "broadcast id", MAX_ID),
        "rendition": _text(record.rendition, "rendition", MAX_RENDITION),
        "msn": int(s.msn), "duration_s": float(s.duration_s), "key": s.key,
        "start_pts_s": float(s.start_pts_s),
        "program_date_time": _utc(s.program_date_time, "program_date_time"),
        "discontinuity": bool(s.discontinuity), "discontinuity_seq": int(s.discontinuity_seq),
        "init_key": s.init_key, "size": int(s.size),
    }


def _vod_values(v: Vod) -> dict[str, Any]:
    return {
        "id": _text(v.id, "VOD id", MAX_ID),
        "broadcast_id": _text(v.broadcast_id, "broadcast_id", MAX_ID),
        "channel": _text(v.channel, "channel", MAX_NAME),
        "visibility": Visibility(v.visibility).value,
        "state": VodState(v.state).value,
        "duration_s": float(v.duration_s),
        "created_at": _utc(v.created_at, "created_at"),
        "mp4_key": v.mp4_key,
        "mp4_progress": v.mp4_progress,
    }


def _vod(r: Row[Any]) -> Vod:
    return Vod(id=r.id, broadcast_id=r.broadcast_id, channel=r.channel,
               visibility=Visibility(r.visibility), state=VodState(r.state),
               duration_s=r.duration_s, created_at=r.created_at, mp4_key=r.mp4_key,
               mp4_progress=r.mp4_progress)


def _restream_target(r: Row[Any]) -> RestreamTarget:
    return RestreamTarget(id=r.id, channel=r.channel, url=r.url, sealed_key=r.sealed_key,
                          key_mask=r.key_mask, created_at=r.created_at)


def _endpoint(r: Row[Any]) -> WebhookEndpoint:
    return WebhookEndpoint(id=r.id, url=r.url, events=tuple(r.events), secret=r.secret,
                           created_at=r.created_at)


def _delivery_values(d: WebhookDelivery) -> dict[str, Any]:
    return {
        "endpoint_id": _text(d.endpoint_id, "endpoint_id", MAX_ID),
        "msg_id": _text(d.msg_id, "msg_id", MAX_ID),
        "event_type": _text(d.event_type, "event_type", MAX_RENDITION),
        "body": d.body,
        "state": DeliveryState(d.state).value,
        "attempts": d.attempts,
        "next_attempt_at": _utc_opt(d.next_attempt_at, "next_attempt_at"),
        "created_at": _utc(d.created_at, "created_at"),
        "last_attempt_at": _utc_opt(d.last_attempt_at, "last_attempt_at"),
        "last_status": d.last_status,
        "last_error": d.last_error,
    }


def _delivery(r: Row[Any]) -> WebhookDelivery:
    return WebhookDelivery(
        endpoint_id=r.endpoint_id, msg_id=r.msg_id, event_type=r.event_type, body=r.body,
        state=DeliveryState(r.state), attempts=r.attempts,
        next_attempt_at=r.next_attempt_at, created_at=r.created_at,
        last_attempt_at=r.last_attempt_at, last_status=r.last_status,
        last_error=r.last_error)


def _aware(value: datetime) -> datetime:
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def _check_limit(limit: int) -> None:
    if limit < 0:
        raise ValueError(f"limit must be >= 0, got {limit}")


# --- the catalog --------------------------------------------------------------------------

class SqlCatalog:
    """:class:`castway.catalog.base.Catalog` on SQLite or PostgreSQL.

    Thread-safe (a connection pool underneath). Construction does not touch the schema;
    call :meth:`migrate` (``open_catalog`` does) before anything else.

    On PostgreSQL a call that has no answer within ``timeout_s`` in all (waiting for a
    pooled connection, connecting, every statement, the commit) raises
    :class:`CatalogUnavailable`, and the connection it was using is closed. As after
    any lost connection, a write that timed out may still land (a COMMIT the frozen
    server reads when it thaws); the writes that callers retry (segment records,
    broadcasts, VODs) are upserts or ``ON CONFLICT DO NOTHING``. :meth:`migrate` is not
    bounded: a node waits for another node's migration lock.
    """

    def __init__(self, url: str, *, migrations: tuple[Migration, ...] = MIGRATIONS,
                 timeout_s: float = DEFAULT_TIMEOUT_S) -> None:
        if timeout_s <= 0:
            raise ValueError(f"timeout_s must be > 0, got {timeout_s}")
        self._engine = create_catalog_engine(url, timeout_s=timeout_s)
        self._migrations = migrations
        self.timeout_s = timeout_s
        self.dialect = self._engine.dialect.name  # "sqlite" or "postgresql"

    @property
    def engine(self) -> Engine:
        return self._engine

    def __repr__(self) -> str:
        return f"SqlCatalog({self._engine.url.render_as_string(hide_password=True)!r})"

    def __enter__(self) -> SqlCatalog:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()

    # -- plumbing --

    def _insert(self, table: Table) -> postgresql.Insert | sqlite.Insert:
        if self.dialect == "postgresql":
            return postgresql.insert(table)
        return sqlite.insert(table)

    @contextmanager
    def _deadline(self) -> Iterator[None]:
        """Bounds the PostgreSQL waits of the call inside (see :class:`_BoundedConnection`)."""
        token = _call_deadline.set(time.monotonic() + self.timeout_s)
        try:
            yield
        finally:
            _call_deadline.reset(token)

    @contextmanager
    def _read(self) -> Iterator[Connection]:
        try:
            with self._deadline(), self._engine.connect() as conn:
                yield conn
        except SQLAlchemyError as e:
            raise self._wrap(e) from e

    @contextmanager
    def _write(self, conflict: CatalogError | None = None) -> Iterator[Connection]:
        """One write transaction (``BEGIN IMMEDIATE`` on SQLite); a constraint violation
        becomes ``conflict`` (or a plain CatalogError), never an IntegrityError."""
        try:
            with self._deadline(), self._engine.connect() as conn:
                conn.execution_options(castway_sqlite_begin="IMMEDIATE")
                with conn.begin():
                    yield conn
        except IntegrityError as e:
            logger.info("catalog constraint violated", extra={"error": str(e.orig)})
            raise (conflict or CatalogError(f"constraint violated: {e.orig}")) from e
        except SQLAlchemyError as e:
            raise self._wrap(e) from e

    def _wrap(self, e: SQLAlchemyError) -> CatalogError:
        """CatalogUnavailable for connection trouble, lock timeouts and the like (retry
        later); CatalogError for anything else the database refused."""
        orig = getattr(e, "orig", None) or e
        logger.warning("catalog error", extra={"dialect": self.dialect, "error": str(orig)})
        if isinstance(e, (OperationalError, InterfaceError, PoolTimeout)) or (
                isinstance(e, DBAPIError) and e.connection_invalidated):
            return CatalogUnavailable(f"catalog database unavailable: {orig}")
        return CatalogError(f"catalog database error: {orig}")

    # -- schema --

    def migrate(self) -> int:
        try:
            return run_migrations(self._engine, self._migrations)
        except SQLAlchemyError as e:
            raise self._wrap(e) from e

    # -- channels --

    def create_channel(self, channel: Channel) -> Channel:
        created = Channel(name=check_channel_name(channel.name),
                          title=channel.title,
                          vod_visibility=Visibility(channel.vod_visibility),
                          created_at=_utc(channel.created_at, "created_at"),
                          live_visibility=Visibility(channel.live_visibility))
        stmt = self._insert(channels).values(
            name=created.name, title=created.title,
            vod_visibility=created.vod_visibility.value, created_at=created.created_at,
            live_visibility=created.live_visibility.value,
        ).on_conflict_do_nothing(index_elements=["name"]).returning(channels.c.name)
        already = AlreadyExists(f"channel {channel.name!r} already exists")
        with self._write(conflict=already) as conn:
            # RETURNING, not rowcount: drivers may report -1 for INSERT .. ON CONFLICT.
            if conn.execute(stmt).first() is None:
                raise already
        return created

    def get_channel(self, name: str) -> Channel | None:
        with self._read() as conn:
            row = conn.execute(select(channels).where(channels.c.name == name)).first()
        return None if row is None else _channel(row)

    def list_channels(self) -> list[Channel]:
        with self._read() as conn:
            rows = conn.execute(select(channels).order_by(channels.c.name)).all()
        return [_channel(r) for r in rows]

    def update_channel(self, channel: Channel) -> Channel:
        """Updates title and visibilities; the name and creation time stay.
        Raises NotFound."""
        with self._write() as conn:
            result = conn.execute(
                update(channels).where(channels.c.name == channel.name).values(
                    title=channel.title,
                    vod_visibility=Visibility(channel.vod_visibility).value,
                    live_visibility=Visibility(channel.live_visibility).value))
            if result.rowcount == 0:
                raise NotFound(f"no channel {channel.name!r}")
            row = conn.execute(select(channels).where(channels.c.name == channel.name)).one()
        return _channel(row)

    def delete_channel(self, name: str) -> None:
        with self._write() as conn:
            conn.execute(delete(stream_keys).where(stream_keys.c.channel == name))
            conn.execute(delete(restream_targets).where(restream_targets.c.channel == name))
            if conn.execute(delete(channels).where(channels.c.name == name)).rowcount == 0:
                raise NotFound(f"no channel {name!r}")

    # -- stream keys --

    def add_stream_key(self, key: StreamKey) -> None:
        """Raises NotFound when the channel does not exist, AlreadyExists when the hash
        is already stored (for any channel)."""
        missing = NotFound(f"no channel {key.channel!r}")
        stmt = self._insert(stream_keys).values(
            channel=_text(key.channel, "channel", MAX_NAME),
            key_hash=_text(key.key_hash, "key_hash", MAX_KEY_HASH),
            created_at=_utc(key.created_at, "created_at"),
            revoked_at=_utc_opt(key.revoked_at, "revoked_at"),
        ).on_conflict_do_nothing(index_elements=["key_hash"]).returning(stream_keys.c.id)
        # A constraint failure past the existence check is the channel being deleted
        # concurrently (the foreign key), so it is reported as NotFound.
        with self._write(conflict=missing) as conn:
            exists = conn.execute(
                select(channels.c.name).where(channels.c.name == key.channel)).first()
            if exists is None:
                raise missing
            if conn.execute(stmt).first() is None:
                raise AlreadyExists("this stream key hash is already stored")

    def revoke_stream_keys(self, channel: str) -> int:
        with self._write() as conn:
            result = conn.execute(
                update(stream_keys)
                .where(stream_keys.c.channel == channel, stream_keys.c.revoked_at.is_(None))
                .values(revoked_at=datetime.now(UTC)))
        return int(result.rowcount)

    def channel_for_key_hash(self, key_hash: str) -> str | None:
        with self._read() as conn:
            row = conn.execute(
                select(stream_keys.c.channel)
                .where(stream_keys.c.key_hash == key_hash, stream_keys.c.revoked_at.is_(None))
            ).first()
        return None if row is None else str(row.channel)

    # -- broadcasts --

    def save_broadcast(self, broadcast: Broadcast) -> None:
        values = _broadcast_values(broadcast)
        stmt = self._insert(broadcasts).values(**values)
        stmt_upsert = stmt.on_conflict_do_update(
            index_elements=["id"], set_={k: v for k, v in values.items() if k != "id"})
        with self._write() as conn:
            conn.execute(stmt_upsert)

    def get_broadcast(self, broadcast_id: str) -> Broadcast | None:
        with self._read() as conn:
            row = conn.execute(select(broadcasts).where(broadcasts.c.id == broadcast_id)).first()
        return None if row is None else _broadcast(row)

    def list_broadcasts(self, *, channel: str | None = None,
                        state: BroadcastState | None = None,
                        limit: int = 100) -> list[Broadcast]:
        _check_limit(limit)
        query = select(broadcasts)
        if channel is not None:
            query = query.where(broadcasts.c.channel == channel)
        if state is not None:
            query = query.where(broadcasts.c.state == BroadcastState(state).value)
        query = query.order_by(broadcasts.c.started_at.desc(), broadcasts.c.id.desc())
        with self._read() as conn:
            rows = conn.execute(query.limit(limit)).all()
        return [_broadcast(r) for r in rows]

    def set_source(self, broadcast_id: str, source: SourceInfo) -> None:
        with self._write() as conn:
            conn.execute(update(broadcasts)
                         .where(broadcasts.c.id == broadcast_id)
                         .where(broadcasts.c.state == BroadcastState.LIVE.value)
                         .values(source=to_jsonable(source)))

    def set_renditions(self, broadcast_id: str, renditions: Sequence[Rendition]) -> None:
        with self._write() as conn:
            conn.execute(update(broadcasts).where(broadcasts.c.id == broadcast_id)
                         .values(renditions=to_jsonable(list(renditions))))

    def broadcasts_to_archive(self, limit: int = 100) -> list[Broadcast]:
        _check_limit(limit)
        recorded = select(segment_records.c.broadcast_id).where(
            segment_records.c.broadcast_id == broadcasts.c.id).exists()
        query = (select(broadcasts)
                 .where(broadcasts.c.state.in_([BroadcastState.ENDED.value,
                                                BroadcastState.FAILED.value]))
                 .where(recorded)
                 .order_by(broadcasts.c.started_at, broadcasts.c.id).limit(limit))
        with self._read() as conn:
            rows = conn.execute(query).all()
        return [_broadcast(r) for r in rows]

    # -- the durable segment log --

    def record_segments(self, records: Sequence[SegmentRecord]) -> None:
        if not records:
            return
        rows = [_segment_values(r) for r in records]
        stmt = self._insert(segment_records).on_conflict_do_nothing(
            index_elements=["broadcast_id", "rendition", "msn"])
        with self._write() as conn:
            conn.execute(stmt, rows)

    def segment_records(self, broadcast_id: str) -> dict[str, list[Segment]]:
        query = (select(segment_records)
                 .where(segment_records.c.broadcast_id == broadcast_id)
                 .order_by(segment_records.c.rendition, segment_records.c.msn))
        logs: dict[str, list[Segment]] = {}
        with self._read() as conn:
            for r in conn.execute(query):
                logs.setdefault(r.rendition, []).append(Segment(
                    msn=r.msn, duration_s=r.duration_s, key=r.key,
                    start_pts_s=r.start_pts_s, program_date_time=r.program_date_time,
                    discontinuity=bool(r.discontinuity),
                    discontinuity_seq=r.discontinuity_seq, init_key=r.init_key,
                    size=r.size))
        return logs

    def drop_segment_records(self, broadcast_id: str) -> None:
        with self._write() as conn:
            conn.execute(delete(segment_records)
                         .where(segment_records.c.broadcast_id == broadcast_id))

    # -- VODs --

    def save_vod(self, vod: Vod) -> None:
        values = _vod_values(vod)
        stmt = self._insert(vods).values(**values)
        stmt_upsert = stmt.on_conflict_do_update(
            index_elements=["id"], set_={k: v for k, v in values.items() if k != "id"})
        with self._write() as conn:
            conn.execute(stmt_upsert)

    def get_vod(self, vod_id: str) -> Vod | None:
        with self._read() as conn:
            row = conn.execute(select(vods).where(vods.c.id == vod_id)).first()
        return None if row is None else _vod(row)

    def list_vods(self, *, channel: str | None = None, limit: int = 100) -> list[Vod]:
        """Newest first."""
        _check_limit(limit)
        query = select(vods)
        if channel is not None:
            query = query.where(vods.c.channel == channel)
        query = query.order_by(vods.c.created_at.desc(), vods.c.id.desc())
        with self._read() as conn:
            rows = conn.execute(query.limit(limit)).all()
        return [_vod(r) for r in rows]

    def delete_vod(self, vod_id: str) -> None:
        """Removes the record if present (no error if absent: retention may repeat)."""
        with self._write() as conn:
            conn.execute(delete(vods).where(vods.c.id == vod_id))

    # -- restream targets --

    def add_restream_target(self, target: RestreamTarget) -> None:
        missing = NotFound(f"no channel {target.channel!r}")
        stmt = restream_targets.insert().values(
            id=_text(target.id, "id", MAX_ID),
            channel=_text(target.channel, "channel", MAX_NAME),
            url=_text(target.url, "url", 2000),
            sealed_key=_text(target.sealed_key, "sealed_key", 4000),
            key_mask=_text(target.key_mask, "key_mask", 16),
            created_at=_utc(target.created_at, "created_at"))
        with self._write(conflict=missing) as conn:
            exists = conn.execute(
                select(channels.c.name).where(channels.c.name == target.channel)).first()
            if exists is None:
                raise missing
            conn.execute(stmt)

    def list_restream_targets(self, channel: str) -> list[RestreamTarget]:
        with self._read() as conn:
            rows = conn.execute(select(restream_targets)
                                .where(restream_targets.c.channel == channel)
                                .order_by(restream_targets.c.created_at,
                                          restream_targets.c.id)).all()
        return [_restream_target(r) for r in rows]

    def delete_restream_target(self, channel: str, target_id: str) -> None:
        with self._write() as conn:
            if conn.execute(delete(restream_targets).where(
                    restream_targets.c.channel == channel,
                    restream_targets.c.id == target_id)).rowcount == 0:
                raise NotFound(f"no restream target {target_id!r} on channel {channel!r}")

    # -- webhooks --

    def create_webhook(self, endpoint: WebhookEndpoint) -> None:
        stmt = self._insert(webhook_endpoints).values(
            id=_text(endpoint.id, "id", MAX_ID), url=_text(endpoint.url, "url", 2000),
            events=list(endpoint.events), secret=_text(endpoint.secret, "secret", 200),
            created_at=_utc(endpoint.created_at, "created_at"),
        ).on_conflict_do_nothing(index_elements=["id"]).returning(webhook_endpoints.c.id)
        already = AlreadyExists(f"webhook {endpoint.id!r} already exists")
        with self._write(conflict=already) as conn:
            if conn.execute(stmt).first() is None:
                raise already

    def get_webhook(self, endpoint_id: str) -> WebhookEndpoint | None:
        with self._read() as conn:
            row = conn.execute(select(webhook_endpoints)
                               .where(webhook_endpoints.c.id == endpoint_id)).first()
        return None if row is None else _endpoint(row)

    def list_webhooks(self) -> list[WebhookEndpoint]:
        with self._read() as conn:
            rows = conn.execute(select(webhook_endpoints).order_by(
                webhook_endpoints.c.created_at, webhook_endpoints.c.id)).all()
        return [_endpoint(r) for r in rows]

    def delete_webhook(self, endpoint_id: str) -> None:
        with self._write() as conn:
            conn.execute(delete(webhook_deliveries)
                         .where(webhook_deliveries.c.endpoint_id == endpoint_id))
            if conn.execute(delete(webhook_endpoints)
                            .where(webhook_endpoints.c.id == endpoint_id)).rowcount == 0:
                raise NotFound(f"no webhook {endpoint_id!r}")

    def add_deliveries(self, deliveries: Sequence[WebhookDelivery]) -> list[WebhookDelivery]:
        inserted: list[WebhookDelivery] = []
        if not deliveries:
            return inserted
        with self._write() as conn:
            for d in deliveries:
                # Only for an endpoint still there: one deleted meanwhile gets nothing.
                exists = conn.execute(select(webhook_endpoints.c.id).where(
                    webhook_endpoints.c.id == d.endpoint_id)).first()
                if exists is None:
                    continue
                stmt = self._insert(webhook_deliveries).values(**_delivery_values(d)) \
                    .on_conflict_do_nothing(index_elements=["endpoint_id", "msg_id"]) \
                    .returning(webhook_deliveries.c.msg_id)
                if conn.execute(stmt).first() is not None:
                    inserted.append(d)
        return inserted

    def get_delivery(self, endpoint_id: str, msg_id: str) -> WebhookDelivery | None:
        with self._read() as conn:
            row = conn.execute(select(webhook_deliveries).where(
                webhook_deliveries.c.endpoint_id == endpoint_id,
                webhook_deliveries.c.msg_id == msg_id)).first()
        return None if row is None else _delivery(row)

    def list_deliveries(self, endpoint_id: str, *, limit: int = 100) -> list[WebhookDelivery]:
        _check_limit(limit)
        query = (select(webhook_deliveries)
                 .where(webhook_deliveries.c.endpoint_id == endpoint_id)
                 .order_by(webhook_deliveries.c.created_at.desc(),
                           webhook_deliveries.c.msg_id.desc()).limit(limit))
        with self._read() as conn:
            rows = conn.execute(query).all()
        return [_delivery(r) for r in rows]

    def save_delivery(self, delivery: WebhookDelivery) -> None:
        values = _delivery_values(delivery)
        with self._write() as conn:
            conn.execute(update(webhook_deliveries).where(
                webhook_deliveries.c.endpoint_id == delivery.endpoint_id,
                webhook_deliveries.c.msg_id == delivery.msg_id).values(
                {k: v for k, v in values.items() if k not in ("endpoint_id", "msg_id")}))

    def claim_delivery(self, endpoint_id: str, msg_id: str, now: datetime,
                       lease_until: datetime) -> WebhookDelivery | None:
        if lease_until <= now:
            raise ValueError("a claim's lease ends after now")
        d = webhook_deliveries.c
        # One UPDATE with the condition in its WHERE: PostgreSQL re-checks it on the row
        # it locked (READ COMMITTED), SQLite runs one writer at a time (BEGIN IMMEDIATE);
        # either way a second claimer finds next_attempt_at already in the future.
        stmt = (update(webhook_deliveries)
                .where(d.endpoint_id == endpoint_id, d.msg_id == msg_id,
                       d.state == DeliveryState.PENDING.value,
                       d.next_attempt_at <= _utc(now, "now"))
                .values(next_attempt_at=_utc(lease_until, "lease_until"))
                .returning(*webhook_deliveries.c))
        with self._write() as conn:
            row = conn.execute(stmt).first()
        return None if row is None else _delivery(row)

    def settle_delivery(self, claimed: WebhookDelivery, done: WebhookDelivery) -> bool:
        if (claimed.endpoint_id, claimed.msg_id) != (done.endpoint_id, done.msg_id):
            raise ValueError("an attempt settles the delivery it claimed")
        if claimed.next_attempt_at is None:
            raise ValueError("a claimed delivery has a lease")
        d = webhook_deliveries.c
        values = _delivery_values(done)
        # The lease's end is the claim's token: a later claim sets a later one, and a
        # redelivery or a new attempt time replaces it.
        stmt = (update(webhook_deliveries)
                .where(d.endpoint_id == claimed.endpoint_id, d.msg_id == claimed.msg_id,
                       d.state == DeliveryState.PENDING.value,
                       d.next_attempt_at == _utc(claimed.next_attempt_at, "lease"))
                .values({k: v for k, v in values.items()
                         if k not in ("endpoint_id", "msg_id")}))
        with self._write() as conn:
            return bool(conn.execute(stmt).rowcount == 1)

    def due_deliveries(self, now: datetime, *, limit: int = 100) -> list[WebhookDelivery]:
        _check_limit(limit)
        query = (select(webhook_deliveries)
                 .where(webhook_deliveries.c.state == DeliveryState.PENDING.value,
                        webhook_deliveries.c.next_attempt_at <= _utc(now, "now"))
                 .order_by(webhook_deliveries.c.next_attempt_at).limit(limit))
        with self._read() as conn:
            rows = conn.execute(query).all()
        return [_delivery(r) for r in rows]

    def next_delivery_due(self) -> datetime | None:
        query = select(func.min(webhook_deliveries.c.next_attempt_at)).where(
            webhook_deliveries.c.state == DeliveryState.PENDING.value)
        with self._read() as conn:
            value = conn.execute(query).scalar()
        if value is None:
            return None
        # An aggregate loses the column type on SQLite: the naive UTC text comes back.
        if isinstance(value, str):
            value = datetime.fromisoformat(value)
        return _aware(value)

    # -- operations --

    def ping(self) -> bool:
        try:
            with self._deadline(), self._engine.connect() as conn:
                conn.execute(select(1))
        except SQLAlchemyError as e:
            logger.warning("catalog ping failed", extra={"error": str(e)})
            return False
        return True

    def close(self) -> None:
        self._engine.dispose()
