"""Replays of real sample bars through the builder into real Redis, answered by a stand-in gateway:
the windows are the backtest's windows bit for bit, with the sessions, breaks and rejections of the
live rules."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import redis

from services.feature_builder.main import run
from services.feature_builder.metrics import FeatureBuilderMetrics
from services.feature_builder.settings import FeatureBuilderSettings
from services.feature_builder.sources import BarRows, ReplaySource
from shared.bars import Bars
from shared.schema import N_MARKET
from shared.sessions import SESSION_BARS
from tests.helpers import iso
from tests.services.feature_builder.conftest import Gateway, Names, stream_messages, trader
from tests.services.feature_builder.helpers import assert_backtest_windows

START, LIVE = 1000, 400  # sample bar index of the first live bar, live bars (one session and 40 bars)
HISTORY = 450


def settings_for(names: Names, **kwargs: object) -> FeatureBuilderSettings:
    shared = {
        "windows_stream": names.windows_stream,
        "positions_stream": names.positions_stream,
        "account": names.account,
    }
    base: dict[str, object] = {
        "instrument": "GBPJPY",
        "shared": shared,
        "metrics_port": 0,
        "position_wait_seconds": 5.0,
    }
    return FeatureBuilderSettings(**{**base, **kwargs})


def value(metrics: FeatureBuilderMetrics, name: str, **labels: str) -> float:
    found = metrics.registry.get_sample_value(name, labels)
    return 0.0 if found is None else found


def test_duckdb_replay_publishes_the_backtest_windows(
    sample_db: Path, gbpjpy_sample: Bars, redis_client: redis.Redis, names: Names
) -> None:
    ts = gbpjpy_sample.ts
    settings = settings_for(
        names, source="duckdb", db=sample_db, start=iso(ts[START]), end=iso(ts[START + LIVE])
    )
    metrics = FeatureBuilderMetrics()
    with Gateway(redis_client, names) as gateway:
        assert run(settings, metrics=metrics) == 0
        # run() returns after the last window's position arrived: the gateway has answered all.
        assert len(gateway.actions) == LIVE
    published = stream_messages(redis_client, names.windows_stream)
    assert [m.kind for m in published] == ["window"] * LIVE
    assert [m.step for m in published] == list(range(SESSION_BARS)) + list(range(LIVE - SESSION_BARS))
    assert [i for i, m in enumerate(published) if m.last_bar] == [SESSION_BARS - 1]
    assert {m.session_id for m in published} == {str(ts[START]), str(ts[START + SESSION_BARS])}
    assert all(m.instrument == "GBPJPY" and m.published_at > 0 for m in published)
    assert assert_backtest_windows(gbpjpy_sample, published, {}) == LIVE

    assert value(metrics, "smz_feature_builder_bars_total", instrument="GBPJPY") == LIVE
    assert value(metrics, "smz_feature_builder_windows_published_total", instrument="GBPJPY") == LIVE
    assert value(metrics, "smz_feature_builder_last_bar_timestamp_seconds", instrument="GBPJPY") == float(
        ts[START + LIVE - 1]
    )
    assert value(metrics, "smz_feature_builder_bar_lag_seconds", instrument="GBPJPY") > 3e7  # bars of 2017
    # A wait before every window but the sessions' first ones, and one for the last window's position.
    assert value(metrics, "smz_feature_builder_position_wait_seconds_count") == LIVE - 2 + 1
    assert value(metrics, "smz_feature_builder_position_timeouts_total") == 0
    assert value(metrics, "smz_feature_builder_session_breaks_total", instrument="GBPJPY") == 0


def test_positions_from_the_gateway_fill_columns_9_to_14(
    sample_zip: Path, gbpjpy_sample: Bars, redis_client: redis.Redis, names: Names
) -> None:
    """File replay; the gateway trades: the position columns are the PositionState arithmetic, and
    whole windows equal the environment's after the same actions."""
    ts = gbpjpy_sample.ts
    settings = settings_for(
        names, source="file", file=sample_zip, start=iso(ts[START]), end=iso(ts[START + LIVE])
    )
    with Gateway(redis_client, names, policy=trader(seed=11)) as gateway:
        assert run(settings) == 0
    published = stream_messages(redis_client, names.windows_stream)
    assert len(published) == LIVE
    sides = []
    for message in published:
        window = np.asarray(message.window, dtype=np.float32)
        assert np.array_equal(
            window[:, N_MARKET:], np.tile(gateway.expected_position[message.bar_ts], (32, 1))
        )
        sides.append(int(window[-1, N_MARKET]))
    assert sides.count(1) > 20 and sides.count(-1) > 20 and sides.count(0) > 20
    assert sum(1 for a in gateway.actions.values() if a == 3) >= 3  # closed trades
    assert assert_backtest_windows(gbpjpy_sample, published, gateway.actions) == LIVE


def _replay(bars: Bars, keep: np.ndarray, start: int, stop: int) -> tuple[ReplaySource, Bars]:
    """A replay of sample bars [start - HISTORY, stop) that are in ``keep`` (HISTORY of them history),
    and all the sample bars in ``keep``, for the backtest."""
    index = np.arange(start - HISTORY, stop)
    index = index[np.isin(index, keep)]
    rows = BarRows.from_bars(bars).take(index)
    source = ReplaySource("GBPJPY", rows.take(slice(0, HISTORY)), rows.take(slice(HISTORY, None)))
    kept = BarRows.from_bars(bars).take(keep)
    return source, Bars("GBPJPY", kept.ts, kept.open, kept.high, kept.low, kept.close, kept.volume)


