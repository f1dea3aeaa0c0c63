"""Sessions and chronological splits (CONTRACT section 4)."""

from __future__ import annotations

import numpy as np

from shared.bars import Bars
from shared.dataset import build_dataset
from shared.schema import WARMUP_BARS
from shared.sessions import (
    SESSION_BARS,
    SplitBoundaries,
    split_session_starts,
    tile_sessions,
    valid_session_starts,
)


def minute_grid(n: int, gaps: dict[int, int]) -> np.ndarray:
    """n bars one minute apart, with an extra gap of `gaps[i]` minutes before bar i."""
    steps = np.full(n, 60, dtype=np.int64)
    steps[0] = 0
    for i, minutes in gaps.items():
        steps[i] += minutes * 60
    return 1_500_000_000 + np.cumsum(steps)


def reference_starts(ts: np.ndarray) -> list[int]:
    out = []
    for s in range(len(ts)):
        lo, hi = s - WARMUP_BARS, s + SESSION_BARS - 1
        if lo < 0 or hi > len(ts) - 2:
            continue
        if all(ts[i] - ts[i - 1] <= 600 for i in range(lo + 1, hi + 1)):
            out.append(s)
    return out


def test_valid_starts_match_a_direct_check() -> None:
    # Gaps of 10 minutes are allowed (not over 10); 11 minutes break: +9 -> 10 min, +10 -> 11 min.
    ts = minute_grid(2000, {700: 9, 1200: 10, 1500: 3})
    assert valid_session_starts(ts).tolist() == reference_starts(ts)
    starts = valid_session_starts(ts)
    assert starts.min() == WARMUP_BARS
    assert 1200 - WARMUP_BARS not in set(starts.tolist())  # its history crosses the 11-minute gap


def test_no_session_or_history_crosses_a_gap() -> None:
    ts = minute_grid(3000, {1000: 11})
    starts = valid_session_starts(ts)
    crosses = (starts - WARMUP_BARS < 1000) & (starts + SESSION_BARS - 1 >= 1000)
    assert not crosses.any()
    assert len(starts) == len(reference_starts(ts))


def test_splits_are_chronological_and_no_session_crosses_a_boundary() -> None:
    ts = minute_grid(20_000, {})
    bounds = SplitBoundaries.from_timestamps(ts)
    span = ts[-1] - ts[0]
    assert bounds.validation_start - ts[0] == round(0.70 * span)
    assert bounds.test_start - ts[0] == round(0.85 * span)
    starts = valid_session_starts(ts)
    split = split_session_starts(ts, starts, bounds)
    kept = split >= 0
    first = bounds.split_of(ts[starts[kept]])
    last = bounds.split_of(ts[starts[kept] + SESSION_BARS - 1])
    assert np.array_equal(first, last) and np.array_equal(first, split[kept])
    assert (split == -1).sum() == 2 * (SESSION_BARS - 1)  # starts straddling each boundary
    assert np.all(np.diff(split[kept]) >= 0)


def test_tiled_sessions_do_not_overlap() -> None:
    ts = minute_grid(5000, {2000: 30})
    starts = valid_session_starts(ts)
    tiled = tile_sessions(starts)
    assert tiled[0] == starts[0]
    assert np.all(np.diff(tiled) >= SESSION_BARS)
    assert set(tiled.tolist()) <= set(starts.tolist())
    # Greedy tiling takes the first start after each gap too.
    assert starts[np.searchsorted(starts, 2000)] in set(tiled.tolist())


def test_real_year_split_counts(gbpjpy_2017: Bars) -> None:
    ds = build_dataset(gbpjpy_2017)
    summary = ds.summary()["splits"]
    sessions = {name: summary[name]["sessions"] for name in ("train", "validation", "test")}
    assert sessions["train"] > 4 * sessions["test"] > 0
    assert 0.1 < sessions["validation"] / sum(sessions.values()) < 0.2
