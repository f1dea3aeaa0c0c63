"""Market outcomes, the labels of the chance nodes (CONTRACT section 3)."""

from __future__ import annotations

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from shared.schema import DOWN, NEUTRAL, OUTCOME_SIGMA_BARS, OUTCOME_THRESHOLD, UP


def change_pips(close: np.ndarray, pip: float) -> np.ndarray:
    """One-bar changes in pips; the first bar's change is 0 (its lag uses the first bar)."""
    out = np.zeros(len(close), dtype=np.float64)
    out[1:] = np.diff(close) / pip
    return out


def rolling_sigma(changes: np.ndarray, window: int = OUTCOME_SIGMA_BARS) -> np.ndarray:
    """Population standard deviation of the last ``window`` changes ending at t (fewer at the start)."""
    n = len(changes)
    sigma = np.empty(n, dtype=np.float64)
    head = min(window - 1, n)
    for t in range(head):
        sigma[t] = changes[: t + 1].std()
    if n >= window:
        sigma[window - 1 :] = sliding_window_view(changes, window).std(axis=1)
    return sigma


def market_outcomes(
    close: np.ndarray, pip: float, threshold: float = OUTCOME_THRESHOLD
) -> tuple[np.ndarray, np.ndarray]:
    """(outcome int8 for bars 0..n-2, sigma float64 for bars 0..n-2); the last bar has no outcome.

    UP if the next change exceeds ``threshold`` sigma, DOWN if below minus that, else NEUTRAL.
    """
    changes = change_pips(close, pip)
    sigma = rolling_sigma(changes)[:-1]
    following = changes[1:]
    outcome = np.full(len(following), NEUTRAL, dtype=np.int8)
    outcome[following > threshold * sigma] = UP
    outcome[following < -threshold * sigma] = DOWN
    return outcome, sigma
