"""The OANDA v20 adapter against a local protocol stub: what it sends, what it parses, how it fails;
and the gateway trading through it (broker prices in the ledger, refusals that change nothing)."""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

import duckdb
import pytest
import redis

from services.broker_gateway.brokers import BrokerError, BrokerPosition, OutcomeUnknownError
from services.broker_gateway.settings import GatewaySettings
from services.oanda.execution import OandaBroker, oanda_client_id
from shared.reward import Action
from shared.wire import PositionMessage, position_key

HOLD, BUY, SELL, CLOSE = (int(a) for a in Action)
T0 = 1_704_189_600

Settings = Callable[..., GatewaySettings]


def broker_for(stub: Any, timeout: float = 2.0, **overrides: str) -> OandaBroker:
    values = {"account_id": stub.account_id, "token": stub.token, "base_url": stub.url, **overrides}
    return OandaBroker(units=1, timeout=timeout, **values)


def test_instrument_names_and_client_ids() -> None:
    assert oanda_client_id("acct:GBPJPY:1704189600") == "acct:GBPJPY:1704189600"
    long_id = oanda_client_id("x" * 200)
    assert len(long_id) <= 128 and long_id == oanda_client_id("x" * 200)


def test_open_close_and_sync_speak_v20(oanda_stub: Any) -> None:
    broker = broker_for(oanda_stub)
    base = f"/v3/accounts/{oanda_stub.account_id}"
    oanda_stub.price = 150.013
    fill = broker.open("acct", "GBPJPY", 1, "acct:GBPJPY:1704189600", 150.0)
    sent = oanda_stub.requests[-1]
    assert (sent.method, sent.path) == ("POST", f"{base}/orders")
    assert sent.body == {
        "order": {
            "type": "MARKET",
            "instrument": "GBP_JPY",
            "units": "1",
            "timeInForce": "FOK",
            "positionFill": "DEFAULT",
            "clientExtensions": {"id": "acct:GBPJPY:1704189600"},
        }
    }
    assert sent.headers["Authorization"] == f"Bearer {oanda_stub.token}"
    assert sent.headers["Content-Type"] == "application/json"
    assert sent.headers["Accept-Datetime-Format"] == "RFC3339"
    opened = oanda_stub.transactions[fill.trade_id]
    assert fill.price == 150.013 and opened["type"] == "ORDER_FILL" and fill.order_id == opened["orderID"]
    assert broker.sync("acct") == [BrokerPosition("GBPJPY", 1, 1.0, 150.013)]

    oanda_stub.price = 150.101
    closed = broker.close("acct", "GBPJPY", "acct:GBPJPY:1704189660", 150.1)
    get, put = oanda_stub.requests[-2:]
    assert (get.method, get.path) == ("GET", f"{base}/positions/GBP_JPY")
    assert (put.method, put.path) == ("PUT", f"{base}/positions/GBP_JPY/close")
    assert put.body == {"longUnits": "ALL", "longClientExtensions": {"id": "acct:GBPJPY:1704189660"}}
    assert closed.price == 150.101 and closed.trade_id == fill.trade_id
    assert broker.sync("acct") == []

    short = broker.open("acct", "GBPJPY", -1, "short-open", 150.1)
    assert oanda_stub.requests[-1].body["order"]["units"] == "-1"
    assert broker.sync("acct") == [BrokerPosition("GBPJPY", -1, 1.0, 150.101)]
    assert broker.close("acct", "GBPJPY", "short-close", 150.1).trade_id == short.trade_id
    assert oanda_stub.requests[-1].body == {
        "shortUnits": "ALL",
        "shortClientExtensions": {"id": "short-close"},
    }
    broker.shutdown()


def test_failures_raise_with_oandas_reason(oanda_stub: Any) -> None:
    broker = broker_for(oanda_stub)
    # Closing what the broker does not hold is no refusal: the ledger differs from the broker.
    with pytest.raises(OutcomeUnknownError, match="no open GBP_JPY position"):
        broker.close("acct", "GBPJPY", "c1", 150.0)
    oanda_stub.fail_next["POST"] = (
        400,
        {
            "orderRejectTransaction": {"type": "MARKET_ORDER_REJECT", "rejectReason": "INSUFFICIENT_MARGIN"},
            "errorCode": "INSUFFICIENT_MARGIN",
            "errorMessage": "Insufficient margin to perform the requested operation",
        },
    )
    with pytest.raises(BrokerError, match=r"OANDA 400: Insufficient margin .* \(INSUFFICIENT_MARGIN\)"):
        broker.open("acct", "GBPJPY", 1, "c2", 150.0)
    oanda_stub.cancel_next = "MARKET_HALTED"
    with pytest.raises(BrokerError, match="OANDA cancelled the order: MARKET_HALTED"):
        broker.open("acct", "GBPJPY", 1, "c3", 150.0)
    with pytest.raises(BrokerError, match="OANDA 404: The Account specified does not exist"):
        broker_for(oanda_stub, account_id="101-004-0000000-999").open("acct", "GBPJPY", 1, "c4", 150.0)
    with pytest.raises(BrokerError, match="OANDA 401: Insufficient authorization"):
        broker_for(oanda_stub, token="wrong").sync("acct")
    with pytest.raises(BrokerError, match=r"cannot reach OANDA .* not sent"):
        broker_for(oanda_stub, base_url="http://127.0.0.1:1").open("acct", "GBPJPY", 1, "c5", 150.0)
    assert broker.sync("acct") == []  # nothing executed


