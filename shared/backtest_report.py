"""The backtest report's numbers beyond ``shared.metrics``: profit factor, the Sharpe ratio of daily
P&L, the longest drawdown and the breakdowns by side, exit reason, hour of day and month.

Pure functions over a chronological trade log; ``smz evaluate`` prints and renders them
(``services/jobs/backtest_report.py``). Expectancy, its bootstrap interval, win rate, SQN and the
largest drawdown stay those of ``shared.metrics`` (docs/METRICS.md defines every number).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from shared.env import TradeLog
from shared.metrics import drawdown_curve
from shared.trading.rules import side_name

SECONDS_PER_DAY = 86_400
TRADING_DAYS_PER_YEAR = 252  # annualises the Sharpe ratio of daily P&L (the usual convention)


@dataclass(frozen=True)
class GroupStats:
    """The trades that share one key (a side, an exit reason, an hour, a month), or all of them."""

    key: str
    trades: int
    total_pips: float
    expectancy_pips: float
    win_rate: float  # share of trades with P&L > 0, as in shared.metrics
    profit_factor: float | None  # gross profit / gross loss; None without a losing trade


def breakdown(keys: np.ndarray, pnl_pips: np.ndarray, label: Callable[[Any], str] = str) -> list[GroupStats]:
    """One row per distinct key, in the keys' sorted order (no row for a key without trades), named
    ``label(key)``: numbers are grouped as numbers and named once per group, not once per trade."""
    pnl = np.asarray(pnl_pips, dtype=np.float64)
    if len(pnl) == 0:
        return []
    names, group = np.unique(np.asarray(keys), return_inverse=True)
    trades = np.bincount(group, minlength=len(names))
    total = np.bincount(group, weights=pnl, minlength=len(names))
    wins = np.bincount(group, weights=pnl > 0, minlength=len(names))
    gross_profit = np.bincount(group, weights=np.maximum(pnl, 0.0), minlength=len(names))
    gross_loss = np.bincount(group, weights=np.maximum(-pnl, 0.0), minlength=len(names))
    return [
        GroupStats(
            key=label(names[i]),
            trades=int(trades[i]),
            total_pips=float(total[i]),
            expectancy_pips=float(total[i] / trades[i]),
            win_rate=float(wins[i] / trades[i]),
            profit_factor=float(gross_profit[i] / gross_loss[i]) if gross_loss[i] > 0 else None,
        )
        for i in range(len(names))
    ]


def overall(pnl_pips: np.ndarray) -> GroupStats:
    """All trades as one group (the same definitions as each breakdown row)."""
    rows = breakdown(np.zeros(len(pnl_pips), dtype=np.int8), pnl_pips)
    return rows[0] if rows else GroupStats("all", 0, 0.0, 0.0, 0.0, None)


def daily_pnl(exit_ts: np.ndarray, pnl_pips: np.ndarray, session_ts: np.ndarray) -> np.ndarray:
    """The P&L of each UTC day on which an evaluated session had bars, by the day its trades closed
    (0 on a day without a close). ``session_ts``: (sessions, 2) first and last bar time."""
    days = np.unique(np.asarray(session_ts, dtype=np.int64) // SECONDS_PER_DAY)
    trade_days = np.asarray(exit_ts, dtype=np.int64) // SECONDS_PER_DAY
    at = np.searchsorted(days, trade_days)
    if len(trade_days) and (at.max() >= len(days) or not np.array_equal(days[at], trade_days)):
        raise ValueError("a trade closed on a day without an evaluated session")
    return np.bincount(at, weights=np.asarray(pnl_pips, dtype=np.float64), minlength=len(days))


def sharpe_ratio(daily: np.ndarray, periods_per_year: int = TRADING_DAYS_PER_YEAR) -> float:
    """Mean over sample standard deviation of the daily P&L, times sqrt(periods per year); 0 with
    fewer than two days or no variation."""
    if len(daily) < 2:
        return 0.0
    std = float(np.std(daily, ddof=1))
    return float(np.mean(daily)) / std * math.sqrt(periods_per_year) if std > 0 else 0.0


@dataclass(frozen=True)
class DrawdownSpell:
    """From an equity peak to the next trade that closed back at or above it (or to the end)."""

    peak_ts: int
    end_ts: int  # the recovering trade's exit, or the last evaluated bar when not recovered
    recovered: bool
    trades: int  # trades closed under water
    depth_pips: float  # the deepest fall below the peak during the spell

    @property
    def days(self) -> float:
        return (self.end_ts - self.peak_ts) / SECONDS_PER_DAY


def longest_drawdown(
    exit_ts: np.ndarray, pnl_pips: np.ndarray, start_ts: int, end_ts: int
) -> DrawdownSpell | None:
    """The longest time the cumulative P&L curve (0 at ``start_ts``, then one point per trade in
    exit order) spent below its running peak; None when it never fell below."""
    under = drawdown_curve(pnl_pips)
    times = np.concatenate([[start_ts], np.asarray(exit_ts, dtype=np.int64)])
    peaks = np.flatnonzero(under == 0.0)
    following = np.append(peaks[1:], len(under))  # len(under): still under water at the end
    spells = np.flatnonzero(following - peaks > 1)
    if len(spells) == 0:
        return None
    ends = np.where(following < len(under), times[np.minimum(following, len(under) - 1)], end_ts)
    longest = spells[np.argmax(ends[spells] - times[peaks[spells]])]
    first, stop = peaks[longest], following[longest]
    return DrawdownSpell(
        peak_ts=int(times[first]),
        end_ts=int(ends[longest]),
        recovered=bool(stop < len(under)),
        trades=int(stop - first - 1),
        depth_pips=float(under[first:stop].max()),
    )


@dataclass(frozen=True)
class BacktestSummary:
    overall: GroupStats
    gross_profit_pips: float
    gross_loss_pips: float  # positive number
    largest_win_pips: float
    largest_loss_pips: float  # the most negative trade (<= 0), 0 without trades
    mean_bars_held: float
    trading_days: int  # UTC days on which an evaluated session had bars
    daily_mean_pips: float
    daily_std_pips: float
    sharpe: float  # of daily P&L, annualised with TRADING_DAYS_PER_YEAR
    longest_drawdown: DrawdownSpell | None
    drawdown: np.ndarray  # below the running peak: 0 at the start, then after each trade
    by_side: list[GroupStats]  # short, then long
    by_exit_reason: list[GroupStats]
    by_hour: list[GroupStats]  # the entry's UTC hour, "00".."23"
    by_month: list[GroupStats]  # the exit's UTC month, "YYYY-MM" (when the P&L is realised)


def backtest_summary(trades: TradeLog, session_ts: np.ndarray) -> BacktestSummary:
    """Every report number of a chronological trade log over the evaluated sessions
    (``session_ts``: (sessions, 2) first and last bar time of each)."""
    pnl = np.asarray(trades.pnl_pips, dtype=np.float64)
    session_ts = np.asarray(session_ts, dtype=np.int64)
    daily = daily_pnl(trades.exit_ts, pnl, session_ts)
    hours = (trades.entry_ts % SECONDS_PER_DAY) // 3600
    months = trades.exit_ts.astype("datetime64[s]").astype("datetime64[M]").astype(np.int64)
    return BacktestSummary(
        overall=overall(pnl),
        gross_profit_pips=float(pnl[pnl > 0].sum()),
        gross_loss_pips=float(-pnl[pnl < 0].sum()),
        largest_win_pips=float(max(pnl.max(), 0.0)) if len(pnl) else 0.0,
        largest_loss_pips=float(min(pnl.min(), 0.0)) if len(pnl) else 0.0,
        mean_bars_held=float(np.mean(trades.bars_held)) if len(pnl) else 0.0,
        trading_days=len(daily),
        daily_mean_pips=float(np.mean(daily)) if len(daily) else 0.0,
        daily_std_pips=float(np.std(daily, ddof=1)) if len(daily) > 1 else 0.0,
        sharpe=sharpe_ratio(daily),
        longest_drawdown=longest_drawdown(
            trades.exit_ts, pnl, int(session_ts[:, 0].min()), int(session_ts[:, 1].max())
        ),
        drawdown=drawdown_curve(pnl),
        by_side=breakdown(trades.side, pnl, side_name),
        by_exit_reason=breakdown(trades.exit_reason, pnl),
        by_hour=breakdown(hours, pnl, lambda hour: f"{hour:02d}"),
        by_month=breakdown(months, pnl, lambda month: str(np.datetime64(int(month), "M"))),
    )
