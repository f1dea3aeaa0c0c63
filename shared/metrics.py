"""Metrics of SPEC section 9, the same definitions for training, backtest and live."""

from __future__ import annotations

import math

import numpy as np
from pydantic import BaseModel

from shared.reward import ACTIONS

HEALTHY_MAX_SHARE = 0.40
WARNING_SHARE = 0.60
CRITICAL_SHARE = 0.90


class TradeMetrics(BaseModel):
    trades: int
    sessions: int
    decisions: int
    expectancy_pips: float  # mean P&L per closed trade after spread
    win_rate: float  # share of trades with P&L > 0
    avg_win_pips: float
    avg_loss_pips: float  # positive number: mean size of losing trades
    sqn: float  # sqrt(N) * mean / sample std of trade P&L
    total_pips: float
    max_drawdown_pips: float  # largest fall of cumulative P&L from its running peak (>= 0)
    trades_per_session: float
    action_distribution: dict[str, float]  # share of each action among all decisions
    action_health: str  # healthy | elevated | warning | critical (hold collapse at > 90%)


def action_health(shares: np.ndarray) -> str:
    top = float(shares.max()) if shares.size else 0.0
    if top > CRITICAL_SHARE:
        return "critical"
    if top > WARNING_SHARE:
        return "warning"
    if top > HEALTHY_MAX_SHARE:
        return "elevated"
    return "healthy"


def max_drawdown(pnl_pips: np.ndarray) -> float:
    """Largest peak-to-trough fall of the cumulative P&L curve that starts at 0."""
    if len(pnl_pips) == 0:
        return 0.0
    equity = np.concatenate([[0.0], np.cumsum(pnl_pips)])
    return float(np.max(np.maximum.accumulate(equity) - equity))


def trade_metrics(pnl_pips: np.ndarray, sessions: int, action_counts: np.ndarray) -> TradeMetrics:
    """Metrics of chronologically ordered trade P&Ls (pips after spread) and action counts."""
    pnl = np.asarray(pnl_pips, dtype=np.float64)
    n = len(pnl)
    counts = np.asarray(action_counts, dtype=np.int64)
    decisions = int(counts.sum())
    shares = counts / decisions if decisions else np.zeros(len(ACTIONS))
    wins = pnl[pnl > 0]
    losses = pnl[pnl <= 0]
    std = float(pnl.std(ddof=1)) if n > 1 else 0.0
    return TradeMetrics(
        trades=n,
        sessions=sessions,
        decisions=decisions,
        expectancy_pips=float(pnl.mean()) if n else 0.0,
        win_rate=len(wins) / n if n else 0.0,
        avg_win_pips=float(wins.mean()) if len(wins) else 0.0,
        avg_loss_pips=float(-losses.mean()) if len(losses) else 0.0,
        sqn=math.sqrt(n) * float(pnl.mean()) / std if std > 0 else 0.0,
        total_pips=float(pnl.sum()),
        max_drawdown_pips=max_drawdown(pnl),
        trades_per_session=n / sessions if sessions else 0.0,
        action_distribution={name: float(s) for name, s in zip(ACTIONS, shares, strict=True)},
        action_health=action_health(shares),
    )
