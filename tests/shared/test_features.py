"""Every market feature against a direct, slow reading of CONTRACT section 2, on real bars."""

from __future__ import annotations

import math

import numpy as np
import pytest

from shared.bars import Bars, gap_breaks
from shared.features import market_features, rolling_max, rolling_min
from shared.live_features import LiveMarketFeatures
from shared.schema import MARKET_FEATURES, N_MARKET


def reference_features(bars: Bars) -> np.ndarray:
    """CONTRACT section 2 read literally: a Python loop over bars, windows sliced afresh each time."""
    c, h, lo, ts = bars.close.tolist(), bars.high.tolist(), bars.low.tolist(), bars.ts.tolist()
    n = len(c)

    def w60(values: list[float], t: int) -> list[float]:
        return values[max(0, t - 59) : t + 1]

    def mm60(values: list[float], t: int) -> float:
        window = w60(values, t)
        low, high = min(window), max(window)
        return 0.5 if high == low else (values[t] - low) / (high - low)

    def back(t: int, lag: int) -> float:
        return c[max(0, t - lag)]

    m60 = [c[t] - back(t, 60) for t in range(n)]
    m5 = [c[t] - back(t, 5) for t in range(n)]
    r = [max(w60(h, t)) - min(w60(lo, t)) for t in range(n)]
    out = np.empty((n, N_MARKET))
    for t in range(n):
        low60, high60 = min(w60(lo, t)), max(w60(h, t))
        out[t, 0] = 0.5 if high60 == low60 else (c[t] - low60) / (high60 - low60)
        out[t, 1] = mm60(m60, t)
        out[t, 2] = mm60(r, t)
        out[t, 3] = mm60(m5, t)
        out[t, 4] = math.tanh(((c[t] - back(t, 1)) / bars.pip) / 10)
        # Fractional days since Monday 00:00 UTC and fractional hour of the UTC day, from calendar
        # arithmetic rather than the epoch-offset trick the implementation uses.
        import datetime as dt

        moment = dt.datetime.fromtimestamp(ts[t], dt.UTC)
        d = moment.weekday() + (moment.hour * 3600 + moment.minute * 60 + moment.second) / 86400
        u = moment.hour + moment.minute / 60 + moment.second / 3600
        out[t, 5] = math.cos(2 * math.pi * d / 7)
        out[t, 6] = math.sin(2 * math.pi * d / 7)
        out[t, 7] = math.cos(2 * math.pi * u / 24)
        out[t, 8] = math.sin(2 * math.pi * u / 24)
    return out


@pytest.fixture(scope="module")
def first_weeks(gbpjpy_sample: Bars) -> Bars:
    return gbpjpy_sample.slice(0, 8000)  # includes the start of the history and a weekend


def test_every_feature_matches_the_slow_reference(first_weeks: Bars) -> None:
    assert int(gap_breaks(first_weeks.ts).sum()) > 0
    fast = market_features(first_weeks)
    slow = reference_features(first_weeks)
    for j, name in enumerate(MARKET_FEATURES):
        np.testing.assert_allclose(fast[:, j], slow[:, j], rtol=0, atol=1e-12, err_msg=name)


def test_feature_ranges_on_a_year_of_real_bars(gbpjpy_2017: Bars) -> None:
    feats = market_features(gbpjpy_2017)
    assert np.isfinite(feats).all()
    assert feats[:, :4].min() >= 0.0 and feats[:, :4].max() <= 1.0
    assert np.abs(feats[:, 4:]).max() <= 1.0


def test_known_values_on_the_first_real_bars(first_weeks: Bars) -> None:
    feats = market_features(first_weeks)
    # The very first bar: every window holds one value, so all range scalings are flat (0.5)
    # except position-in-range, which is 0.5 only when high == low.
    assert feats[0, 1] == 0.5 and feats[0, 2] == 0.5 and feats[0, 3] == 0.5
    assert feats[0, 4] == 0.0  # no previous bar: the change uses the first bar itself
    # 2017-01-02 07:00 UTC is a Monday: 7/24 of a day into the week, 7 o'clock.
    assert first_weeks.ts[0] == 1483340400
    d, u = 7 / 24, 7.0
    assert feats[0, 5] == pytest.approx(math.cos(2 * math.pi * d / 7), abs=1e-15)
    assert feats[0, 8] == pytest.approx(math.sin(2 * math.pi * u / 24), abs=1e-15)


def test_no_lookahead(first_weeks: Bars) -> None:
    base = market_features(first_weeks)
    rng = np.random.default_rng(3)
    for t in (0, 59, 60, 61, 500, 4000, len(first_weeks) - 2):
        changed = first_weeks.close.copy()
        highs = first_weeks.high.copy()
        lows = first_weeks.low.copy()
        noise = rng.normal(0, 0.5, len(changed) - t - 1)
        changed[t + 1 :] += noise
        highs[t + 1 :] += noise + 1.0
        lows[t + 1 :] += noise - 1.0
        future = Bars(
            first_weeks.instrument, first_weeks.ts, first_weeks.open, highs, lows, changed, first_weeks.volume
        )
        feats = market_features(future)
        np.testing.assert_array_equal(feats[: t + 1], base[: t + 1])
        assert not np.array_equal(feats[t + 1 :], base[t + 1 :])


def test_rolling_extremes_match_a_loop() -> None:
    rng = np.random.default_rng(0)
    for n in (1, 2, 59, 60, 61, 121, 1000):
        x = rng.normal(size=n)
        assert np.array_equal(rolling_min(x, 60), [x[max(0, i - 59) : i + 1].min() for i in range(n)])
        assert np.array_equal(rolling_max(x, 60), [x[max(0, i - 59) : i + 1].max() for i in range(n)])


def test_live_builder_equals_batch_on_50000_real_bars_with_weekends(gbpjpy_2017: Bars) -> None:
    # All 70,000 bars are compared; the 50,000 after the first 20,000 hold seven weekends.
    bars = gbpjpy_2017.slice(0, 70_000)
    batch = market_features(bars)
    live = LiveMarketFeatures(bars.instrument)
    got = np.empty_like(batch)
    for i in range(len(bars)):
        got[i] = live.update(int(bars.ts[i]), float(bars.high[i]), float(bars.low[i]), float(bars.close[i]))
    compared = slice(20_000, 70_000)
    assert int((np.diff(bars.ts[compared]) > 2 * 86400 - 3600).sum()) >= 5  # weekends inside
    np.testing.assert_allclose(got[compared], batch[compared], rtol=0, atol=1e-9)
    np.testing.assert_allclose(got[:20_000], batch[:20_000], rtol=0, atol=1e-9)


def test_live_builder_rejects_out_of_order_bars() -> None:
    live = LiveMarketFeatures("GBPJPY")
    live.update(60, 1.0, 1.0, 1.0)
    with pytest.raises(ValueError, match="not after"):
        live.update(60, 1.0, 1.0, 1.0)
