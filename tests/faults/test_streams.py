"""Streams heal themselves: one bad entry does not block the ones behind it, and a Redis blip does not
stall the pipeline (the gateway publishes the position once Redis is back; a duplicate order publishes
it again)."""

from __future__ import annotations

import shutil
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
import redis

from shared.reward import Action
from shared.wire import PositionMessage, position_key
from tests.helpers import free_port
from tests.services.inference.conftest import Streams
from tests.services.inference.helpers import FakeGateway, serving, wait_until
from tests.services.inference.test_stream_worker import (
    all_acked,
    metric,
    publish,
    running,
    settings_for,
    window_messages,
)

BUY = int(Action.BUY)
T0 = 1_704_189_600


def test_an_entry_the_gateway_keeps_failing_is_dead_lettered_and_the_rest_go_on(
    root: Path, streams: Streams, redis_client: redis.Redis
) -> None:
    """Found: an entry answered 500 was retried forever; a EURUSD entry behind it waited 20 s+."""
    gateway = FakeGateway(failing={"GBPJPY"})
    poison = window_messages(1, "GBPJPY", seed=1)
    behind = window_messages(2, "EURUSD", seed=2)
    with serving(gateway.app()) as url:
        settings = settings_for(root, streams, url, max_attempts=3, retry_max_seconds=0.1)
        with running(settings) as service:
            started = time.monotonic()
            publish(redis_client, streams.windows, [poison[0], *behind])
            wait_until(lambda: len(gateway.orders) == 2, timeout=10, what="the EURUSD orders")
            assert time.monotonic() - started < 10
            wait_until(lambda: all_acked(redis_client, streams), what="all entries acked")
            assert metric(service, "smz_inference_stream_dead_lettered_total") == 1
    assert [o.instrument for o in gateway.orders.values()] == ["EURUSD", "EURUSD"]
    assert sum(o.instrument == "GBPJPY" for o in gateway.attempts) == 3  # bounded
    (dead,) = redis_client.xrange(streams.dead)
    assert "gave up after 3 attempts" in dead[1]["error"] and "HTTP 500" in dead[1]["error"]


@contextmanager
def private_redis(port: int, data_dir: Path) -> Iterator[subprocess.Popen[bytes]]:
    """A redis-server of this test's own on ``port`` (so it can be stopped), AOF on."""
    if shutil.which("redis-server") is None:
        pytest.skip("redis-server is not installed")
    data_dir.mkdir(parents=True, exist_ok=True)
    proc = subprocess.Popen(
        ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "yes",
         "--dir", str(data_dir)],
        stdout=subprocess.DEVNULL,
    )  # fmt: skip
    client = redis.Redis(port=port, socket_connect_timeout=0.2)
    try:
        wait_until(lambda: _pings(client), timeout=10, what=f"redis-server on {port}")
        yield proc
    finally:
        proc.terminate()
        proc.wait(10)


def _pings(client: redis.Redis) -> bool:
    try:
        return bool(client.ping())
    except redis.RedisError:
        return False


def test_a_redis_blip_during_an_order_is_healed_by_the_outbox(
    tmp_path: Path, make_settings: Any, open_gateway: Any
) -> None:
    """Found: Redis stopped while an order was processed and restarted: the order was answered but its
    position never re-published, so the feature builder waited until the gateway was restarted."""
    port = free_port()
    url = f"redis://127.0.0.1:{port}/0"
    settings = make_settings(redis_url=url, redis_timeout_seconds=0.3)
    with private_redis(port, tmp_path / "redis-a"), open_gateway(settings) as gw:
        client = redis.Redis.from_url(url)
        gw.order("r0", T0, 150.00)
    # Redis is down now: the order stands (the ledger has it), its publish fails.
    with open_gateway(settings) as gw:
        result = gw.order("r1", T0 + 60, 150.01, BUY, step=1)
        assert result["status"] == "filled"
        assert gw.metric("smz_gateway_publish_errors_total") >= 1
        with private_redis(port, tmp_path / "redis-b"):  # Redis is back
            key = position_key(gw.account, "GBPJPY")
            wait_until(lambda: client.get(key) is not None, timeout=10, what="the outbox's publish")
            message = PositionMessage.model_validate_json(client.get(key))  # type: ignore[arg-type]
            assert message.as_of_bar_ts == T0 + 60 and message.state["side"] == 1
            # A duplicate of the order (the feature builder re-sending its window) publishes again.
            client.delete(key)
            assert gw.order("r1", T0 + 60, 150.01, BUY, step=1)["duplicate"] is True
            assert client.get(key) is not None
