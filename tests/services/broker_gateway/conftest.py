"""Fixtures of the broker gateway tests: settings on a fresh ledger, a real Redis, a unique account,
the app behind a TestClient, the bundled real bars, and a local OANDA v20 protocol stub."""

from __future__ import annotations

import importlib.util
import json
import os
import re
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import unquote

import httpx
import pytest
import redis
from fastapi.testclient import TestClient

from services.broker_gateway.app import create_app
from services.broker_gateway.brokers import Broker
from services.broker_gateway.settings import GatewaySettings
from tests.helpers import free_port

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
        values: dict[str, Any] = {
            "token": TOKEN,
            "admin_token": ADMIN_TOKEN,
            "ledger_db": tmp_path / "ledger.duckdb",
            "redis_url": REDIS_URL,
            "positions_stream": stream,
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


# ----------------------------------------------------------------- OANDA v20 protocol stub
@dataclass
class StubRequest:
    method: str
    path: str
    headers: dict[str, str]
    body: Any


@dataclass
class OandaStub:
    """A local HTTP server speaking the parts of OANDA's v20 REST API the gateway uses, with a netting
    book of one account. Tests set ``price`` (the next fill's price) and script failures."""

    account_id: str = "101-004-1234567-001"
    token: str = "oanda-test-token"
    price: float = 150.0
    requests: list[StubRequest] = field(default_factory=list)
    # Method (POST: market order, PUT: closeout) -> status and body of that method's next call.
    fail_next: dict[str, tuple[int, dict[str, Any]]] = field(default_factory=dict)
    cancel_next: str = ""  # the next market order is cancelled with this reason
    delay_next: float = 0.0  # answer the next order-creating call this late (after executing it)
    url: str = ""
    units: dict[str, int] = field(default_factory=dict)  # instrument -> net units
    trade_ids: dict[str, list[str]] = field(default_factory=dict)
    orders: dict[str, dict[str, Any]] = field(default_factory=dict)  # by client id
    transactions: dict[str, dict[str, Any]] = field(default_factory=dict)
    last_id: int = 6000
    lock: threading.Lock = field(default_factory=threading.Lock)

    def _next_id(self) -> str:
        self.last_id += 1
        return str(self.last_id)

    def _tx(self, **fields: Any) -> dict[str, Any]:
        tx = {
            "id": self._next_id(),
            "accountID": self.account_id,
            "userID": 1234567,
            "batchID": str(self.last_id),
            "time": "2024-01-02T10:00:00.123456789Z",
            **fields,
        }
        self.transactions[tx["id"]] = tx
        return tx

    def handle(self, method: str, path: str, body: Any) -> tuple[int, dict[str, Any]]:
        prefix = f"/v3/accounts/{self.account_id}"
        if not path.startswith(prefix):
            return 404, {"errorMessage": "The Account specified does not exist"}
        rest = path[len(prefix) :]
        if method in self.fail_next:
            return self.fail_next.pop(method)
        if method == "POST" and rest == "/orders":
            return self._market_order(body["order"])
        if method == "PUT" and (m := re.fullmatch(r"/positions/([A-Z0-9_]+)/close", rest)):
            return self._close(m.group(1), body)
        if method == "GET" and (m := re.fullmatch(r"/positions/([A-Z0-9_]+)", rest)):
            return 200, {"position": self._position(m.group(1)), "lastTransactionID": str(self.last_id)}
        if method == "GET" and rest == "/openPositions":
            positions = [self._position(i) for i, u in self.units.items() if u]
            return 200, {"positions": positions, "lastTransactionID": str(self.last_id)}
        if method == "GET" and (m := re.fullmatch(r"/orders/@(.+)", rest)):
            order = self.orders.get(unquote(m.group(1)))
            if order is None:
                return 404, {
                    "errorCode": "ORDER_DOESNT_EXIST",
                    "errorMessage": "The Order specified does not exist",
                }
            return 200, {"order": order, "lastTransactionID": str(self.last_id)}
        if method == "GET" and (m := re.fullmatch(r"/transactions/(\d+)", rest)):
            tx = self.transactions.get(m.group(1))
            if tx is None:
                return 404, {"errorMessage": "The Transaction specified does not exist"}
            return 200, {"transaction": tx, "lastTransactionID": str(self.last_id)}
        return 404, {"errorMessage": f"no such endpoint: {method} {path}"}

    def _position(self, instrument: str) -> dict[str, Any]:
        units = self.units.get(instrument, 0)
        side = {"units": "0", "pl": "0.0000", "unrealizedPL": "0.0000", "resettablePL": "0.0000"}
        long, short = dict(side), dict(side)
        if units > 0:
            long.update(
                units=str(units), averagePrice=f"{self.price:.3f}", tradeIDs=self.trade_ids[instrument]
            )
        elif units < 0:
            short.update(
                units=str(units), averagePrice=f"{self.price:.3f}", tradeIDs=self.trade_ids[instrument]
            )
        return {
            "instrument": instrument,
            "long": long,
            "short": short,
            "pl": "0.0000",
            "unrealizedPL": "0.0000",
        }

    def _market_order(self, order: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        create = self._tx(
            type="MARKET_ORDER",
            instrument=order["instrument"],
            units=order["units"],
            timeInForce=order["timeInForce"],
            positionFill=order["positionFill"],
            clientExtensions=order.get("clientExtensions", {}),
            reason="CLIENT_ORDER",
        )
        client_id = order.get("clientExtensions", {}).get("id", "")
        if self.cancel_next:
            cancel = self._tx(type="ORDER_CANCEL", orderID=create["id"], reason=self.cancel_next)
            self.cancel_next = ""
            self.orders[client_id] = {
                "id": create["id"],
                "state": "CANCELLED",
                "cancellingTransactionID": cancel["id"],
            }
            return 201, {
                "orderCreateTransaction": create,
                "orderCancelTransaction": cancel,
                "relatedTransactionIDs": [create["id"], cancel["id"]],
                "lastTransactionID": cancel["id"],
            }
        units = int(order["units"])
        instrument = order["instrument"]
        price = f"{self.price:.3f}"
        fill = self._tx(
            type="ORDER_FILL",
            orderID=create["id"],
            clientOrderID=client_id,
            instrument=instrument,
            units=order["units"],
            price=price,
            fullVWAP=price,
            reason="MARKET_ORDER",
            pl="0.0000",
            financing="0.0000",
            commission="0.0000",
            accountBalance="100000.0000",
            tradeOpened={"units": order["units"], "price": price},
        )
        fill["tradeOpened"]["tradeID"] = fill["id"]  # OANDA names a trade after its opening fill
        self.units[instrument] = self.units.get(instrument, 0) + units
        self.trade_ids[instrument] = [fill["id"]]
        self.orders[client_id] = {
            "id": create["id"],
            "state": "FILLED",
            "fillingTransactionID": fill["id"],
            "tradeOpenedID": fill["id"],
            "clientExtensions": {"id": client_id},
        }
        return 201, {
            "orderCreateTransaction": create,
            "orderFillTransaction": fill,
            "relatedTransactionIDs": [create["id"], fill["id"]],
            "lastTransactionID": fill["id"],
        }

    def _close(self, instrument: str, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        side = "long" if "longUnits" in body else "short"
        units = self.units.get(instrument, 0)
        if (side == "long" and units <= 0) or (side == "short" and units >= 0):
            reject = self._tx(type="MARKET_ORDER_REJECT", rejectReason="CLOSEOUT_POSITION_DOESNT_EXIST")
            return 400, {
                f"{side}OrderRejectTransaction": reject,
                "errorCode": "CLOSEOUT_POSITION_DOESNT_EXIST",
                "errorMessage": "The Position requested to be closed out does not exist",
                "relatedTransactionIDs": [reject["id"]],
                "lastTransactionID": reject["id"],
            }
        client_id = body.get(f"{side}ClientExtensions", {}).get("id", "")
        create = self._tx(
            type="MARKET_ORDER",
            instrument=instrument,
            units=str(-units),
            timeInForce="FOK",
            positionFill="REDUCE_ONLY",
            reason="POSITION_CLOSEOUT",
            **{f"{side}PositionCloseout": {"instrument": instrument, "units": "ALL"}},
            clientExtensions=body.get(f"{side}ClientExtensions", {}),
        )
        price = f"{self.price:.3f}"
        closed = [
            {"tradeID": t, "units": str(-units), "price": price, "realizedPL": "1.2300"}
            for t in self.trade_ids[instrument]
        ]
        fill = self._tx(
            type="ORDER_FILL",
            orderID=create["id"],
            clientOrderID=client_id,
            instrument=instrument,
            units=str(-units),
            price=price,
            fullVWAP=price,
            reason="MARKET_ORDER_POSITION_CLOSEOUT",
            pl="1.2300",
            tradesClosed=closed,
        )
        self.units[instrument] = 0
        self.trade_ids[instrument] = []
        self.orders[client_id] = {"id": create["id"], "state": "FILLED", "fillingTransactionID": fill["id"]}
        return 200, {
            f"{side}OrderCreateTransaction": create,
            f"{side}OrderFillTransaction": fill,
            "relatedTransactionIDs": [create["id"], fill["id"]],
            "lastTransactionID": fill["id"],
        }


@pytest.fixture
def oanda_stub() -> Iterator[OandaStub]:
    """The stub serving on a free local port in a thread; every request is recorded."""
    stub = OandaStub()

    class Handler(BaseHTTPRequestHandler):
        def _serve(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            raw = self.rfile.read(length) if length else b""
            body = json.loads(raw) if raw else None
            path = self.path.split("?")[0]
            delay = 0.0
            with stub.lock:
                stub.requests.append(StubRequest(self.command, path, dict(self.headers), body))
                if self.headers.get("Authorization") != f"Bearer {stub.token}":
                    status, payload = 401, {"errorMessage": "Insufficient authorization to perform request."}
                else:
                    status, payload = stub.handle(self.command, path, body)
                if self.command in ("POST", "PUT") and stub.delay_next:
                    delay, stub.delay_next = stub.delay_next, 0.0
            time.sleep(delay)  # executed, but answered too late for the client
            data = json.dumps(payload).encode()
            try:
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)
            except OSError:  # the client gave up waiting
                pass

        # http.server's fixed method names.
        do_GET = do_POST = do_PUT = _serve  # noqa: N815

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    stub.url = f"http://127.0.0.1:{server.server_address[1]}"
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    yield stub
    server.shutdown()
    server.server_close()


@pytest.fixture
def port() -> int:
    return free_port()
