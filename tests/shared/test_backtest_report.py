"""The backtest report's numbers (shared/backtest_report.py), by hand."""

from __future__ import annotations

import math
from datetime import UTC, datetime

import numpy as np
import pytest

from shared.backtest_report import (
    DrawdownSpell,
    backtest_summary,
    breakdown,
    daily_pnl,
    longest_drawdown,
    overall,
    sharpe_ratio,
)
from shared.env import TradeLog
from shared.metrics import drawdown_curve, max_drawdown, trade_metrics

DAY = 86_400


def ts(text: str) -> int:
    return int(datetime.fromisoformat(text).replace(tzinfo=UTC).timestamp())


def test_breakdown_by_key_with_profit_factor() -> None:
    keys = np.array(["short", "long", "long", "short", "long"])
    pnl = np.array([-4.0, 10.0, -5.0, 6.0, 0.0])
    long, short = breakdown(keys, pnl)
    assert (long.key, long.trades, long.total_pips) == ("long", 3, 5.0)
    assert long.expectancy_pips == pytest.approx(5 / 3) and long.win_rate == pytest.approx(1 / 3)
    assert long.profit_factor == pytest.approx(10 / 5)  # a zero trade is neither a win nor a loss
    assert (short.trades, short.total_pips, short.profit_factor) == (2, 2.0, pytest.approx(6 / 4))
    assert breakdown(np.array(["a"]), np.array([3.0]))[0].profit_factor is None  # nothing lost
    assert breakdown(np.array([], dtype=str), np.array([])) == []


def test_overall_agrees_with_the_trade_metrics() -> None:
    pnl = np.array([10.0, -5.0, 3.0, -2.0, -6.0])
    everything = overall(pnl)
    m = trade_metrics(pnl, 1, np.array([1, 1, 1, 1]))
    assert everything.trades == m.trades and everything.total_pips == pytest.approx(m.total_pips)
    assert everything.win_rate == pytest.approx(m.win_rate)
    assert everything.expectancy_pips == pytest.approx(m.expectancy_pips)
    assert everything.profit_factor == pytest.approx(13 / 13)
    assert overall(np.array([])).trades == 0 and overall(np.array([])).profit_factor is None


def test_daily_pnl_counts_every_session_day_and_sharpe_by_hand() -> None:
    # Three sessions on Jan 2, 3 and 5 (one crossing midnight into Jan 6); trades close on Jan 2 and 6.
    sessions = np.array(
        [
            [ts("2017-01-02T08:00"), ts("2017-01-02T13:59")],
            [ts("2017-01-03T08:00"), ts("2017-01-03T13:59")],
            [ts("2017-01-05T21:00"), ts("2017-01-06T02:59")],
        ]
    )
    exits = np.array([ts("2017-01-02T09:00"), ts("2017-01-02T12:00"), ts("2017-01-06T01:00")])
    daily = daily_pnl(exits, np.array([4.0, 2.0, -3.0]), sessions)
    assert daily.tolist() == [6.0, 0.0, 0.0, -3.0]  # Jan 2, 3, 5, 6
    expected = np.mean(daily) / np.std(daily, ddof=1) * math.sqrt(252)
    assert sharpe_ratio(daily) == pytest.approx(expected)
    assert sharpe_ratio(np.array([5.0])) == 0.0 and sharpe_ratio(np.array([1.0, 1.0])) == 0.0
    with pytest.raises(ValueError, match="without an evaluated session"):
        daily_pnl(np.array([ts("2017-01-04T10:00")]), np.array([1.0]), sessions)


def test_drawdown_curve_is_the_max_drawdowns() -> None:
    pnl = np.array([2.0, 4.0, -1.0, 3.0, -7.0, 1.0])
    assert drawdown_curve(pnl).tolist() == [0.0, 0.0, 0.0, 1.0, 0.0, 7.0, 6.0]
    assert max_drawdown(pnl) == 7.0 and max_drawdown(np.array([])) == 0.0