def test_a_gap_breaks_the_session_and_trading_resumes_after_warm_up(
    gbpjpy_sample: Bars, redis_client: redis.Redis, names: Names
) -> None:
    ts = gbpjpy_sample.ts
    gap = np.arange(START + 100, START + 115)  # 15 bars missing: a 16-minute gap at step 100
    keep = np.setdiff1d(np.arange(len(ts)), gap)
    source, gapped = _replay(gbpjpy_sample, keep, START, START + LIVE)
    metrics = FeatureBuilderMetrics()
    with Gateway(redis_client, names, policy=trader(seed=3)) as gateway:
        assert run(settings_for(names), source=source, metrics=metrics) == 0
    published = stream_messages(redis_client, names.windows_stream)
    kinds = [m.kind for m in published]
    assert kinds.count("session_break") == 1
    cut = kinds.index("session_break")
    before, brk, after = published[:cut], published[cut], published[cut + 1 :]
    assert [m.step for m in before] == list(range(100))
    assert brk.bar_ts == int(ts[START + 115]) and brk.session_id == str(ts[START]) and brk.step == -1
    assert brk.window is None and brk.close == float(gbpjpy_sample.close[START + 115])
    # 150 gap-free bars again before the next session starts.
    assert after[0].bar_ts == int(ts[START + 115 + 150]) and after[0].session_id == str(after[0].bar_ts)
    assert [m.step for m in after] == list(range(LIVE - 115 - 150))
    assert value(metrics, "smz_feature_builder_session_breaks_total", instrument="GBPJPY") == 1
    # Features run on over the gap, exactly as the batch pipeline computes them over the gapped series.
    windows = [m for m in published if m.kind == "window"]
    assert assert_backtest_windows(gapped, windows, gateway.actions) == len(windows)


def test_rejected_bars_are_counted_and_change_nothing(
    gbpjpy_sample: Bars, redis_client: redis.Redis, names: Names
) -> None:
    ts, b = gbpjpy_sample.ts, gbpjpy_sample
    source, _ = _replay(gbpjpy_sample, np.arange(len(ts)), START, START + 200)
    live = source.live_rows
    at = 10  # after the 11th live bar (mid-session), before the 12th
    t, t_next = int(ts[START + at]), int(ts[START + at + 1])
    o, h, lo, c = (float(x[START + at + 1]) for x in (b.open, b.high, b.low, b.close))
    bad = [  # (ts, open, high, low, close): one per reason
        (t, o, h, lo, c),  # duplicate_timestamp
        (t - 60, o, h, lo, c),  # out_of_order
        (t + 30, o, h, lo, c),  # not_whole_minute
        (t_next, o, h, lo, float("nan")),  # non_finite
        (t_next, o, h, -1.0, c),  # non_positive_price
        (t_next, lo - 0.01, lo - 0.01, lo, lo - 0.01),  # high_below_low
        (t_next, h + 0.01, h, lo, c),  # open_outside_range
        (t_next, o, h, lo, lo - 0.01),  # close_outside_range
    ]
    cols = [np.asarray(x) for x in zip(*bad, strict=True)]
    insert = at + 1
    rows = BarRows(
        np.insert(live.ts, insert, cols[0]).astype(np.int64),
        np.insert(live.open, insert, cols[1]),
        np.insert(live.high, insert, cols[2]),
        np.insert(live.low, insert, cols[3]),
        np.insert(live.close, insert, cols[4]),
        np.insert(live.volume, insert, np.zeros(len(bad))),
    )
    source = ReplaySource("GBPJPY", source.history_rows, rows)
    metrics = FeatureBuilderMetrics()
    with Gateway(redis_client, names):
        assert run(settings_for(names), source=source, metrics=metrics) == 0
    published = stream_messages(redis_client, names.windows_stream)
    assert [m.step for m in published] == list(range(200))
    assert [m.bar_ts for m in published] == [int(x) for x in ts[START : START + 200]]
    assert assert_backtest_windows(gbpjpy_sample, published, {}) == 200
    for reason in (
        "duplicate_timestamp",
        "out_of_order",
        "not_whole_minute",
        "non_finite",
        "non_positive_price",
        "high_below_low",
        "open_outside_range",
        "close_outside_range",
    ):
        assert (
            value(metrics, "smz_feature_builder_rejected_bars_total", instrument="GBPJPY", reason=reason) == 1
        )
    assert value(metrics, "smz_feature_builder_bars_total", instrument="GBPJPY") == 200


def test_the_position_is_found_on_the_stream_alone(
    gbpjpy_sample: Bars, redis_client: redis.Redis, names: Names
) -> None:
    """The gateway answers on the stream only, right after the window: the builder's cursor, taken
    before it published the window, still sees the answer (the key path is in test_waiting.py)."""
    source, _ = _replay(gbpjpy_sample, np.arange(len(gbpjpy_sample)), START, START + 60)
    metrics = FeatureBuilderMetrics()
    with Gateway(redis_client, names, policy=trader(seed=2), mode="stream") as gateway:
        assert run(settings_for(names), source=source, metrics=metrics) == 0
    published = stream_messages(redis_client, names.windows_stream)
    assert len(published) == 60
    for message in published:
        expected = np.tile(gateway.expected_position[message.bar_ts], (32, 1))
        assert np.array_equal(np.asarray(message.window, dtype=np.float32)[:, N_MARKET:], expected)
    assert value(metrics, "smz_feature_builder_position_timeouts_total") == 0
