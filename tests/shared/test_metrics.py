"""The trading metrics (docs/METRICS.md): by hand, the bootstrap interval of the expectancy against a
slow reference, and the health rule on the synthetic market's policies."""

from __future__ import annotations

import math

import numpy as np
import pytest

from shared.env import MarketData, TradingEnv
from shared.evaluation import evaluate_policy
from shared.metrics import (
    bootstrap_expectancy_ci,
    health,
    max_drawdown,
    trade_metrics,
    validation_metrics,
)
from shared.policies import HoldPolicy, OraclePolicy
from shared.reward import ACTIONS, Action

SIDE = 9  # position_side column of the window's current row


# --------------------------------------------------------------------------------------- by hand
def test_metrics_by_hand() -> None:
    pnl = np.array([10.0, -5.0, 3.0, -2.0, -6.0])
    m = trade_metrics(
        pnl,
        sessions=4,
        action_counts=np.array([10, 3, 2, 5]),
        trade_sessions=np.array([0, 0, 2, 2, 2]),
        trade_sides=np.array([1, -1, 1, 1, 1]),
        flat_action_counts=np.array([4, 3, 2, 1]),
    )
    assert m.trades == 5 and m.sessions == 4 and m.decisions == 20
    assert m.expectancy_pips == pytest.approx(0.0)
    assert m.win_rate == pytest.approx(0.4)
    assert m.avg_win_pips == pytest.approx(6.5) and m.avg_loss_pips == pytest.approx(13 / 3)
    # Expectancy = win% x avg win - loss% x avg loss.
    assert m.expectancy_pips == pytest.approx(0.4 * 6.5 - 0.6 * 13 / 3)
    assert m.sqn == pytest.approx(0.0)
    assert m.max_drawdown_pips == pytest.approx(10.0)  # from +10 down to 0
    assert m.total_pips == pytest.approx(0.0) and m.pips_per_session == pytest.approx(0.0)
    assert m.trades_per_session == 1.25
    assert m.sessions_with_trade_share == 0.5  # sessions 0 and 2 of 4
    assert m.long_entry_share == pytest.approx(0.8)
    # HOLD among the flat decisions (4 of 4 + 3 + 2 + 1), not among all decisions (10 of 20).
    assert m.flat_hold_share == pytest.approx(0.4)
    assert m.action_distribution == {"HOLD": 0.5, "BUY": 0.15, "SELL": 0.1, "CLOSE": 0.25}
    assert m.health == "healthy"  # 1.25 trades a session; 5 entries are too few to judge the sides
    low, high = m.expectancy_ci95
    assert low <= m.expectancy_pips <= high and m.edge is (low > 0)


def test_sqn_and_drawdown() -> None:
    pnl = np.array([2.0, 4.0, -1.0, 3.0])
    m = trade_metrics(pnl, 1, np.array([1, 1, 1, 1]))
    assert m.sqn == pytest.approx(math.sqrt(4) * pnl.mean() / pnl.std(ddof=1))
    assert max_drawdown(np.array([-3.0, 1.0, -4.0])) == pytest.approx(6.0)
    assert max_drawdown(np.array([])) == 0.0


def test_no_trades() -> None:
    m = trade_metrics(np.array([]), 3, np.array([100, 0, 0, 0]), np.array([], np.int64), np.array([]))
    assert m.trades == 0 and m.expectancy_pips == 0.0 and m.expectancy_ci95 == (0.0, 0.0)
    assert not m.edge and m.total_pips == 0.0 and m.pips_per_session == 0.0
    assert m.sessions_with_trade_share == 0.0 and m.long_entry_share == 0.0
    assert m.health == "never_trades"
    # A report as JSON: the interval is a pair.
    assert m.model_dump(mode="json")["expectancy_ci95"] == [0.0, 0.0]


