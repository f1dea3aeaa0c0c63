"""Market outcomes (CONTRACT section 3) against a direct loop, and their use of the future only at t+1."""

from __future__ import annotations

import numpy as np
import pytest

from shared.bars import Bars
from shared.outcomes import market_outcomes
from shared.schema import DOWN, NEUTRAL, UP


def reference_outcomes(close: np.ndarray, pip: float) -> tuple[list[int], list[float]]:
    changes = [0.0] + [(close[i] - close[i - 1]) / pip for i in range(1, len(close))]
    outcomes, sigmas = [], []
    for t in range(len(close) - 1):
        window = changes[max(0, t - 19) : t + 1]
        mean = sum(window) / len(window)
        sigma = (sum((x - mean) ** 2 for x in window) / len(window)) ** 0.5
        nxt = changes[t + 1]
        outcomes.append(UP if nxt > 0.5 * sigma else DOWN if nxt < -0.5 * sigma else NEUTRAL)
        sigmas.append(sigma)
    return outcomes, sigmas


def test_outcomes_match_the_reference_on_real_bars(gbpjpy_sample: Bars) -> None:
    bars = gbpjpy_sample.slice(0, 5000)
    outcome, sigma = market_outcomes(bars.close, bars.pip)
    ref_outcome, ref_sigma = reference_outcomes(bars.close, bars.pip)
    assert len(outcome) == len(bars) - 1  # the last bar has no outcome
    np.testing.assert_allclose(sigma, ref_sigma, rtol=0, atol=1e-9)
    # A change sitting exactly on the threshold could flip with rounding; there are none here.
    assert outcome.tolist() == ref_outcome
    shares = np.bincount(outcome, minlength=3) / len(outcome)
    assert shares.min() > 0.15  # all three outcomes occur on real bars


def test_thresholds_by_hand() -> None:
    # Changes in pips: 0, +2, -2, +2, -2 ... then the next change decides the outcome.
    close = np.cumsum([100.0, 0.02, -0.02, 0.02, -0.02, 0.02, 0.0, 0.011, -0.011])
    outcome, sigma = market_outcomes(close, 0.01)
    assert sigma[4] == pytest.approx(np.std([0, 2, -2, 2, -2]))
    assert outcome[4] == UP  # +2 > 0.5 sigma
    assert outcome[5] == NEUTRAL  # 0 change
    assert outcome[7] == DOWN


def test_outcome_at_t_uses_only_bars_up_to_t_plus_one(gbpjpy_sample: Bars) -> None:
    bars = gbpjpy_sample.slice(0, 600)
    base, _ = market_outcomes(bars.close, bars.pip)
    changed = bars.close.copy()
    changed[301:] += 1.0  # move every bar after t+1 = 300
    moved, _ = market_outcomes(changed, bars.pip)
    assert np.array_equal(moved[:300], base[:300])
