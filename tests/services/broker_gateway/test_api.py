"""The HTTP surface: bearer token on every account endpoint, health, readiness, metrics, docs; and
``smz serve broker-gateway`` as a real process that shuts down cleanly on SIGTERM."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

from services.broker_gateway.settings import GatewaySettings
from services.settings import DEFAULT_TOKEN, SharedSettings
from shared.wire import POSITIONS_STREAM

Settings = Callable[..., GatewaySettings]
REPO = Path(__file__).resolve().parents[3]

ORDER = {
    "idempotency_key": "k1",
    "account": "nobody",
    "instrument": "GBPJPY",
    "bar_ts": 1_704_189_600,
    "close": 150.0,
    "action": 1,
    "session_id": "s1",
    "step": 0,
}
PROTECTED = [
    ("POST", "/v1/orders", ORDER),
    ("POST", "/v1/halt", None),
    ("POST", "/v1/resume", None),
    ("GET", "/v1/halt", None),
    ("GET", "/v1/positions", None),
    ("GET", "/v1/trades", None),
    ("GET", "/v1/trade-events", None),
    ("GET", "/v1/rewards", None),
]


@pytest.mark.parametrize(("method", "path", "body"), PROTECTED)
def test_account_endpoints_need_the_token(
    make_settings: Settings, open_gateway: Any, method: str, path: str, body: Any
) -> None:
    with open_gateway(make_settings()) as gw:
        for headers, message in (
            ({}, "missing bearer token"),
            ({"Authorization": "Bearer wrong-token"}, "invalid bearer token"),
            ({"Authorization": "Basic dGVzdDp0ZXN0"}, "missing bearer token"),
        ):
            response = gw.http.request(method, path, json=body, headers=headers)
            assert response.status_code == 401, (headers, response.text)
            assert message in response.json()["detail"]
            assert response.headers["WWW-Authenticate"].startswith("Bearer")
        # Nothing happened behind the refusals.
        assert gw.get("/v1/positions") == [] and gw.get("/v1/halt")["halted"] is False


def test_health_readiness_metrics_and_docs_are_open(make_settings: Settings, open_gateway: Any) -> None:
    with open_gateway(make_settings()) as gw:
        assert gw.http.get("/healthz").json() == {"status": "ok"}
        ready = gw.http.get("/readyz")
        assert ready.status_code == 200 and ready.json()["ledger"] == "ok" and ready.json()["redis"] == "ok"
        metrics = gw.http.get("/metrics")
        assert metrics.status_code == 200 and "smz_gateway_halted 0.0" in metrics.text
        assert gw.http.get("/docs").status_code == 200
        assert "/v1/orders" in gw.http.get("/openapi.json").json()["paths"]


def test_readiness_fails_without_redis(make_settings: Settings, open_gateway: Any) -> None:
    settings = make_settings(redis_url="redis://127.0.0.1:1/0", redis_timeout_seconds=0.2)
    with open_gateway(settings) as gw:
        ready = gw.http.get("/readyz")
        assert ready.status_code == 503 and ready.json()["redis"].startswith("error")
        # Orders still execute and are in the ledger; the failed publication is counted.
        assert gw.order("k1", 1_704_189_600, 150.0, 1)["status"] == "filled"
        assert gw.metric("smz_gateway_publish_errors_total") == 1


def test_settings_defaults_and_checks(make_settings: Settings) -> None:
    # make_settings: only so that no SMZ_GATEWAY_* variable of the shell leaks in.
    settings = GatewaySettings()
    shared = settings.shared
    assert (settings.port, shared.positions_stream, shared.spread_pips) == (8002, POSITIONS_STREAM, 4.0)
    assert shared.gateway_token.get_secret_value() == DEFAULT_TOKEN
    assert settings.risk_limits() == (0.0, 0.0)  # paper: risk limits off unless set
    assert GatewaySettings(max_daily_loss_pips="", stale_bar_seconds="").risk_limits() == (0.0, 0.0)
    with pytest.raises(ValueError, match="broker=oanda needs SMZ_GATEWAY_OANDA_ACCOUNT_ID"):
        GatewaySettings(broker="oanda", shared=SharedSettings(gateway_token="real"))
    oanda = {"broker": "oanda", "oanda_account_id": "101", "oanda_token": "x"}
    with pytest.raises(ValueError, match="needs SMZ_GATEWAY_ADMIN_TOKEN"):
        GatewaySettings(**oanda)
    strong, admin = "0f3a9c41d2b7e8f6a5c4d3e2f1a0b9c8d7e6f5a4", "9e8d7c6b5a4f3e2d1c0b9a8f7e6d5c4b3a2f1e0d"
    placeholders = [
        DEFAULT_TOKEN,  # the paper demo token
        "change-me-gateway-token",  # .env.example
        "dev-paper-token-not-a-secret",  # the k8s dev overlay
        "REPLACE-ME",  # the secret template
        "change-me-gateway-token-0123456789abcdef",  # long, but still the placeholder
        "a" * 40,  # long, one character
    ]
    for weak in placeholders:
        with pytest.raises(ValueError, match="refuses SMZ_GATEWAY_TOKEN"):
            GatewaySettings(**oanda, shared=SharedSettings(gateway_token=weak), admin_token=admin)
        with pytest.raises(ValueError, match="refuses SMZ_GATEWAY_ADMIN_TOKEN"):
            GatewaySettings(**oanda, shared=SharedSettings(gateway_token=strong), admin_token=weak)
    with pytest.raises(ValueError, match="must differ"):
        GatewaySettings(**oanda, shared=SharedSettings(gateway_token=strong), admin_token=strong)
    live = GatewaySettings(**oanda, shared=SharedSettings(gateway_token=strong), admin_token=admin)
    assert live.risk_limits() == (200.0, 120.0)  # on by default where money moves
    assert (
        GatewaySettings(
            **oanda, shared=SharedSettings(gateway_token=strong), admin_token=admin, max_daily_loss_pips=0
        ).risk_limits()[0]
        == 0
    )
    with pytest.raises(ValueError, match="not HH:MM in an IANA zone"):
        GatewaySettings(day_boundary_zone="Mars/Olympus")


def test_smz_serve_runs_until_sigterm(tmp_path: Path, port: int, stream: str, account: str) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SMZ_")}
    env.update(
        SMZ_GATEWAY_PORT=str(port),
        SMZ_GATEWAY_TOKEN="serve-token",
        SMZ_GATEWAY_LEDGER_DB=str(tmp_path / "ledger.duckdb"),
        SMZ_GATEWAY_POSITIONS_STREAM=stream,
    )
    argv = [sys.executable, "-m", "services.cli", "serve", "broker-gateway"]
    proc = subprocess.Popen(argv, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 30
        while True:
            assert proc.poll() is None, proc.stdout.read().decode() if proc.stdout else ""
            try:
                if httpx.get(f"{url}/readyz", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert time.monotonic() < deadline, "the gateway did not become ready"
            time.sleep(0.1)
        order = {**ORDER, "account": account}
        response = httpx.post(f"{url}/v1/orders", json=order, headers={"Authorization": "Bearer serve-token"})
        assert response.status_code == 200 and response.json()["status"] == "filled"
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=15) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    log = proc.stdout.read().decode() if proc.stdout else ""
    assert "Application shutdown complete" in log


def test_smz_serve_explains_bad_settings(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SMZ_")}
    env.update(
        SMZ_GATEWAY_BROKER="oanda", SMZ_GATEWAY_TOKEN="t", SMZ_GATEWAY_LEDGER_DB=str(tmp_path / "l.duckdb")
    )
    argv = [sys.executable, "-m", "services.cli", "serve", "broker-gateway"]
    done = subprocess.run(argv, cwd=REPO, env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 2
    assert "broker=oanda needs SMZ_GATEWAY_OANDA_ACCOUNT_ID and SMZ_GATEWAY_OANDA_TOKEN" in done.stderr


def test_a_nan_price_is_a_clear_422_not_a_500(make_settings: Settings, open_gateway: Any) -> None:
    body = '{"idempotency_key": "k", "account": "a", "instrument": "GBPJPY", "bar_ts": 60, "close": NaN, '
    body += '"action": 1, "session_id": "s", "step": 0}'
    with open_gateway(make_settings()) as gw:
        headers = {"Authorization": "Bearer test-gateway-token", "Content-Type": "application/json"}
        response = gw.http.post("/v1/orders", content=body, headers=headers)
    assert response.status_code == 422
    assert "close" in response.json()["message"]
