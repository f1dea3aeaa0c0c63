"""Risk: the kill switch, the daily loss limit and the stale-bar guard refuse entries, never closes."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from services.broker_gateway.risk import TradingDay
from services.broker_gateway.settings import GatewaySettings
from shared.reward import Action

HOLD, BUY, SELL, CLOSE = (int(a) for a in Action)
T0 = 1_704_189_600  # 2024-01-02 10:00 UTC
DAY = 86_400

Settings = Callable[..., GatewaySettings]


def test_halt_refuses_entries_allows_closes_and_survives_a_restart(
    make_settings: Settings, open_gateway: Any
) -> None:
    settings = make_settings()
    with open_gateway(settings) as gw:
        gw.order("k1", T0, 150.00, BUY)
        assert gw.post("/v1/halt", {"reason": "test"}).status_code == 401  # the order token cannot
        halted = gw.post("/v1/halt", {"reason": "test"}, admin=True)
        assert halted.status_code == 200 and halted.json()["halted"] is True
        assert gw.metric("smz_gateway_halted") == 1
        closed = gw.order("k2", T0 + 60, 150.10, CLOSE, step=1)
        assert closed["status"] == "filled" and closed["trade"]["exit_reason"] == "close"
        for step, action in ((2, BUY), (3, SELL)):
            res = gw.order(f"k{step + 1}", T0 + 60 * step, 150.10, action, step=step, reward="amddp1")
            assert res["status"] == "refused" and "halted" in res["reason"] and res["position_side"] == 0
            assert res["valid"] is True and res["reward"] == -0.05  # the state machine held
        assert gw.metric("smz_gateway_risk_refusals_total", reason="halted") == 2
        assert gw.position()["side"] == 0

    with open_gateway(settings) as gw:  # the kill switch is in the ledger
        assert gw.get("/v1/halt")["halted"] is True and gw.metric("smz_gateway_halted") == 1
        assert gw.order("k5", T0 + 240, 150.10, BUY, step=4)["status"] == "refused"
        assert gw.post("/v1/resume").status_code == 401
        resumed = gw.post("/v1/resume", admin=True)
        assert resumed.status_code == 200 and resumed.json()["halted"] is False
        assert gw.order("k6", T0 + 300, 150.10, BUY, step=5)["status"] == "filled"
        assert gw.metric("smz_gateway_halted") == 0


def test_daily_loss_limit_stops_entries_for_the_rest_of_the_trading_day(
    make_settings: Settings, open_gateway: Any
) -> None:
    with open_gateway(make_settings(max_daily_loss_pips=10)) as gw:
        gw.order("k1", T0, 150.00, BUY)
        loss = gw.order("k2", T0 + 60, 149.97, CLOSE, step=1)["trade"]["pnl_pips"]
        assert -10 < loss < -5  # -3 pips and the spread: still above the limit
        gw.order("k3", T0 + 120, 150.00, SELL, step=2)
        gw.order("k4", T0 + 180, 150.05, CLOSE, step=3)  # -9 pips: -16 today
        refused = gw.order("k5", T0 + 240, 150.05, BUY, step=4)
        assert refused["status"] == "refused" and "daily loss limit" in refused["reason"]
        assert gw.metric("smz_gateway_risk_refusals_total", reason="daily_loss") == 1
        assert gw.metric("smz_gateway_daily_pnl_pips", instrument="GBPJPY", account=gw.account) < -10
        # Late the same trading day (it ends at 17:00 New York, 22:00 UTC in January), still refused;
        # the next trading day trades again, though the UTC day is the same.
        late = T0 - T0 % DAY + 22 * 3600 - 60
        assert gw.order("k6", late, 150.05, SELL, session_id="s2", step=0)["status"] == "refused"
        assert gw.order("k7", late + 60, 150.05, SELL, session_id="s2", step=1)["status"] == "filled"
        assert gw.metric("smz_gateway_daily_pnl_pips", instrument="GBPJPY", account=gw.account) == 0


def test_daily_loss_limit_is_per_account(
    make_settings: Settings, open_gateway: Any, redis_client: Any
) -> None:
    with open_gateway(make_settings(max_daily_loss_pips=5)) as gw:
        gw.order("a1", T0, 150.00, BUY)
        gw.order("a2", T0 + 60, 149.90, CLOSE, step=1)
        assert gw.order("a3", T0 + 120, 149.90, BUY, step=2)["status"] == "refused"
        other = f"{gw.account}-b"
        try:
            gw.account = other
            assert gw.order("b1", T0 + 120, 149.90, BUY, step=2)["status"] == "filled"
        finally:
            redis_client.delete(f"smz:position:{other}:GBPJPY")


def test_stale_bars_refuse_entries(make_settings: Settings, open_gateway: Any) -> None:
    now = int(time.time())
    minute = now - now % 60
    with open_gateway(make_settings(stale_bar_seconds=120)) as gw:
        old = gw.order("k1", minute - 3600, 150.00, BUY)
        assert old["status"] == "refused" and "stale bar" in old["reason"]
        # The bar that closed last (at most a minute ago) trades.
        assert gw.order("k2", minute - 60, 150.00, SELL, step=1)["status"] == "filled"
        assert gw.metric("smz_gateway_risk_refusals_total", reason="stale_bar") == 1


def test_daily_loss_counts_open_positions_at_their_marks(make_settings: Settings, open_gateway: Any) -> None:
    with open_gateway(make_settings(max_daily_loss_pips=10)) as gw:
        gw.order("g1", T0, 150.00, BUY)
        held = gw.order("g2", T0 + 60, 149.90, HOLD, step=1)  # marked at -10 pips and the spread
        assert held["position_side"] == 1 and gw.position()["unrealized_pnl_pips"] < -10
        gw.instrument = "USDJPY"
        refused = gw.order("u1", T0 + 60, 140.00, BUY)
        assert refused["status"] == "refused" and "open positions included" in refused["reason"]
        gw.instrument = "GBPJPY"
        assert gw.order("g3", T0 + 120, 149.90, CLOSE, step=2)["status"] == "filled"  # closes go through


def test_trading_day_bounds_follow_new_york_daylight_saving() -> None:
    day = TradingDay("17:00", "America/New_York")
    winter = 1_704_189_600  # 2024-01-02 10:00 UTC: the day began 2024-01-01 22:00 UTC
    assert day.bounds(winter) == (winter - 12 * 3600, winter + 12 * 3600)
    summer = 1_719_914_400  # 2024-07-02 10:00 UTC: 17:00 New York is 21:00 UTC
    assert day.bounds(summer) == (summer - 13 * 3600, summer + 11 * 3600)
    spring = day.bounds(1_710_252_000)  # 2024-03-12 14:00 UTC, the Monday-evening day after the switch
    assert spring[1] - spring[0] == 86_400
    switch = day.bounds(1_710_086_400)  # 2024-03-10 16:00 UTC: the day holding the switch is 23 h
    assert switch[1] - switch[0] == 23 * 3600
