"""Trading metrics: the same definitions for training validation, ``smz evaluate`` and live.

Three groups (docs/METRICS.md explains each):

- Performance: expectancy (mean P&L per closed trade after spread), win rate, SQN, total pips, pips
  per session, drawdown. The action distribution (share of each action among all decisions) is
  reported and never judged: HOLD also keeps an open position, so a good trend follower holds
  almost every bar.
- Health, judged: trades per session, share of sessions with at least one trade, long share of the
  entries, HOLD share among the decisions taken while flat. A policy has collapsed when it trades
  fewer than ``NEVER_TRADES_PER_SESSION`` times a session (``never_trades``) or puts more than
  ``ONE_SIDED_SHARE`` of at least ``ONE_SIDED_MIN_ENTRIES`` entries on one side (``one_sided``).
- Edge: a 95% bootstrap interval of the expectancy that resamples whole sessions, with a fixed seed.
  An edge is claimed only when the interval's lower end is above 0 (HOLD's expectancy).
"""

from __future__ import annotations

import math
from typing import Literal

import numpy as np
from pydantic import BaseModel

from shared.reward import ACTIONS, Action

NEVER_TRADES_PER_SESSION = 0.05  # fewer trades a session than this: the policy never trades
ONE_SIDED_SHARE = 0.95  # more of the entries than this on one side ...
ONE_SIDED_MIN_ENTRIES = 30  # ... over at least this many entries: the policy is one-sided
BOOTSTRAP_RESAMPLES = 2_000
BOOTSTRAP_SEED = 0
CONFIDENCE = 0.95
_BOOTSTRAP_BLOCK_CELLS = 2_000_000  # resampled session indices held in memory at once

Health = Literal["healthy", "never_trades", "one_sided"]


class TradeMetrics(BaseModel):
    trades: int
    sessions: int
    decisions: int
    # Performance.
    expectancy_pips: float  # mean P&L per closed trade after spread
    expectancy_ci95: tuple[float, float]  # bootstrap over sessions; (0, 0) without trades
    edge: bool  # expectancy_ci95 lies above 0 (and at least two sessions traded)
    win_rate: float  # share of trades with P&L > 0
    avg_win_pips: float
    avg_loss_pips: float  # positive number: mean size of losing trades
    sqn: float  # sqrt(N) * mean / sample std of trade P&L
    total_pips: float  # beside HOLD's 0
    pips_per_session: float  # total_pips / sessions
    max_drawdown_pips: float  # largest fall of cumulative P&L from its running peak (>= 0)
    # Health (judged).
    trades_per_session: float
    sessions_with_trade_share: float  # share of sessions with at least one trade
    long_entry_share: float | None  # share of entries that were long; None if sides are unknown
    flat_hold_share: float | None  # HOLD among the decisions taken while flat; None if unknown
    health: Health
    # Reported, not judged.
    action_distribution: dict[str, float]  # share of each action among all decisions


def drawdown_curve(pnl_pips: np.ndarray) -> np.ndarray:
    """How far the cumulative P&L curve (starting at 0, then one point per trade) lies below its
    running peak: ``len(pnl_pips) + 1`` values >= 0, 0 at every new peak."""
    equity = np.concatenate([[0.0], np.cumsum(pnl_pips)])
    return np.maximum.accumulate(equity) - equity


def max_drawdown(pnl_pips: np.ndarray) -> float:
    """Largest peak-to-trough fall of the cumulative P&L curve that starts at 0."""
    return float(np.max(drawdown_curve(pnl_pips)))


def health(trades_per_session: float, entries: int, long_entry_share: float | None) -> Health:
    """``never_trades`` below 0.05 trades a session; ``one_sided`` when over 95% of at least 30
    entries are on one side (not judged when the sides are unknown); else ``healthy``."""
    if trades_per_session < NEVER_TRADES_PER_SESSION:
        return "never_trades"
    if (
        long_entry_share is not None
        and entries >= ONE_SIDED_MIN_ENTRIES
        and max(long_entry_share, 1.0 - long_entry_share) > ONE_SIDED_SHARE
    ):
        return "one_sided"
    return "healthy"