def test_a_lost_answer_is_looked_up_by_client_id(oanda_stub: Any) -> None:
    broker = broker_for(oanda_stub, timeout=0.3)
    oanda_stub.price = 150.02
    oanda_stub.delay_next = 1.0  # executed at once, answered after the client gave up
    fill = broker.open("acct", "GBPJPY", 1, "slow:1", 150.0)
    assert fill.price == 150.02 and fill.trade_id
    paths = [r.path for r in oanda_stub.requests]
    assert paths[-2].endswith("/orders/@slow%3A1") and paths[-1].endswith(f"/transactions/{fill.trade_id}")
    assert broker.sync("acct") == [BrokerPosition("GBPJPY", 1, 1.0, 150.02)]


# OANDA's answer to a close it refuses.
_CLOSE_REJECTED = {
    "longOrderRejectTransaction": {"type": "MARKET_ORDER_REJECT", "rejectReason": "MARKET_HALTED"},
    "errorCode": "MARKET_HALTED",
    "errorMessage": "The market is halted",
}


def _assert_ledger_keeps_broker_fills(ledger_db: Path, key: str, trade_id: str) -> None:
    """The ledger keeps the broker's fill next to the model's price."""
    with duckdb.connect(str(ledger_db), read_only=True) as con:
        orders = con.execute(
            "SELECT idempotency_key, status, model_price, broker, broker_fill_price, broker_trade_id "
            "FROM orders ORDER BY bar_ts"
        ).fetchall()
        fills = con.execute("SELECT client_order_id, kind, model_price, broker_price FROM fills").fetchall()
    assert orders == [
        (key, "filled", 150.00, "oanda", 150.013, trade_id),
        ("k2", "refused", 150.10, "oanda", None, None),
        ("k3", "filled", 150.10, "oanda", 150.108, trade_id),
        ("k4", "refused", 150.2, "oanda", None, None),
    ]
    assert sorted(fills) == sorted([(key, "open", 150.00, 150.013), ("k3", "close", 150.10, 150.108)])