def test_older_callers_without_sessions_sides_or_flat_counts() -> None:
    # One session (the live summary of `smz up`): every trade is in session 0.
    m = trade_metrics(np.array([1.0, -2.0, 4.0]), 1, np.zeros(4, np.int64))
    assert m.long_entry_share is None and m.flat_hold_share is None and m.health == "healthy"
    assert m.expectancy_ci95 == pytest.approx((1.0, 1.0))  # one session: a point, no edge claimed
    assert not m.edge
    with pytest.raises(ValueError, match="trade_sessions"):
        trade_metrics(np.array([1.0]), 2, np.zeros(4, np.int64))
    with pytest.raises(ValueError, match="trade_sessions"):
        trade_metrics(np.array([1.0]), 2, np.zeros(4, np.int64), trade_sessions=np.array([2]))


def test_health_rule_thresholds() -> None:
    assert health(0.049, 100, 0.5) == "never_trades"
    assert health(0.05, 100, 0.5) == "healthy"
    assert health(1.0, 30, 0.96) == "one_sided" and health(1.0, 30, 0.04) == "one_sided"
    assert health(1.0, 30, 0.95) == "healthy"  # more than 95% is one-sided, 95% is not
    assert health(1.0, 29, 1.0) == "healthy"  # fewer than 30 entries are not judged
    assert health(1.0, 1000, None) == "healthy"  # sides unknown
    assert health(0.01, 1000, 1.0) == "never_trades"


def test_validation_metrics_is_a_flat_float_dict() -> None:
    m = trade_metrics(
        np.array([5.0, -1.0, 3.0, 2.0]),
        2,
        np.array([90, 4, 0, 4]),
        trade_sessions=np.array([0, 0, 1, 1]),
        trade_sides=np.array([1, 1, 1, -1]),
        flat_action_counts=np.array([30, 4, 0, 0]),
    )
    v = validation_metrics(m)
    assert all(isinstance(x, float) for x in v.values())
    expected = {
        "validation_expectancy_pips": 2.25,
        "validation_expectancy_ci95_low": m.expectancy_ci95[0],
        "validation_expectancy_ci95_high": m.expectancy_ci95[1],
        "validation_edge": float(m.edge),
        "validation_pips_per_session": 4.5,
        "validation_total_pips": 9.0,
        "validation_trades": 4.0,
        "validation_win_rate": 0.75,
        "validation_sqn": m.sqn,
        "validation_trades_per_session": 2.0,
        "validation_sessions_with_trade_share": 1.0,
        "validation_long_entry_share": 0.75,
        "validation_flat_hold_share": 30 / 34,
        "validation_healthy": 1.0,
        **{f"validation_share_{a.lower()}": m.action_distribution[a] for a in ACTIONS},
    }
    assert v == pytest.approx(expected)
    never = trade_metrics(np.array([]), 5, np.array([10, 0, 0, 0]), np.array([], np.int64))
    assert validation_metrics(never)["validation_healthy"] == 0.0
    assert "validation_long_entry_share" not in validation_metrics(never)  # sides not given


# ------------------------------------------------------------------------------------ bootstrap
def reference_bootstrap(session_trades: list[list[float]], resamples: int, seed: int) -> tuple[float, float]:
    """The definition, one resample at a time: draw sessions with replacement, pool their trades."""
    rng = np.random.default_rng(seed)
    sessions = len(session_trades)
    drawn = rng.integers(0, sessions, size=(resamples, sessions))
    values = []
    for row in drawn:
        pooled = [pnl for s in row for pnl in session_trades[s]]
        if pooled:
            values.append(sum(pooled) / len(pooled))
    low, high = np.quantile(values, [0.025, 0.975])
    return float(low), float(high)


def flatten(session_trades: list[list[float]]) -> tuple[np.ndarray, np.ndarray]:
    pnl = np.array([p for trades in session_trades for p in trades])
    rows = np.array([s for s, trades in enumerate(session_trades) for _ in trades], dtype=np.int64)
    return pnl, rows


