"""Inputs that must not be accepted, each one the fault pass found accepted, refused now: by both APIs
(before the body is read where the token or the size already decide), and by the feature builder,
whose state a refused bar does not touch."""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest

from services.feature_builder.builder import FeatureBuilder
from services.feature_builder.validation import BarLimits, LiveBar
from services.inference.app import InferenceService, create_app
from services.inference.settings import InferenceSettings
from shared.reward import Action
from shared.wire import OrderRequest
from tests.services.inference.helpers import make_window, serving

BUY = int(Action.BUY)
T0 = 1_704_189_600  # 2024-01-02 10:00 UTC
TEN_YEARS = 10 * 365 * 86_400


# ----------------------------------------------------------------------------- inference
@pytest.fixture
def inference(root: Path) -> Iterator[tuple[httpx.Client, InferenceService]]:
    settings = InferenceSettings(
        checkpoint_dir=root,
        stream_enabled=False,
        token="decisions-token",
        max_pending=4,
        max_body_bytes=65_536,
    )
    service = InferenceService(settings)
    with serving(create_app(settings, service)) as url, httpx.Client(base_url=url, timeout=30) as client:
        client.headers["Authorization"] = "Bearer decisions-token"
        yield client, service


def decision_body(window: np.ndarray, instrument: str = "GBPJPY") -> dict[str, Any]:
    return {"instrument": instrument, "window": window.tolist()}


@pytest.mark.parametrize(
    ("value", "says"),
    [
        (1e39, "non-finite number at row 5, column 2 (as float32)"),  # finite in float64 only
        (1e30, "outside the feature's range [0, 1]"),  # was a SELL
        (-0.5, "outside the feature's range [0, 1]"),
    ],
)
def test_window_values_are_checked_as_float32_and_against_their_ranges(
    inference: tuple[httpx.Client, InferenceService], value: float, says: str
) -> None:
    client, _ = inference
    window = make_window(np.random.default_rng(0)).astype(np.float64)
    window[5, 2] = value
    response = client.post("/v1/decisions", json=decision_body(window))
    assert response.status_code == 422 and says in response.json()["message"]


def test_the_decisions_token_is_checked_before_the_body_is_read(
    inference: tuple[httpx.Client, InferenceService],
) -> None:
    client, _ = inference
    huge = b'{"instrument": "GBPJPY", "window": [' + b"[0.5]," * 2_000_000 + b"[0.5]]}"  # 12 MB
    started = time.perf_counter()
    anonymous = httpx.post(f"{client.base_url}/v1/decisions", content=huge, timeout=30)
    assert anonymous.status_code == 401
    too_big = client.post("/v1/decisions", content=huge, headers={"Content-Type": "application/json"})
    assert too_big.status_code == 413 and "over the limit of 65536 bytes" in too_big.json()["detail"]
    assert time.perf_counter() - started < 5  # no 1.7 s parse of each

    def chunks() -> Iterator[bytes]:  # no Content-Length: counted as it streams in
        for _ in range(200):
            yield b"[0.5]," * 1000

    streamed = client.post("/v1/decisions", content=chunks(), headers={"Content-Type": "application/json"})
    assert streamed.status_code == 413


def test_a_full_queue_sheds_rest_decisions_with_retry_after(
    inference: tuple[httpx.Client, InferenceService],
) -> None:
    _, service = inference
    service.store.wait_ready(30)
    window = make_window(np.random.default_rng(1))
    blocked = service.batcher
    with blocked._submit_lock:  # what max_pending waiting decisions look like
        blocked._pending = blocked.max_pending
    try:
        client, _ = inference
        response = client.post("/v1/decisions", json=decision_body(window))
        assert response.status_code == 503 and response.headers["Retry-After"] == "1"
        assert "waiting" in response.json()["detail"]
        assert service.metrics.registry.get_sample_value("smz_inference_shed_total") == 1
    finally:
        with blocked._submit_lock:
            blocked._pending = 0
    assert client.post("/v1/decisions", json=decision_body(window)).status_code == 200


def test_made_up_instruments_do_not_make_new_metric_series(
    inference: tuple[httpx.Client, InferenceService],
) -> None:
    client, service = inference
    assert service.store.wait_ready(30)
    window = make_window(np.random.default_rng(2))
    for i in range(20):
        assert client.post("/v1/decisions", json=decision_body(window, f"FAKE{i:03d}")).status_code == 200
    text = client.get("/metrics").text
    assert "FAKE" not in text
    assert "smz_inference_decisions_total{action=" in text and 'instrument="other"' in text


