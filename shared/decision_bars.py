"""A decision from bars: the observation window of the last of a caller's recent 1-minute bars and the
position held at it, computed with the live feature builder's own code.

The market rows come from ``MarketWindow`` (the builder's bar-by-bar features); the position columns
from ``PositionState``, replayed as the broker gateway keeps it: opened at the close of its entry bar,
marked at every bar's close since. So a ``POST /v1/decisions`` of bars sees the window the live stack
would publish for the same bars and position, bit for bit. Every feature of the window is fully
defined by the last ``DECISION_BARS`` bars (``shared.schema.WARMUP_BARS``): the features run over
those only, and a longer history gives the same window (tests/services/inference/test_decisions_from_bars.py).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final, Protocol

import numpy as np

from shared.bar_checks import REASON_TEXT, bar_problem, check_price
from shared.bars import SESSION_GAP_SECONDS
from shared.instruments import instrument
from shared.live_features import MarketWindow
from shared.position import PositionState
from shared.schema import WARMUP_BARS
from shared.sessions import SESSION_BARS
from shared.trading.rules import Side

# The bar decided on and the gap-free history every feature of its window needs (the live session
# clock trades no bar with less): fewer cannot make the window, more do not change it.
DECISION_BARS: Final = WARMUP_BARS + 1
# At most a session and its warm-up: a live position opens and closes inside one session, so its entry
# bar is never further back (and 510 bars of JSON fit the service's default body limit of 64 kB).
MAX_DECISION_BARS: Final = WARMUP_BARS + SESSION_BARS


class Bar(Protocol):
    """A closed 1-minute bar: open time (epoch seconds UTC) and prices."""

    @property
    def ts(self) -> int: ...
    @property
    def open(self) -> float: ...
    @property
    def high(self) -> float: ...
    @property
    def low(self) -> float: ...
    @property
    def close(self) -> float: ...


@dataclass(frozen=True)
class HeldPosition:
    """The position held when the last bar closed: flat, or opened at the close of the bar that opens
    at ``entry_ts`` (at ``entry_price``, that bar's close unless given). ``spread_pips``: the
    round-trip cost the live stack charges (the instrument's default unless given)."""

    side: Side = Side.FLAT
    entry_ts: int | None = None
    entry_price: float | None = None
    spread_pips: float | None = None


FLAT: Final = HeldPosition()


def check_bars(bars: Sequence[Bar], now: float | None = None) -> None:
    """ValueError naming the first bad row: too few or too many bars, a bar the feature builder would
    refuse after the one before it (``shared.bar_checks``), a price over the wire's bound, or a gap
    that breaks a session among the last ``DECISION_BARS`` bars."""
    if not DECISION_BARS <= len(bars) <= MAX_DECISION_BARS:
        raise ValueError(
            f"bars: {len(bars)} given; a decision needs {DECISION_BARS} to {MAX_DECISION_BARS}, oldest "
            f"first: the bar decided on and the {WARMUP_BARS} bars of history its window's features use"
        )
    previous: Bar | None = None
    for i, bar in enumerate(bars):
        reason = bar_problem(
            bar.ts,
            bar.open,
            bar.high,
            bar.low,
            bar.close,
            last_ts=None if previous is None else previous.ts,
            last_close=None if previous is None else previous.close,
            now=now,
        )
        if reason is not None:
            raise ValueError(f"bars[{i}] (ts {bar.ts}): {reason}: {REASON_TEXT[reason]}")
        for name in ("open", "high", "low", "close"):
            try:
                check_price(getattr(bar, name), name)
            except ValueError as exc:
                raise ValueError(f"bars[{i}] (ts {bar.ts}): {exc}") from None
        previous = bar
    for i in range(len(bars) - DECISION_BARS + 1, len(bars)):
        gap = bars[i].ts - bars[i - 1].ts
        if gap > SESSION_GAP_SECONDS:
            raise ValueError(
                f"bars[{i}] (ts {bars[i].ts}): a gap of {gap} s after the previous bar breaks a session "
                f"(over {SESSION_GAP_SECONDS} s); the last {DECISION_BARS} bars must have none, as the "
                "live stack trades no bar before that much gap-free history"
            )


def entry_index(bars: Sequence[Bar], held: HeldPosition) -> int | None:
    """The row of the position's entry bar (None when flat), or ValueError saying what is wrong."""
    if held.side == Side.FLAT:
        if held.entry_ts is not None or held.entry_price is not None:
            raise ValueError("position: a flat position has no entry_ts or entry_price")
        return None
    if held.entry_ts is None:
        raise ValueError("position: an open position needs entry_ts, the open time of its entry bar")
    found = next((i for i, bar in enumerate(bars) if bar.ts == held.entry_ts), None)
    if found is None or found == len(bars) - 1:
        raise ValueError(
            f"position: entry_ts {held.entry_ts} is not the open time of one of the bars before the last: "
            "the position's trackers are replayed from its entry bar, so send the bars from it on"
        )
    if held.entry_price is not None:
        check_price(held.entry_price, "position: entry_price")
    return found


def position_at_last_bar(instrument_name: str, bars: Sequence[Bar], held: HeldPosition) -> PositionState:
    """The position as the broker gateway keeps it, marked at the last bar's close: opened at its entry
    bar, then marked at every later bar (a bar's step is its row: steps count bars, as in a session)."""
    spec = instrument(instrument_name)
    spread = spec.spread_pips if held.spread_pips is None else held.spread_pips
    state = PositionState(pip=spec.pip_size, spread_pips=spread)
    start = entry_index(bars, held)
    if start is not None:
        entry = bars[start]
        price = entry.close if held.entry_price is None else held.entry_price
        state.adopt(int(held.side), price, start, entry.ts)
        for step in range(start + 1, len(bars) - 1):
            state.mark(bars[step].close, step)
    return state.marked(bars[-1].close, len(bars) - 1)


def window_from_bars(
    instrument_name: str, bars: Sequence[Bar], held: HeldPosition = FLAT, now: float | None = None
) -> np.ndarray:
    """The (32, 15) float32 observation window of the last bar, or ValueError saying which row or
    which part of the position is wrong. ``now`` (epoch seconds) refuses bars from the future."""
    instrument(instrument_name)  # an unknown instrument has no pip size: refused first
    check_bars(bars, now)
    position = position_at_last_bar(instrument_name, bars, held)
    market = MarketWindow(instrument_name)
    for bar in bars[-DECISION_BARS:]:  # older bars change no feature of the window
        market.push(bar.ts, bar.high, bar.low, bar.close)
    return market.observation(position)
