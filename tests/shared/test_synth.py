"""The synthetic market: shape of the data, determinism, regimes, the oracle, and the planted edge.

The edge is measured with a small single-session simulator that applies CONTRACT section 5 directly
(entries and CLOSE fill at the bar's close, 4-pip round trip, a position open at the session's last bar
is closed there), so these tests do not depend on the environment module.
Run ``.venv/bin/pytest tests/shared/test_synth.py -m slow -s`` to print the per-seed numbers of the docs.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import pytest
from numpy.lib.stride_tricks import sliding_window_view

from shared.bars import gap_breaks
from shared.schema import WARMUP_BARS
from shared.store import Store
from shared.synth import (
    BUY,
    CLOSE,
    HOLD,
    SELL,
    SyntheticMarket,
    SynthParams,
    _decaying_sum,
    generate_synthetic_market,
    intraday_multiplier,
    oracle_actions,
    regime_runs,
)

SPREAD_PIPS = 4.0
SESSION_BARS = 360

Decide = Callable[[int, int], int]  # (bar index, position side) -> action


# ------------------------------------------------------------------ helpers: sessions and P&L
def tiled_session_starts(ts: np.ndarray) -> np.ndarray:
    """Non-overlapping 360-bar sessions inside gap-free runs, each after WARMUP_BARS of history."""
    breaks = np.flatnonzero(gap_breaks(ts))
    run_starts = np.concatenate([[0], breaks])
    run_ends = np.concatenate([breaks, [len(ts)]])
    starts: list[int] = []
    for run_start, run_end in zip(run_starts.tolist(), run_ends.tolist(), strict=True):
        starts.extend(range(run_start + WARMUP_BARS, run_end - SESSION_BARS + 1, SESSION_BARS))
    return np.array(starts, dtype=np.int64)


def session_trades(close: np.ndarray, pip: float, session_starts: np.ndarray, decide: Decide) -> np.ndarray:
    """P&L in pips after spread of every trade a policy makes, one session at a time (CONTRACT section 5)."""
    trades: list[float] = []
    for start in session_starts.tolist():
        side, entry = 0, 0.0
        for bar in range(start, start + SESSION_BARS):
            action = decide(bar, side)
            if action in (BUY, SELL) and side == 0:
                side, entry = (1 if action == BUY else -1), float(close[bar])
            elif action == CLOSE and side != 0:
                trades.append(side * (float(close[bar]) - entry) / pip - SPREAD_PIPS)
                side = 0
            # anything else is HOLD or an invalid action, which changes nothing
        if side != 0:  # still open at the session's last bar: closed there
            trades.append(side * (float(close[start + SESSION_BARS - 1]) - entry) / pip - SPREAD_PIPS)
    return np.array(trades)


def oracle_policy(market: SyntheticMarket) -> Decide:
    # The oracle's action at every bar for each side (-1, 0, 1), so the loop only looks it up.
    by_side = {side: oracle_actions(market.regime, np.full(len(market.regime), side)) for side in (-1, 0, 1)}

    def decide(bar: int, side: int) -> int:
        return int(by_side[side][bar])

    return decide


def random_policy(n_bars: int, seed: int) -> Decide:
    """Uniform over the legal actions: HOLD/BUY/SELL when flat, HOLD/CLOSE in a position."""
    draws = np.random.default_rng(seed).random(n_bars)

    def decide(bar: int, side: int) -> int:
        if side == 0:
            return (HOLD, BUY, SELL)[int(draws[bar] * 3)]
        return HOLD if draws[bar] < 0.5 else CLOSE

    return decide


def lagged(x: np.ndarray, lag: int) -> np.ndarray:
    """x[t - lag], the first value where that reaches before the start."""
    return np.concatenate([np.full(lag, x[0]), x[:-lag]])


def momentum_rule(close_pips: np.ndarray, lookback: int = 20, k: float = 2.5) -> Decide:
    """Closes only: enter with the 20-bar momentum when it exceeds k times the recent per-bar
    volatility scaled to 20 bars; exit when the 20-bar momentum turns against the position."""
    change = np.diff(close_pips, prepend=close_pips[0])
    window = sliding_window_view(np.concatenate([np.zeros(59), change**2]), 60)
    per_bar_vol = np.sqrt(window.mean(axis=1))
    momentum = close_pips - lagged(close_pips, lookback)
    threshold = k * per_bar_vol * np.sqrt(lookback)

    def decide(bar: int, side: int) -> int:
        if side == 0:
            if momentum[bar] > threshold[bar]:
                return BUY
            return SELL if momentum[bar] < -threshold[bar] else HOLD
        return CLOSE if side * momentum[bar] < 0 else HOLD

    return decide


def trailing_60(x: np.ndarray, reduce: Callable[..., np.ndarray]) -> np.ndarray:
    # Padding with the first value equals using fewer values at the start (it is in every window).
    return reduce(sliding_window_view(np.concatenate([np.full(59, x[0]), x]), 60), axis=1)


def min_max_60(x: np.ndarray, lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
    span = hi - lo
    return np.where(span > 0, (x - lo) / np.where(span > 0, span, 1.0), 0.5)


def mm60(x: np.ndarray) -> np.ndarray:
    return min_max_60(x, trailing_60(x, np.min), trailing_60(x, np.max))


def breakout_rule(market: SyntheticMarket, enter: float = 0.99, min_range: float = 0.8) -> Decide:
    """Features 0-2 only (CONTRACT section 2): enter when the 60-bar momentum and the close are at
    the top (bottom) of their 60-bar ranges while the 60-bar range is expanding; exit once the close
    falls back to the lower (upper) 30% of its range."""
    bars = market.bars
    low_60, high_60 = trailing_60(bars.low, np.min), trailing_60(bars.high, np.max)
    range_position = min_max_60(bars.close, low_60, high_60)
    momentum_60 = bars.close - lagged(bars.close, 60)
    momentum_scaled = min_max_60(
        momentum_60, trailing_60(momentum_60, np.min), trailing_60(momentum_60, np.max)
    )
    price_range = high_60 - low_60
    range_scaled = min_max_60(price_range, trailing_60(price_range, np.min), trailing_60(price_range, np.max))

    def decide(bar: int, side: int) -> int:
        if side == 0:
            if range_scaled[bar] < min_range:
                return HOLD
            if momentum_scaled[bar] >= enter and range_position[bar] >= enter:
                return BUY
            if momentum_scaled[bar] <= 1 - enter and range_position[bar] <= 1 - enter:
                return SELL
            return HOLD
        if (side > 0 and range_position[bar] < 0.3) or (side < 0 and range_position[bar] > 0.7):
            return CLOSE
        return HOLD

    return decide


@dataclass(frozen=True)
class EdgeReport:
    oracle: np.ndarray
    random: np.ndarray
    momentum: np.ndarray
    breakout: np.ndarray

    def line(self, label: str) -> str:
        def cell(trades: np.ndarray) -> str:
            return f"{trades.mean():7.2f} ({len(trades):6d})"

        return (
            f"{label}: oracle {cell(self.oracle)}  random {cell(self.random)}  "
            f"momentum-20 {cell(self.momentum)}  breakout-features {cell(self.breakout)}"
        )


def measure_edge(market: SyntheticMarket, seed: int) -> EdgeReport:
    bars = market.bars
    starts = tiled_session_starts(bars.ts)
    return EdgeReport(
        oracle=session_trades(bars.close, bars.pip, starts, oracle_policy(market)),
        random=session_trades(bars.close, bars.pip, starts, random_policy(len(bars), seed + 1000)),
        momentum=session_trades(bars.close, bars.pip, starts, momentum_rule(bars.close / bars.pip)),
        breakout=session_trades(bars.close, bars.pip, starts, breakout_rule(market)),
    )


def assert_edge(report: EdgeReport) -> None:
    oracle, random, momentum, breakout = report.oracle, report.random, report.momentum, report.breakout
    assert len(oracle) >= 250 and oracle.mean() > 8.0
    assert 10.0 < oracle.mean() < 35.0  # "on the order of 10-30 pips per trade"
    assert len(random) >= 5000 and -6.0 < random.mean() < -2.0
    assert len(momentum) >= 150 and momentum.mean() > 0.5 * oracle.mean()
    assert len(breakout) >= 150 and breakout.mean() > 0.5 * oracle.mean()


@pytest.fixture(scope="module")
def market() -> SyntheticMarket:
    return generate_synthetic_market("GBPJPY", 60_000, seed=0)


@pytest.fixture(scope="module")
def long_market() -> SyntheticMarket:
    return generate_synthetic_market("GBPJPY", 300_000, seed=3)


# ------------------------------------------------------------------------------ determinism
def test_same_seed_gives_identical_market_and_other_seeds_differ() -> None:
    a = generate_synthetic_market("GBPJPY", 20_000, seed=7)
    np.random.seed(123)  # the global numpy state must not matter
    b = generate_synthetic_market("GBPJPY", 20_000, seed=7)
    c = generate_synthetic_market("GBPJPY", 20_000, seed=8)
    for name in ("ts", "open", "high", "low", "close", "volume"):
        assert np.array_equal(getattr(a.bars, name), getattr(b.bars, name)), name
    assert np.array_equal(a.regime, b.regime)
    assert not np.array_equal(a.bars.close, c.bars.close)
    assert not np.array_equal(a.regime, c.regime)
    assert a.seed == 7 and a.params == SynthParams()


# ------------------------------------------------------------------------------ bar shape
@pytest.mark.parametrize(("instrument", "decimals", "level"), [("GBPJPY", 3, 140.0), ("EURUSD", 5, 1.2)])
def test_ohlc_is_valid_and_on_the_price_grid(instrument: str, decimals: int, level: float) -> None:
    bars = generate_synthetic_market(instrument, 50_000, seed=1).bars
    assert bars.instrument == instrument and len(bars) == 50_000
    for name in ("open", "high", "low", "close", "volume"):
        assert getattr(bars, name).dtype == np.float64
    assert np.all(bars.high >= np.maximum(bars.open, bars.close))
    assert np.all(bars.low <= np.minimum(bars.open, bars.close))
    assert np.all(bars.low > 0)
    assert np.array_equal(bars.open[1:], bars.close[:-1])
    assert np.all(bars.volume == 0)
    for prices in (bars.open, bars.high, bars.low, bars.close):
        scaled = prices * 10**decimals
        assert np.allclose(scaled, np.round(scaled), rtol=0, atol=1e-6)
    assert abs(bars.close[0] - level) < 1e-9
    assert 0.8 * level < np.median(bars.close) < 1.2 * level
    assert np.any(bars.high > np.maximum(bars.open, bars.close))  # bars have wicks


def test_timestamps_on_the_minute_grid_with_weekend_and_rare_short_gaps(market: SyntheticMarket) -> None:
    ts = market.bars.ts
    assert ts.dtype == np.int64
    assert ts[0] == np.datetime64("2020-01-06T00:00:00", "s").astype(np.int64)
    assert np.all(ts % 60 == 0)
    assert np.all(np.diff(ts) > 0)
    weekday = (ts // 86400 + 3) % 7  # Monday 0; 1970-01-01 was a Thursday
    hour = (ts % 86400) // 3600
    closed = ((weekday == 4) & (hour >= 22)) | (weekday == 5) | ((weekday == 6) & (hour < 22))
    assert not np.any(closed)
    gap_minutes = np.diff(ts) // 60
    weekend = gap_minutes >= 48 * 60
    n_weeks = (ts[-1] - ts[0]) / (7 * 86400)
    assert weekend.sum() == int(n_weeks)  # one closed weekend per week crossed
    before, after = ts[:-1][weekend], ts[1:][weekend]
    assert np.all((before // 86400 + 3) % 7 == 4) and np.all((before % 86400) >= 21 * 3600 + 56 * 60)
    assert np.all((after // 86400 + 3) % 7 == 6) and np.all((after % 86400) < 22 * 3600 + 4 * 60)
    short = gap_minutes[~weekend]
    assert set(np.unique(short).tolist()) <= {1, 2, 3, 4}  # 0-3 minutes missing
    missing_share = np.mean(short > 1)
    assert 0.0002 < missing_share < 0.005


def test_a_start_inside_the_weekend_begins_at_the_sunday_open() -> None:
    bars = generate_synthetic_market("EURUSD", 100, seed=0, start="2020-01-11T12:00:00Z").bars
    assert bars.ts[0] == np.datetime64("2020-01-12T22:00:00", "s").astype(np.int64)


def test_intraday_cycle_and_fat_tails(long_market: SyntheticMarket) -> None:
    bars, regime = long_market.bars, long_market.regime
    change = np.diff(bars.close) / bars.pip
    flat_move = regime[:-1] == 0
    hour = (bars.ts[1:] % 86400) // 3600
    asian_night = change[flat_move & (hour < 3)].std()
    new_york_open = change[flat_move & (hour == 13)].std()
    assert new_york_open > 2.0 * asian_night
    multiplier = intraday_multiplier(np.arange(0, 86400, 60), SynthParams())
    assert abs(multiplier.mean() - 1.0) < 1e-9
    # Normalised by the intraday sigma, no-trend moves are fat-tailed (a normal has kurtosis 3).
    unit = change[flat_move] / intraday_multiplier(bars.ts[1:], SynthParams())[flat_move]
    kurtosis = np.mean((unit - unit.mean()) ** 4) / unit.var() ** 2
    assert kurtosis > 5.0


# ------------------------------------------------------------------------------ regimes
def test_regime_statistics_match_the_params(long_market: SyntheticMarket) -> None:
    params, regime = long_market.params, long_market.regime
    assert regime.dtype == np.int8 and set(np.unique(regime).tolist()) == {-1, 0, 1}
    assert abs(np.mean(regime != 0) - params.trend_share()) < 0.03
    values, lengths = regime_runs(regime)
    values, lengths = values[1:-1], lengths[1:-1]  # the first and last runs are cut
    assert np.all((values[1:] == 0) != (values[:-1] == 0))  # trends and no-trend stretches alternate
    trend_lengths, flat_lengths = lengths[values != 0], lengths[values == 0]
    assert trend_lengths.min() >= params.trend_min_bars and flat_lengths.min() >= params.flat_min_bars
    assert abs(trend_lengths.mean() / params.trend_mean_bars - 1) < 0.08
    assert abs(flat_lengths.mean() / params.flat_mean_bars - 1) < 0.08
    assert 0.42 < np.mean(values[values != 0] == 1) < 0.58


def test_regime_drives_the_next_move(long_market: SyntheticMarket) -> None:
    bars, regime, params = long_market.bars, long_market.regime, long_market.params
    move = np.diff(bars.close) / bars.pip  # move[t] = close[t+1] - close[t], driven by regime[t]
    drift = params.drift_sigmas * params.sigma_pips
    assert abs(move[regime[:-1] == 1].mean() / drift - 1) < 0.2
    assert abs(move[regime[:-1] == -1].mean() / -drift - 1) < 0.2
    assert abs(move[regime[:-1] == 0].mean()) < 0.05 * drift
    # ...and the volatility rises in trends
    assert move[regime[:-1] != 0].std() > 1.2 * move[regime[:-1] == 0].std()


def test_decaying_sum_matches_the_recursion() -> None:
    shocks = np.random.default_rng(0).standard_normal(3000) * 1e3
    for decay in (0.0, 0.5, 0.9, 0.999, 1.0):
        expected = np.empty_like(shocks)
        level = 0.0
        for t, shock in enumerate(shocks.tolist()):
            level = decay * level + shock
            expected[t] = level
        assert np.allclose(_decaying_sum(shocks, decay), expected, rtol=1e-9, atol=1e-6), decay


def test_params_are_validated() -> None:
    with pytest.raises(ValueError, match="t_dof"):
        SynthParams(t_dof=2.0)
    with pytest.raises(ValueError, match="noise_reversion"):
        SynthParams(noise_reversion=0.7)
    with pytest.raises(ValueError, match="trend_min_bars"):
        SynthParams(trend_min_bars=200)
    with pytest.raises(ValueError, match="n_bars"):
        generate_synthetic_market("GBPJPY", 0, seed=0)


# ------------------------------------------------------------------------------ oracle
def test_oracle_actions_follow_the_rule_and_are_always_legal() -> None:
    regime = np.array([1, -1, 0, 1, -1, 0, 1, -1, 0])
    side = np.array([0, 0, 0, 1, 1, 1, -1, -1, -1])
    expected = [BUY, SELL, HOLD, HOLD, CLOSE, CLOSE, CLOSE, HOLD, CLOSE]
    assert oracle_actions(regime, side).tolist() == expected
    rng = np.random.default_rng(0)
    regime, side = rng.integers(-1, 2, 10_000), rng.integers(-1, 2, 10_000)
    actions = oracle_actions(regime.astype(np.int8), side.astype(np.float32))
    assert np.all(~np.isin(actions, (BUY, SELL)) | (side == 0))
    assert np.all((actions != CLOSE) | (side != 0))
    assert oracle_actions(np.int8(1), np.array([0, 1, -1])).tolist() == [BUY, HOLD, CLOSE]


# ------------------------------------------------------------------------------ store
def test_regimes_round_trip_through_the_store(tmp_path: object, market: SyntheticMarket) -> None:
    with Store(f"{tmp_path}/synth.duckdb") as store:
        assert store.insert_regimes("GBPJPY", market.bars.ts, market.regime) == len(market.bars)
        assert store.insert_regimes("GBPJPY", market.bars.ts[:10], market.regime[:10]) == 0
        ts, regime = store.load_regimes("GBPJPY")
        assert np.array_equal(ts, market.bars.ts) and np.array_equal(regime, market.regime)
        assert regime.dtype == np.int8
        empty_ts, empty_regime = store.load_regimes("EURUSD")
        assert len(empty_ts) == 0 and len(empty_regime) == 0
        with pytest.raises(ValueError):
            store.insert_regimes("EURUSD", market.bars.ts[:3], np.array([0, 2, 1]))


# ------------------------------------------------------------------------------ the planted edge
def test_the_edge_on_a_small_market(market: SyntheticMarket) -> None:
    assert_edge(measure_edge(market, seed=0))


@pytest.mark.slow
@pytest.mark.parametrize("seed", [0, 1, 2, 3, 4])
def test_the_edge_holds_for_several_seeds(seed: int) -> None:
    market = generate_synthetic_market("GBPJPY", 200_000, seed=seed)
    report = measure_edge(market, seed)
    print("\n" + report.line(f"seed {seed}, 200,000 bars"))
    assert_edge(report)


@pytest.mark.slow
def test_generating_years_of_bars_takes_seconds() -> None:
    began = time.perf_counter()
    market = generate_synthetic_market("GBPJPY", 2_900_000, seed=0)
    seconds = time.perf_counter() - began
    print(f"\n2.9 million bars in {seconds:.2f} s")
    assert len(market.bars) == 2_900_000
    assert seconds < 4.0
