"""One position of one instrument, bar by bar: the SPEC section 5 state machine for the live stack.

``TradingEnv`` steps many sessions at once with arrays; this is the same arithmetic for one
(account, instrument), in the same order of floating-point operations, so that the broker gateway
and the feature builder reproduce the backtest exactly (tests/shared/test_position.py checks it
against the environment bar by bar).

A bar is handled in two steps, as in the environment:
1. ``mark(close, step)``: the position is marked to market at the bar's close (P&L, drawdown trackers).
   The window of that bar carries ``features()`` of the marked state.
2. ``apply(action, close, step, ts, last_bar)``: the decision taken at that bar; a position still open
   after the session's last bar is closed there.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace

import numpy as np

from shared.env import EXIT_CLOSE, EXIT_SESSION_END, scale_position_trackers
from shared.reward import (
    CLOSE_FLAT_REWARD,
    HOLD_FLAT_REWARD,
    HOLD_IN_POSITION_REWARD,
    OPEN_IN_POSITION_REWARD,
    OPEN_REWARD,
    REWARD_CLIP,
    Action,
    amddp1,
)

# A live session can also end early: a gap over 10 minutes breaks it (the backtest never starts a
# session across a gap; live trading cannot see the gap coming), and the position closes at the
# first bar after the gap.
EXIT_SESSION_BREAK = "session_break"


@dataclass(frozen=True)
class ClosedTrade:
    side: int  # 1 long, -1 short
    entry_ts: int
    entry_price: float
    exit_ts: int
    exit_price: float
    pnl_pips: float
    bars_held: int
    exit_reason: str


@dataclass(frozen=True)
class StepOutcome:
    reward: float  # clipped, as the environment pays it
    valid: bool  # the action was legal in the state it met
    trade: ClosedTrade | None  # the trade this bar closed, if any


@dataclass
class PositionState:
    """Flat, or one open position, marked at bar ``marked_step`` of the current session."""

    pip: float
    spread_pips: float = 4.0
    side: int = 0
    entry_price: float = 0.0
    entry_ts: int = 0
    entry_step: int = 0
    peak: float = 0.0
    pnl: float = 0.0  # P&L in pips if closed at the marked close (spread included)
    bars_since_entry: float = 0.0
    dd: float = 0.0
    min_dd: float = 0.0
    acc_dd: float = 0.0
    marked_step: int = -1  # session step of the last mark; -1 before the first bar of a session

    # ------------------------------------------------------------ per bar
    def mark(self, close: float, step: int) -> None:
        """Mark to market at a bar's close (the environment's ``_mark_to_market``)."""
        if self.side:
            # Same operations and order as the environment's in-place numpy arithmetic.
            pnl = (close - self.entry_price) * float(self.side) / self.pip - self.spread_pips
            self.pnl = pnl
            self.bars_since_entry = float(step - self.entry_step)
            self.peak = max(self.peak, pnl)
            self.dd = pnl - self.peak
            self.min_dd = min(self.min_dd, self.dd)
            self.acc_dd = self.acc_dd - self.dd
        self.marked_step = step

    def marked(self, close: float, step: int) -> PositionState:
        """A marked copy: what the window of that bar shows, without changing this state."""
        copy = replace(self)
        copy.mark(close, step)
        return copy

    def features(self) -> np.ndarray:
        """The 6 position columns (float32), computed by the environment's own function."""
        if not self.side:  # +0.0 everywhere, as in the environment's windows (never -0.0)
            return np.zeros(6, dtype=np.float32)
        trackers = np.array([[self.pnl, self.bars_since_entry, self.dd, self.min_dd, self.acc_dd]])
        return scale_position_trackers(np.array([self.side], dtype=np.int8), trackers)[0]

    def apply(self, action: int, close: float, step: int, ts: int, last_bar: bool) -> StepOutcome:
        """The decision of the bar at ``step`` (already marked), then the session-end close if due."""
        action = Action(action)
        in_position = self.side != 0
        trade = None
        if action == Action.HOLD:
            reward, valid = (HOLD_IN_POSITION_REWARD if in_position else HOLD_FLAT_REWARD), True
        elif action in (Action.BUY, Action.SELL):
            if in_position:
                reward, valid = OPEN_IN_POSITION_REWARD, False
            else:
                reward, valid = OPEN_REWARD, True
                self._open(1 if action == Action.BUY else -1, close, step, ts)
        elif in_position:  # CLOSE
            trade = self.close(close, step, ts, EXIT_CLOSE)
            reward, valid = float(amddp1(trade.pnl_pips)), True
        else:
            reward, valid = CLOSE_FLAT_REWARD, False
        if last_bar and self.side:
            trade = self.close(close, step, ts, EXIT_SESSION_END)
            reward += float(amddp1(trade.pnl_pips))
        if trade is not None:
            reward = min(max(reward, -REWARD_CLIP), REWARD_CLIP)
        return StepOutcome(reward, valid, trade)

    def _open(self, side: int, close: float, step: int, ts: int) -> None:
        self.side = side
        self.entry_price = close
        self.entry_ts = ts
        self.entry_step = step
        self.peak = -self.spread_pips
        self.bars_since_entry = self.dd = self.min_dd = self.acc_dd = 0.0
        self.pnl = -self.spread_pips

    def close(self, close: float, step: int, ts: int, reason: str) -> ClosedTrade:
        """Close the open position at ``close``; its P&L is the mark at that close."""
        if not self.side:
            raise ValueError("no open position to close")
        if self.marked_step != step:
            self.mark(close, step)
        trade = ClosedTrade(
            side=self.side,
            entry_ts=self.entry_ts,
            entry_price=self.entry_price,
            exit_ts=ts,
            exit_price=close,
            pnl_pips=self.pnl,
            bars_held=step - self.entry_step,
            exit_reason=reason,
        )
        self.side = 0
        return trade

    def new_session(self) -> None:
        """A new session starts flat; a position must have been closed before."""
        if self.side:
            raise ValueError("a new session cannot start with an open position")
        self.marked_step = -1

    def to_dict(self) -> dict[str, float | int]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, float | int]) -> PositionState:
        return cls(**data)  # type: ignore[arg-type]