# ----------------------------------------------------------------------------- orders
@pytest.mark.parametrize(
    ("fields", "says"),
    [
        ({"bar_ts": 10**17 // 60 * 60}, "in the future"),  # was a 500 after the paper broker filled
        ({"bar_ts": -60}, "before 2000-01-01"),
        ({"bar_ts": T0 + 30}, "whole minute"),
        ({"bar_ts": int(time.time()) // 60 * 60 + TEN_YEARS}, "in the future"),
        ({"close": 1e306}, "finite positive price below"),
        ({"close": 1.7e308}, "finite positive price below"),
        ({"session_id": "s" * 100}, "at most 64 characters"),
        ({"account": "a/b c"}, "should match pattern"),
        ({"pips_per_reward": 1e300}, "less than or equal to 1000000"),
    ],
)
def test_orders_with_impossible_values_get_422_and_change_nothing(
    make_settings: Callable[..., Any], open_gateway: Any, fields: dict[str, Any], says: str
) -> None:
    with open_gateway(make_settings()) as gw:
        values = {"bar_ts": T0, "close": 150.0, **fields}
        bar_ts, close = values.pop("bar_ts"), values.pop("close")
        refused = gw.order("bad", bar_ts, close, BUY, expect=422, **values)
        assert says in refused["message"]
        assert gw.get("/v1/positions") == []
        # A real bar after it is processed (no poisoned "last bar").
        assert gw.order("good", T0, 150.0, BUY)["status"] == "filled"


def test_a_close_outside_the_price_band_is_refused_before_the_broker(
    make_settings: Callable[..., Any], open_gateway: Any
) -> None:
    with open_gateway(make_settings()) as gw:
        gw.order("p1", T0, 150.00, BUY)
        spike = gw.order("p2", T0 + 60, 15_000.0, Action.CLOSE, step=1, expect=422)
        assert "from the last close 150.0" in spike["detail"] and "price band is +-10%" in spike["detail"]
        position = gw.position()
        assert position["side"] == 1 and position["unrealized_pnl_pips"] == -4.0  # no Infinity, no NaN
        assert gw.order("p2", T0 + 60, 150.10, Action.CLOSE, step=1)["status"] == "filled"


def test_the_order_body_limit_and_token_come_before_parsing(
    make_settings: Callable[..., Any], open_gateway: Any
) -> None:
    with open_gateway(make_settings()) as gw:
        order = OrderRequest(
            idempotency_key="k", account=gw.account, instrument="GBPJPY", bar_ts=T0, close=150.0,
            action=BUY, session_id="s1", step=0,
        ).model_dump()  # fmt: skip
        big = json.dumps({**order, "model_version": "v" * 4_000_000})
        assert gw.http.post("/v1/orders", content=big).status_code == 401
        response = gw.http.post(
            "/v1/orders", content=big, headers={"Authorization": "Bearer test-gateway-token"}
        )
        assert response.status_code == 413
        assert gw.get("/v1/positions") == []


# ----------------------------------------------------------------------------- feature builder
class _Nowhere:
    """Publisher and position reader of a builder that must not publish (only warm-up bars here)."""

    account = "faults"

    def publish(self, message: object) -> None:
        raise AssertionError("nothing may be published")


def test_the_feature_builder_refuses_future_bars_and_spikes_without_poisoning_its_state() -> None:
    builder = FeatureBuilder(_Nowhere(), _Nowhere(), limits=BarLimits(max_age_seconds=0, max_jump=0.1))  # type: ignore[arg-type]
    bar = LiveBar("GBPJPY", T0, 150.00, 150.02, 149.98, 150.01)
    assert builder.warm_up([bar]) == 1
    future = replace(bar, ts=T0 + TEN_YEARS)
    spike = LiveBar("GBPJPY", T0 + 60, 15_001.0, 15_002.0, 15_000.0, 15_001.0)  # 100x
    later = replace(bar, ts=T0 + 120)
    assert builder.warm_up([future, spike, later]) == 1  # only the real bar
    state = builder.state("GBPJPY")
    assert state.last_ts == T0 + 120 and state.last_close == 150.01
    assert dict(state.rejected) == {"future": 1, "price_jump": 1}
    metrics = builder.metrics.registry
    assert (
        metrics.get_sample_value(
            "smz_feature_builder_rejected_bars_total", {"instrument": "GBPJPY", "reason": "future"}
        )
        == 1
    )
