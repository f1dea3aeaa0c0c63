"""Environment throughput: bar-steps per second for 256 parallel sessions, windows included.

Actions are drawn up front, so no policy cost is measured. Uniform random actions exercise every
branch every step (entries, closes, invalid actions, end-of-session closes). The headline figure is
the fastest of several runs and the median is printed beside it: this shared machine's speed varies
by about 25% from run to run, even for a single numpy operation.
Target: at least 1 million bar-steps per second. Prints one JSON line at the end.
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
    return Bars("SYNTHJPY", ts, close, close + spread, close - spread, close, np.zeros(n))


def run_once(env: TradingEnv, starts: np.ndarray, actions: np.ndarray, rng: np.random.Generator) -> float:
    """Seconds for len(actions) episodes of 360 steps, every row stepped every time."""
    sessions = actions.shape[2]
    began = time.perf_counter()
    for episode in actions:
        env.reset(rng.choice(starts, size=sessions, replace=False))
        for step_actions in episode:
            env.step(step_actions)
    return time.perf_counter() - began


def main(sessions: int = 256, episodes: int = 4, repeats: int = 7) -> dict[str, object]:
    bars = synthetic_bars(200_000)
    ds = build_dataset(bars)
    market = MarketData(bars.instrument, bars.ts, bars.close, ds.features)
    env = TradingEnv(market)
    rng = np.random.default_rng(1)
    steps = episodes * SESSION_BARS * sessions
    # Uniform random actions: the worst case, with entries, closes and invalid actions every step.
    uniform = rng.integers(0, 4, size=(episodes, SESSION_BARS, sessions))
    # Mostly HOLD, as a trading policy acts: a trade every few dozen bars per session.
    policy_like = rng.choice(4, size=(episodes, SESSION_BARS, sessions), p=[0.94, 0.02, 0.02, 0.02])
    run_once(env, ds.session_starts, uniform[:1], rng)  # warm-up
    uniform_s = sorted(run_once(env, ds.session_starts, uniform, rng) for _ in range(repeats))
    policy_s = sorted(run_once(env, ds.session_starts, policy_like, rng) for _ in range(repeats))
    median = repeats // 2
    return {
        "bench": "env",
        "sessions": sessions,
        "bar_steps_per_run": steps,
        "repeats": repeats,
        # Fastest of the runs, as timeit advises: the slower ones measure other tenants of the machine.
        "bar_steps_per_s": round(steps / uniform_s[0]),
        "bar_steps_per_s_median": round(steps / uniform_s[median]),
        "bar_steps_per_s_policy_like": round(steps / policy_s[0]),
        "machine": f"{platform.machine()} {os.cpu_count()} cpus, python {platform.python_version()}",
    }


if __name__ == "__main__":
    print(json.dumps(main()))
