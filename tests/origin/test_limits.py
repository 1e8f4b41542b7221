"""The request-body cap (origin.limits) through a real uvicorn: an oversized API body is
answered 413, whether announced by Content-Length or streamed chunked, and a normal
one still creates the channel."""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx

from origin.limits import MAX_REQUEST_BODY_BYTES
from tests.origin.conftest import AUTH

BIG = b'{"name": "' + b"x" * (2 * MAX_REQUEST_BODY_BYTES) + b'"}'


async def test_a_body_over_the_cap_is_413(server: str) -> None:
    async with httpx.AsyncClient(base_url=server, timeout=10) as client:
        response = await client.post("/api/v1/channels", headers={
            **AUTH, "content-type": "application/json"}, content=BIG)
        assert response.status_code == 413
        assert "larger than" in response.json()["detail"]


async def test_a_chunked_body_over_the_cap_is_413(server: str) -> None:
    async def chunks() -> AsyncIterator[bytes]:
        for i in range(0, len(BIG), 65536):
            yield BIG[i:i + 65536]

    async with httpx.AsyncClient(base_url=server, timeout=10) as client:
        response = await client.post("/api/v1/channels", headers={
            **AUTH, "content-type": "application/json"}, content=chunks())
        assert response.status_code == 413


async def test_a_small_body_still_works(server: str) -> None:
    async with httpx.AsyncClient(base_url=server, timeout=10) as client:
        response = await client.post("/api/v1/channels", headers=AUTH,
                                     json={"name": "within-limits"})
        assert response.status_code == 201, response.text
