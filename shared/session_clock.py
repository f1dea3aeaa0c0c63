"""Live sessions: which closed bar is tradeable, its step in the session, and the session's last bar.

The backtest trades the tiled valid sessions of CONTRACT section 4: 360 bars, gap-free, after
``WARMUP_BARS`` bars of gap-free history. Live, the clock starts a session at the first live bar
that has that history, runs it for 360 bars (the position is closed on the last), and starts the
next one on the next bar. On a gap-free stretch these are exactly the backtest's tiled sessions.
Live trading cannot see a gap coming: a gap over 10 minutes breaks the running session (its position
closes at the first bar after the gap, exit reason ``session_break``) and trading resumes once
there is enough gap-free history again.
"""

from __future__ import annotations

from dataclasses import dataclass

from shared.bars import SESSION_GAP_SECONDS
from shared.schema import WARMUP_BARS
from shared.sessions import SESSION_BARS


@dataclass(frozen=True)
class BarSlot:
    """Where one closed bar stands."""

    tradeable: bool  # inside a session: a window is published and a decision taken
    session_id: str  # "<start bar ts>" of the session, "" when not tradeable
    step: int  # 0..359 inside the session, -1 when not tradeable
    last_bar: bool  # the session's last bar: an open position closes at its close
    broke_session: str  # id of a session this bar's gap broke (its position must close), else ""


class SessionClock:
    def __init__(self, session_bars: int = SESSION_BARS, warmup_bars: int = WARMUP_BARS) -> None:
        self.session_bars = session_bars
        self.warmup_bars = warmup_bars
        self.last_ts: int | None = None
        self.run = 0  # gap-free bars seen before the current one, in the current run
        self.session_id = ""
        self.step = -1

    def history(self, ts: int) -> None:
        """A warm-up bar from history: counts toward the gap-free run, never trades."""
        self._advance(ts)
        self.run += 1

    def live(self, ts: int) -> BarSlot:
        """A live closed bar."""
        broke = self._advance(ts)
        if self.session_id:
            self.step += 1
        elif self.run >= self.warmup_bars:
            self.session_id, self.step = str(ts), 0
        self.run += 1
        if not self.session_id:
            return BarSlot(False, "", -1, False, broke)
        slot = BarSlot(True, self.session_id, self.step, self.step == self.session_bars - 1, broke)
        if slot.last_bar:
            self.session_id, self.step = "", -1
        return slot

    def _advance(self, ts: int) -> str:
        if self.last_ts is not None and ts <= self.last_ts:
            raise ValueError(f"bar at {ts} is not after the previous bar at {self.last_ts}")
        broke = ""
        if self.last_ts is not None and ts - self.last_ts > SESSION_GAP_SECONDS:
            self.run = 0
            broke, self.session_id, self.step = self.session_id, "", -1
        self.last_ts = ts
        return broke
