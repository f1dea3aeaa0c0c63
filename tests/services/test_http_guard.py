"""The guards in front of both APIs, on a bare ASGI app that records what reached it."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx

from services.http_guard import ConcurrencyLimit, RequestGuard

TOKEN = b"right-token"


class Recorder:
    """An ASGI app that answers 200 with the body it read (after ``delay`` seconds)."""

    def __init__(self, delay: float = 0.0) -> None:
        self.delay = delay
        self.bodies: list[bytes] = []

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        body = b""
        while True:
            message = await receive()
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        self.bodies.append(body)
        await asyncio.sleep(self.delay)
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": body})


def _client(app: Any) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://guarded")


async def _chunks() -> Any:  # a body without Content-Length: counted as it streams in
    for _ in range(2):
        yield b"x" * 60


def test_the_token_and_the_size_decide_before_the_app_reads_the_body() -> None:
    inner = Recorder()
    guard = RequestGuard(
        inner, rule=lambda m, p: (TOKEN,) if p.startswith("/v1/") else None, max_body_bytes=100
    )

    async def run() -> list[int]:
        async with _client(guard) as client:
            right = {"Authorization": "Bearer right-token"}
            return [
                (await client.post("/v1/x", content=b"{}")).status_code,
                (
                    await client.post("/v1/x", content=b"{}", headers={"Authorization": "Bearer wrong"})
                ).status_code,
                (await client.post("/v1/x", content=b"x" * 101, headers=right)).status_code,
                (await client.post("/v1/x", content=_chunks(), headers=right)).status_code,
                (await client.post("/v1/x", content=b"x" * 100, headers=right)).status_code,
                (await client.post("/open", content=b"{}")).status_code,
            ]

    assert asyncio.run(run()) == [401, 401, 413, 413, 200, 200]
    assert inner.bodies == [b"x" * 100, b"{}"]  # only what passed ever reached the app


def test_requests_beyond_the_limit_are_shed_with_retry_after() -> None:
    shed: list[int] = []
    limited = ConcurrencyLimit(
        Recorder(delay=0.3), path="/v1/decisions", limit=2, on_shed=lambda: shed.append(1)
    )

    async def run() -> list[tuple[int, str | None]]:
        async with _client(limited) as client:
            responses = await asyncio.gather(*(client.post("/v1/decisions", content=b"{}") for _ in range(5)))
            other = await client.post("/elsewhere", content=b"{}")
        return [(r.status_code, r.headers.get("retry-after")) for r in [*responses, other]]

    results = asyncio.run(run())
    assert sorted(results[:5], key=lambda r: r[0]) == [(200, None)] * 2 + [(503, "1")] * 3
    assert results[5] == (200, None) and len(shed) == 3
