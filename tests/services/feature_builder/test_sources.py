"""Replay sources (DuckDB, bar file) and their pacing."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import numpy as np
import pytest

from services.feature_builder.sources import BarRows, Pacer, ReplaySource, duckdb_source, file_source
from shared.bars import Bars
from shared.schema import WARMUP_BARS

START, END = 7000, 7400  # sample bar indices; a weekend gap lies 451 bars before START


def as_tuples(bars: Bars, lo: int, hi: int) -> list[tuple[object, ...]]:
    cols = (bars.ts, bars.open, bars.high, bars.low, bars.close, bars.volume)
    return list(zip(["GBPJPY"] * (hi - lo), *(c[lo:hi].tolist() for c in cols), strict=True))


def tuples(bars: list) -> list[tuple[object, ...]]:
    return [(b.instrument, b.ts, b.open, b.high, b.low, b.close, b.volume) for b in bars]


def test_duckdb_source_replays_a_range_after_its_history(sample_db: Path, gbpjpy_sample: Bars) -> None:
    ts = gbpjpy_sample.ts
    history_bars = WARMUP_BARS + 300
    source = duckdb_source(
        sample_db, "GBPJPY", start=int(ts[START]), end=int(ts[END]), history_bars=history_bars
    )
    stop = threading.Event()
    assert tuples(source.history(stop)) == as_tuples(gbpjpy_sample, START - history_bars, START)
    assert tuples(list(source.bars(stop))) == as_tuples(gbpjpy_sample, START, END)
    # Without a start: the first history_bars bars are history; without an end: to the last bar.
    source = duckdb_source(sample_db, "GBPJPY", history_bars=history_bars)
    assert len(source.history_rows) == history_bars and len(source) == len(ts) - history_bars
    # History reaches back over a long gap (the series' first bars) when it must.
    source = duckdb_source(sample_db, "GBPJPY", start=int(ts[100]), history_bars=history_bars)
    assert len(source.history_rows) == 100
    with pytest.raises(LookupError, match="no EURUSD bars"):
        duckdb_source(sample_db, "EURUSD", history_bars=history_bars)


def test_file_source_reads_the_vendor_zip_like_the_ingest(sample_zip: Path, gbpjpy_sample: Bars) -> None:
    ts = gbpjpy_sample.ts
    source = file_source(sample_zip, "GBPJPY", start=int(ts[START]), end=int(ts[END]), history_bars=200)
    stop = threading.Event()
    assert tuples(source.history(stop)) == as_tuples(gbpjpy_sample, START - 200, START)
    assert tuples(list(source.bars(stop))) == as_tuples(gbpjpy_sample, START, END)
    assert source.rejects == []


def test_file_source_keeps_file_order_and_the_parsers_rejects(tmp_path: Path) -> None:
    path = tmp_path / "bars.csv"
    path.write_text(
        "time,open,high,low,close\n"
        "2017-01-03T08:00:00Z,144.79,144.81,144.76,144.77\n"
        "2017-01-03T08:02:00Z,144.80,144.82,144.79,144.81\n"
        "2017-01-03T08:01:00Z,144.77,144.82,144.77,144.80\n"  # out of order: the builder rejects it
        "2017-01-03T08:03:00Z,144.80,144.70,144.79,144.81\n"  # high below low: the parser rejects it
        "2017-01-03T08:04:00Z,144.81,144.83,144.80,144.82\n"
    )
    source = file_source(path, "GBPJPY", history_bars=1)
    bars = list(source.bars(threading.Event()))
    assert [b.ts % 3600 // 60 for b in bars] == [2, 1, 4]
    assert [(r.line, r.reason) for r in source.rejects] == [(5, "high_below_low")]


def replay(n: int, pacer: Pacer, step_seconds: int = 60) -> ReplaySource:
    ts = 1_483_430_400 + step_seconds * np.arange(n, dtype=np.int64)
    price = np.full(n, 144.0)
    rows = BarRows(ts, price, price, price, price, np.zeros(n))
    return ReplaySource("GBPJPY", rows.take(slice(0, 0)), rows, pacer)


def test_paced_replay_takes_about_pace_ms_per_bar() -> None:
    source = replay(16, Pacer(pace_ms=40))
    started = time.monotonic()
    released = []
    for _bar in source.bars(threading.Event()):
        released.append(time.monotonic() - started)
    assert len(released) == 16
    assert 0.5 <= released[-1] < 1.5  # 15 intervals of 40 ms
    assert released[0] < 0.1
    fast = time.monotonic()
    assert len(list(replay(2000, Pacer()).bars(threading.Event()))) == 2000
    assert time.monotonic() - fast < 0.5


def test_real_time_pacing_follows_the_bar_timestamps() -> None:
    pacer = Pacer(pace_ms=5, realtime=True)  # real time wins over pace_ms
    first = 1_483_430_400
    assert [pacer.offset(i, ts, first) for i, ts in enumerate([first, first + 60, first + 600])] == [
        0.0,
        60.0,
        600.0,
    ]
    assert Pacer(pace_ms=250).offset(4, first + 60_000, first) == 1.0
    assert not Pacer().paced and Pacer(1).paced and Pacer(realtime=True).paced


def test_stop_interrupts_a_paced_replay() -> None:
    stop = threading.Event()
    source = replay(100, Pacer(realtime=True))
    threading.Timer(0.2, stop.set).start()
    started = time.monotonic()
    assert len(list(source.bars(stop))) == 1  # the next bar is due a minute later
    assert time.monotonic() - started < 1.0
