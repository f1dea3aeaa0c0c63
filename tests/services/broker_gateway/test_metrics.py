"""The gateway's per-account metrics: each account its own series, and a bounded number of them."""

from __future__ import annotations

from services.broker_gateway.metrics import ACCOUNT_LABELS, OTHER_ACCOUNT, AccountLabels, GatewayMetrics

T0 = 1_704_200_400  # 2024-01-02 13:00 UTC


def value(m: GatewayMetrics, name: str, **labels: str) -> float | None:
    return m.registry.get_sample_value(name, labels)


def test_trade_totals_are_kept_per_account_and_instrument() -> None:
    m = GatewayMetrics()
    m.bar("paper-a", "GBPJPY", T0)
    # Every trade series of an account exists at 0 from its first bar: increase() counts the first trade.
    for name in ("smz_gateway_gross_profit_pips_total", "smz_gateway_gross_loss_pips_total"):
        assert value(m, name, instrument="GBPJPY", account="paper-a") == 0
    assert value(m, "smz_gateway_trades_total", instrument="GBPJPY", account="paper-a", result="loss") == 0
    m.trade("paper-a", "GBPJPY", T0 + 60, 8.0)
    m.trade("paper-a", "GBPJPY", T0 + 120, -5.0)
    m.trade("paper-b", "GBPJPY", T0 + 120, -2.0)
    a = {"instrument": "GBPJPY", "account": "paper-a"}
    b = {"instrument": "GBPJPY", "account": "paper-b"}
    assert value(m, "smz_gateway_realized_pnl_pips", **a) == 3.0
    assert value(m, "smz_gateway_realized_pnl_pips", **b) == -2.0
    assert value(m, "smz_gateway_daily_pnl_pips", **a) == 3.0
    assert value(m, "smz_gateway_trades_total", **a, result="win") == 1
    assert value(m, "smz_gateway_trades_total", **a, result="loss") == 1
    assert value(m, "smz_gateway_trades_total", **b, result="loss") == 1
    # Expectancy = (gross profit - gross loss) / trades, from counters that only grow.
    assert value(m, "smz_gateway_gross_profit_pips_total", **a) == 8.0
    assert value(m, "smz_gateway_gross_loss_pips_total", **a) == 5.0
    assert value(m, "smz_gateway_trade_pnl_pips_count", **a) == 2
    assert value(m, "smz_gateway_trade_pnl_pips_count", **b) == 1


def test_accounts_beyond_the_capacity_count_as_other() -> None:
    labels = AccountLabels(capacity=2)
    assert [labels(a) for a in ("a", "b", "c", "a", "d")] == ["a", "b", OTHER_ACCOUNT, "a", OTHER_ACCOUNT]
    m = GatewayMetrics()
    for i in range(ACCOUNT_LABELS + 5):
        m.trade(f"paper-{i}", "GBPJPY", T0, -1.0)
    accounts = {s.labels["account"] for f in m.registry.collect() for s in f.samples if "account" in s.labels}
    assert len(accounts) == ACCOUNT_LABELS + 1 and OTHER_ACCOUNT in accounts
    assert (
        value(m, "smz_gateway_trades_total", instrument="GBPJPY", account=OTHER_ACCOUNT, result="loss") == 5
    )


def test_the_ledgers_most_recent_accounts_are_named_first_and_room_is_left() -> None:
    labels = AccountLabels(capacity=4)
    labels.restore({"old": 100, "newer": 300, "newest": 400, "middle": 200}, limit=2)
    assert labels("newest") == "newest" and labels("newer") == "newer"
    # The ledger's older accounts do not take the names left for the accounts this process meets.
    assert labels("old") == OTHER_ACCOUNT and labels("middle") == OTHER_ACCOUNT
    assert labels("fresh") == "fresh" and labels("fresher") == "fresher"
    assert labels("one too many") == OTHER_ACCOUNT
