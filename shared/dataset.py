"""A data set: bars turned into features, outcomes, session starts and splits, all pure."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from shared.bars import Bars, gap_breaks
from shared.features import market_features
from shared.outcomes import market_outcomes
from shared.sessions import (
    SPLITS,
    SplitBoundaries,
    split_session_starts,
    tile_sessions,
    valid_session_starts,
)


@dataclass(frozen=True)
class Dataset:
    bars: Bars
    features: np.ndarray  # (n, 9) float64
    outcome: np.ndarray  # (n - 1,) int8
    sigma: np.ndarray  # (n - 1,) float64
    session_starts: np.ndarray  # int64 bar indices of valid starts inside one split
    session_split: np.ndarray  # int8 split index (0 train, 1 validation, 2 test) per start
    bounds: SplitBoundaries

    def starts_of(self, split: str) -> np.ndarray:
        return self.session_starts[self.session_split == SPLITS.index(split)]

    def summary(self) -> dict[str, object]:
        per_split = {}
        for name in SPLITS:
            starts = self.starts_of(name)
            per_split[name] = {"valid_starts": len(starts), "sessions": len(tile_sessions(starts))}
        return {
            "instrument": self.bars.instrument,
            "bars": len(self.bars),
            "gaps_over_10_min": int(gap_breaks(self.bars.ts).sum()),
            "splits": per_split,
        }


def build_dataset(bars: Bars) -> Dataset:
    features = market_features(bars)
    outcome, sigma = market_outcomes(bars.close, bars.pip)
    bounds = SplitBoundaries.from_timestamps(bars.ts)
    starts = valid_session_starts(bars.ts)
    split = split_session_starts(bars.ts, starts, bounds)
    keep = split >= 0
    return Dataset(bars, features, outcome, sigma, starts[keep], split[keep], bounds)
