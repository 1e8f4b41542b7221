"""The catalog: durable records (channels, stream key hashes, broadcast history, VODs,
restream targets, webhook endpoints and their delivery log).

One implementation, :class:`castway.catalog.sql.SqlCatalog` on SQLAlchemy 2, runs on
SQLite (embedded default) and PostgreSQL (distributed mode); the contract suite
``tests/castway/test_catalog.py`` runs on both. Synchronous; async callers use
``asyncio.to_thread``. Schema changes are numbered migrations
(``castway/catalog/migrations.py``) applied by ``migrate()``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Protocol

from castway.model import (
    Broadcast,
    BroadcastState,
    Channel,
    Rendition,
    Segment,
    SourceInfo,
    StreamKey,
    Vod,
)
from castway.restream.targets import RestreamTarget
from castway.webhooks.records import WebhookDelivery, WebhookEndpoint


class CatalogError(Exception):
    """Base of catalog errors."""


class AlreadyExists(CatalogError):
    pass


class NotFound(CatalogError):
    pass


@dataclass(frozen=True, slots=True)
class SegmentRecord:
    """One complete segment of a broadcast's rendition whose bytes are durable."""

    broadcast_id: str
    rendition: str
    segment: Segment


class Catalog(Protocol):
    def migrate(self) -> int:
        """Apply pending migrations; returns the schema version now in force."""

    # channels
    def create_channel(self, channel: Channel) -> Channel:
        """Raises AlreadyExists if the name is taken, InvalidChannelName (a ValueError)
        if it cannot be a channel's (castway.model.check_channel_name): every way of
        creating a channel comes here."""

    def get_channel(self, name: str) -> Channel | None: ...
    def list_channels(self) -> list[Channel]: ...
    def update_channel(self, channel: Channel) -> Channel: ...
    def delete_channel(self, name: str) -> None:
        """Deletes its keys too; raises NotFound."""

    # stream keys (hashes only)
    def add_stream_key(self, key: StreamKey) -> None: ...
    def revoke_stream_keys(self, channel: str) -> int:
        """Revoke every active key of the channel; returns how many."""

    def channel_for_key_hash(self, key_hash: str) -> str | None:
        """The channel an active (unrevoked) key hash publishes to."""

    # broadcasts
    def save_broadcast(self, broadcast: Broadcast) -> None:
        """Insert or update by id."""

    def get_broadcast(self, broadcast_id: str) -> Broadcast | None: ...
    def list_broadcasts(self, *, channel: str | None = None,
                        state: BroadcastState | None = None,
                        limit: int = 100) -> list[Broadcast]:
        """Newest first."""

    def set_source(self, broadcast_id: str, source: SourceInfo) -> None:
        """What is known of a live broadcast's source; a no-op once it is no longer live
        (its end carries the source, and an update arriving late never undoes an end)."""

    def set_renditions(self, broadcast_id: str, renditions: Sequence[Rendition]) -> None:
        """Replace the broadcast's ladder (no-op when the broadcast is not recorded)."""

    def broadcasts_to_archive(self, limit: int = 100) -> list[Broadcast]:
        """Ended or failed broadcasts that still have segment records (their VOD is not
        complete yet), oldest first."""

    # the durable segment log
    def record_segments(self, records: Sequence[SegmentRecord]) -> None:
        """Append segments; a record already present (same broadcast, rendition and
        media sequence number) is left as it is, so a retry does no harm."""

    def segment_records(self, broadcast_id: str) -> dict[str, list[Segment]]:
        """Every recorded segment of the broadcast by rendition, oldest first (without
        parts: a VOD needs whole segments only)."""

    def drop_segment_records(self, broadcast_id: str) -> None: ...

    # VODs
    def save_vod(self, vod: Vod) -> None:
        """Insert or update by id."""

    def get_vod(self, vod_id: str) -> Vod | None: ...
    def list_vods(self, *, channel: str | None = None, limit: int = 100) -> list[Vod]: ...
    def delete_vod(self, vod_id: str) -> None: ...

    # restream targets (castway.restream)
    def add_restream_target(self, target: RestreamTarget) -> None:
        """Raises NotFound when the channel does not exist."""

    def list_restream_targets(self, channel: str) -> list[RestreamTarget]:
        """Oldest first."""

    def delete_restream_target(self, channel: str, target_id: str) -> None:
        """Raises NotFound."""

    # webhooks (castway.webhooks): endpoints and their delivery log
    def create_webhook(self, endpoint: WebhookEndpoint) -> None:
        """Raises AlreadyExists if the id is taken."""

    def get_webhook(self, endpoint_id: str) -> WebhookEndpoint | None: ...
    def list_webhooks(self) -> list[WebhookEndpoint]:
        """Oldest first."""

    def delete_webhook(self, endpoint_id: str) -> None:
        """Deletes its delivery log too; raises NotFound."""

    def add_deliveries(self, deliveries: Sequence[WebhookDelivery]) -> list[WebhookDelivery]:
        """Insert deliveries; one already recorded (same endpoint and message id) is
        left as it is. Returns those inserted now (the caller sends them)."""

    def get_delivery(self, endpoint_id: str, msg_id: str) -> WebhookDelivery | None: ...
    def list_deliveries(self, endpoint_id: str, *, limit: int = 100) -> list[WebhookDelivery]:
        """Newest first."""

    def save_delivery(self, delivery: WebhookDelivery) -> None:
        """Update a delivery's state (no-op when its endpoint was deleted meanwhile)."""

    def claim_delivery(self, endpoint_id: str, msg_id: str, now: datetime,
                       lease_until: datetime) -> WebhookDelivery | None:
        """Take a pending delivery due at ``now`` for one attempt: its ``next_attempt_at``
        becomes ``lease_until`` in one conditional update, so of several senders asking at
        once exactly one gets it; the others get None, as for a delivery not pending or
        not due. A sender that dies holding it leaves it due again at ``lease_until``.
        Returns the delivery as claimed (hand it back to :meth:`settle_delivery`)."""

    def settle_delivery(self, claimed: WebhookDelivery, done: WebhookDelivery) -> bool:
        """Record the outcome ``done`` of an attempt on ``claimed`` (what
        :meth:`claim_delivery` returned), unless the claim was lost meanwhile (its lease
        ran out and another sender took it, a redelivery or the endpoint's deletion
        changed it): False then, and nothing is written."""

    def due_deliveries(self, now: datetime, *, limit: int = 100) -> list[WebhookDelivery]:
        """Pending deliveries due at ``now``, the longest due first."""

    def next_delivery_due(self) -> datetime | None:
        """When the next pending delivery is due (None: none is pending)."""

    def ping(self) -> bool: ...
    def close(self) -> None: ...
