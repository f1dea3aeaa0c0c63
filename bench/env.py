"""Environment throughput: bar-steps per second for 256 parallel sessions, windows included.

Random legal actions (drawn up front, so policy cost is not measured) exercise every branch:
entries, closes, invalid actions and end-of-session closes. Prints one JSON line at the end.
"""

from __future__ import annotations

import json
import os
import platform
import time

import numpy as np

from shared.bars import Bars
from shared.dataset import build_dataset
from shared.env import MarketData, TradingEnv
from shared.sessions import SESSION_BARS


def synthetic_bars(n: int, seed: int = 0) -> Bars:
    # A plain random walk on the minute grid: the environment's cost does not depend on prices.
    rng = np.random.default_rng(seed)
    close = 140.0 + np.cumsum(rng.normal(0, 0.02, n))
    ts = 1_600_000_000 - 1_600_000_000 % 60 + 60 * np.arange(n, dtype=np.int64)
    spread = np.abs(rng.normal(0, 0.01, n))
    return Bars("BENCHJPY", ts, close, close + spread, close - spread, close, np.zeros(n))


def main(sessions: int = 256, episodes: int = 8) -> dict[str, object]:
    bars = synthetic_bars(200_000)
    ds = build_dataset(bars)
    market = MarketData(bars.instrument, bars.ts, bars.close, ds.features)
    env = TradingEnv(market)
    rng = np.random.default_rng(1)
    all_starts = ds.session_starts
    actions = rng.integers(0, 4, size=(episodes, SESSION_BARS, sessions))
    steps = 0
    checksum = 0.0
    start = time.perf_counter()
    for e in range(episodes):
        obs = env.reset(rng.choice(all_starts, size=sessions, replace=False))
        for k in range(SESSION_BARS):
            result = env.step(actions[e, k])
            obs = result.observation
            steps += sessions
        checksum += float(obs[:, -1, 0].sum())
    seconds = time.perf_counter() - start
    report = {
        "bench": "env",
        "sessions": sessions,
        "episodes": episodes,
        "bar_steps": steps,
        "seconds": round(seconds, 3),
        "bar_steps_per_s": round(steps / seconds),
        "trades": len(env.trade_log()),
        "checksum": round(checksum, 3),
        "machine": f"{platform.machine()} {os.cpu_count()} cpus, python {platform.python_version()}",
    }
    return report


if __name__ == "__main__":
    print(json.dumps(main()))
