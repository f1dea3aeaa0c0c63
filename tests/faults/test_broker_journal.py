"""The OANDA broker and the ledger never drift apart: every fault a fault-injection pass found against
the v20 protocol stub, reproduced, and the ledger ending where the broker is (the broker is the truth).

Each test first shows the fault as the pass found it (what the broker holds), then that the ledger
follows it, the instrument's entries halt while the outcome is unknown and resume once reconciled."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import duckdb
import pytest

from services.broker_gateway.engine import Gateway
from services.broker_gateway.ledger import Ledger
from services.broker_gateway.settings import GatewaySettings
from services.oanda.execution import OandaBroker
from shared.reward import Action
from shared.wire import OrderRequest

HOLD, BUY, SELL, CLOSE = (int(a) for a in Action)
T0 = 1_704_189_600  # 2024-01-02 10:00 UTC
BAD_GATEWAY = (502, {"errorMessage": "Bad Gateway"})

Settings = Callable[..., GatewaySettings]


def broker_for(stub: Any, timeout: float = 2.0) -> OandaBroker:
    return OandaBroker(
        account_id=stub.account_id, token=stub.token, base_url=stub.url, units=1, timeout=timeout
    )


def broker_units(stub: Any) -> int:
    return stub.units.get("GBP_JPY", 0)


def intents(gateway: Gateway) -> list[tuple[str, str]]:
    """(client order id, status) of the gateway's journal."""
    return [(client_id, status) for client_id, status, _ in gateway.ledger.journal()]


def engine(gw: Any) -> Gateway:
    return gw.http.app.state.gateway


def test_a_502_after_the_order_executed_is_looked_up_not_taken_for_a_refusal(
    oanda_stub: Any, make_settings: Settings, open_gateway: Any
) -> None:
    """Found: BUY answered 502 after it executed was recorded "refused"; a second BUY made 2 units."""
    with open_gateway(make_settings(), broker_for(oanda_stub)) as gw:
        oanda_stub.fail_after["POST"] = BAD_GATEWAY
        first = gw.order("b1", T0, 150.00, BUY)
        assert first["status"] == "filled" and first["position_side"] == 1
        again = gw.order("b2", T0 + 60, 150.01, BUY, step=1)
        assert again["status"] == "refused" and "already long" in again["reason"]
        assert broker_units(oanda_stub) == 1 and gw.position()["side"] == 1
        assert gw.get("/v1/halt")["halted"] is False


def test_a_timeout_with_a_failing_lookup_halts_the_instrument_until_reconciled(
    oanda_stub: Any, make_settings: Settings, open_gateway: Any
) -> None:
    """Found: read timeout, order filled, transaction lookup 500: broker long, ledger flat."""
    with open_gateway(make_settings(), broker_for(oanda_stub, timeout=0.3)) as gw:
        oanda_stub.delay_next = 1.0  # executed at once, answered after the client gave up
        oanda_stub.lookups_failing = 2  # the order's lookup, and the reconciliation's right after it
        unknown = gw.order("t1", T0, 150.00, BUY)
        assert unknown["status"] == "refused" and "outcome unknown" in unknown["reason"]
        assert broker_units(oanda_stub) == 1
        assert gw.metric("smz_gateway_broker_unknown_outcomes_total") == 1
        # The reconciliation right after the order read the broker's book: the ledger holds what the
        # broker holds. The call itself is still unknown, so the instrument's entries stay halted.
        assert gw.position()["side"] == 1 and gw.position()["broker_entry_price"] == 150.0
        assert intents(engine(gw)) == [("t1", "unknown")]
        assert gw.metric("smz_gateway_instrument_halted", instrument="GBPJPY") == 1
        closed = gw.order("t2", T0 + 60, 150.10, CLOSE, step=1)  # closes go through a halt
        assert closed["status"] == "filled" and broker_units(oanda_stub) == 0
        halted = gw.order("t3", T0 + 120, 150.10, SELL, step=2)
        assert halted["status"] == "refused" and "halted until reconciled" in halted["reason"]
        assert broker_units(oanda_stub) == 0
        # The broker answers lookups again: the next reconciliation resolves the call; entries resume.
        engine(gw).reconcile()
        assert intents(engine(gw)) == [("t1", "filled"), ("t2", "filled")]
        assert gw.metric("smz_gateway_instrument_halted", instrument="GBPJPY") == 0
        assert gw.order("t4", T0 + 180, 150.10, SELL, step=3)["status"] == "filled"
        assert broker_units(oanda_stub) == -1 and gw.position()["side"] == -1