def test_bootstrap_matches_the_slow_reference_and_resamples_sessions() -> None:
    session_trades = [[12.0, 9.0, 11.0], [], [-4.0], [-6.0, -5.0], [], [20.0], [1.0, -1.0, 2.0, 0.5]]
    pnl, rows = flatten(session_trades)
    ci = bootstrap_expectancy_ci(pnl, rows, len(session_trades), resamples=500, seed=3)
    assert ci == pytest.approx(reference_bootstrap(session_trades, 500, 3))
    # The trades in another order (the sessions they belong to unchanged): the same interval.
    order = np.random.default_rng(0).permutation(len(pnl))
    assert bootstrap_expectancy_ci(pnl[order], rows[order], 7, resamples=500, seed=3) == pytest.approx(ci)
    # Moving a trade to another session changes it: sessions, not trades, are resampled.
    moved = rows.copy()
    moved[0] = 1
    assert bootstrap_expectancy_ci(pnl, moved, 7, resamples=500, seed=3) != pytest.approx(ci)


def test_bootstrap_keeps_the_correlation_inside_sessions() -> None:
    # Forty sessions of ten identical trades: as uncertain as forty trades, not four hundred.
    rng = np.random.default_rng(1)
    per_session = rng.normal(0.5, 5.0, 40)
    pnl = np.repeat(per_session, 10)
    rows = np.repeat(np.arange(40), 10)
    clustered = np.diff(bootstrap_expectancy_ci(pnl, rows, 40))[0]
    one_per_trade = np.diff(bootstrap_expectancy_ci(pnl, np.arange(400), 400))[0]
    assert clustered > 2.5 * one_per_trade  # sqrt(10) wider, about


def test_bootstrap_is_deterministic_contains_the_expectancy_and_narrows() -> None:
    rng = np.random.default_rng(7)

    def market(sessions: int) -> tuple[np.ndarray, np.ndarray]:
        counts = rng.poisson(2.0, sessions)  # many sessions without a trade
        rows = np.repeat(np.arange(sessions), counts)
        return rng.normal(1.0, 15.0, len(rows)), rows

    few_pnl, few_rows = market(50)
    many_pnl, many_rows = market(2_000)
    few = bootstrap_expectancy_ci(few_pnl, few_rows, 50)
    assert few == bootstrap_expectancy_ci(few_pnl, few_rows, 50)  # fixed seed
    assert few != bootstrap_expectancy_ci(few_pnl, few_rows, 50, seed=1)
    many = bootstrap_expectancy_ci(many_pnl, many_rows, 2_000)
    for (low, high), pnl in ((few, few_pnl), (many, many_pnl)):
        assert low < pnl.mean() < high
    assert many[1] - many[0] < 0.3 * (few[1] - few[0])  # 40x the sessions: about sqrt(40) narrower
    # Through trade_metrics: the same interval, and an edge only when it lies above 0.
    m = trade_metrics(many_pnl, 2_000, np.ones(4), trade_sessions=many_rows)
    assert m.expectancy_ci95 == pytest.approx(many) and m.edge is (many[0] > 0)
    sure = trade_metrics(many_pnl + 5.0, 2_000, np.ones(4), trade_sessions=many_rows)
    assert sure.edge and sure.expectancy_ci95[0] > 0


def test_bootstrap_in_blocks_handles_many_sessions() -> None:
    rows = np.arange(5_000) // 2
    pnl = np.where(rows % 2 == 0, 3.0, -1.0)
    low, high = bootstrap_expectancy_ci(pnl, rows, 2_500, resamples=1_000)
    assert low < 1.0 < high and high - low < 0.2


# --------------------------------------------------------------- the environment's flat decisions
class BuyEveryFewBars:
    """BUY when flat; CLOSE on bars divisible by ``every``: only ever long."""

    name = "buy"

    def __init__(self, every: int) -> None:
        self.every = every

    def act(self, observation: np.ndarray, legal: np.ndarray, bars: np.ndarray) -> np.ndarray:
        flat = observation[:, -1, SIDE] == 0
        close = ~flat & (bars % self.every == 0)
        return np.where(flat, Action.BUY, np.where(close, Action.CLOSE, Action.HOLD)).astype(np.int64)


