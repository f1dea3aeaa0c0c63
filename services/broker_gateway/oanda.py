"""OANDA v20 REST broker: market orders, position closeouts and open positions over httpx.

One gateway maps onto one OANDA account (``oanda_account_id``): the ``account`` argument of the broker
calls names the gateway's account and is not sent. OANDA nets positions per instrument, so give each
gateway account its own OANDA account.
"""

from __future__ import annotations

import hashlib
import logging
from typing import Any
from urllib.parse import quote

import httpx

from services.broker_gateway.brokers import BrokerError, BrokerPosition, Fill
from shared.instruments import validate_instrument

logger = logging.getLogger(__name__)

PRACTICE_URL = "https://api-fxpractice.oanda.com"
CLIENT_ID_MAX = 128  # OANDA's limit on a client extension id


def to_oanda_instrument(name: str) -> str:
    """GBPJPY -> GBP_JPY: the last three letters are the quote currency (also XAUUSD, DE30EUR)."""
    validate_instrument(name)
    return f"{name[:-3]}_{name[-3:]}"


def from_oanda_instrument(name: str) -> str:
    """GBP_JPY -> GBPJPY."""
    return name.replace("_", "")


def oanda_client_id(client_order_id: str) -> str:
    """The client id sent: the gateway's own id, or a stable digest of it when it is too long."""
    if len(client_order_id) <= CLIENT_ID_MAX:
        return client_order_id
    return "smz-" + hashlib.sha256(client_order_id.encode()).hexdigest()


def _units(value: Any) -> float:
    try:
        return float(value or 0)
    except (TypeError, ValueError):
        return 0.0