def test_longest_drawdown_recovered_or_not() -> None:
    start, end = 0, 100 * DAY
    # Peaks at day 1 (+5) and day 20 (+6); under water from day 1 to 20 (two trades), then from
    # day 20 to the end (never recovered): the second spell, 80 days, is the longest.
    exits = np.array([1, 3, 10, 20, 30]) * DAY
    spell = longest_drawdown(exits, np.array([5.0, -2.0, -1.0, 4.0, -1.5]), start, end)
    assert spell == DrawdownSpell(peak_ts=20 * DAY, end_ts=end, recovered=False, trades=1, depth_pips=1.5)
    assert spell.days == 80.0
    # Recovered: the longest spell runs from the peak to the trade back above it.
    spell = longest_drawdown(exits, np.array([5.0, -2.0, -1.0, 4.0, 1.0]), start, end)
    assert spell == DrawdownSpell(peak_ts=DAY, end_ts=20 * DAY, recovered=True, trades=2, depth_pips=3.0)
    # From the start: the first trade loses.
    spell = longest_drawdown(exits[:2], np.array([-1.0, 2.0]), start, end)
    assert spell == DrawdownSpell(peak_ts=0, end_ts=3 * DAY, recovered=True, trades=1, depth_pips=1.0)
    assert longest_drawdown(exits[:2], np.array([1.0, 2.0]), start, end) is None
    assert longest_drawdown(exits[:0], np.array([]), start, end) is None


def _log(
    sides: list[int], entries: list[str], exits: list[str], pnl: list[float], reasons: list[str]
) -> TradeLog:
    n = len(pnl)
    return TradeLog(
        "GBPJPY",
        session=np.zeros(n, dtype=np.int64),
        side=np.array(sides, dtype=np.int8),
        entry_ts=np.array([ts(t) for t in entries], dtype=np.int64),
        entry_price=np.full(n, 150.0),
        exit_ts=np.array([ts(t) for t in exits], dtype=np.int64),
        exit_price=np.full(n, 150.1),
        pnl_pips=np.array(pnl),
        bars_held=np.array([10, 20, 30][:n], dtype=np.int64),
        exit_reason=np.array(reasons, dtype="<U11"),
    )


def test_summary_breaks_trades_down_by_side_reason_hour_and_month() -> None:
    trades = _log(
        [1, -1, 1],
        ["2017-01-31T07:10", "2017-01-31T09:00", "2017-02-01T07:30"],
        ["2017-01-31T08:00", "2017-02-01T00:30", "2017-02-01T09:00"],
        [5.0, -2.0, 3.0],
        ["close", "session_end", "close"],
    )
    sessions = np.array(
        [[ts("2017-01-31T07:00"), ts("2017-02-01T01:00")], [ts("2017-02-01T07:00"), ts("2017-02-01T13:00")]]
    )
    s = backtest_summary(trades, sessions)
    assert [(g.key, g.trades, g.total_pips) for g in s.by_side] == [("short", 1, -2.0), ("long", 2, 8.0)]
    assert [(g.key, g.trades) for g in s.by_exit_reason] == [("close", 2), ("session_end", 1)]
    assert [(g.key, g.trades) for g in s.by_hour] == [("07", 2), ("09", 1)]  # the entry's hour
    assert [(g.key, g.total_pips) for g in s.by_month] == [("2017-01", 5.0), ("2017-02", 1.0)]  # the exit's
    assert s.trading_days == 2 and s.daily_mean_pips == pytest.approx(3.0)  # Jan 31: +5, Feb 1: +1
    assert (s.gross_profit_pips, s.gross_loss_pips) == (8.0, 2.0) and s.overall.profit_factor == 4.0
    assert (s.largest_win_pips, s.largest_loss_pips, s.mean_bars_held) == (5.0, -2.0, 20.0)
    assert s.longest_drawdown is not None and s.longest_drawdown.trades == 1
    assert s.drawdown.tolist() == [0.0, 0.0, 2.0, 0.0]
    empty = backtest_summary(_log([], [], [], [], []), sessions)
    assert empty.overall.trades == 0 and empty.by_hour == [] and empty.sharpe == 0.0
    assert empty.longest_drawdown is None and empty.trading_days == 2
