"""The vectorised environment against a literal one-session reading of CONTRACT sections 2 and 5."""

from __future__ import annotations

import math

import numpy as np
import pytest

from shared.bars import Bars
from shared.dataset import build_dataset
from shared.env import EXIT_CLOSE, EXIT_SESSION_END, EnvConfig, MarketData, TradingEnv
from shared.reward import Action, amddp1

SPREAD = 4.0


def reference_session(close: np.ndarray, start: int, actions: list[int], pip: float, bars: int = 360):
    """One session, one bar at a time, written straight from the tables of docs/CONTRACT.md."""
    side, entry, entry_bar = 0, 0.0, 0
    peak = min_dd = acc_dd = 0.0
    rewards, trades, positions = [], [], []
    for k in range(bars):
        b = start + k
        c = close[b]
        # Position features seen at this bar, before acting.
        if side == 0:
            positions.append([0.0] * 6)
        else:
            p = side * (c - entry) / pip - SPREAD
            if b > entry_bar:
                peak = max(peak, p)
                dd = p - peak
                min_dd = min(min_dd, dd)
                acc_dd += -dd
            dd = p - peak
            positions.append(
                [
                    side,
                    math.tanh(p / 100),
                    math.tanh((b - entry_bar) / 100),
                    math.tanh(dd / 100),
                    math.tanh(min_dd / 100),
                    math.tanh(acc_dd / 100),
                ]
            )
        a = actions[k]
        if a == Action.HOLD:
            r = -0.05 if side == 0 else 0.0
        elif a in (Action.BUY, Action.SELL):
            if side == 0:
                r = 1.0
                side = 1 if a == Action.BUY else -1
                entry, entry_bar = c, b
                peak, min_dd, acc_dd = -SPREAD, 0.0, 0.0
            else:
                r = -1.0
        elif side != 0:
            pnl = side * (c - entry) / pip - SPREAD
            r = float(amddp1(pnl))
            trades.append((side, entry_bar, b, entry, c, pnl, EXIT_CLOSE))
            side = 0
        else:
            r = -0.5
        if k == bars - 1 and side != 0:
            pnl = side * (c - entry) / pip - SPREAD
            r += float(amddp1(pnl))
            trades.append((side, entry_bar, b, entry, c, pnl, EXIT_SESSION_END))
            side = 0
        rewards.append(max(-3.0, min(3.0, r)))
    return rewards, trades, positions


@pytest.fixture(scope="module")
def market(gbpjpy_sample: Bars) -> MarketData:
    ds = build_dataset(gbpjpy_sample)
    return MarketData(gbpjpy_sample.instrument, gbpjpy_sample.ts, gbpjpy_sample.close, ds.features)


