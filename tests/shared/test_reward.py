"""Every reward table row, every AMDDP1 branch with its boundaries, and the clip (CONTRACT section 5)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from shared.reward import Action, amddp1, legal_actions


@pytest.mark.parametrize(
    ("pnl", "expected"),
    [
        (0.5, 1.025),  # 0 < p < 10: 1 + 0.05 p
        (9.999, 1.0 + 0.05 * 9.999),
        (10.0, 1.5),  # 10 <= p < 30: 1.5 + 0.025 (p - 10)
        (20.0, 1.75),
        (29.999, 1.5 + 0.025 * 19.999),
        (30.0, 2.0),  # p >= 30: 2 + tanh((p - 30) / 50)
        (80.0, 2.0 + math.tanh(1.0)),
        (0.0, -1.0),  # p <= 0 is a loss: a = 0 -> -1 - 0.1 a
        (-5.0, -1.5),
        (-9.999, -1.0 - 0.1 * 9.999),
        (-10.0, -2.0),  # 10 <= a < 30: -2 - 0.05 (a - 10)
        (-20.0, -2.5),
        (-29.999, -2.0 - 0.05 * 19.999),
        (-30.0, -3.0),  # a >= 30: -3 - tanh((a - 30) / 30)
        (-60.0, -3.0 - math.tanh(1.0)),
    ],
)
def test_amddp1_branches(pnl: float, expected: float) -> None:
    assert float(amddp1(pnl)) == pytest.approx(expected, abs=1e-12)


def test_amddp1_is_vectorised_and_monotone() -> None:
    p = np.linspace(-200, 200, 4001)
    values = amddp1(p)
    assert values.shape == p.shape
    assert np.all(np.diff(values) >= 0)
    assert values.max() < 3.0 and values.min() > -4.0


def test_legal_actions_follow_the_side() -> None:
    legal = legal_actions(np.array([0, 1, -1]))
    assert legal.tolist() == [
        [True, True, True, False],
        [True, False, False, True],
        [True, False, False, True],
    ]
    assert Action.CLOSE == 3
