"""Positions to Redis: the key the feature builder reads and the stream it waits on, with an outbox.

A position is published after every order (``Gateway.submit``), again on a duplicate order, and after
a reconciliation changed it. When Redis does not take it, the order stands (it is in the ledger): the
key goes into the outbox, and a background thread publishes the current position of each key in it
once Redis answers again.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from contextlib import AbstractContextManager

import redis

from services.broker_gateway.ledger import PositionRecord
from services.broker_gateway.metrics import GatewayMetrics
from services.broker_gateway.settings import GatewaySettings
from shared.wire import position_key

logger = logging.getLogger(__name__)

Key = tuple[str, str]  # (account, instrument)


class PositionPublisher:
    """``publish`` one position; ``start`` / ``stop`` the outbox thread, which reads the current
    positions with ``current`` under the order lock of their key (``lock_for``)."""

    def __init__(
        self,
        settings: GatewaySettings,
        metrics: GatewayMetrics,
        current: Callable[[Key], PositionRecord | None],
        lock_for: Callable[[Key], AbstractContextManager[object]],
    ) -> None:
        self.settings = settings
        self.metrics = metrics
        self.current = current
        self.lock_for = lock_for
        self.redis = redis.Redis.from_url(
            settings.shared.redis_url,
            socket_timeout=settings.redis_timeout_seconds,
            socket_connect_timeout=settings.redis_timeout_seconds,
        )
        self._outbox: set[Key] = set()
        self._outbox_lock = threading.Lock()
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self._stopping.clear()
        self._thread = threading.Thread(target=self._drain, name="gateway-outbox", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stopping.set()
        if self._thread is not None:
            self._thread.join(timeout=10)
            self._thread = None
        self.redis.close()

    def publish(self, record: PositionRecord) -> bool:
        """SET the position key and XADD to the positions stream, atomically, in one round trip.
        False (and the key in the outbox) when Redis did not take it."""
        payload = record.message().model_dump_json()
        key = (record.account, record.instrument)
        try:
            with self.redis.pipeline(transaction=True) as pipe:
                pipe.set(position_key(record.account, record.instrument), payload)
                pipe.xadd(
                    self.settings.shared.positions_stream,
                    {"data": payload},
                    maxlen=self.settings.positions_maxlen,
                    approximate=True,
                )
                pipe.execute()
        except redis.RedisError as exc:
            # The feature builder's re-sent window asks for it again meanwhile.
            self.metrics.publish_errors.inc()
            with self._outbox_lock:
                self._outbox.add(key)
            logger.error(
                "cannot publish the %s/%s position to Redis: %s; it is published again once Redis answers",
                record.account,
                record.instrument,
                exc,
            )
            return False
        with self._outbox_lock:
            self._outbox.discard(key)
        return True

    def _drain(self, every: float = 1.0) -> None:
        """Publish the current position of each key whose publish failed, until each goes through."""
        while not self._stopping.wait(every):
            with self._outbox_lock:
                keys = sorted(self._outbox)
            for key in keys:
                with self.lock_for(key):  # not between an order's ledger write and its own publish
                    record = self.current(key)
                    if record is None:
                        continue
                    if not self.publish(record):
                        break  # Redis is still away
                logger.info("published the %s/%s position from the outbox", *key)