class BuyThenHold:
    name = "buy-then-hold"

    def act(self, observation: np.ndarray, legal: np.ndarray, bars: np.ndarray) -> np.ndarray:
        return np.where(observation[:, -1, SIDE] == 0, Action.BUY, Action.HOLD).astype(np.int64)


def test_flat_hold_share_counts_only_flat_decisions(
    synthetic: tuple[MarketData, np.ndarray, np.ndarray],
) -> None:
    market, starts, _ = synthetic
    result = evaluate_policy(market, starts[:8], BuyThenHold())
    m = result.metrics
    # One BUY at each session's first bar, then HOLD in the position to the session's end.
    assert m.trades == 8 and m.long_entry_share == 1.0
    assert m.action_distribution["HOLD"] == pytest.approx(359 / 360)
    assert m.flat_hold_share == 0.0
    assert result.flat_action_counts.tolist() == [0, 8, 0, 0]
    # Always HOLD: every decision is flat.
    hold = evaluate_policy(market, starts[:8], HoldPolicy())
    assert hold.flat_action_counts.tolist() == [8 * 360, 0, 0, 0] and hold.metrics.flat_hold_share == 1.0


def test_env_counts_decisions_by_position_and_refuses_bad_actions(
    synthetic: tuple[MarketData, np.ndarray, np.ndarray],
) -> None:
    market, starts, _ = synthetic
    env = TradingEnv(market)
    env.reset(starts[:3])
    env.step(np.array([Action.BUY, Action.HOLD, Action.CLOSE]))  # all flat
    env.step(np.array([Action.HOLD, Action.SELL, Action.BUY]))  # row 0 long; rows 1, 2 flat
    env.step(np.array([Action.CLOSE, Action.CLOSE, Action.HOLD]))  # rows 1, 2 in position
    assert env.action_counts.tolist() == [3, 2, 1, 3]
    assert env.flat_action_counts.tolist() == [1, 2, 1, 1]
    for bad in (
        np.array([0, 1, 4]),
        np.array([0, -1, 0]),
        np.array([0.0, 1.0, 2.0]),
        np.array([0, 0, 128], np.uint8),
    ):
        with pytest.raises(ValueError, match="actions must be integers"):
            env.step(bad)
    assert env.action_counts.tolist() == [3, 2, 1, 3]


# ------------------------------------------------------------------- health on the synthetic market
def test_oracle_is_healthy_with_an_edge(synthetic: tuple[MarketData, np.ndarray, np.ndarray]) -> None:
    market, starts, regime = synthetic
    m = evaluate_policy(market, starts, OraclePolicy(regime)).metrics
    assert m.health == "healthy" and m.trades >= 30
    assert 0.2 < m.long_entry_share < 0.8
    assert m.edge and m.expectancy_ci95[0] > 0 and m.expectancy_ci95[0] < m.expectancy_pips
    # It holds almost every bar, and that is not judged.
    assert m.action_distribution["HOLD"] > 0.95


def test_never_trading_and_one_sided_policies_are_flagged(
    synthetic: tuple[MarketData, np.ndarray, np.ndarray],
) -> None:
    market, starts, _ = synthetic
    hold = evaluate_policy(market, starts, HoldPolicy()).metrics
    assert hold.health == "never_trades" and hold.trades == 0 and hold.flat_hold_share == 1.0
    assert hold.expectancy_ci95 == (0.0, 0.0) and not hold.edge
    buyer = evaluate_policy(market, starts, BuyEveryFewBars(30)).metrics
    assert buyer.health == "one_sided" and buyer.long_entry_share == 1.0 and buyer.trades >= 30
    assert buyer.trades_per_session > 1