def bootstrap_expectancy_ci(
    pnl_pips: np.ndarray,
    trade_sessions: np.ndarray,
    sessions: int,
    resamples: int = BOOTSTRAP_RESAMPLES,
    seed: int = BOOTSTRAP_SEED,
    confidence: float = CONFIDENCE,
) -> tuple[float, float]:
    """Percentile bootstrap interval of the expectancy, resampling whole sessions.

    Each resample draws ``sessions`` sessions with replacement (sessions without a trade included)
    and takes the total P&L of the drawn sessions over their number of trades. Resamples that drew
    no trade at all have no expectancy and are left out. Without trades the interval is (0, 0).
    Trades of one session move together (same market day, same regime), so resampling sessions, not
    trades, keeps their correlation in the interval.
    """
    pnl = np.asarray(pnl_pips, dtype=np.float64)
    rows = np.asarray(trade_sessions, dtype=np.int64)
    if len(pnl) == 0:
        return (0.0, 0.0)
    session_pnl = np.bincount(rows, weights=pnl, minlength=sessions)
    session_trades = np.bincount(rows, minlength=sessions).astype(np.float64)
    rng = np.random.default_rng(seed)
    totals = np.empty(resamples)
    counts = np.empty(resamples)
    block = max(1, _BOOTSTRAP_BLOCK_CELLS // sessions)
    for begin in range(0, resamples, block):
        end = min(begin + block, resamples)
        drawn = rng.integers(0, sessions, size=(end - begin, sessions))
        totals[begin:end] = session_pnl[drawn].sum(axis=1)
        counts[begin:end] = session_trades[drawn].sum(axis=1)
    traded = counts > 0
    expectancy = totals[traded] / counts[traded]
    tail = (1.0 - confidence) / 2
    low, high = np.quantile(expectancy, [tail, 1.0 - tail])
    return (float(low), float(high))


def trade_metrics(
    pnl_pips: np.ndarray,
    sessions: int,
    action_counts: np.ndarray,
    trade_sessions: np.ndarray | None = None,
    trade_sides: np.ndarray | None = None,
    flat_action_counts: np.ndarray | None = None,
    *,
    resamples: int = BOOTSTRAP_RESAMPLES,
    seed: int = BOOTSTRAP_SEED,
) -> TradeMetrics:
    """Metrics of chronologically ordered closed trades and the decisions that made them.

    ``pnl_pips``: P&L after spread per trade. ``sessions``: sessions played (those without a trade
    count too). ``action_counts``: decisions per action. ``trade_sessions``: session index
    (0..sessions-1) of each trade; may be left out only when there is at most one session.
    ``trade_sides``: +1 long / -1 short per trade; without it ``long_entry_share`` is None and
    one-sidedness is not judged. ``flat_action_counts``: decisions per action taken while flat;
    without it ``flat_hold_share`` is None. Every trade is an entry that was closed (the backtest
    closes every position at its session's end), so entries = trades.
    """
    pnl = np.asarray(pnl_pips, dtype=np.float64)
    n = len(pnl)
    if trade_sessions is None:
        if sessions > 1 and n:
            raise ValueError(
                "trade_sessions is needed with more than one session (the bootstrap resamples them)"
            )
        trade_sessions = np.zeros(n, dtype=np.int64)
    rows = np.asarray(trade_sessions, dtype=np.int64)
    if len(rows) != n or (n and (rows.min() < 0 or rows.max() >= sessions)):
        raise ValueError(f"trade_sessions must give each of the {n} trades a session in 0..{sessions - 1}")
    counts = np.asarray(action_counts, dtype=np.int64)
    decisions = int(counts.sum())
    shares = counts / decisions if decisions else np.zeros(len(ACTIONS))
    wins = pnl[pnl > 0]
    losses = pnl[pnl <= 0]
    std = float(pnl.std(ddof=1)) if n > 1 else 0.0
    traded_sessions = len(np.unique(rows))
    ci = bootstrap_expectancy_ci(pnl, rows, max(sessions, 1), resamples, seed)

    long_share: float | None = None
    if trade_sides is not None:
        sides = np.asarray(trade_sides)
        if len(sides) != n:
            raise ValueError(f"trade_sides has {len(sides)} entries for {n} trades")
        long_share = float((sides > 0).sum()) / n if n else 0.0
    flat_hold: float | None = None
    if flat_action_counts is not None:
        flat = np.asarray(flat_action_counts, dtype=np.int64)
        flat_hold = float(flat[Action.HOLD]) / int(flat.sum()) if flat.sum() else 0.0

    per_session = n / sessions if sessions else 0.0
    return TradeMetrics(
        trades=n,
        sessions=sessions,
        decisions=decisions,
        expectancy_pips=float(pnl.mean()) if n else 0.0,
        expectancy_ci95=ci,
        edge=ci[0] > 0 and traded_sessions >= 2,
        win_rate=len(wins) / n if n else 0.0,
        avg_win_pips=float(wins.mean()) if len(wins) else 0.0,
        avg_loss_pips=float(-losses.mean()) if len(losses) else 0.0,
        sqn=math.sqrt(n) * float(pnl.mean()) / std if std > 0 else 0.0,
        total_pips=float(pnl.sum()),
        pips_per_session=float(pnl.sum()) / sessions if sessions else 0.0,
        max_drawdown_pips=max_drawdown(pnl),
        trades_per_session=per_session,
        sessions_with_trade_share=traded_sessions / sessions if sessions else 0.0,
        long_entry_share=long_share,
        flat_hold_share=flat_hold,
        health=health(per_session, n, long_share),
        action_distribution={name: float(s) for name, s in zip(ACTIONS, shares, strict=True)},
    )


def validation_metrics(m: TradeMetrics, prefix: str = "validation_") -> dict[str, float]:
    """A flat ``{name: float}`` view of the metrics for a trainer's validation record, checkpoint
    manifest and Prometheus gauges. Unknown values (sides or flat decisions not given) are left out."""
    low, high = m.expectancy_ci95
    out = {
        "expectancy_pips": m.expectancy_pips,
        "expectancy_ci95_low": low,
        "expectancy_ci95_high": high,
        "edge": float(m.edge),
        "pips_per_session": m.pips_per_session,
        "total_pips": m.total_pips,
        "trades": float(m.trades),
        "win_rate": m.win_rate,
        "sqn": m.sqn,
        "trades_per_session": m.trades_per_session,
        "sessions_with_trade_share": m.sessions_with_trade_share,
        "long_entry_share": m.long_entry_share,
        "flat_hold_share": m.flat_hold_share,
        "healthy": float(m.health == "healthy"),
        **{f"share_{name.lower()}": share for name, share in m.action_distribution.items()},
    }
    return {prefix + key: float(value) for key, value in out.items() if value is not None}