@pytest.fixture(scope="module")
def starts(gbpjpy_sample: Bars) -> np.ndarray:
    ds = build_dataset(gbpjpy_sample)
    return ds.session_starts[:: max(1, len(ds.session_starts) // 24)][:24]


def test_vectorised_env_equals_the_reference_on_random_actions(
    market: MarketData, starts: np.ndarray
) -> None:
    rng = np.random.default_rng(7)
    # Sticky random actions so that positions last long enough to exercise the trackers.
    raw = rng.choice(4, size=(360, len(starts)), p=[0.85, 0.05, 0.05, 0.05])
    env = TradingEnv(market, EnvConfig(reward="amddp1"))
    obs = env.reset(starts)
    got_rewards, got_positions = [], []
    for k in range(360):
        got_positions.append(obs[:, -1, 9:].copy())
        assert np.array_equal(obs[:, 0, 9:], obs[:, -1, 9:])  # same on every window row
        res = env.step(raw[k])
        got_rewards.append(res.reward)
        obs = res.observation
        assert res.done.all() == (k == 359)
    log = env.trade_log()
    for row, start in enumerate(starts):
        rewards, trades, positions = reference_session(market.close, int(start), raw[:, row].tolist(), 0.01)
        np.testing.assert_allclose([r[row] for r in got_rewards], rewards, rtol=0, atol=1e-12)
        np.testing.assert_allclose([p[row] for p in got_positions], positions, rtol=0, atol=1e-6)
        mine = np.flatnonzero(log.session == row)
        assert len(mine) == len(trades)
        for i, (side, entry_bar, exit_bar, entry, exit_price, pnl, reason) in zip(mine, trades, strict=True):
            assert log.side[i] == side
            assert log.entry_ts[i] == market.ts[entry_bar] and log.exit_ts[i] == market.ts[exit_bar]
            assert log.entry_price[i] == entry and log.exit_price[i] == exit_price
            assert log.pnl_pips[i] == pytest.approx(pnl, abs=1e-9)
            assert log.bars_held[i] == exit_bar - entry_bar
            assert log.exit_reason[i] == reason


def test_every_reward_table_row() -> None:
    # Rows: flat, and long (opened at the first step). Price flat at 150, so a close earns AMDDP1(-4).
    env = TradingEnv(handmade_market([150.0] * 80), EnvConfig(session_bars=20, reward="amddp1"))
    table = {
        Action.HOLD: (-0.05, 0.0),
        Action.BUY: (1.0, -1.0),
        Action.SELL: (1.0, -1.0),
        Action.CLOSE: (-0.5, float(amddp1(-SPREAD))),
    }
    for action, (flat_reward, long_reward) in table.items():
        env.reset(np.array([40, 40]))
        env.step(np.array([Action.HOLD, Action.BUY]))
        res = env.step(np.array([action, action]))
        assert res.reward.tolist() == pytest.approx([flat_reward, long_reward], abs=1e-12), action.name


def test_invalid_actions_change_no_state(market: MarketData, starts: np.ndarray) -> None:
    env = TradingEnv(market, EnvConfig(reward="amddp1"))
    env.reset(starts[:2])
    env.step(np.array([Action.BUY, Action.CLOSE]))  # row 0 opens long; row 1 closes while flat
    state = (env.side.copy(), env.entry_price.copy(), env.entry_bar.copy(), env.trackers.copy())
    res = env.step(np.array([Action.SELL, Action.CLOSE]))
    assert res.valid.tolist() == [False, False]
    assert res.reward.tolist() == [-1.0, -0.5]
    assert np.array_equal(env.side, state[0]) and np.array_equal(env.entry_price, state[1])
    assert np.array_equal(env.entry_bar, state[2])
    res = env.step(np.array([Action.BUY, Action.HOLD]))
    assert res.valid.tolist() == [False, True] and res.reward.tolist() == [-1.0, -0.05]
    assert env.side.tolist() == [1, 0]
    assert len(env.trade_log()) == 0


def test_session_end_closes_and_counts_the_trade(market: MarketData, starts: np.ndarray) -> None:
    env = TradingEnv(market, EnvConfig(session_bars=10, reward="amddp1"))
    env.reset(starts[:1])
    for _ in range(9):
        env.step(np.array([Action.HOLD]))
    last = int(env.bar[0])
    res = env.step(np.array([Action.BUY]))  # opens at the last bar and is closed there at once
    assert res.done.all()
    log = env.trade_log()
    assert len(log) == 1 and log.exit_reason[0] == EXIT_SESSION_END and log.bars_held[0] == 0
    assert log.pnl_pips[0] == pytest.approx(-SPREAD)
    assert log.exit_ts[0] == market.ts[last]
    assert res.reward[0] == pytest.approx(1.0 + float(amddp1(-SPREAD)))


def test_fills_at_the_bar_close_with_the_spread(market: MarketData, starts: np.ndarray) -> None:
    env = TradingEnv(market, EnvConfig(reward="amddp1"))
    env.reset(starts[:1])
    b0 = int(env.bar[0])
    env.step(np.array([Action.SELL]))
    for _ in range(4):
        env.step(np.array([Action.HOLD]))
    res = env.step(np.array([Action.CLOSE]))
    pnl = (market.close[b0] - market.close[b0 + 5]) / 0.01 - SPREAD
    assert env.trade_log().pnl_pips[0] == pytest.approx(pnl, abs=1e-9)
    assert res.reward[0] == pytest.approx(float(np.clip(amddp1(pnl), -3, 3)))


def handmade_market(close: list[float]) -> MarketData:
    n = len(close)
    ts = 1_500_000_000 + 60 * np.arange(n, dtype=np.int64)
    return MarketData("GBPJPY", ts, np.asarray(close, dtype=np.float64), np.zeros((n, 9)))


def test_reward_is_clipped_both_ways() -> None:
    # 100 pips against a short: AMDDP1 = -3 - tanh((104 - 30) / 30) < -3, clipped to -3.
    close = [150.0] * 40 + [151.0] * 400
    env = TradingEnv(handmade_market(close), EnvConfig(session_bars=20, reward="amddp1"))
    env.reset(np.array([39, 39]))
    res = env.step(np.array([Action.SELL, Action.BUY]))
    assert res.reward.tolist() == [1.0, 1.0]
    res = env.step(np.array([Action.CLOSE, Action.CLOSE]))
    assert float(amddp1(-104.0)) < -3.0 and float(amddp1(96.0)) > 2.8
    assert res.reward[0] == -3.0
    assert res.reward[1] == pytest.approx(float(amddp1(96.0)))  # inside the range: unclipped


def test_position_features_by_hand() -> None:
    close = [150.0] * 40 + [150.10, 150.30, 150.05, 150.20] + [150.0] * 400
    env = TradingEnv(handmade_market(close), EnvConfig(session_bars=20))
    env.reset(np.array([39]))
    env.step(np.array([Action.BUY]))  # entry at 150.00 on bar 39
    seen = [env.step(np.array([Action.HOLD])).observation[0, -1, 9:] for _ in range(4)]
    # Bars 40..43 after the step: P&L = 10, 30, 5, 20 minus the 4-pip spread.
    pnl = [6.0, 26.0, 1.0, 16.0]
    dd = [0.0, 0.0, -25.0, -10.0]
    min_dd = [0.0, 0.0, -25.0, -25.0]
    acc = [0.0, 0.0, 25.0, 35.0]
    for k in range(3):
        expected = [
            1.0,
            math.tanh(pnl[k + 1] / 100),
            math.tanh((k + 2) / 100),
            math.tanh(dd[k + 1] / 100),
            math.tanh(min_dd[k + 1] / 100),
            math.tanh(acc[k + 1] / 100),
        ]
        np.testing.assert_allclose(seen[k], expected, atol=1e-6)


def test_window_rows_are_the_last_32_bars(market: MarketData, starts: np.ndarray) -> None:
    env = TradingEnv(market)
    obs = env.reset(starts[:3])
    for row, b in enumerate(starts[:3]):
        np.testing.assert_array_equal(obs[row, :, :9], market.features[b - 31 : b + 1])
    assert obs.dtype == np.float32 and obs.shape == (3, 32, 15)


def test_bad_actions_and_starts_are_refused(market: MarketData) -> None:
    env = TradingEnv(market)
    with pytest.raises(ValueError, match="session starts"):
        env.reset(np.array([0]))
    env.reset(np.array([100]))
    with pytest.raises(ValueError, match="actions must be"):
        env.step(np.array([4]))
    with pytest.raises(ValueError, match="expected 1 actions"):
        env.step(np.array([0, 0]))


def test_equity_reward_adds_up_to_each_trades_pnl(market: MarketData, starts: np.ndarray) -> None:
    """Under the (default) equity reward a session's rewards sum to its trades' P&L / 10 plus the
    invalid penalties, bar spikes included (it is not clipped), and trades, P&L and observations are
    those of the amddp1 reward."""
    rng = np.random.default_rng(3)
    raw = rng.choice(4, size=(360, len(starts)), p=[0.85, 0.05, 0.05, 0.05])
    spec = TradingEnv(market, EnvConfig(reward="amddp1"))
    pips = TradingEnv(market, EnvConfig(pips_per_reward=10.0))
    assert np.array_equal(spec.reset(starts), pips.reset(starts))
    total = np.zeros(len(starts))
    penalties = np.zeros(len(starts))
    spikes = np.zeros(len(starts), bool)
    for k in range(360):
        legal = pips.legal_actions()[np.arange(len(starts)), raw[k]]
        penalties += np.where(legal, 0.0, np.where(raw[k] == Action.CLOSE, -0.5, -1.0))
        res_spec, res_pips = spec.step(raw[k]), pips.step(raw[k])
        assert np.array_equal(res_spec.observation, res_pips.observation)
        assert np.array_equal(res_spec.valid, res_pips.valid)
        total += res_pips.reward
        spikes |= np.abs(res_pips.reward) >= 3.0  # a bar of 30 pips or more
    log_spec, log = spec.trade_log(), pips.trade_log()
    assert np.array_equal(log.pnl_pips, log_spec.pnl_pips) and len(log) > 50
    per_session = np.bincount(log.session, weights=log.pnl_pips, minlength=len(starts))
    assert 1 <= spikes.sum() <= 4  # real GBPJPY bars: a few sessions hold one, and still add up
    np.testing.assert_allclose(total, per_session / 10.0 + penalties, rtol=0, atol=1e-9)


def test_equity_reward_by_hand() -> None:
    # A long opened at 150.00 (spread 4), marked at 150.10 and 150.30, closed at 150.05.
    close = [150.0] * 40 + [150.10, 150.30, 150.05] + [150.0] * 400
    env = TradingEnv(handmade_market(close), EnvConfig(session_bars=20, pips_per_reward=10.0))
    env.reset(np.array([39, 39]))
    steps = [
        ([Action.BUY, Action.HOLD], [(10 - 4) / 10, 0.0]),  # entry: the spread, then 150.00 -> 150.10
        ([Action.HOLD, Action.CLOSE], [20 / 10, -0.5]),  # 150.10 -> 150.30; CLOSE when flat: penalty
        ([Action.HOLD, Action.SELL], [-25 / 10, (25 - 4) / 10]),  # 150.30 -> 150.05; short from 150.30
        ([Action.CLOSE, Action.HOLD], [0.0, 5 / 10]),  # long exits at 150.05 (marked); 150.05 -> 150.00
    ]
    for actions, want in steps:
        res = env.step(np.array(actions))
        assert res.reward.tolist() == pytest.approx(want, abs=1e-9), actions
    assert env.trade_log().pnl_pips[0] == pytest.approx(1.0)  # 5 pips - 4 spread = the rewards' sum x 10
    with pytest.raises(ValueError, match="unknown reward 'pnl'; choose equity or amddp1"):
        EnvConfig(reward="pnl")  # type: ignore[arg-type]
    # Earlier releases' names still read (older checkpoints' trainer.json).
    assert EnvConfig(reward="pips").reward == "equity"  # type: ignore[arg-type]
    assert EnvConfig(reward="spec").reward == "amddp1"  # type: ignore[arg-type]


def test_market_rows_are_shared_not_copied(market: MarketData, starts: np.ndarray) -> None:
    """Another MarketData's padded rows (what a Ray actor maps from the object store, read-only) are
    used as they are, and the environment steps the same on them."""
    rows = market.rows.copy()
    rows.flags.writeable = False
    shared = MarketData(market.instrument, market.ts, market.close, rows)
    assert shared.rows is rows and np.shares_memory(shared.windows, rows)
    np.testing.assert_array_equal(shared.features, market.features)
    actions = np.random.default_rng(3).integers(0, 4, size=(20, len(starts)))
    envs = [TradingEnv(m) for m in (market, shared)]
    observations = [env.reset(starts) for env in envs]
    np.testing.assert_array_equal(*observations)
    for step in actions:
        results = [env.step(step) for env in envs]
        np.testing.assert_array_equal(results[0].observation, results[1].observation)
        np.testing.assert_array_equal(results[0].reward, results[1].reward)
    dirty = market.rows.copy()
    dirty[0, -1] = 1.0
    with pytest.raises(ValueError, match="zero position columns"):
        MarketData(market.instrument, market.ts, market.close, dirty)
    with pytest.raises(ValueError, match="market data mismatch"):
        MarketData(market.instrument, market.ts, market.close[:-1], rows)
