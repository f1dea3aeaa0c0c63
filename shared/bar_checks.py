"""Checks of one closed 1-minute bar after the last accepted one: a pure function, reasons by name.

The live feature builder skips a bar that fails them (``services.feature_builder.validation``); a
``POST /v1/decisions`` of bars refuses the request, naming the row (``shared.decision_bars``).
"""

from __future__ import annotations

import math
import time
from typing import Final

BAR_SECONDS: Final = 60
# Bounds of what a live message may carry. Bars: whole minutes from 2000 on, at most a minute ahead
# of this machine's clock (a bar is published after it closes, so even a skewed clock stays inside).
EARLIEST_BAR_TS: Final = 946_684_800  # 2000-01-01 00:00 UTC
MAX_BAR_AHEAD_SECONDS: Final = 60
MAX_PRICE: Final = 1e7  # above any quoted instrument's price; keeps every P&L sum finite
# A jump is only judged against a recent close: after a longer gap (a weekend) the market may have
# moved anywhere, and a check against a stale close would reject every bar from then on.
JUMP_LOOKBACK_SECONDS: Final = 3600
MAX_PRICE_JUMP: Final = 0.1  # |price / last close - 1| above this (within the lookback) is a jump

# Each reason and what it means. Timestamp checks first, then the price checks in the order of
# ``shared.ingest.REJECT_REASONS``; a bar failing several checks gets the first reason that applies.
REASON_TEXT: Final = {
    "not_whole_minute": "ts is not a whole minute (epoch seconds divisible by 60)",
    "too_old": "ts is before 2000-01-01, not a bar of this market",
    "future": f"ts is more than {MAX_BAR_AHEAD_SECONDS} s ahead of this machine's clock",
    "stale": "the bar closed longer ago than the configured limit",
    "duplicate_timestamp": "ts is the same as the previous bar's",
    "out_of_order": "ts is before the previous bar's (bars go oldest first)",
    "non_finite": "a price is NaN or infinite",
    "non_positive_price": "a price is zero or negative",
    "high_below_low": "high is below low",
    "open_outside_range": "open is outside [low, high]",
    "close_outside_range": "close is outside [low, high]",
    "price_jump": "a price is further than the allowed fraction from the previous close within the hour",
}
REJECT_REASONS: Final = tuple(REASON_TEXT)


def check_bar_ts(ts: int, now: float | None = None) -> int:
    """A bar's open time as a live message may carry it, or ValueError saying why not."""
    if ts % BAR_SECONDS:
        raise ValueError(f"bar_ts must be a whole minute (epoch seconds divisible by 60), got {ts}")
    if ts < EARLIEST_BAR_TS:
        raise ValueError(f"bar_ts {ts} is before 2000-01-01, not a bar of this market")
    ahead = ts - (time.time() if now is None else now)
    if ahead > MAX_BAR_AHEAD_SECONDS:
        raise ValueError(f"bar_ts {ts} is {ahead:.0f} s in the future (at most {MAX_BAR_AHEAD_SECONDS} s)")
    return ts


def check_price(value: float, name: str = "close") -> float:
    """A finite positive price below ``MAX_PRICE``, or ValueError."""
    if not math.isfinite(value) or not 0 < value < MAX_PRICE:
        raise ValueError(f"{name} must be a finite positive price below {MAX_PRICE:g}, got {value}")
    return value


def bar_problem(
    ts: int,
    open_: float,
    high: float,
    low: float,
    close: float,
    *,
    last_ts: int | None = None,
    last_close: float | None = None,
    now: float | None = None,
    max_age_seconds: float = 0.0,
    max_jump: float = MAX_PRICE_JUMP,
) -> str | None:
    """``None`` if the bar may follow the last accepted bar (``last_ts``, ``last_close``), else the
    reason (a key of ``REASON_TEXT``). ``now`` (epoch seconds) enables the clock checks;
    ``max_age_seconds`` > 0 (with ``now``) the staleness check."""
    if ts % BAR_SECONDS != 0:
        return "not_whole_minute"
    if ts < EARLIEST_BAR_TS:
        return "too_old"
    if now is not None:
        if ts - now > MAX_BAR_AHEAD_SECONDS:
            return "future"
        if max_age_seconds > 0 and now - (ts + BAR_SECONDS) > max_age_seconds:
            return "stale"
    if last_ts is not None:
        if ts == last_ts:
            return "duplicate_timestamp"
        if ts < last_ts:
            return "out_of_order"
    prices = (open_, high, low, close)
    if not all(math.isfinite(p) for p in prices):
        return "non_finite"
    if any(p <= 0 for p in prices):
        return "non_positive_price"
    if high < low:
        return "high_below_low"
    if not low <= open_ <= high:
        return "open_outside_range"
    if not low <= close <= high:
        return "close_outside_range"
    if (
        last_close is not None
        and last_ts is not None
        and ts - last_ts <= JUMP_LOOKBACK_SECONDS
        and max(abs(high / last_close - 1.0), abs(low / last_close - 1.0)) > max_jump
    ):
        return "price_jump"
    return None
