"""The trade reads for dashboards: GET /v1/trades' filters (patterns, time window) and GET
/v1/trade-events (each trade's entry and exit, Grafana's annotations), on real trades of the app."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from services.broker_gateway.settings import GatewaySettings
from services.broker_gateway.trade_views import TradeFilter, re2_problem
from tests.helpers import ROUND_TRIPS, trade_through
from tests.services.broker_gateway.conftest import AUTH, TOKEN

Settings = Callable[..., GatewaySettings]
OTHER = "other-desk"


def _trade(gw: Any) -> None:
    trade_through(gw.http, TOKEN, gw.account)
    trade_through(gw.http, TOKEN, OTHER, ROUND_TRIPS[:1])


def _pairs(trades: list[dict[str, Any]]) -> list[tuple[str, str, int]]:
    return [(t["account"], t["instrument"], t["entry_ts"]) for t in trades]


def test_trades_are_filtered_by_pattern_and_window(make_settings: Settings, open_gateway: Any) -> None:
    with open_gateway(make_settings()) as gw:
        _trade(gw)
        everything = gw.get("/v1/trades")
        assert len(everything) == 5
        mine = gw.get("/v1/trades", account_match=gw.account)
        assert _pairs(mine) == [(gw.account, r[0], r[4]) for r in ROUND_TRIPS]
        # Grafana's regex format of a multi-value variable, and of All (.*): whole-name matches.
        both = gw.get("/v1/trades", account_match=f"({gw.account}|{OTHER})", instrument_match="(GBPJPY)")
        assert {t["instrument"] for t in both} == {"GBPJPY"} and len(both) == 3
        assert gw.get("/v1/trades", account_match=".*", instrument_match=".*") == everything
        assert gw.get("/v1/trades", instrument_match="GBP") == []  # not a substring search
        # The window keeps the trades that overlap it: the first GBPJPY trade is open 10:00-10:03.
        t0 = ROUND_TRIPS[0][4]
        overlap = gw.get("/v1/trades", account=gw.account, start=t0 + 120, end=t0 + 120)
        assert _pairs(overlap) == [(gw.account, "GBPJPY", t0), (gw.account, "EURUSD", t0 + 60)]
        assert gw.get("/v1/trades", account=gw.account, start=t0 + 200, end=t0 + 500) == []
        later = gw.get("/v1/trades", account=gw.account, start=t0 + 600)
        assert [t["entry_ts"] for t in later] == [t0 + 600, t0 + 1200]
        # The limit counts after the filters: the last trade of the other account, not the last trade.
        (last,) = gw.get("/v1/trades", account_match=OTHER, limit=1)
        assert last["account"] == OTHER


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"instrument_match": "(GBPJPY"}, "not an RE2 regular expression"),
        ({"account_match": "x" * 201}, "at most 200 characters"),
        ({"start": 100, "end": 50}, "start (100) is after end (50)"),
        ({"start": -1}, "greater than or equal to 0"),
        ({"kind": "open"}, "'entry' or 'exit'"),
    ],
)
def test_bad_filters_get_422(
    make_settings: Settings, open_gateway: Any, params: dict[str, Any], message: str
) -> None:
    with open_gateway(make_settings()) as gw:
        paths = ["/v1/trade-events"] if "kind" in params else ["/v1/trades", "/v1/trade-events"]
        for path in paths:
            response = gw.http.get(path, params=params, headers=AUTH)
            assert response.status_code == 422, response.text
            assert message in response.text


def test_trade_events_are_the_entries_and_exits(make_settings: Settings, open_gateway: Any) -> None:
    with open_gateway(make_settings()) as gw:
        _trade(gw)
        trades = gw.get("/v1/trades", account=gw.account)
        events = gw.get("/v1/trade-events", account=gw.account)
        assert len(events) == 2 * len(trades) == 8
        assert [e["time"] for e in events] == sorted(e["time"] for e in events)
        entries = gw.get("/v1/trade-events", account=gw.account, kind="entry")
        exits = gw.get("/v1/trade-events", account=gw.account, kind="exit")
        assert (
            sorted(entries + exits, key=lambda e: (e["time"], e["kind"] != "exit", e["instrument"])) == events
        )
        first = trades[0]
        assert entries[0] == {
            "time": first["entry_ts"],
            "kind": "entry",
            "account": gw.account,
            "instrument": "GBPJPY",
            "side": "long",
            "price": 150.0,
            "pnl_pips": None,
            "exit_reason": None,
            "text": "long GBPJPY entry at 150",
            "tags": f"GBPJPY,{gw.account},long",
        }
        (exit_,) = [e for e in exits if (e["time"], e["instrument"]) == (first["exit_ts"], "GBPJPY")]
        assert exit_["price"] == first["exit_price"] == 150.2
        assert exit_["pnl_pips"] == first["pnl_pips"] and exit_["exit_reason"] == first["exit_reason"]
        assert exit_["text"] == f"long GBPJPY exit at 150.2: {first['pnl_pips']:+.1f} pips (close)"
        # A window holds the events inside it, of the trades that overlap it.
        t0 = first["entry_ts"]
        inside = gw.get("/v1/trade-events", account=gw.account, start=t0 + 60, end=t0 + 180)
        assert [(e["kind"], e["instrument"], e["time"]) for e in inside] == [
            ("entry", "EURUSD", t0 + 60),
            ("exit", "EURUSD", t0 + 180),
            ("exit", "GBPJPY", t0 + 180),
        ]


def test_the_filter_checks_its_values() -> None:
    assert re2_problem("(GBPJPY|EURUSD)") is None and re2_problem(".*") is None
    with pytest.raises(ValueError, match="instrument_match"):
        TradeFilter(instrument_match="[")
    with pytest.raises(ValueError, match="limit"):
        TradeFilter(limit=0)
    assert TradeFilter().where() == ("", [])
    where, params = TradeFilter(account="a", start=5).where()
    assert where == " WHERE account = ? AND exit_ts >= make_timestamp(CAST(? AS BIGINT) * 1000000)"
    assert params == ["a", 5]