def test_a_crash_between_the_fill_and_the_ledger_write_is_recorded_at_restart(
    oanda_stub: Any, make_settings: Settings, account: str
) -> None:
    """Found: kill -9 between the fill and the ledger write, same key resent: CLIENT_ORDER_ID_ALREADY_EXISTS,
    "refused"; broker long, ledger flat. The process dies at the seam (the ledger write), as kill -9 would."""
    settings = make_settings()
    request = OrderRequest(
        idempotency_key="c1", account=account, instrument="GBPJPY", bar_ts=T0, close=150.0,
        action=BUY, session_id="s1", step=0,
    )  # fmt: skip

    class Killed(BaseException):
        pass

    def killed(*_args: object, **_kwargs: object) -> None:
        raise Killed

    crashed = Gateway(settings, broker_for(oanda_stub))
    crashed.start()
    crashed.ledger.record = killed  # type: ignore[method-assign]
    with pytest.raises(Killed):
        crashed.submit(request)
    crashed.stop()
    assert broker_units(oanda_stub) == 1
    with duckdb.connect(str(settings.ledger_db), read_only=True) as con:
        assert con.execute("SELECT count(*) FROM orders").fetchone() == (0,)

    restarted = Gateway(settings, broker_for(oanda_stub))
    restarted.start()  # resolves the open journal entry by client id and records the order
    try:
        (position,) = restarted.positions()
        assert position.state.side == 1 and position.broker_entry_price == 150.0
        resent = restarted.submit(request)  # the feature builder re-sends the same window
        assert resent.duplicate and resent.status == "filled" and resent.position_side == 1
        assert broker_units(oanda_stub) == 1  # no second order went out
        assert [r.path.split("/")[-1] for r in oanda_stub.requests if r.method == "POST"] == ["orders"]
        assert [s for _, s in intents(restarted)] == ["filled"]
    finally:
        restarted.stop()


def test_a_position_the_broker_closed_itself_is_closed_in_the_ledger(
    oanda_stub: Any, make_settings: Settings, open_gateway: Any
) -> None:
    """Found: the broker closed the position itself; every CLOSE refused, the ledger stayed long."""
    with open_gateway(make_settings(), broker_for(oanda_stub)) as gw:
        gw.order("x1", T0, 150.00, BUY)
        gw.order("x2", T0 + 60, 149.95, HOLD, step=1)
        oanda_stub.units["GBP_JPY"], oanda_stub.trade_ids["GBP_JPY"] = 0, []  # a stop-out at OANDA
        close = gw.order("x3", T0 + 120, 149.90, CLOSE, step=2)
        assert close["status"] == "refused" and "outcome unknown" in close["reason"]
        assert gw.position()["side"] == 0
        (trade,) = gw.get("/v1/trades", account=gw.account)
        assert trade["exit_reason"] == "reconciled" and trade["exit_price"] == 149.90  # the last close seen
        assert gw.metric("smz_gateway_position_mismatches_total", instrument="GBPJPY") == 1
        assert gw.metric("smz_gateway_instrument_halted", instrument="GBPJPY") == 0  # agreed again
        assert gw.order("x4", T0 + 180, 149.90, SELL, step=3)["status"] == "filled"
        assert broker_units(oanda_stub) == -1


def test_a_buy_against_a_short_the_ledger_does_not_know_is_no_fill(
    oanda_stub: Any, make_settings: Settings, open_gateway: Any
) -> None:
    """Found: BUY while the broker held a short: "filled", ledger long, broker flat (OANDA netted)."""
    with open_gateway(make_settings(), broker_for(oanda_stub)) as gw:
        oanda_stub.units["GBP_JPY"], oanda_stub.trade_ids["GBP_JPY"] = -1, ["7001"]  # behind our back
        buy = gw.order("n1", T0, 150.00, BUY)
        assert buy["status"] == "refused" and "without opening a trade" in buy["reason"]
        assert broker_units(oanda_stub) == 0 and gw.position()["side"] == 0


def test_periodic_reconciliation_follows_the_broker(
    oanda_stub: Any, make_settings: Settings, open_gateway: Any
) -> None:
    settings = make_settings(reconcile_seconds=0.2)
    with open_gateway(settings, broker_for(oanda_stub)) as gw:
        gw.order("p1", T0, 150.00, HOLD)
        oanda_stub.units["GBP_JPY"], oanda_stub.trade_ids["GBP_JPY"] = -1, ["7002"]  # opened by hand
        deadline = 50
        while gw.position()["side"] != -1 and deadline:
            deadline -= 1
            engine(gw)._stopping.wait(0.1)
        assert gw.position()["side"] == -1 and gw.position()["model_version"] == "reconciled"
        assert gw.metric("smz_gateway_position_mismatches_total", instrument="GBPJPY") == 1


def test_one_broker_account_per_gateway(oanda_stub: Any, make_settings: Settings, open_gateway: Any) -> None:
    settings = make_settings()
    with open_gateway(settings, broker_for(oanda_stub)) as gw:
        gw.order("a1", T0, 150.00, HOLD)
        gw.account = f"{gw.account}-other"
        refused = gw.order("a2", T0, 150.00, BUY, expect=409)
        assert "trades account" in refused["detail"]
    other = OandaBroker(account_id="101-004-7654321-001", token="t", base_url=oanda_stub.url)
    with pytest.raises(RuntimeError, match="belongs to broker account"):
        gateway = Gateway(settings, other)
        try:
            gateway.start()
        finally:
            gateway.stop()


def test_the_journal_outlives_the_process(tmp_path: Any) -> None:
    """An open intent written before a broker call is there after a restart, with its request."""
    ledger = Ledger(tmp_path / "ledger.duckdb")
    request = OrderRequest(
        idempotency_key="j1", account="acct", instrument="GBPJPY", bar_ts=T0, close=150.0,
        action=BUY, session_id="s1", step=0,
    )  # fmt: skip
    ledger.add_intent(request, "j1", "open", 1, T0)
    ledger.close()
    reopened = Ledger(tmp_path / "ledger.duckdb")
    (intent,) = reopened.open_intents()
    assert (intent.client_order_id, intent.status, intent.request) == ("j1", "pending", request)
    reopened.close()
