"""Bar validation: one reason per kind of bad bar, nothing for a good one."""

from __future__ import annotations

import math
from dataclasses import replace

import pytest

from services.feature_builder.validation import REJECT_REASONS, LiveBar, validate_bar

GOOD = LiveBar("GBPJPY", 1_483_430_400, 144.790, 144.809, 144.762, 144.774, 0.0)
LAST = GOOD.ts - 60

CASES = {
    "not_whole_minute": replace(GOOD, ts=GOOD.ts + 30),
    "duplicate_timestamp": replace(GOOD, ts=LAST),
    "out_of_order": replace(GOOD, ts=LAST - 60),
    "non_finite": replace(GOOD, close=math.nan),
    "non_positive_price": replace(GOOD, low=0.0),
    "high_below_low": replace(GOOD, high=144.700, open=144.700, close=144.700),
    "open_outside_range": replace(GOOD, open=144.900),
    "close_outside_range": replace(GOOD, close=144.700),
}


def test_a_good_bar_passes() -> None:
    assert validate_bar(GOOD, LAST) is None
    assert validate_bar(GOOD, None) is None
    assert validate_bar(replace(GOOD, open=GOOD.low, close=GOOD.high), LAST) is None  # bounds included


@pytest.mark.parametrize("reason", REJECT_REASONS)
def test_each_bad_bar_gets_its_reason(reason: str) -> None:
    assert set(CASES) == set(REJECT_REASONS)
    assert validate_bar(CASES[reason], LAST) == reason


@pytest.mark.parametrize("value", [math.inf, -math.inf, math.nan])
def test_non_finite_prices_in_any_column(value: float) -> None:
    for column in ("open", "high", "low", "close"):
        assert validate_bar(replace(GOOD, **{column: value}), LAST) == "non_finite"


def test_the_first_failing_reason_wins() -> None:
    assert validate_bar(replace(GOOD, ts=LAST, close=math.nan), LAST) == "duplicate_timestamp"
    assert validate_bar(replace(GOOD, low=-1.0, high=-2.0), LAST) == "non_positive_price"
