"""The live position state machine and session clock against the vectorised environment."""

from __future__ import annotations

import numpy as np
import pytest

from shared.bars import Bars
from shared.dataset import build_dataset
from shared.env import EnvConfig, MarketData, TradingEnv
from shared.position import EXIT_SESSION_BREAK, PositionState
from shared.reward import Action
from shared.schema import WARMUP_BARS
from shared.session_clock import SessionClock
from shared.sessions import SESSION_BARS, tile_sessions, valid_session_starts


def test_position_state_replays_the_environment_exactly(gbpjpy_sample: Bars) -> None:
    ds = build_dataset(gbpjpy_sample)
    market = MarketData("GBPJPY", ds.bars.ts, ds.bars.close, ds.features)
    starts = tile_sessions(np.sort(np.concatenate([ds.starts_of(s) for s in ("train", "validation")])))[:4]
    rng = np.random.default_rng(7)
    env = TradingEnv(market, EnvConfig(reward="amddp1"))
    obs = env.reset(starts)
    states = [PositionState(pip=0.01) for _ in starts]
    rewards_env, rewards_live, trades_live = [], [], []
    for step in range(SESSION_BARS):
        actions = np.argmax(rng.random((len(starts), 4)) * [8, 1, 1, 1.5] + env.legal_actions(), axis=1)
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
            )
            rewards_live.append(out.reward)
            assert out.valid == bool(result.valid[row])
            if out.trade is not None:
                trades_live.append((row, out.trade))
        rewards_env.append(result.reward)
        obs = result.observation
    assert rewards_live == list(np.stack(rewards_env).ravel())
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
