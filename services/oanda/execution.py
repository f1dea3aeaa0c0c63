"""OANDA v20 execution: market orders, position closeouts, open positions and order lookups.

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

from services.broker_gateway.brokers import BrokerError, BrokerPosition, Fill, OutcomeUnknownError
from services.oanda.http import PRACTICE_URL, v20_client
from services.oanda.instruments import from_oanda_instrument, to_oanda_instrument

logger = logging.getLogger(__name__)

CLIENT_ID_MAX = 128  # OANDA's limit on a client extension id


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
        self._client = v20_client(base_url, token, timeout)
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
                "instrument": _oanda_name(instrument),
                "units": str(side * self.units),
                "timeInForce": "FOK",
                "positionFill": "DEFAULT",
                "clientExtensions": {"id": client_id},
            }
        }
        fill_key = "orderFillTransaction"
        data = self._order("POST", f"{self._account_path}/orders", body, client_id, fill_key)
        tx = self._fill_tx(data, fill_key, "orderCancelTransaction", "orderRejectTransaction")
        if not tx.get("tradeOpened"):
            # OANDA nets: a BUY against a short the ledger does not know of closes it instead.
            raise OutcomeUnknownError(
                f"OANDA filled the open {client_id} without opening a trade (it reduced or closed a "
                "position the ledger does not hold); reconciling with the broker"
            )
        return _to_fill(tx)

    def close(self, account: str, instrument: str, client_order_id: str, price_hint: float) -> Fill:
        name = _oanda_name(instrument)
        side = self._open_side(name)
        prefix = "long" if side > 0 else "short"
        client_id = oanda_client_id(client_order_id)
        body = {f"{prefix}Units": "ALL", f"{prefix}ClientExtensions": {"id": client_id}}
        fill_key = f"{prefix}OrderFillTransaction"
        data = self._order("PUT", f"{self._account_path}/positions/{name}/close", body, client_id, fill_key)
        return _to_fill(
            self._fill_tx(
                data, fill_key, f"{prefix}OrderCancelTransaction", f"{prefix}OrderRejectTransaction"
            )
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

    def lookup(self, client_order_id: str) -> Fill | None:
        tx = self._lookup_fill_tx(oanda_client_id(client_order_id))
        return None if tx is None else _to_fill(tx)

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
            # The ledger holds a position the broker does not: closed at the broker (a stop-out, a
            # hand), or never opened. The broker is the truth.
            raise OutcomeUnknownError(f"OANDA holds no open {name} position to close; reconciling")
        return 1 if long_units else -1

    def _order(
        self, method: str, path: str, body: dict[str, Any], client_id: str, fill_key: str
    ) -> dict[str, Any]:
        """Send an order. Whenever it may have executed without our knowing (no answer, a 5xx, our client
        id already used), OANDA is asked what became of it by client id."""
        try:
            response = self._client.request(method, path, json=body)
        except (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout) as exc:
            raise BrokerError(f"cannot reach OANDA ({type(exc).__name__}): the order was not sent") from exc
        except httpx.TransportError as exc:
            logger.warning("OANDA did not answer order %s (%s); looking it up", client_id, type(exc).__name__)
            return self._recover(client_id, f"no answer ({type(exc).__name__})", fill_key)
        if response.status_code >= 500:
            logger.warning("OANDA answered order %s with %d; looking it up", client_id, response.status_code)
            return self._recover(client_id, f"OANDA {response.status_code}", fill_key)
        if response.status_code >= 400 and _error_code(response) == "CLIENT_ORDER_ID_ALREADY_EXISTS":
            logger.warning("order %s was sent before; looking it up", client_id)
            return self._recover(client_id, "client id already used", fill_key)
        return self._json(response)

    def _recover(self, client_id: str, cause: str, fill_key: str) -> dict[str, Any]:
        """The order's fill as an order response; BrokerError if OANDA says it never executed,
        OutcomeUnknownError while it cannot tell."""
        tx = self._lookup_fill_tx(client_id)
        if tx is None:
            raise BrokerError(f"{cause}, and OANDA holds no executed order {client_id}: not executed")
        return {fill_key: tx}

    def _lookup_fill_tx(self, client_id: str) -> dict[str, Any] | None:
        """The fill transaction of the order ``client_id``; None if OANDA has it not, or not filled."""
        try:
            response = self._client.get(f"{self._account_path}/orders/@{quote(client_id, safe='')}")
            if response.status_code == 404:
                return None
            if response.status_code >= 400:
                raise OutcomeUnknownError(
                    f"the lookup of order {client_id} answered {response.status_code}: outcome unknown"
                )
            order = (response.json() or {}).get("order") or {}
            state = order.get("state")
            if state == "CANCELLED":
                return None
            if state != "FILLED" or not order.get("fillingTransactionID"):
                raise OutcomeUnknownError(f"order {client_id} is {state}: outcome not known yet")
            tx_response = self._client.get(
                f"{self._account_path}/transactions/{order['fillingTransactionID']}"
            )
            if tx_response.status_code >= 400:
                raise OutcomeUnknownError(
                    f"order {client_id} FILLED, but its fill transaction answered {tx_response.status_code}"
                )
            tx = (tx_response.json() or {}).get("transaction") or {}
        except (httpx.HTTPError, ValueError) as exc:
            raise OutcomeUnknownError(
                f"cannot look up order {client_id} ({type(exc).__name__}: {exc})"
            ) from exc
        if not tx:
            raise OutcomeUnknownError(f"order {client_id} FILLED, but its fill transaction is empty")
        return tx

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
            message = (data.get("errorMessage") if isinstance(data, dict) else None) or response.reason_phrase
            code = _error_code(response)
            raise BrokerError(f"OANDA {response.status_code}: {message}" + (f" ({code})" if code else ""))
        if not isinstance(data, dict):
            raise BrokerError(f"OANDA answered {response.status_code} without a JSON object")
        return data

    @staticmethod
    def _fill_tx(data: dict[str, Any], fill_key: str, cancel_key: str, reject_key: str) -> dict[str, Any]:
        fill = data.get(fill_key)
        if not fill:
            for key, what in ((cancel_key, "cancelled"), (reject_key, "rejected")):
                tx = data.get(key)
                if tx:
                    reason = tx.get("reason") or tx.get("rejectReason") or "no reason given"
                    raise BrokerError(f"OANDA {what} the order: {reason}")
            raise OutcomeUnknownError(f"OANDA's answer holds no {fill_key}")
        return dict(fill)


def _oanda_name(instrument: str) -> str:
    """OANDA's name of ``instrument``; an instrument it has not is a refusal (nothing was sent)."""
    try:
        return to_oanda_instrument(instrument)
    except ValueError as exc:
        raise BrokerError(str(exc)) from exc


def _error_code(response: httpx.Response) -> str:
    try:
        data = response.json()
    except ValueError:
        return ""
    if not isinstance(data, dict):
        return ""
    return str(
        data.get("errorCode")
        or next(
            (v.get("rejectReason") for v in data.values() if isinstance(v, dict) and v.get("rejectReason")),
            "",
        )
    )


def _to_fill(tx: dict[str, Any]) -> Fill:
    price = tx.get("price") or tx.get("fullVWAP")
    if price is None:
        raise OutcomeUnknownError(f"OANDA's fill transaction {tx.get('id')} has no price")
    trades = [tx["tradeOpened"]] if tx.get("tradeOpened") else []
    trades += tx.get("tradesClosed") or []
    trades += [tx["tradeReduced"]] if tx.get("tradeReduced") else []
    return Fill(
        price=float(price),
        order_id=str(tx.get("orderID") or tx.get("id") or ""),
        trade_id=",".join(str(t.get("tradeID", "")) for t in trades),
    )
