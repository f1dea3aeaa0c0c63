"""Sessions and chronological splits (CONTRACT section 4)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

import numpy as np

from shared.bars import gap_breaks
from shared.schema import WARMUP_BARS

SESSION_BARS: Final = 360
SPLITS: Final = ("train", "validation", "test")
SPLIT_FRACTIONS: Final = (0.70, 0.15, 0.15)


@dataclass(frozen=True)
class SplitBoundaries:
    """Epoch seconds where validation and test begin (first 70% of time train, next 15%, last 15%)."""

    validation_start: int
    test_start: int

    @staticmethod
    def from_timestamps(ts: np.ndarray) -> SplitBoundaries:
        if len(ts) == 0:
            raise ValueError("no bars: cannot split an empty series")
        first, last = int(ts[0]), int(ts[-1])
        span = last - first
        return SplitBoundaries(
            validation_start=first + round(span * SPLIT_FRACTIONS[0]),
            test_start=first + round(span * (SPLIT_FRACTIONS[0] + SPLIT_FRACTIONS[1])),
        )

    def split_of(self, ts: np.ndarray) -> np.ndarray:
        """Split index per timestamp: 0 train, 1 validation, 2 test."""
        return (np.asarray(ts) >= self.validation_start).astype(np.int8) + (
            np.asarray(ts) >= self.test_start
        ).astype(np.int8)


def valid_session_starts(ts: np.ndarray, session_bars: int = SESSION_BARS) -> np.ndarray:
    """Bar indices that can start a session.

    A start s needs bars s-WARMUP_BARS .. s+session_bars-1 with no gap over 10 minutes between
    neighbours (the history fills the 32-bar window and the 60-bar features), and one bar after the
    session so that every session bar has a market outcome.
    """
    n = len(ts)
    first = WARMUP_BARS
    last = n - 1 - session_bars  # s + session_bars - 1 <= n - 2
    if last < first:
        return np.zeros(0, dtype=np.int64)
    breaks = np.concatenate([[0], np.cumsum(gap_breaks(ts), dtype=np.int64)])  # breaks[i] = sum(b[:i])
    starts = np.arange(first, last + 1, dtype=np.int64)
    # Breaks strictly after the first history bar and up to the last session bar.
    lo = starts - WARMUP_BARS + 1
    hi = starts + session_bars  # exclusive
    return starts[(breaks[hi] - breaks[lo]) == 0]


def split_session_starts(
    ts: np.ndarray, starts: np.ndarray, bounds: SplitBoundaries, session_bars: int = SESSION_BARS
) -> np.ndarray:
    """Split index (0/1/2) per start, or -1 for a session that crosses a split boundary."""
    first_split = bounds.split_of(ts[starts])
    last_split = bounds.split_of(ts[starts + session_bars - 1])
    return np.where(first_split == last_split, first_split, -1).astype(np.int8)


def tile_sessions(starts: np.ndarray, session_bars: int = SESSION_BARS) -> np.ndarray:
    """Non-overlapping sessions from sorted valid starts: the earliest start, then the next one that
    begins after it ends, and so on. Evaluation runs every tiled session of a split once."""
    chosen: list[int] = []
    next_free = -1
    # Jump with searchsorted: a Python step per chosen session, not per start.
    i = 0
    while i < len(starts):
        s = int(starts[i])
        chosen.append(s)
        next_free = s + session_bars
        i = int(np.searchsorted(starts, next_free, side="left"))
    return np.asarray(chosen, dtype=np.int64)
