"""Bars as columnar numpy arrays: the one in-memory form every part of the core uses."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from shared.instruments import pip_size

SESSION_GAP_SECONDS = 10 * 60  # a gap over 10 minutes between neighbours breaks a session


@dataclass(frozen=True)
class Bars:
    """1-minute bid bars of one instrument, sorted by time, unique timestamps.

    ``ts`` holds UTC epoch seconds of each bar's open time.
    """

    instrument: str
    ts: np.ndarray  # int64 epoch seconds, strictly increasing
    open: np.ndarray  # float64
    high: np.ndarray
    low: np.ndarray
    close: np.ndarray
    volume: np.ndarray

    def __post_init__(self) -> None:
        n = len(self.ts)
        for name in ("open", "high", "low", "close", "volume"):
            if len(getattr(self, name)) != n:
                raise ValueError(f"bars column {name!r} has {len(getattr(self, name))} rows, ts has {n}")
        if n > 1 and not bool(np.all(np.diff(self.ts) > 0)):
            raise ValueError("bar timestamps must be strictly increasing")

    def __len__(self) -> int:
        return len(self.ts)

    @property
    def pip(self) -> float:
        return pip_size(self.instrument)

    def slice(self, start: int, stop: int) -> Bars:
        return Bars(
            self.instrument,
            self.ts[start:stop],
            self.open[start:stop],
            self.high[start:stop],
            self.low[start:stop],
            self.close[start:stop],
            self.volume[start:stop],
        )


def gap_breaks(ts: np.ndarray) -> np.ndarray:
    """Boolean per bar: True where the gap from the previous bar exceeds 10 minutes (False at 0)."""
    out = np.zeros(len(ts), dtype=bool)
    if len(ts) > 1:
        out[1:] = np.diff(ts) > SESSION_GAP_SECONDS
    return out
