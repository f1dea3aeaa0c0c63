"""The market features bar by bar, for the live feature builder: constant time per bar, small state.

It reproduces ``shared.features.market_features`` (the source of truth) to within floating-point
rounding of the transcendental functions; warm it up on history and it continues the batch values.
``MarketWindow`` keeps the last 32 rows and makes the observation window of a position: the feature
builder keeps one per instrument, a decision from bars (``shared.decision_bars``) builds one.
"""

from __future__ import annotations

import math
from collections import deque

import numpy as np

from shared.features import EPOCH_TO_MONDAY_SECONDS, SECONDS_PER_DAY, SECONDS_PER_WEEK
from shared.instruments import pip_size
from shared.position import PositionState
from shared.schema import (
    MOMENTUM_LONG,
    MOMENTUM_SHORT,
    N_FEATURES,
    N_MARKET,
    PRICE_CHANGE_SCALE_PIPS,
    RANGE_BARS,
    WINDOW,
)


class RollingExtremum:
    """Trailing min or max over the last ``window`` values (monotonic deque, amortised O(1))."""

    def __init__(self, window: int, is_max: bool) -> None:
        self.window = window
        self.is_max = is_max
        self._items: deque[tuple[int, float]] = deque()
        self._count = 0

    def push(self, value: float) -> float:
        items = self._items
        if self.is_max:
            while items and items[-1][1] <= value:
                items.pop()
        else:
            while items and items[-1][1] >= value:
                items.pop()
        items.append((self._count, value))
        if items[0][0] <= self._count - self.window:
            items.popleft()
        self._count += 1
        return items[0][1]


class RollingScaler:
    """mm60: the value min-max scaled within its own trailing window, 0.5 where flat."""

    def __init__(self, window: int) -> None:
        self._lo = RollingExtremum(window, is_max=False)
        self._hi = RollingExtremum(window, is_max=True)

    def push(self, value: float) -> float:
        return scale_one(value, self._lo.push(value), self._hi.push(value))


def scale_one(x: float, lo: float, hi: float) -> float:
    span = hi - lo
    return 0.5 if span == 0.0 else (x - lo) / span


class LiveMarketFeatures:
    """Feed closed bars in time order; each call returns that bar's 9 market features."""

    def __init__(self, instrument: str) -> None:
        self.instrument = instrument
        self.pip = pip_size(instrument)
        self._closes: deque[float] = deque(maxlen=MOMENTUM_LONG + 1)
        self._low60 = RollingExtremum(RANGE_BARS, is_max=False)
        self._high60 = RollingExtremum(RANGE_BARS, is_max=True)
        self._momentum_long = RollingScaler(RANGE_BARS)
        self._range = RollingScaler(RANGE_BARS)
        self._momentum_short = RollingScaler(RANGE_BARS)
        self.last_ts: int | None = None
        self.bars_seen = 0

    def _close_back(self, lag: int) -> float:
        # Before the first bar the lag uses the first bar, as the batch pipeline does.
        closes = self._closes
        return closes[-1 - lag] if lag < len(closes) else closes[0]

    def update(self, ts: int, high: float, low: float, close: float) -> np.ndarray:
        if self.last_ts is not None and ts <= self.last_ts:
            raise ValueError(f"bar at {ts} is not after the previous bar at {self.last_ts}")
        self.last_ts = ts
        self.bars_seen += 1
        self._closes.append(close)
        low60 = self._low60.push(low)
        high60 = self._high60.push(high)
        out = np.empty(N_MARKET, dtype=np.float64)
        out[0] = scale_one(close, low60, high60)
        out[1] = self._momentum_long.push(close - self._close_back(MOMENTUM_LONG))
        out[2] = self._range.push(high60 - low60)
        out[3] = self._momentum_short.push(close - self._close_back(MOMENTUM_SHORT))
        out[4] = math.tanh(((close - self._close_back(1)) / self.pip) / PRICE_CHANGE_SCALE_PIPS)
        days_since_monday = ((ts + EPOCH_TO_MONDAY_SECONDS) % SECONDS_PER_WEEK) / SECONDS_PER_DAY
        hour_of_day = (ts % SECONDS_PER_DAY) / 3600.0
        dow = 2.0 * math.pi * days_since_monday / 7.0
        hour = 2.0 * math.pi * hour_of_day / 24.0
        out[5] = math.cos(dow)
        out[6] = math.sin(dow)
        out[7] = math.cos(hour)
        out[8] = math.sin(hour)
        return out


class MarketWindow:
    """The market features of the last ``WINDOW`` closed bars of one instrument, as float32 rows."""

    def __init__(self, instrument: str) -> None:
        self.instrument = instrument
        self.features = LiveMarketFeatures(instrument)
        self.rows: deque[np.ndarray] = deque(maxlen=WINDOW)

    def push(self, ts: int, high: float, low: float, close: float) -> None:
        """The next closed bar (after the last one pushed)."""
        self.rows.append(self.features.update(ts, high, low, close).astype(np.float32))

    def observation(self, position: PositionState) -> np.ndarray:
        """The (32, 15) float32 window of the last bar: the market rows, and the 6 columns of
        ``position`` (marked at that bar's close) on every row."""
        if len(self.rows) < WINDOW:
            raise RuntimeError(
                f"{self.instrument}: only {len(self.rows)} feature rows for a {WINDOW}-row window"
            )
        window = np.empty((WINDOW, N_FEATURES), dtype=np.float32)
        window[:, :N_MARKET] = np.stack(self.rows)
        # + 0.0 turns a -0.0 (a flat state's leftover negative trackers times 0) into the +0.0 that the
        # backtest's windows hold for flat rows: bit-identical windows, same values.
        window[:, N_MARKET:] = position.features() + np.float32(0.0)
        return window
