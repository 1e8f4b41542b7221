"""One delivery attempt: the receiver checked against the allow-list again (its DNS
answer may have changed since registration), the body signed, one POST."""

from __future__ import annotations

import logging

import httpx

from castway.webhooks import signing
from castway.webhooks.allow import RefusedReceiver, check_receiver
from castway.webhooks.records import WebhookDelivery, WebhookEndpoint
from castway.webhooks.retry import Attempt

logger = logging.getLogger(__name__)

USER_AGENT = "castway-webhooks/1"


def new_client(timeout_s: float) -> httpx.AsyncClient:
    """The client of a dispatcher: no redirects (a 3xx is a failure, Standard Webhooks),
    no proxies or credentials from the environment."""
    return httpx.AsyncClient(timeout=timeout_s, follow_redirects=False, trust_env=False,
                             headers={"user-agent": USER_AGENT})


async def send(client: httpx.AsyncClient, endpoint: WebhookEndpoint,
               delivery: WebhookDelivery, *, timestamp: int,
               allow_private: bool) -> Attempt:
    fields = {"webhook": endpoint.id, "msg_id": delivery.msg_id,
              "event": delivery.event_type, "attempt": delivery.attempts + 1}
    try:
        await check_receiver(endpoint.url, allow_private=allow_private)
    except RefusedReceiver as e:
        logger.warning("webhook receiver refused", extra={**fields, "reason": str(e)})
        return Attempt(None, f"refused: {e}")
    body = delivery.body.encode("utf-8")
    headers = {"content-type": "application/json",
               **signing.headers(endpoint.secret, delivery.msg_id, timestamp, body)}
    try:
        response = await client.post(endpoint.url, content=body, headers=headers)
    except httpx.HTTPError as e:
        logger.info("webhook delivery failed", extra={**fields, "error": repr(e)})
        return Attempt(None, f"{type(e).__name__}: {e}")
    logger.info("webhook delivered" if response.is_success else "webhook refused",
                extra={**fields, "status": response.status_code})
    return Attempt(response.status_code)
