"""The live position state machine and session clock against the vectorised environment."""

from __future__ import annotations

import json

import numpy as np
import pytest

from shared.bars import Bars
from shared.dataset import build_dataset
from shared.env import EnvConfig, MarketData, TradingEnv
from shared.position import EXIT_SESSION_BREAK, PositionState, Settlement
from shared.reward import REWARDS, Action
from shared.schema import WARMUP_BARS
from shared.session_clock import SessionClock
from shared.sessions import SESSION_BARS, tile_sessions, valid_session_starts


@pytest.mark.parametrize("reward", REWARDS)
def test_position_state_replays_the_environment_exactly(gbpjpy_sample: Bars, reward: str) -> None:
    ds = build_dataset(gbpjpy_sample)
    market = MarketData("GBPJPY", ds.bars.ts, ds.bars.close, ds.features)
    starts = tile_sessions(np.sort(np.concatenate([ds.starts_of(s) for s in ("train", "validation")])))[:4]
    rng = np.random.default_rng(7)
    env = TradingEnv(market, EnvConfig(reward=reward))
    obs = env.reset(starts)
    states = [PositionState(pip=0.01) for _ in starts]
    # The live reward of each decision (row, step): at once, or settled by a later bar's mark.
    rewards_live: dict[tuple[int, int], float] = {}
    rewards_env, trades_live, waited, invalid = [], [], 0, 0
    for step in range(SESSION_BARS):
        legal = env.legal_actions()
        # Mostly legal actions; now and then an illegal one (its penalty is part of the reward).
        legal_weight = np.where(rng.random((len(starts), 1)) < 0.05, -10, 1)
        actions = np.argmax(rng.random((len(starts), 4)) * [8, 1, 1, 1.5] + legal * legal_weight, axis=1)
        invalid += int((~legal[np.arange(len(starts)), actions]).sum())
        for row, state in enumerate(states):
            bar = int(env.bar[row])
            state.mark(float(market.close[bar]), step)
            # The window's position columns, bit for bit.
            assert np.array_equal(state.features(), obs[row, -1, 9:]), (row, step)
        result = env.step(actions)
        for row, state in enumerate(states):
            bar = int(starts[row]) + step
            out = state.apply(
                int(actions[row]),
                float(market.close[bar]),
                step,
                int(market.ts[bar]),
                step == SESSION_BARS - 1,
                reward,
            )
            if out.settled is not None:  # the previous decision's, completed by this bar's mark
                assert (out.settled.step, out.settled.ts) == (step - 1, int(market.ts[bar - 1]))
                assert (row, step - 1) not in rewards_live
                rewards_live[(row, step - 1)] = out.settled.reward
                waited += 1
            if out.reward is not None:
                rewards_live[(row, step)] = out.reward
            # Only an equity reward with a position left open waits, and only for the next bar.
            assert (out.reward is None) == (reward == "equity" and state.side != 0)
            assert out.valid == bool(result.valid[row])
            if out.trade is not None:
                trades_live.append((row, out.trade))
        rewards_env.append(result.reward)
        obs = result.observation
    assert all(not s.reward_pending for s in states)  # the session's end settles everything
    expected = np.stack(rewards_env)  # (step, row)
    assert rewards_live == {
        (row, step): float(expected[step, row]) for row, step in np.ndindex(4, SESSION_BARS)
    }
    assert (waited > 100) == (reward == "equity") and invalid > 40, invalid
    log = env.trade_log()
    assert len(log) == len(trades_live) > 20
    # The environment logs trades in closing order, rows ascending within a bar: so do we.
    for i, (row, trade) in enumerate(trades_live):
        assert int(log.session[i]) == row
        assert (trade.side, trade.entry_ts, trade.exit_ts) == (
            int(log.side[i]),
            int(log.entry_ts[i]),
            int(log.exit_ts[i]),
        )
        assert (trade.entry_price, trade.exit_price, trade.pnl_pips) == (
            float(log.entry_price[i]),
            float(log.exit_price[i]),
            float(log.pnl_pips[i]),
        )
        assert (trade.bars_held, trade.exit_reason) == (int(log.bars_held[i]), str(log.exit_reason[i]))