class OandaBroker:
    """The v20 REST API of one account. Every failure raises BrokerError with OANDA's own reason."""

    name = "oanda"

    def __init__(
        self,
        account_id: str,
        token: str,
        base_url: str = PRACTICE_URL,
        units: int = 1,
        timeout: float = 10.0,
    ) -> None:
        if units < 1:
            raise ValueError(f"units must be at least 1, got {units}")
        self.account_id = account_id
        self.units = units
        self._client = httpx.Client(
            base_url=base_url.rstrip("/"),
            timeout=timeout,
            headers={
                "Authorization": f"Bearer {token}",
                "Content-Type": "application/json",
                "Accept-Datetime-Format": "RFC3339",
            },
        )
        self._account_path = f"/v3/accounts/{quote(account_id, safe='')}"

    def shutdown(self) -> None:
        self._client.close()

    # ------------------------------------------------------------ orders
    def open(self, account: str, instrument: str, side: int, client_order_id: str, price_hint: float) -> Fill:
        if side not in (1, -1):
            raise BrokerError(f"side must be 1 (long) or -1 (short), got {side}")
        client_id = oanda_client_id(client_order_id)
        body = {
            "order": {
                "type": "MARKET",
                "instrument": to_oanda_instrument(instrument),
                "units": str(side * self.units),
                "timeInForce": "FOK",
                "positionFill": "DEFAULT",
                "clientExtensions": {"id": client_id},
            }
        }
        data = self._order("POST", f"{self._account_path}/orders", body, client_id)
        return self._fill(data, "orderFillTransaction", "orderCancelTransaction", "orderRejectTransaction")

    def close(self, account: str, instrument: str, client_order_id: str, price_hint: float) -> Fill:
        name = to_oanda_instrument(instrument)
        side = self._open_side(name)
        prefix = "long" if side > 0 else "short"
        client_id = oanda_client_id(client_order_id)
        body = {f"{prefix}Units": "ALL", f"{prefix}ClientExtensions": {"id": client_id}}
        data = self._order("PUT", f"{self._account_path}/positions/{name}/close", body, client_id)
        return self._fill(
            data,
            f"{prefix}OrderFillTransaction",
            f"{prefix}OrderCancelTransaction",
            f"{prefix}OrderRejectTransaction",
        )

    def sync(self, account: str) -> list[BrokerPosition]:
        data = self._request("GET", f"{self._account_path}/openPositions")
        out = []
        for pos in data.get("positions", []):
            for side, key in ((1, "long"), (-1, "short")):
                leg = pos.get(key) or {}
                units = abs(_units(leg.get("units")))
                if units:
                    out.append(
                        BrokerPosition(
                            instrument=from_oanda_instrument(pos.get("instrument", "")),
                            side=side,
                            units=units,
                            average_price=_units(leg.get("averagePrice")),
                        )
                    )
        return out

    # ----------------------------------------------------------- helpers
    def _open_side(self, name: str) -> int:
        """Which side OANDA holds open in ``name``: a closeout must name it."""
        data = self._request("GET", f"{self._account_path}/positions/{name}")
        pos = data.get("position") or {}
        long_units = _units((pos.get("long") or {}).get("units"))
        short_units = _units((pos.get("short") or {}).get("units"))
        if long_units and short_units:
            raise BrokerError(f"OANDA holds both a long and a short {name} position; close them by hand")
        if not (long_units or short_units):
            raise BrokerError(f"OANDA holds no open {name} position to close")
        return 1 if long_units else -1

    def _order(self, method: str, path: str, body: dict[str, Any], client_id: str) -> dict[str, Any]:
        """Send an order; when the answer is lost after sending, ask OANDA what became of it."""
        try:
            response = self._client.request(method, path, json=body)
        except (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout) as exc:
            raise BrokerError(f"cannot reach OANDA ({type(exc).__name__}): the order was not sent") from exc
        except httpx.TransportError as exc:
            # The order may have executed: OANDA knows it by our client id.
            logger.warning(
                "OANDA did not answer an order (%s); looking it up by client id %s", exc, client_id
            )
            return self._recover(client_id, exc)
        return self._json(response)

    def _recover(self, client_id: str, cause: Exception) -> dict[str, Any]:
        """The order's fill as an order response, or BrokerError if it did not execute."""
        try:
            response = self._client.get(f"{self._account_path}/orders/@{quote(client_id, safe='')}")
            if response.status_code == 404:
                raise BrokerError(
                    f"OANDA did not answer ({type(cause).__name__}) and has no order {client_id}"
                )
            order = self._json(response).get("order") or {}
            if order.get("state") != "FILLED" or not order.get("fillingTransactionID"):
                raise BrokerError(
                    f"OANDA did not answer ({type(cause).__name__}); "
                    f"order {client_id} is {order.get('state')}"
                )
            tx = self._request("GET", f"{self._account_path}/transactions/{order['fillingTransactionID']}")
        except httpx.HTTPError as exc:
            raise BrokerError(
                f"OANDA did not answer an order and its outcome is UNKNOWN ({exc}); "
                f"check client id {client_id} on the account"
            ) from exc
        return {"orderFillTransaction": tx.get("transaction") or {}}

    def _request(self, method: str, path: str) -> dict[str, Any]:
        try:
            response = self._client.request(method, path)
        except httpx.HTTPError as exc:
            raise BrokerError(f"cannot reach OANDA ({type(exc).__name__}: {exc})") from exc
        return self._json(response)

    @staticmethod
    def _json(response: httpx.Response) -> dict[str, Any]:
        try:
            data = response.json()
        except ValueError:
            data = {}
        if response.status_code >= 400:
            message = data.get("errorMessage") or response.reason_phrase or "error"
            code = data.get("errorCode") or next(
                (
                    v.get("rejectReason")
                    for v in data.values()
                    if isinstance(v, dict) and v.get("rejectReason")
                ),
                "",
            )
            raise BrokerError(f"OANDA {response.status_code}: {message}" + (f" ({code})" if code else ""))
        if not isinstance(data, dict):
            raise BrokerError(f"OANDA answered {response.status_code} without a JSON object")
        return data

    @staticmethod
    def _fill(data: dict[str, Any], fill_key: str, cancel_key: str, reject_key: str) -> Fill:
        fill = data.get(fill_key)
        if not fill:
            for key, what in ((cancel_key, "cancelled"), (reject_key, "rejected")):
                tx = data.get(key)
                if tx:
                    reason = tx.get("reason") or tx.get("rejectReason") or "no reason given"
                    raise BrokerError(f"OANDA {what} the order: {reason}")
            raise BrokerError(f"OANDA's answer holds no {fill_key}")
        price = fill.get("price") or fill.get("fullVWAP")
        if price is None:
            raise BrokerError(f"OANDA's {fill_key} {fill.get('id')} has no price")
        trades = [fill["tradeOpened"]] if fill.get("tradeOpened") else []
        trades += fill.get("tradesClosed") or []
        trades += [fill["tradeReduced"]] if fill.get("tradeReduced") else []
        return Fill(
            price=float(price),
            order_id=str(fill.get("orderID") or fill.get("id") or ""),
            trade_id=",".join(str(t.get("tradeID", "")) for t in trades),
        )
