"""Bar validation: one reason per kind of bad bar, nothing for a good one."""

from __future__ import annotations

import math
from dataclasses import replace

import pytest

from services.feature_builder.validation import BarLimits, LiveBar, validate_bar
from shared.bar_checks import REJECT_REASONS

GOOD = LiveBar("GBPJPY", 1_483_430_400, 144.790, 144.809, 144.762, 144.774, 0.0)
LAST = GOOD.ts - 60
LAST_CLOSE = 144.780
NOW = GOOD.ts + 65.0  # five seconds after the bar closed
LIMITS = BarLimits(max_age_seconds=300.0, max_jump=0.1)

CASES = {
    "not_whole_minute": replace(GOOD, ts=GOOD.ts + 30),
    "too_old": replace(GOOD, ts=946_684_800 - 60),
    "future": replace(GOOD, ts=GOOD.ts + 10 * 365 * 86_400),
    "stale": replace(GOOD, ts=LAST - 3600),  # a live bar that closed over an hour ago
    "duplicate_timestamp": replace(GOOD, ts=LAST),
    "out_of_order": replace(GOOD, ts=LAST - 60),
    "non_finite": replace(GOOD, close=math.nan),
    "non_positive_price": replace(GOOD, low=0.0),
    "high_below_low": replace(GOOD, high=144.700, open=144.700, close=144.700),
    "open_outside_range": replace(GOOD, open=144.900),
    "close_outside_range": replace(GOOD, close=144.700),
    "price_jump": replace(GOOD, open=14479.0, high=14480.9, low=14476.2, close=14477.4),  # a 100x spike
}


def check(bar: LiveBar, last_ts: int | None = LAST, **context: object) -> str | None:
    """The bar after the last accepted one, checked as a live bar at ``NOW`` with ``LIMITS``."""
    values = {"last_close": LAST_CLOSE, "now": NOW, "live": True, "limits": LIMITS, **context}
    return validate_bar(bar, last_ts, **values)  # type: ignore[arg-type]


def test_a_good_bar_passes() -> None:
    assert validate_bar(GOOD, LAST) is None
    assert validate_bar(GOOD, None) is None
    assert validate_bar(replace(GOOD, open=GOOD.low, close=GOOD.high), LAST) is None  # bounds included


@pytest.mark.parametrize("reason", REJECT_REASONS)
def test_each_bad_bar_gets_its_reason(reason: str) -> None:
    assert set(CASES) == set(REJECT_REASONS)
    # "stale" comes before the order checks: the stale bar is also older than the last one.
    assert check(CASES[reason]) == reason


@pytest.mark.parametrize("value", [math.inf, -math.inf, math.nan])
def test_non_finite_prices_in_any_column(value: float) -> None:
    for column in ("open", "high", "low", "close"):
        assert validate_bar(replace(GOOD, **{column: value}), LAST) == "non_finite"


def test_the_first_failing_reason_wins() -> None:
    assert validate_bar(replace(GOOD, ts=LAST, close=math.nan), LAST) == "duplicate_timestamp"
    assert validate_bar(replace(GOOD, low=-1.0, high=-2.0), LAST) == "non_positive_price"


def test_clock_checks_need_a_clock_and_staleness_a_live_bar_and_a_limit() -> None:
    assert validate_bar(CASES["future"], LAST) is None  # no clock given: not judged
    assert check(CASES["stale"], last_ts=None, live=False) is None  # history is old by nature
    assert check(CASES["stale"], last_ts=None, limits=BarLimits(max_age_seconds=0)) is None  # off


def test_a_jump_is_judged_only_against_a_close_within_the_hour() -> None:
    moved = replace(GOOD, open=160.0, high=160.1, low=159.9, close=160.0)  # +10.5%
    assert check(moved) == "price_jump"
    assert check(moved, limits=BarLimits(max_age_seconds=300.0, max_jump=0.2)) is None
    assert check(moved, last_ts=LAST - 2 * 3600) is None  # after a gap (a weekend) any price goes
    assert check(moved, last_close=None) is None  # nothing to compare with yet
