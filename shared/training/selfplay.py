"""Self-play: many training sessions in lockstep, each step decided by the batched search."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from shared.env import EnvConfig, MarketData, TradingEnv
from shared.model.inference import ModelFunctions
from shared.replay import Trajectory
from shared.schema import N_MARKET
from shared.search import SearchConfig, search


@dataclass(frozen=True)
class SelfPlayRound:
    trajectories: list[Trajectory]
    bar_steps: int
    action_counts: np.ndarray  # (4,)
    trades: int
    trade_pnl: np.ndarray  # P&L pips of the trades closed in the round


def play_round(
    model: ModelFunctions,
    market: MarketData,
    outcomes: np.ndarray,
    starts: np.ndarray,
    search_config: SearchConfig,
    rng: np.random.Generator,
    env_config: EnvConfig | None = None,
) -> SelfPlayRound:
    """One session from each start, all in lockstep; returns one trajectory per session."""
    env = TradingEnv(market, env_config)
    obs = env.reset(starts)
    n, length = len(starts), env.config.session_bars
    bars = np.empty((length, n), np.int64)
    positions = np.empty((length, n, 6), np.float32)
    actions = np.empty((length, n), np.int8)
    rewards = np.empty((length, n), np.float32)
    policies = np.empty((length, n, 4), np.float32)
    values = np.empty((length, n), np.float32)
    for k in range(length):
        bars[k] = env.bar
        positions[k] = obs[:, -1, N_MARKET:]
        out = search(model, obs, search_config, rng)
        result = env.step(out.action)
        actions[k] = out.action
        rewards[k] = result.reward
        policies[k] = out.visit_policy
        values[k] = out.root_value
        obs = result.observation
    log = env.trade_log()
    traded = np.zeros(n, bool)
    traded[log.session] = True
    trajectories = [
        Trajectory(
            bars=bars[:, i].copy(),
            position=positions[:, i].copy(),
            actions=actions[:, i].copy(),
            rewards=rewards[:, i].copy(),
            policies=policies[:, i].copy(),
            root_values=values[:, i].copy(),
            outcomes=outcomes[bars[:, i]].astype(np.int8),
            has_trade=bool(traded[i]),
        )
        for i in range(n)
    ]
    return SelfPlayRound(trajectories, n * length, env.action_counts.copy(), len(log), log.pnl_pips.copy())
