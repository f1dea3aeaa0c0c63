"""The builder's two Redis adapters: publish windows, read the gateway's positions (shared.wire)."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import TypeVar

import redis
from pydantic import ValidationError

from shared.wire import PositionMessage, WindowMessage, position_key

log = logging.getLogger(__name__)

_RETRYABLE = (redis.ConnectionError, redis.TimeoutError)
START_OF_STREAM = "0-0"
T = TypeVar("T")


def retrying(call: Callable[[], T], what: str, stop: threading.Event, first_wait: float = 0.5) -> T:
    """``call()``, waiting out a Redis outage (logged, retried with backoff); re-raises once ``stop``."""
    backoff = first_wait
    while True:
        try:
            return call()
        except _RETRYABLE as exc:
            log.error("%s failed: %s; retrying in %.1f s", what, exc, backoff)
            if stop.wait(backoff):
                raise
            backoff = min(backoff * 2, 10.0)


def connect(url: str) -> redis.Redis:
    return redis.Redis.from_url(url, decode_responses=True, health_check_interval=30)


class RedisWindowPublisher:
    """XADD one field ``data`` = the message's JSON to the windows stream.

    A Redis outage is waited out (logged, retried with backoff until ``stop``): a window is never
    dropped. A retry after a lost reply can publish a message twice; the gateway's idempotency key
    (account, instrument, bar) makes the second order a no-op.
    """

    def __init__(
        self,
        client: redis.Redis,
        stream: str,
        maxlen: int = 0,
        stop: threading.Event | None = None,
        retry_seconds: float = 0.5,
    ) -> None:
        self.client = client
        self.stream = stream
        self.maxlen = maxlen or None
        self.stop = stop or threading.Event()
        self.retry_seconds = retry_seconds

    def publish(self, message: WindowMessage) -> str:
        data = {"data": message.model_dump_json()}
        return retrying(
            lambda: self.client.xadd(self.stream, data, maxlen=self.maxlen, approximate=True),
            f"publishing to {self.stream}",
            self.stop,
            self.retry_seconds,
        )


class RedisPositionReader:
    """The gateway's position of one account: the key ``position_key(account, instrument)`` and the
    positions stream. Redis errors are logged and read as "nothing yet" (the builder keeps waiting)."""

    def __init__(
        self, client: redis.Redis, stream: str, account: str, stop: threading.Event | None = None
    ) -> None:
        self.client = client
        self.stream = stream
        self.account = account
        self.stop = stop or threading.Event()

    def cursor(self) -> str:
        """The positions stream's last entry id (``0-0`` while empty): read from here to miss nothing."""
        entries = retrying(
            lambda: self.client.xrevrange(self.stream, "+", "-", count=1),
            f"reading the last id of {self.stream}",
            self.stop,
        )
        return entries[0][0] if entries else START_OF_STREAM

    def current(self, instrument: str) -> PositionMessage | None:
        try:
            raw = self.client.get(position_key(self.account, instrument))
        except _RETRYABLE as exc:
            log.error("reading the position of %s failed: %s", instrument, exc)
            return None
        return None if raw is None else _parse(raw, position_key(self.account, instrument))

    def read(self, cursor: str, block_seconds: float) -> tuple[str, list[PositionMessage]]:
        """Messages after ``cursor``, blocking up to ``block_seconds`` for the first; the new cursor."""
        try:
            reply = self.client.xread(
                {self.stream: cursor}, count=500, block=max(1, int(block_seconds * 1000))
            )
        except _RETRYABLE as exc:
            log.error("reading %s failed: %s", self.stream, exc)
            self.stop.wait(block_seconds)  # an outage fails fast: do not spin
            return cursor, []
        messages = []
        for _stream, entries in reply or []:  # RESP2 (``connect`` does not ask for RESP3)
            for entry_id, fields in entries:
                cursor = entry_id
                message = _parse(fields.get("data", ""), f"{self.stream} {entry_id}")
                if message is not None:
                    messages.append(message)
        return cursor, messages


def _parse(raw: str, where: str) -> PositionMessage | None:
    try:
        return PositionMessage.model_validate_json(raw)
    except ValidationError as exc:
        log.warning("ignoring a malformed position message at %s: %s", where, exc)
        return None
