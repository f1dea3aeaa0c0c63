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
    flat_action_counts: np.ndarray  # the decisions taken while flat


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
    metrics = trade_metrics(
        trades.pnl_pips,
        len(starts),
        env.action_counts,
        trade_sessions=trades.session,  # the env row, one session per row
        trade_sides=trades.side,
        flat_action_counts=env.flat_action_counts,
    )
    return EvaluationResult(metrics, trades, env.action_counts.copy(), env.flat_action_counts.copy())
