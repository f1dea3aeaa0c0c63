"""SPEC section 9 metrics by hand."""

from __future__ import annotations

import math

import numpy as np
import pytest

from shared.metrics import action_health, max_drawdown, trade_metrics


def test_metrics_by_hand() -> None:
    pnl = np.array([10.0, -5.0, 3.0, -2.0, -6.0])
    m = trade_metrics(pnl, sessions=2, action_counts=np.array([10, 3, 2, 5]))
    assert m.trades == 5 and m.sessions == 2 and m.decisions == 20
    assert m.expectancy_pips == pytest.approx(0.0)
    assert m.win_rate == pytest.approx(0.4)
    assert m.avg_win_pips == pytest.approx(6.5) and m.avg_loss_pips == pytest.approx(13 / 3)
    # Expectancy = win% x avg win - loss% x avg loss.
    assert m.expectancy_pips == pytest.approx(0.4 * 6.5 - 0.6 * 13 / 3)
    assert m.sqn == pytest.approx(0.0)
    assert m.max_drawdown_pips == pytest.approx(10.0)  # from +10 down to 0
    assert m.trades_per_session == 2.5
    assert m.action_distribution == {"HOLD": 0.5, "BUY": 0.15, "SELL": 0.1, "CLOSE": 0.25}
    assert m.action_health == "elevated"


def test_sqn_and_drawdown() -> None:
    pnl = np.array([2.0, 4.0, -1.0, 3.0])
    m = trade_metrics(pnl, 1, np.array([1, 1, 1, 1]))
    assert m.sqn == pytest.approx(math.sqrt(4) * pnl.mean() / pnl.std(ddof=1))
    assert max_drawdown(np.array([-3.0, 1.0, -4.0])) == pytest.approx(6.0)
    assert max_drawdown(np.array([])) == 0.0


def test_no_trades_and_health_levels() -> None:
    m = trade_metrics(np.array([]), 3, np.array([100, 0, 0, 0]))
    assert m.trades == 0 and m.expectancy_pips == 0.0 and m.action_health == "critical"
    assert action_health(np.array([0.4, 0.2, 0.2, 0.2])) == "healthy"
    assert action_health(np.array([0.61, 0.2, 0.1, 0.09])) == "warning"
    assert action_health(np.array([0.91, 0.03, 0.03, 0.03])) == "critical"
