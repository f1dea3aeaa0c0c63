"""A local HTTP server speaking the parts of OANDA's v20 REST API that the gateway and the feature
builder use, with a netting book of one account and scripted faults. Tests only: it stands in for
OANDA's servers, which cannot be reached here."""

from __future__ import annotations

import json
import re
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import unquote


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
    # Method -> status and body answered for its next call AFTER executing it (a 502 from a proxy).
    fail_after: dict[str, tuple[int, dict[str, Any]]] = field(default_factory=dict)
    lookups_failing: int = 0  # the next N order/transaction lookups answer 500
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
        if method == "GET" and re.fullmatch(r"/(orders/@.+|transactions/\d+)", rest) and self.lookups_failing:
            self.lookups_failing -= 1
            return 500, {"errorMessage": "An unexpected error has occurred"}
        if method == "POST" and rest == "/orders":
            client_id = body["order"].get("clientExtensions", {}).get("id", "")
            if client_id and client_id in self.orders:
                return self._client_id_exists("MARKET_ORDER_REJECT")
            answer = self._market_order(body["order"])
            return self.fail_after.pop(method) if method in self.fail_after else answer
        if method == "PUT" and (m := re.fullmatch(r"/positions/([A-Z0-9_]+)/close", rest)):
            side = "long" if "longUnits" in body else "short"
            client_id = body.get(f"{side}ClientExtensions", {}).get("id", "")
            if client_id and client_id in self.orders:
                return self._client_id_exists(f"{side}OrderRejectTransaction")
            answer = self._close(m.group(1), body)
            return self.fail_after.pop(method) if method in self.fail_after else answer
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

    def _client_id_exists(self, reject_key: str) -> tuple[int, dict[str, Any]]:
        reject = self._tx(type="MARKET_ORDER_REJECT", rejectReason="CLIENT_ORDER_ID_ALREADY_EXISTS")
        key = reject_key if reject_key.endswith("Transaction") else "orderRejectTransaction"
        return 400, {
            key: reject,
            "errorCode": "CLIENT_ORDER_ID_ALREADY_EXISTS",
            "errorMessage": "The client Order ID specified is already assigned to another pending Order",
            "lastTransactionID": reject["id"],
        }

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
        held = self.units.get(instrument, 0)
        if held and (held > 0) != (units > 0):
            # A netting account: the order closes (part of) the opposite position, opening nothing.
            del fill["tradeOpened"]
            fill["tradesClosed"] = [
                {"tradeID": t, "units": order["units"], "price": price, "realizedPL": "0.0000"}
                for t in self.trade_ids[instrument]
            ]
            self.units[instrument] = held + units
            if not self.units[instrument]:
                self.trade_ids[instrument] = []
        else:
            fill["tradeOpened"]["tradeID"] = fill["id"]  # OANDA names a trade after its opening fill
            self.units[instrument] = held + units
            self.trade_ids[instrument] = [*self.trade_ids.get(instrument, []), fill["id"]]
        self.orders[client_id] = {
            "id": create["id"],
            "state": "FILLED",
            "fillingTransactionID": fill["id"],
            "clientExtensions": {"id": client_id},
            **({"tradeOpenedID": fill["id"]} if "tradeOpened" in fill else {}),
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


@contextmanager
def serve_oanda_stub(stub: OandaStub | None = None) -> Iterator[OandaStub]:
    """``stub`` (a new one by default) serving on a free local port in a thread; every request is
    recorded."""
    stub = stub or OandaStub()

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
