"""The 9 market features of CONTRACT section 2, computed over a whole bar series at once.

This module is the source of truth for the formulas; ``shared.live_features`` reproduces it bar by
bar for the live feature builder, and the tests hold the two to 1e-9 of each other.
"""

from __future__ import annotations

import numpy as np

from shared.bars import Bars
from shared.schema import (
    MOMENTUM_LONG,
    MOMENTUM_SHORT,
    N_MARKET,
    PRICE_CHANGE_SCALE_PIPS,
    RANGE_BARS,
)

SECONDS_PER_DAY = 86_400
SECONDS_PER_WEEK = 7 * SECONDS_PER_DAY
# 1970-01-01 was a Thursday: Monday 00:00 UTC is 3 days earlier in the weekly cycle.
EPOCH_TO_MONDAY_SECONDS = 3 * SECONDS_PER_DAY


def _block_extreme(x: np.ndarray, window: int, fn: np.ufunc) -> np.ndarray:
    """Trailing running min or max over ``window`` values, fewer at the start (van Herk/Gil-Werman).

    O(n) regardless of the window, and exact: it only ever selects existing values.
    """
    n = len(x)
    if n == 0:
        return x.astype(np.float64)
    # Left-pad with the first value: a repeated first value never changes a min or max over a prefix.
    pad_front = window - 1
    total = pad_front + n
    pad_back = (-total) % window
    padded = np.concatenate([np.full(pad_front, x[0]), x, np.full(pad_back, x[-1])])
    # Blocks as columns: accumulating along axis 0 runs one vector op per row over all blocks.
    blocks = np.ascontiguousarray(padded.reshape(-1, window).T)
    prefix = fn.accumulate(blocks, axis=0).T.ravel()
    suffix = fn.accumulate(blocks[::-1], axis=0)[::-1].T.ravel()
    # Window ending at padded index j = i + window - 1 starts at i: suffix from i, prefix up to j.
    return fn(suffix[:n], prefix[window - 1 : window - 1 + n])


def rolling_min(x: np.ndarray, window: int) -> np.ndarray:
    return _block_extreme(np.asarray(x, dtype=np.float64), window, np.minimum)


def rolling_max(x: np.ndarray, window: int) -> np.ndarray:
    return _block_extreme(np.asarray(x, dtype=np.float64), window, np.maximum)


def lagged(x: np.ndarray, lag: int) -> np.ndarray:
    """x[t - lag], using x[0] where that reaches before the first bar."""
    out = np.empty_like(x)
    k = min(lag, len(x))
    out[:k] = x[0] if len(x) else 0.0
    out[k:] = x[: len(x) - k]
    return out


def scale_by_range(x: np.ndarray, lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
    """(x - lo) / (hi - lo), 0.5 where the range is flat."""
    span = hi - lo
    flat = span == 0.0
    return np.where(flat, 0.5, (x - lo) / np.where(flat, 1.0, span))


def mm60(x: np.ndarray) -> np.ndarray:
    return scale_by_range(x, rolling_min(x, RANGE_BARS), rolling_max(x, RANGE_BARS))


def time_features(ts: np.ndarray) -> np.ndarray:
    """(n, 4): dow cos, dow sin, hour cos, hour sin of UTC epoch seconds."""
    ts = np.asarray(ts, dtype=np.int64)
    days_since_monday = ((ts + EPOCH_TO_MONDAY_SECONDS) % SECONDS_PER_WEEK) / SECONDS_PER_DAY
    hour_of_day = (ts % SECONDS_PER_DAY) / 3600.0
    dow = 2.0 * np.pi * days_since_monday / 7.0
    hour = 2.0 * np.pi * hour_of_day / 24.0
    return np.stack([np.cos(dow), np.sin(dow), np.cos(hour), np.sin(hour)], axis=1)


def market_features(bars: Bars) -> np.ndarray:
    """(n, 9) float64 market features, columns in ``schema.MARKET_FEATURES`` order."""
    c, h, lo = bars.close, bars.high, bars.low
    out = np.empty((len(bars), N_MARKET), dtype=np.float64)
    if len(bars) == 0:
        return out
    low60 = rolling_min(lo, RANGE_BARS)
    high60 = rolling_max(h, RANGE_BARS)
    out[:, 0] = scale_by_range(c, low60, high60)
    out[:, 1] = mm60(c - lagged(c, MOMENTUM_LONG))
    out[:, 2] = mm60(high60 - low60)
    out[:, 3] = mm60(c - lagged(c, MOMENTUM_SHORT))
    out[:, 4] = np.tanh(((c - lagged(c, 1)) / bars.pip) / PRICE_CHANGE_SCALE_PIPS)
    out[:, 5:9] = time_features(bars.ts)
    return out
