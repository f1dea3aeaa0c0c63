"""The stream worker against real Redis and a stand-in gateway over real HTTP: one order per window,
acks only after the gateway accepted, retries while it is down, reclaim after a crash, no duplicates."""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import numpy as np
import redis

from services.inference.app import InferenceService
from services.inference.settings import InferenceSettings
from shared.model.checkpoint import MANIFEST_FILE, load_checkpoint
from shared.model.inference import make_model_functions
from shared.search import SearchConfig, search
from shared.wire import INFERENCE_GROUP, WindowMessage, idempotency_key
from tests.services.inference.conftest import Streams
from tests.services.inference.helpers import TOKEN, FakeGateway, free_port, make_window, serving, wait_until

BAR0 = 1_699_999_980  # a whole minute


def settings_for(
    root: Path, streams: Streams, gateway_url: str, gateway_token: str = TOKEN, **overrides: object
) -> InferenceSettings:
    shared = {
        "windows_stream": streams.windows,
        "gateway_url": gateway_url,
        "gateway_token": gateway_token,
        "account": "paper",
    }
    values: dict[str, object] = {
        "checkpoint_dir": root,
        "shared": shared,
        "dead_letter_stream": streams.dead,
        "claim_idle_ms": 300,
        "retry_max_seconds": 0.2,
        "batch_wait_ms": 5,
        **overrides,
    }
    return InferenceSettings(**values)


@contextmanager
def running(settings: InferenceSettings) -> Iterator[InferenceService]:
    service = InferenceService(settings)
    service.start()
    try:
        yield service
    finally:
        service.stop()


def window_messages(count: int, instrument: str = "GBPJPY", seed: int = 0) -> list[WindowMessage]:
    rng = np.random.default_rng(seed)
    return [
        WindowMessage(
            instrument=instrument,
            bar_ts=BAR0 + 60 * i,
            close=150.0 + 0.01 * i,
            session_id=str(BAR0),
            step=i,
            last_bar=i == count - 1,
            window=make_window(rng).tolist(),
            published_at=1.0,
        )
        for i in range(count)
    ]


def publish(client: redis.Redis, stream: str, messages: list[WindowMessage]) -> list[str]:
    return [client.xadd(stream, {"data": m.model_dump_json()}) for m in messages]


def pending(client: redis.Redis, stream: str) -> int:
    return int(client.xpending(stream, INFERENCE_GROUP)["pending"])


def all_acked(client: redis.Redis, streams: Streams) -> bool:
    """Every entry of the stream was delivered to the group and acked."""
    groups = {g["name"]: g for g in client.xinfo_groups(streams.windows)}
    last = client.xrevrange(streams.windows, count=1)
    group = groups.get(INFERENCE_GROUP)
    return bool(group and last and group["last-delivered-id"] == last[0][0] and group["pending"] == 0)


def metric(service: InferenceService, name: str, labels: dict[str, str] | None = None) -> float:
    return service.metrics.registry.get_sample_value(name, labels or {}) or 0.0


def test_one_order_per_window_acked_after_the_gateway_accepted(
    root: Path, streams: Streams, redis_client: redis.Redis
) -> None:
    gateway = FakeGateway()
    # The served model was trained with the seed's reward (an earlier release's name for it) at 5 pips
    # per unit: its orders say so, so that the gateway computes that reward.
    manifest = json.loads((root / "v1" / MANIFEST_FILE).read_text())
    manifest["training"] = {"reward": "spec", "pips_per_reward": 5.0}
    (root / "v1" / MANIFEST_FILE).write_text(json.dumps(manifest))
    messages = window_messages(5)
    # The third bar is decided in a long position, the others flat.
    long_window = make_window(np.random.default_rng(9), side=1).tolist()
    messages[2] = messages[2].model_copy(update={"window": long_window})
    with serving(gateway.app()) as url, running(settings_for(root, streams, url)) as service:
        publish(redis_client, streams.windows, messages[:3])
        breaker = WindowMessage(
            kind="session_break",
            instrument="GBPJPY",
            bar_ts=BAR0 + 60 * 3,
            close=150.5,
            session_id="x",
            step=-1,
        )
        publish(redis_client, streams.windows, [breaker, *messages[4:]])
        wait_until(lambda: len(gateway.orders) == 5, what="five orders")
        wait_until(lambda: all_acked(redis_client, streams), what="all entries acked")
        decided = sum(
            metric(
                service,
                "smz_inference_decisions_total",
                {"instrument": "GBPJPY", "action": a, "source": "stream"},
            )
            for a in ("HOLD", "BUY", "SELL", "CLOSE")
        )
        assert decided == 4  # the session break needs no decision
        # Decisions while flat, by action: every action's series exists (at 0 if never taken).
        flat = [
            service.metrics.registry.get_sample_value(
                "smz_inference_flat_decisions_total", {"instrument": "GBPJPY", "action": a}
            )
            for a in ("HOLD", "BUY", "SELL", "CLOSE")
        ]
        assert None not in flat and sum(flat) == 3  # bars 0, 1 and 4
        assert metric(service, "smz_inference_stream_lag_seconds") > 1000  # published_at = 1.0

    orders = list(gateway.orders.values())
    assert [o.idempotency_key for o in orders] == [
        idempotency_key("paper", "GBPJPY", BAR0 + 60 * i) for i in range(5)
    ]
    assert len(gateway.attempts) == 5 and gateway.duplicates == 0
    fns = make_model_functions(load_checkpoint(root / "v1").model, "auto", threads=1)
    for i in (0, 1, 2, 4):
        order, message = orders[i], messages[i]
        expected = search(fns, np.asarray(message.window, np.float32)[None], SearchConfig(num_simulations=25))
        assert order.kind == "decision" and order.action == int(expected.action[0])
        assert order.model_version == "v1" and order.account == "paper"
        assert (order.close, order.session_id, order.step, order.last_bar, order.published_at) == (
            message.close,
            message.session_id,
            message.step,
            message.last_bar,
            message.published_at,
        )
    assert orders[3].kind == "session_break" and orders[3].action == 3 and orders[3].step == -1
    assert {(o.reward, o.pips_per_reward) for o in orders} == {("amddp1", 5.0)}


