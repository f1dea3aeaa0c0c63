"""Backtest core: run a policy over sessions in the vectorised environment and score its trades.

The trainer's validation, ``smz evaluate`` and the live stack's reconciliation all use this path.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from shared.env import EnvConfig, MarketData, TradeLog, TradingEnv
from shared.metrics import TradeMetrics, trade_metrics
from shared.policies import Policy


@dataclass(frozen=True)
class EvaluationResult:
    metrics: TradeMetrics
    trades: TradeLog  # chronological
    action_counts: np.ndarray


def evaluate_policy(
    market: MarketData, starts: np.ndarray, policy: Policy, config: EnvConfig | None = None
) -> EvaluationResult:
    """Run every session (one per start, all in lockstep) from its first to its last bar."""
    env = TradingEnv(market, config)
    starts = np.asarray(starts, dtype=np.int64)
    if len(starts) == 0:
        raise ValueError("no sessions to evaluate")
    obs = env.reset(starts)
    done = np.zeros(len(starts), dtype=bool)
    while not done.all():
        actions = policy.act(obs, env.legal_actions(), env.bar.copy())
        result = env.step(actions)
        obs, done = result.observation, result.done
    trades = env.trade_log().chronological()
    return EvaluationResult(
        trade_metrics(trades.pnl_pips, len(starts), env.action_counts), trades, env.action_counts.copy()
    )
