"""Fixtures of the broker gateway tests: settings on a fresh ledger, a real Redis, a unique account,
the app behind a TestClient, the bundled real bars, and a local OANDA v20 protocol stub."""

from __future__ import annotations

import importlib.util
import os
import re
import uuid
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis
from fastapi.testclient import TestClient

from services.broker_gateway.app import create_app
from services.broker_gateway.brokers import Broker
from services.broker_gateway.settings import GatewaySettings
from services.settings import SharedSettings
from tests.helpers import free_port
from tests.oanda_stub import OandaStub, serve_oanda_stub

# The core's fixtures (the real sample bars): one definition, loaded by path since tests/ is no package.
_spec = importlib.util.spec_from_file_location(
    "_shared_test_fixtures", Path(__file__).resolve().parents[2] / "shared" / "conftest.py"
)
assert _spec is not None and _spec.loader is not None
_shared = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_shared)
gbpjpy_sample = _shared.gbpjpy_sample

TOKEN = "test-gateway-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
ADMIN_TOKEN = "test-gateway-admin-token"
ADMIN = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
REDIS_URL = "redis://127.0.0.1:6379/0"


@pytest.fixture(scope="session")
def redis_client() -> redis.Redis:
    client = redis.Redis.from_url(REDIS_URL, socket_connect_timeout=1)
    try:
        client.ping()
    except redis.RedisError:
        pytest.skip(f"no Redis answers at {REDIS_URL}")
    return client


@pytest.fixture
def account(redis_client: redis.Redis) -> Iterator[str]:
    """An account name no other test (or engineer) uses; its Redis keys are deleted afterwards."""
    name = f"test-gw-{uuid.uuid4().hex[:12]}"
    yield name
    for key in redis_client.scan_iter(f"smz:position:{name}:*"):
        redis_client.delete(key)


@pytest.fixture
def stream(redis_client: redis.Redis) -> Iterator[str]:
    """A private positions stream, so tests never feed a running feature builder."""
    name = f"test:smz:positions:{uuid.uuid4().hex[:12]}"
    yield name
    redis_client.delete(name)


@pytest.fixture
def make_settings(
    tmp_path: Path, stream: str, monkeypatch: pytest.MonkeyPatch
) -> Callable[..., GatewaySettings]:
    # Settings come from SMZ_GATEWAY_* too: none of the shell's may leak into a test.
    for name in list(os.environ):
        if name.startswith("SMZ_GATEWAY_"):
            monkeypatch.delenv(name)

    def make(**overrides: Any) -> GatewaySettings:
        shared = {"gateway_token": TOKEN, "redis_url": REDIS_URL, "positions_stream": stream}
        shared |= {k: overrides.pop(k) for k in list(overrides) if k in SharedSettings.model_fields}
        values: dict[str, Any] = {
            "admin_token": ADMIN_TOKEN,
            "ledger_db": tmp_path / "ledger.duckdb",
            "shared": shared,
        }
        values.update(overrides)
        return GatewaySettings(**values)

    return make


@dataclass
class GatewayClient:
    """A TestClient on the real app with helpers that fill in an order's routine fields."""

    http: TestClient
    account: str
    instrument: str = "GBPJPY"

    def order(
        self, key: str, bar_ts: int, close: float, action: int = 0, expect: int = 200, **fields: Any
    ) -> Any:
        body = {
            "idempotency_key": key,
            "account": self.account,
            "instrument": self.instrument,
            "bar_ts": bar_ts,
            "close": close,
            "action": action,
            "session_id": "s1",
            "step": 0,
            **fields,
        }
        response = self.http.post("/v1/orders", json=body, headers=AUTH)
        assert response.status_code == expect, response.text
        return response.json()

    def post(self, path: str, body: Any = None, admin: bool = False) -> httpx.Response:
        return self.http.post(path, json=body, headers=ADMIN if admin else AUTH)

    def get(self, path: str, **params: Any) -> Any:
        response = self.http.get(path, params=params, headers=AUTH)
        assert response.status_code == 200, response.text
        return response.json()

    def position(self) -> dict[str, Any]:
        (pos,) = self.get("/v1/positions", account=self.account, instrument=self.instrument)
        return pos

    def metric(self, name: str, **labels: str) -> float:
        """The value of one sample on /metrics (0 when absent)."""
        want = ",".join(f'{k}="{v}"' for k, v in sorted(labels.items()))
        pattern = re.compile(rf"^{re.escape(name)}(\{{(.*)\}})? (\S+)$")
        for line in self.http.get("/metrics").text.splitlines():
            m = pattern.match(line)
            if m and (m.group(2) or "") == want:
                return float(m.group(3))
        return 0.0


@pytest.fixture
def open_gateway(account: str) -> Callable[..., AbstractContextManager[GatewayClient]]:
    """``with open_gateway(settings) as gw:`` runs the app (startup and shutdown included)."""

    @contextmanager
    def run(settings: GatewaySettings, broker: Broker | None = None) -> Iterator[GatewayClient]:
        with TestClient(create_app(settings, broker)) as http:
            yield GatewayClient(http, account)

    return run


@pytest.fixture
def oanda_stub() -> Iterator[OandaStub]:
    """The OANDA v20 stub serving on a free local port in a thread; every request is recorded."""
    with serve_oanda_stub() as stub:
        yield stub


@pytest.fixture
def port() -> int:
    return free_port()