def test_gateway_down_nothing_is_acked_then_everything_is_delivered_once(
    root: Path, streams: Streams, redis_client: redis.Redis
) -> None:
    gateway = FakeGateway()
    port = free_port()
    messages = window_messages(3, seed=1)
    with running(settings_for(root, streams, f"http://127.0.0.1:{port}")) as service:
        publish(redis_client, streams.windows, messages)
        wait_until(lambda: metric(service, "smz_inference_gateway_errors_total") >= 3, what="failed attempts")
        assert pending(redis_client, streams.windows) == 3  # delivered to the worker, none acked
        with serving(gateway.app(), port):
            wait_until(lambda: all_acked(redis_client, streams), what="all entries acked")
            gateway.down = True  # answers 503 now: retried, not acked
            publish(redis_client, streams.windows, window_messages(4, seed=1)[3:])
            wait_until(lambda: metric(service, "smz_inference_gateway_errors_total") >= 6, what="503 retries")
            assert pending(redis_client, streams.windows) == 1
            gateway.down = False
            wait_until(lambda: all_acked(redis_client, streams), what="the last entry acked")
    assert len(gateway.orders) == 4 and gateway.duplicates == 0
    assert sorted(o.bar_ts for o in gateway.orders.values()) == [BAR0 + 60 * i for i in range(4)]


def test_a_wrong_token_is_retried_not_acked(root: Path, streams: Streams, redis_client: redis.Redis) -> None:
    gateway = FakeGateway()
    with serving(gateway.app()) as url:
        settings = settings_for(root, streams, url, gateway_token="wrong")
        with running(settings) as service:
            publish(redis_client, streams.windows, window_messages(1))
            wait_until(lambda: metric(service, "smz_inference_gateway_errors_total") >= 2, what="401 retries")
            assert pending(redis_client, streams.windows) == 1 and not gateway.orders
        # A restart with the right token and the same consumer name re-reads its own pending entry.
        with running(settings_for(root, streams, url)) as service:
            wait_until(lambda: all_acked(redis_client, streams), what="the pending entry acked")
            assert metric(service, "smz_inference_pending_reclaimed_total") == 1
    assert len(gateway.orders) == 1


def test_entries_of_a_crashed_consumer_are_reclaimed_without_duplicate_orders(
    root: Path, streams: Streams, redis_client: redis.Redis
) -> None:
    gateway = FakeGateway()
    messages = window_messages(4, seed=2)
    redis_client.xgroup_create(streams.windows, INFERENCE_GROUP, id="0", mkstream=True)
    publish(redis_client, streams.windows, messages)
    # Another consumer reads all four, sends the first order, and dies before acking anything.
    read = redis_client.xreadgroup(INFERENCE_GROUP, "inference-dead", {streams.windows: ">"}, count=10)
    assert len(read[0][1]) == 4
    with serving(gateway.app()) as url:
        first = messages[0]
        sent = {
            "idempotency_key": idempotency_key("paper", "GBPJPY", first.bar_ts),
            "account": "paper",
            "instrument": "GBPJPY",
            "bar_ts": first.bar_ts,
            "close": first.close,
            "action": 0,
            "session_id": first.session_id,
            "step": 0,
        }
        headers = {"Authorization": f"Bearer {TOKEN}"}
        assert httpx.post(f"{url}/v1/orders", json=sent, headers=headers).status_code == 200
        with running(settings_for(root, streams, url)) as service:
            wait_until(lambda: all_acked(redis_client, streams), what="the reclaimed entries acked")
            assert metric(service, "smz_inference_pending_reclaimed_total") == 4
            consumers = {
                c["name"]: c["pending"]
                for c in redis_client.xinfo_consumers(streams.windows, INFERENCE_GROUP)
            }
            assert consumers.get("inference-dead") == 0
    assert len(gateway.orders) == 4  # one order per bar
    assert gateway.duplicates == 1  # the first bar was replayed by its key, not placed again
    assert [o.bar_ts for o in gateway.orders.values()] == [m.bar_ts for m in messages]


def test_malformed_entries_and_refused_orders_are_acked_and_do_not_block(
    root: Path, streams: Streams, redis_client: redis.Redis
) -> None:
    gateway = FakeGateway()
    good = window_messages(3, seed=3)
    impossible = good[1].model_copy(deep=True)
    for row in impossible.window:
        row[9] = 2.0  # position_side 2
    with serving(gateway.app()) as url, running(settings_for(root, streams, url)) as service:
        redis_client.xadd(streams.windows, {"data": "{not json"})
        redis_client.xadd(streams.windows, {"other": "field"})
        publish(redis_client, streams.windows, [good[1], impossible, good[0], good[2]])  # good[0] is stale
        wait_until(lambda: all_acked(redis_client, streams), what="all entries acked")
        assert metric(service, "smz_inference_stream_malformed_total") == 3
        assert metric(service, "smz_inference_orders_total", {"status": "conflict"}) == 1
    assert [o.bar_ts for o in gateway.orders.values()] == [good[1].bar_ts, good[2].bar_ts]
    dead = redis_client.xrange(streams.dead)
    assert len(dead) == 3
    assert "position_side (column 9) must be -1, 0 or 1" in dead[2][1]["error"]
    assert dead[0][1]["data"] == "{not json" and "malformed" in dead[0][1]["error"]