def test_position_state_round_trips_and_refuses_bad_moves() -> None:
    state = PositionState(pip=0.01)
    state.mark(150.0, 0)
    assert state.apply(Action.CLOSE, 150.0, 0, 60, False).valid is False
    assert state.apply(Action.BUY, 150.0, 0, 60, False).valid is True
    state.mark(150.10, 1)
    assert state.apply(Action.SELL, 150.10, 1, 120, False).valid is False
    copy = PositionState.from_dict(state.to_dict())
    assert copy == state
    assert state.marked(150.20, 2).pnl == pytest.approx(16.0) and state.pnl == pytest.approx(6.0)
    with pytest.raises(ValueError, match="open position"):
        state.new_session()
    trade = state.close(150.05, 2, 180, EXIT_SESSION_BREAK)
    assert trade.pnl_pips == pytest.approx(1.0) and trade.exit_reason == "session_break"
    with pytest.raises(ValueError, match="no open position"):
        state.close(150.0, 3, 240, EXIT_SESSION_BREAK)


def test_a_pending_equity_reward_survives_a_restart_and_settles_at_a_forced_close() -> None:
    state = PositionState(pip=0.01)
    state.mark(150.0, 0)
    opened = state.apply(Action.BUY, 150.0, 0, 60, False, "equity")
    assert opened.reward is None and opened.settled is None and state.reward_pending
    # The pending parts are plain numbers of the state's dict (what the ledger and Redis hold).
    restored = PositionState.from_dict(json.loads(json.dumps(state.to_dict())))
    assert restored == state
    restored.mark(150.06, 1)  # +6 pips, -4 spread: the equity went from 0 to +2 pips
    equity = restored.pnl
    held = restored.apply(Action.SELL, 150.06, 1, 120, False, "equity")  # invalid: -1 penalty
    assert held.settled == Settlement(step=0, ts=60, reward=(0.0 + equity - 0.0) / 10)
    assert held.settled.reward == pytest.approx(0.2) and held.reward is None and not held.valid
    # A session break closes the position at the first bar after the gap: its mark settles.
    trade = restored.close(150.01, 2, 900, EXIT_SESSION_BREAK)
    assert trade.pnl_pips == pytest.approx(-3.0)
    settled = restored.take_settled()
    assert settled is not None and (settled.step, settled.ts) == (1, 120)
    assert settled.reward == -1.0 + (trade.pnl_pips - equity) / 10  # from +2 to -3 pips, and the penalty
    assert restored.take_settled() is None and not restored.reward_pending
    # The amddp1 reward never waits.
    restored.new_session()
    restored.mark(150.0, 0)
    assert restored.apply(Action.SELL, 150.0, 0, 960, False, "amddp1").reward == 1.0
    assert not restored.reward_pending


def test_session_clock_matches_the_tiled_valid_starts(gbpjpy_sample: Bars) -> None:
    ts = gbpjpy_sample.ts
    # Valid starts before the split filter: splits partition the backtest, live trading has none.
    tiled = tile_sessions(valid_session_starts(ts))
    first = int(tiled[0])
    clock = SessionClock()
    for t in ts[:first]:
        clock.history(int(t))
    sessions: list[int] = []
    for b in range(first, len(ts)):
        slot = clock.live(int(ts[b]))
        if slot.tradeable and slot.step == 0:
            sessions.append(b)
        if slot.tradeable:
            assert slot.last_bar == (slot.step == SESSION_BARS - 1)
    # Every backtest session is a live session starting on the same bar (live may also start
    # sessions that a later gap breaks, which the backtest never starts).
    assert set(tiled.tolist()) <= set(sessions)
    gaps = np.flatnonzero(np.diff(ts) > 600) + 1
    assert len(gaps) > 0
    extra = sorted(set(sessions) - set(tiled.tolist()))
    for s in extra:  # each one is cut by a gap, or runs past the data
        assert any(s < g < s + SESSION_BARS for g in gaps) or s + SESSION_BARS >= len(ts) - 1


def test_session_clock_breaks_on_a_gap_and_warms_up_again() -> None:
    clock = SessionClock(session_bars=5, warmup_bars=3)
    t = 0
    slots = []
    for _ in range(12):
        t += 60
        slots.append(clock.live(t))
    assert [s.tradeable for s in slots[:4]] == [False, False, False, True]
    assert [s.step for s in slots[3:9]] == [0, 1, 2, 3, 4, 0]
    assert slots[7].last_bar and not slots[8].last_bar
    t += 11 * 60  # a gap over 10 minutes
    after = clock.live(t)
    assert after.broke_session == slots[8].session_id and not after.tradeable
    assert [clock.live(t + 60 * k).tradeable for k in range(1, 4)] == [False, False, True]
    with pytest.raises(ValueError, match="not after"):
        clock.live(t)
    assert WARMUP_BARS == 150
