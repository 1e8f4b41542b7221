"""Signed access to private VODs, CloudFront-compatible (castway.signing).

A grant is a custom policy whose resource is ``{public_url}/vod/{vod_id}/*``, signed with
``CASTWAY_SIGNING_KEY`` (an RSA PEM; ``CASTWAY_SIGNING_KEY_ID`` is its Key-Pair-Id). Behind
CloudFront the CDN checks it; without a CDN the origin checks the very same signature,
from the query (signed URL) or the ``CloudFront-*`` cookies. The watch page of a private VOD
accepts the signed query once and sets the cookies for ``/vod/{vod_id}/``, so that the
player's requests for playlists and segments carry the signature.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from urllib.parse import urlsplit

from starlette.requests import Request

from castway.settings import Settings
from castway.signing import (
    KeyRing,
    Policy,
    SigningError,
    SigningKey,
    sign_url,
    signed_cookies,
    verify_request,
)

logger = logging.getLogger(__name__)

MIN_GRANT_S = 60
MAX_GRANT_S = 7 * 24 * 3600


@dataclass(frozen=True, slots=True)
class VodGrant:
    vod_id: str
    expires: int  # epoch seconds
    watch_url: str  # the watch page, signed: it sets the cookies
    master_url: str  # the master playlist, signed (players also need the cookies)
    cookies: dict[str, str]
    cookie_path: str


class VodAccess:
    """Issues and checks signatures for private VODs; disabled without an RSA key."""

    def __init__(self, settings: Settings) -> None:
        self._base = settings.effective_public_url
        self.signer: SigningKey | None = None
        if settings.signing_key:
            try:
                self.signer = SigningKey.from_pem(settings.signing_key,
                                                  settings.signing_key_id)
            except SigningError as exc:
                logger.warning("private VOD signing disabled: CASTWAY_SIGNING_KEY is not "
                               "an RSA PEM private key", extra={"error": str(exc)})
        self._keys = KeyRing.of(self.signer) if self.signer is not None else None

    @property
    def enabled(self) -> bool:
        return self.signer is not None

    def resource(self, vod_id: str) -> str:
        return f"{self._base}/vod/{vod_id}/*"

    @staticmethod
    def cookie_path(vod_id: str) -> str:
        return f"/vod/{vod_id}/"

    def grant(self, vod_id: str, ttl_s: int, *, now: float | None = None) -> VodGrant:
        if self.signer is None:
            raise SigningError("no RSA signing key is configured (CASTWAY_SIGNING_KEY)")
        expires = int(now if now is not None else time.time()) + ttl_s
        resource = self.resource(vod_id)
        master = sign_url(f"{self._base}/vod/{vod_id}/master.m3u8", self.signer,
                          expires=expires, resource=resource)
        query = urlsplit(master).query
        cookies = signed_cookies(Policy(resource, expires), self.signer)
        return VodGrant(vod_id=vod_id, expires=expires,
                        watch_url=f"{self._base}/watch/vod/{vod_id}?{query}",
                        master_url=master, cookies=cookies,
                        cookie_path=self.cookie_path(vod_id))

    def allows(self, request: Request, *, as_path: str | None = None,
               now: float | None = None) -> bool:
        """Whether ``request`` carries a valid signature (query first, then cookies) for
        its own URL, or for ``as_path`` with the request's query."""
        if self._keys is None:
            return False
        path = as_path if as_path is not None else request.url.path
        query = request.url.query
        url = f"{self._base}{path}" + (f"?{query}" if query else "")
        client = request.client.host if request.client else None
        verdict = verify_request(url, request.cookies, self._keys, now=now, client_ip=client)
        if not verdict:
            logger.debug("signature refused", extra={"path": path, "reason": verdict.reason})
        return bool(verdict)
