"""Open positions over arrays, one row each: opening, marking to market and the position columns of
the observation (CONTRACT sections 2 and 5).

The vectorised environment keeps a row per session; the live position (``shared.position``) is
one row. Both call these functions, so both run the same numpy operations in the same order and
agree bit for bit.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from shared.schema import N_POSITION, POSITION_SCALE

N_TRACKERS = N_POSITION - 1  # the position columns after the side


class Book(NamedTuple):
    side: np.ndarray  # int8: 1 long, -1 short, 0 flat
    entry_price: np.ndarray  # float64: the close the position opened at
    entry_bar: np.ndarray  # int64: the bar it opened at (only its distance to the marked bar counts)
    peak: np.ndarray  # float64: the best P&L in pips since the entry
    # float64 (5, n), before scaling: P&L in pips after spread, bars since the entry, pips from the
    # peak, max drawdown, accumulated drawdown. A row per tracker, so that marking runs over
    # contiguous memory (column views of an (n, 5) array made the environment's step 1.3x slower).
    # Flat sessions' values are meaningless: masked in the features, reset by an entry.
    trackers: np.ndarray

    @classmethod
    def flat(cls, n: int) -> Book:
        return cls(
            side=np.zeros(n, dtype=np.int8),
            entry_price=np.zeros(n),
            entry_bar=np.zeros(n, dtype=np.int64),
            peak=np.zeros(n),
            trackers=np.zeros((N_TRACKERS, n)),
        )

    @property
    def pnl(self) -> np.ndarray:
        """P&L in pips after spread at the last mark (a view)."""
        return self.trackers[0]


def open_positions(
    book: Book, rows: np.ndarray, side: np.ndarray, price: np.ndarray, bar: np.ndarray, spread_pips: float
) -> None:
    """Open ``side`` on ``rows`` at ``price`` (the bar's close), marked there: P&L minus the spread."""
    book.side[rows] = side
    book.entry_price[rows] = price
    book.entry_bar[rows] = bar
    book.peak[rows] = -spread_pips
    book.trackers[:, rows] = 0.0
    book.trackers[0, rows] = -spread_pips


def mark_to_market(book: Book, close: np.ndarray, bar: np.ndarray, pip: float, spread_pips: float) -> None:
    """Mark every row at ``close`` (its bar ``bar``): P&L in pips after spread, bars held, peak and
    drawdown trackers, in place. Flat rows are computed too (cheaper than selecting)."""
    pnl, bars_since_entry, from_peak, max_drawdown, acc_drawdown = book.trackers
    np.subtract(close, book.entry_price, out=pnl)
    pnl *= book.side
    pnl /= pip
    pnl -= spread_pips
    np.subtract(bar, book.entry_bar, out=bars_since_entry, casting="unsafe")
    np.maximum(book.peak, pnl, out=book.peak)
    np.subtract(pnl, book.peak, out=from_peak)
    np.minimum(max_drawdown, from_peak, out=max_drawdown)
    acc_drawdown -= from_peak


def open_equity(book: Book) -> np.ndarray:
    """Each row's open P&L after spread (0 when flat): its equity beyond what it has realised."""
    return np.where(book.side != 0, book.pnl, 0.0)


def position_features(book: Book, out: np.ndarray | None = None) -> np.ndarray:
    """(n, 6) float32 position columns of the observation: the side, then the trackers scaled by
    tanh(x / 100) (zero when flat)."""
    # float32 tanh is vectorised (float64 tanh is a scalar libm call per element, 4x slower).
    scaled = (book.trackers * ((book.side != 0) / POSITION_SCALE)).astype(np.float32)
    if out is None:
        out = np.empty((len(book.side), N_POSITION), dtype=np.float32)
    out[:, 0] = book.side
    np.tanh(scaled.T, out=out[:, 1:])
    return out
