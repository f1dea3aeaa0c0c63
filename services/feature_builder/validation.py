"""Checks of one live closed bar before it touches any state: a pure function, reasons by name."""

from __future__ import annotations

import math
from dataclasses import dataclass

from shared.wire import EARLIEST_BAR_TS, MAX_BAR_AHEAD_SECONDS

BAR_SECONDS = 60
# A jump is only judged against a recent close: after a longer gap (a weekend) the market may have
# moved anywhere, and a check against a stale close would reject every bar from then on.
JUMP_LOOKBACK_SECONDS = 3600

# Timestamp checks first, then the price checks in the order of ``shared.ingest.REJECT_REASONS``;
# a bar failing several checks gets the first reason that applies.
REJECT_REASONS: tuple[str, ...] = (
    "not_whole_minute",  # ts is not a multiple of 60 s
    "too_old",  # ts before 2000
    "future",  # ts more than a minute ahead of this machine's clock
    "stale",  # a live bar that closed longer ago than the configured limit
    "duplicate_timestamp",  # ts == the last accepted bar's
    "out_of_order",  # ts < the last accepted bar's
    "non_finite",  # a price is nan or inf
    "non_positive_price",
    "high_below_low",
    "open_outside_range",
    "close_outside_range",
    "price_jump",  # a price further than the allowed fraction from the last close within the hour
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


@dataclass(frozen=True, slots=True)
class BarLimits:
    """How far a bar may be from this machine's clock and from the last accepted close."""

    max_age_seconds: float = 0.0  # a live bar closed longer ago than this is stale; 0: no limit
    max_jump: float = 0.1  # |price / last close - 1| above this is a jump (within the lookback)


def validate_bar(
    bar: LiveBar,
    last_ts: int | None,
    *,
    last_close: float | None = None,
    now: float | None = None,
    live: bool = False,
    limits: BarLimits = BarLimits(),
) -> str | None:
    """``None`` if the bar may be used after the last accepted bar (``last_ts``, ``last_close``), else
    the reason. ``now`` (epoch seconds) enables the clock checks; ``live`` the staleness check."""
    if bar.ts % BAR_SECONDS != 0:
        return "not_whole_minute"
    if bar.ts < EARLIEST_BAR_TS:
        return "too_old"
    if now is not None:
        if bar.ts - now > MAX_BAR_AHEAD_SECONDS:
            return "future"
        if live and limits.max_age_seconds > 0 and now - (bar.ts + BAR_SECONDS) > limits.max_age_seconds:
            return "stale"
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
    if (
        last_close is not None
        and last_ts is not None
        and bar.ts - last_ts <= JUMP_LOOKBACK_SECONDS
        and max(abs(bar.high / last_close - 1.0), abs(bar.low / last_close - 1.0)) > limits.max_jump
    ):
        return "price_jump"
    return None
