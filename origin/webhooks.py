"""The control API of outbound webhooks under /api/v1/webhooks: endpoints (registered,
listed, deleted), their delivery log, and redelivery. The receiver URL is checked against
the allow-list (:mod:`castway.webhooks.allow`) at registration; the secret
(``whsec_...``, generated when none is given) is shown only in the creation answer.
"""

from __future__ import annotations

import asyncio
import logging
from datetime import datetime
from typing import Annotated

from fastapi import APIRouter, Depends, HTTPException, Path, Query
from pydantic import BaseModel, ConfigDict, Field

from castway.catalog.base import NotFound
from castway.layout import COMPONENT_PATTERN
from castway.model import new_id, utcnow
from castway.webhooks.allow import MAX_URL, RefusedReceiver, check_receiver
from castway.webhooks.events import EventType
from castway.webhooks.records import DeliveryState, WebhookDelivery, WebhookEndpoint
from castway.webhooks.retry import redeliver as redelivered
from castway.webhooks.signing import InvalidSecret, generate_secret, secret_key
from origin.api import require_admin
from origin.context import Ctx
from origin.schemas import ErrorBody

logger = logging.getLogger(__name__)


class WebhookCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    url: str = Field(max_length=MAX_URL, description="http(s) URL of the receiver.")
    events: list[EventType] = Field(min_length=1, description="Event types to send it.")
    secret: str | None = Field(None, max_length=200, description="Signing secret, "
                               "whsec_ + base64 of 24 to 64 bytes (Standard Webhooks); "
                               "generated when absent.")


class WebhookPublic(BaseModel):
    id: str
    url: str
    events: list[str]
    created_at: datetime

    @classmethod
    def of(cls, endpoint: WebhookEndpoint) -> WebhookPublic:
        return cls(id=endpoint.id, url=endpoint.url, events=list(endpoint.events),
                   created_at=endpoint.created_at)


class WebhookCreated(WebhookPublic):
    secret: str = Field(description="The signing secret: shown only here.")


class DeliveryPublic(BaseModel):
    msg_id: str = Field(description="The webhook-id header: the same on every attempt.")
    event_type: str
    state: DeliveryState
    attempts: int
    created_at: datetime
    next_attempt_at: datetime | None
    last_attempt_at: datetime | None
    last_status: int | None
    last_error: str
    body: str

    @classmethod
    def of(cls, d: WebhookDelivery) -> DeliveryPublic:
        return cls(msg_id=d.msg_id, event_type=d.event_type, state=d.state,
                   attempts=d.attempts, created_at=d.created_at,
                   next_attempt_at=d.next_attempt_at, last_attempt_at=d.last_attempt_at,
                   last_status=d.last_status, last_error=d.last_error, body=d.body)


IdPath = Annotated[str, Path(pattern=COMPONENT_PATTERN)]
MsgIdPath = Annotated[str, Path(pattern=r"^msg_[0-9a-f]{1,60}$")]

router = APIRouter(prefix="/api/v1/webhooks", tags=["webhooks"],
                   dependencies=[Depends(require_admin)],
                   responses={401: {"model": ErrorBody}, 404: {"model": ErrorBody},
                              422: {"model": ErrorBody}})


async def _endpoint(ctx: Ctx, webhook_id: str) -> WebhookEndpoint:
    endpoint = await asyncio.to_thread(ctx.catalog.get_webhook, webhook_id)
    if endpoint is None:
        raise HTTPException(404, f"no webhook {webhook_id}")
    return endpoint


@router.post("", response_model=WebhookCreated, status_code=201,
             summary="Register a webhook endpoint (its secret is shown once)")
async def create_webhook(body: WebhookCreate, ctx: Ctx) -> WebhookCreated:
    secret = body.secret or generate_secret()
    try:
        secret_key(secret)
        await check_receiver(body.url, allow_private=ctx.settings.webhook_allow_private)
    except (InvalidSecret, RefusedReceiver) as e:
        raise HTTPException(422, str(e)) from None
    events = tuple(dict.fromkeys(e.value for e in body.events))
    endpoint = WebhookEndpoint(id=new_id(), url=body.url, events=events, secret=secret)
    await asyncio.to_thread(ctx.catalog.create_webhook, endpoint)
    logger.info("webhook registered", extra={"webhook": endpoint.id, "events": events})
    return WebhookCreated(**WebhookPublic.of(endpoint).model_dump(), secret=secret)


@router.get("", response_model=list[WebhookPublic], summary="List webhook endpoints")
async def list_webhooks(ctx: Ctx) -> list[WebhookPublic]:
    return [WebhookPublic.of(e) for e in await asyncio.to_thread(ctx.catalog.list_webhooks)]


@router.get("/{webhook_id}", response_model=WebhookPublic, summary="One webhook endpoint")
async def get_webhook(webhook_id: IdPath, ctx: Ctx) -> WebhookPublic:
    return WebhookPublic.of(await _endpoint(ctx, webhook_id))


@router.delete("/{webhook_id}", status_code=204,
               summary="Delete a webhook endpoint and its delivery log")
async def delete_webhook(webhook_id: IdPath, ctx: Ctx) -> None:
    try:
        await asyncio.to_thread(ctx.catalog.delete_webhook, webhook_id)
    except NotFound:
        raise HTTPException(404, f"no webhook {webhook_id}") from None


@router.get("/{webhook_id}/deliveries", response_model=list[DeliveryPublic],
            summary="The endpoint's delivery log, newest first")
async def list_deliveries(webhook_id: IdPath, ctx: Ctx,
                          limit: Annotated[int, Query(ge=1, le=1000)] = 100
                          ) -> list[DeliveryPublic]:
    await _endpoint(ctx, webhook_id)
    found = await asyncio.to_thread(lambda: ctx.catalog.list_deliveries(webhook_id,
                                                                        limit=limit))
    return [DeliveryPublic.of(d) for d in found]


@router.post("/{webhook_id}/deliveries/{msg_id}/redeliver", response_model=DeliveryPublic,
             status_code=202,
             summary="Send a delivery again (same webhook-id), on a fresh retry schedule")
async def redeliver(webhook_id: IdPath, msg_id: MsgIdPath, ctx: Ctx) -> DeliveryPublic:
    await _endpoint(ctx, webhook_id)
    delivery = await asyncio.to_thread(ctx.catalog.get_delivery, webhook_id, msg_id)
    if delivery is None:
        raise HTTPException(404, f"no delivery {msg_id} to webhook {webhook_id}")
    again = redelivered(delivery, utcnow())
    await asyncio.to_thread(ctx.catalog.save_delivery, again)
    logger.info("webhook redelivery requested", extra={"webhook": webhook_id,
                                                       "msg_id": msg_id})
    return DeliveryPublic.of(again)