def test_gateway_trades_through_oanda(
    oanda_stub: Any,
    make_settings: Settings,
    open_gateway: Any,
    redis_client: redis.Redis,
    caplog: pytest.LogCaptureFixture,
) -> None:
    settings = make_settings()
    with open_gateway(settings, broker_for(oanda_stub)) as gw:
        key = f"{gw.account}:GBPJPY:{T0}"
        oanda_stub.price = 150.013
        assert gw.order(key, T0, 150.00, BUY, model_version="v7")["status"] == "filled"
        assert oanda_stub.requests[-1].body["order"]["clientExtensions"]["id"] == key
        before = gw.position()
        assert (before["entry_price"], before["broker_entry_price"], before["side"]) == (150.00, 150.013, 1)
        state_before = PositionMessage.model_validate_json(
            redis_client.get(position_key(gw.account, "GBPJPY"))
        )

        # The broker refuses the close: refused with OANDA's reason, and the position is unchanged.
        oanda_stub.fail_next["PUT"] = (400, _CLOSE_REJECTED)
        refused = gw.order("k2", T0 + 60, 150.10, CLOSE, step=1)
        assert (refused["status"], refused["position_side"], refused["trade"]) == ("refused", 1, None)
        assert (
            "CLOSE refused by the broker" in refused["reason"] and "The market is halted" in refused["reason"]
        )
        assert gw.position() == {**before, "as_of_bar_ts": T0 + 60}
        # The refused CLOSE did nothing and earns 0; the BUY's equity reward waits for the next mark.
        assert (refused["reward"], refused["settled"], before["reward_pending_bar_ts"]) == (0.0, [], T0)
        after = PositionMessage.model_validate_json(redis_client.get(position_key(gw.account, "GBPJPY")))
        assert after.state == state_before.state and after.as_of_bar_ts == T0 + 60
        assert gw.get("/v1/trades", account=gw.account) == []

        oanda_stub.price = 150.108
        closed = gw.order("k3", T0 + 120, 150.10, CLOSE, step=2)
        assert closed["status"] == "filled" and closed["trade"]["pnl_pips"] == pytest.approx(6.0)
        assert closed["settled"] == [{"bar_ts": T0, "reward": pytest.approx(0.6)}] and closed["reward"] == 0.0
        (trade,) = gw.get("/v1/trades", account=gw.account)
        assert (trade["entry_price"], trade["exit_price"]) == (150.00, 150.10)  # the model's prices
        assert (trade["broker_entry_price"], trade["broker_exit_price"]) == (150.013, 150.108)
        assert trade["model_version"] == "v7" and trade["broker_trade_id"]

        # A cancelled entry opens nothing.
        oanda_stub.cancel_next = "MARKET_HALTED"
        entry = gw.order("k4", T0 + 180, 150.2, SELL, step=3)
        assert (
            entry["status"] == "refused"
            and "MARKET_HALTED" in entry["reason"]
            and entry["position_side"] == 0
        )
        assert gw.metric("smz_gateway_broker_errors_total") == 2
        fill_ids = [
            oanda_stub.orders[key]["fillingTransactionID"],
            oanda_stub.orders["k3"]["fillingTransactionID"],
        ]

    _assert_ledger_keeps_broker_fills(settings.ledger_db, key, fill_ids[0])

    # At startup the gateway compares its positions with the broker's, which is the truth: a position
    # opened at the broker behind the ledger's back is adopted (and counted as a mismatch).
    oanda_stub.units["GBP_JPY"], oanda_stub.trade_ids["GBP_JPY"] = 1, ["9999"]
    with (
        caplog.at_level(logging.WARNING, logger="services.broker_gateway"),
        open_gateway(settings, broker_for(oanda_stub)) as gw,
    ):
        adopted = gw.position()
        assert (adopted["side"], adopted["model_version"], adopted["broker_entry_price"]) == (
            1,
            "reconciled",
            150.108,
        )
        assert gw.metric("smz_gateway_position_mismatches_total", instrument="GBPJPY") == 1
    assert "ledger flat, broker long" in caplog.text


def test_an_entry_on_the_last_bar_opens_and_closes_at_the_broker(
    oanda_stub: Any, make_settings: Settings, open_gateway: Any
) -> None:
    halted = {"errorCode": "MARKET_HALTED", "errorMessage": "The market is halted"}
    with open_gateway(make_settings(), broker_for(oanda_stub)) as gw:
        res = gw.order("last", T0, 150.00, BUY, step=359, last_bar=True, reward="amddp1")
        assert res["status"] == "filled" and res["position_side"] == 0
        trade = res["trade"]
        assert (trade["exit_reason"], trade["bars_held"], trade["pnl_pips"]) == ("session_end", 0, -4.0)
        assert res["reward"] == pytest.approx(1.0 - 1.4)  # the entry's +1, then AMDDP1(-4)
        post, _, put = oanda_stub.requests[-3:]
        assert post.body["order"]["clientExtensions"]["id"] == "last"
        assert put.body["longClientExtensions"]["id"] == "last:session_end"

        # The broker refuses the session-end close: the position stays open, as the broker holds it,
        # and closes at the start of the next session.
        oanda_stub.fail_next["PUT"] = (400, halted)
        res = gw.order("last2", T0 + 60, 150.00, SELL, session_id="s2", step=359, last_bar=True)
        assert res["status"] == "filled" and res["position_side"] == -1 and res["trade"] is None
        # No close happened: the equity reward of the open position waits for its next mark.
        assert "refused the session-end close" in res["reason"] and res["reward"] is None
        assert gw.position()["side"] == -1 and oanda_stub.units["GBP_JPY"] == -1
        res = gw.order("next", T0 + 120, 149.90, HOLD, session_id="s3", step=0)
        assert res["trade"]["exit_reason"] == "session_break" and res["trade"]["pnl_pips"] == pytest.approx(
            6.0
        )
        assert res["position_side"] == 0 and oanda_stub.units["GBP_JPY"] == 0
        # That close settles the SELL's reward: from flat to +6 pips; the HOLD, flat, earns 0.
        assert res["settled"] == [{"bar_ts": T0 + 60, "reward": pytest.approx(0.6)}]
        assert res["reward"] == 0.0
        assert oanda_stub.requests[-1].body["shortClientExtensions"]["id"] == "next:session_break"
