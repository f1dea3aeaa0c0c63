"""What both live APIs check before a request body is read: the bearer token, then the body's size.

FastAPI reads and parses a body before it runs a route's dependencies, so a token check written as a
dependency lets anyone make the service parse megabytes first. ``RequestGuard`` is plain ASGI
middleware in front of the app: a request to a protected path without the right token gets its 401
before a byte of the body is read, and a body over the limit gets 413 (by its Content-Length at once,
or while it streams in) without ever reaching the app.
"""

from __future__ import annotations

import hmac
import json
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]
# (method, path) -> the tokens that may call it, or None when the path is open.
TokenRule = Callable[[str, str], tuple[bytes, ...] | None]

_BODY_METHODS = frozenset({"POST", "PUT", "PATCH"})


def bearer_matches(header: bytes | None, tokens: tuple[bytes, ...]) -> bool:
    """Whether an ``Authorization`` header carries one of ``tokens`` (each compared in constant time)."""
    if not header or not header.lower().startswith(b"bearer "):
        return False
    given = header[7:].strip()
    # Every token is compared, so the time taken does not tell which one came close.
    return any([hmac.compare_digest(given, token) for token in tokens])


class RequestGuard:
    """ASGI middleware: 401 without a valid token (per ``rule``), 413 for a body over ``max_body_bytes``."""

    def __init__(self, app: ASGIApp, *, rule: TokenRule, max_body_bytes: int) -> None:
        self.app = app
        self.rule = rule
        self.max_body_bytes = max_body_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        method, path = scope["method"], scope["path"]
        headers = dict(scope.get("headers") or [])
        tokens = self.rule(method, path)
        if tokens is not None and not bearer_matches(headers.get(b"authorization"), tokens):
            header = headers.get(b"authorization", b"")
            missing = not header.lower().startswith(b"bearer ")
            detail = (
                "missing bearer token: send the header 'Authorization: Bearer <token>'"
                if missing
                else "invalid bearer token"
            )
            challenge = "Bearer" if missing else 'Bearer error="invalid_token"'
            await _answer(send, 401, detail, [(b"www-authenticate", challenge.encode())])
            return
        if method not in _BODY_METHODS:
            await self.app(scope, receive, send)
            return
        declared = headers.get(b"content-length")
        if declared is not None:
            try:
                size = int(declared)
            except ValueError:
                await _answer(send, 400, "Content-Length is not a number")
                return
            if size > self.max_body_bytes:
                await _answer(send, 413, self._too_large(size))
                return
        # Read the body here (at most the limit), then hand it to the app as one message.
        chunks, size = [], 0
        while True:
            message = await receive()
            if message["type"] != "http.request":  # the client went away
                await self.app(scope, _replay([message], receive), send)
                return
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.max_body_bytes:
                await _answer(send, 413, self._too_large(size, streamed=True))
                return
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        body = {"type": "http.request", "body": b"".join(chunks), "more_body": False}
        await self.app(scope, _replay([body], receive), send)

    def _too_large(self, size: int, streamed: bool = False) -> str:
        what = f"more than {size - 1}" if streamed else str(size)
        return f"request body of {what} bytes is over the limit of {self.max_body_bytes} bytes"


class ConcurrencyLimit:
    """ASGI middleware: at most ``limit`` requests to ``path`` in progress; the next one is shed with
    503 and ``Retry-After`` before its body is read, so a burst costs no parsing beyond the limit."""

    def __init__(self, app: ASGIApp, *, path: str, limit: int, on_shed: Callable[[], None]) -> None:
        self.app = app
        self.path = path
        self.limit = limit
        self.on_shed = on_shed
        self.in_progress = 0  # one event loop: no lock needed

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] != self.path:
            await self.app(scope, receive, send)
            return
        if self.in_progress >= self.limit:
            self.on_shed()
            detail = f"{self.in_progress} decisions are in progress (the limit); try again"
            await _answer(send, 503, detail, [(b"retry-after", b"1")])
            return
        self.in_progress += 1
        try:
            await self.app(scope, receive, send)
        finally:
            self.in_progress -= 1


def _replay(messages: list[Message], receive: Receive) -> Receive:
    queue = list(messages)

    async def replayed() -> Message:
        if queue:
            return queue.pop(0)
        return await receive()

    return replayed


async def _answer(
    send: Send, status: int, detail: str, headers: list[tuple[bytes, bytes]] | None = None
) -> None:
    body = json.dumps({"detail": detail, "message": detail}).encode()
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
                *(headers or []),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})
