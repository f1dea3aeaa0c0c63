"""Assertions shared by the feature builder's tests."""

from __future__ import annotations

import numpy as np

from shared.bars import Bars
from shared.env import EnvConfig, MarketData, TradingEnv
from shared.features import market_features
from shared.wire import WindowMessage


def assert_backtest_windows(bars: Bars, windows: list[WindowMessage], actions: dict[int, int]) -> int:
    """Every published window equals, bit for bit, the backtest environment's observation at the same
    bar of the same session after the same actions. Returns how many were compared."""
    market = MarketData(bars.instrument, bars.ts, bars.close, market_features(bars))
    env = TradingEnv(market, EnvConfig(spread_pips=4.0))
    sessions: dict[str, list[WindowMessage]] = {}
    for message in windows:
        sessions.setdefault(message.session_id, []).append(message)
    compared = 0
    for session_id, messages in sessions.items():
        start = int(np.searchsorted(bars.ts, int(session_id)))
        assert int(bars.ts[start]) == int(session_id) == messages[0].bar_ts
        observation = env.reset(np.array([start]))
        for step, message in enumerate(messages):
            assert message.step == step and message.bar_ts == int(bars.ts[start + step])
            assert message.close == float(bars.close[start + step])
            window = np.asarray(message.window, dtype=np.float32)
            assert window.tobytes() == observation[0].tobytes(), (session_id, step)
            compared += 1
            observation = env.step(np.array([actions.get(message.bar_ts, 0)])).observation
    return compared
