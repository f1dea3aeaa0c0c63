"""Checks of one live closed bar before it touches any state: a pure function, reasons by name."""

from __future__ import annotations

import math
from dataclasses import dataclass

# Timestamp checks first, then the price checks in the order of ``shared.ingest.REJECT_REASONS``;
# a bar failing several checks gets the first reason that applies.
REJECT_REASONS: tuple[str, ...] = (
    "not_whole_minute",  # ts is not a multiple of 60 s
    "duplicate_timestamp",  # ts == the last accepted bar's
    "out_of_order",  # ts < the last accepted bar's
    "non_finite",  # a price is nan or inf
    "non_positive_price",
    "high_below_low",
    "open_outside_range",
    "close_outside_range",
)


@dataclass(frozen=True, slots=True)
class LiveBar:
    """One closed 1-minute bid bar; ``ts`` is its open time in epoch seconds UTC."""

    instrument: str
    ts: int
    open: float
    high: float
    low: float
    close: float
    volume: float = 0.0


def validate_bar(bar: LiveBar, last_ts: int | None) -> str | None:
    """``None`` if the bar may be used after the last accepted bar at ``last_ts``, else the reason."""
    if bar.ts % 60 != 0:
        return "not_whole_minute"
    if last_ts is not None:
        if bar.ts == last_ts:
            return "duplicate_timestamp"
        if bar.ts < last_ts:
            return "out_of_order"
    prices = (bar.open, bar.high, bar.low, bar.close)
    if not all(math.isfinite(p) for p in prices):
        return "non_finite"
    if any(p <= 0 for p in prices):
        return "non_positive_price"
    if bar.high < bar.low:
        return "high_below_low"
    if not bar.low <= bar.open <= bar.high:
        return "open_outside_range"
    if not bar.low <= bar.close <= bar.high:
        return "close_outside_range"
    return None
