"""One position of one instrument, bar by bar: the CONTRACT section 5 state machine for the live stack.

``TradingEnv`` steps many sessions at once with arrays; this is one (account, instrument) stepped
by the same functions of the rulebook (``shared.trading``: the tables, ``book`` and ``rewards``)
with one row, so that the broker gateway and the feature builder reproduce the backtest exactly
(tests/shared/test_position.py checks it against the environment bar by bar). The state itself is
plain numbers (``to_dict()``), kept between bars in the gateway's ledger.

A bar is handled in two steps, as in the environment:
1. ``mark(close, step)``: the position is marked to market at the bar's close (P&L, drawdown trackers).
   The window of that bar carries ``features()`` of the marked state.
2. ``apply(action, close, step, ts, last_bar, reward)``: the decision taken at that bar; a position
   still open after the session's last bar is closed there.

Rewards (``shared.reward``), either one per decision, as the environment pays it:
- ``amddp1`` is known when the decision is applied: ``StepOutcome.reward``.
- ``equity`` is the change of the equity from this bar's mark to the NEXT bar's mark. A decision that
  leaves the flat book (or closes, or meets the session's end) is known at once; one that leaves a
  position open is not: ``StepOutcome.reward`` is None and the state keeps its pending parts
  (``pending_*``: the invalid-action penalty, the P&L realised at the step, the equity before it,
  the reward scale). The next ``mark`` settles them with the environment's function
  (``equity_reward``), also when that mark is the one of a forced close (session break, a new
  session); the settled reward waits in ``settled_*`` until ``apply`` (or ``take_settled``) hands it
  out, once, as a ``Settlement`` naming the decision's step and bar. Both parts are plain numbers in
  ``to_dict()``, so a restart between the two bars loses nothing.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace

import numpy as np

from shared.env import EXIT_CLOSE, EXIT_SESSION_END, EnvConfig
from shared.instruments import DEFAULT_SPREAD_PIPS
from shared.trading import rules
from shared.trading.book import Book, mark_to_market, open_equity, open_positions, position_features
from shared.trading.rewards import DEFAULT_REWARD, amddp1_reward, equity_reward, reward_name

# A live session can also end early: a gap over 10 minutes breaks it (the backtest never starts a
# session across a gap; live trading cannot see the gap coming), and the position closes at the
# first bar after the gap.
EXIT_SESSION_BREAK = "session_break"
# A position the broker no longer held (closed there: a stop-out, by hand), closed in the ledger by
# reconciliation at its last mark.
EXIT_RECONCILED = "reconciled"
PIPS_PER_REWARD = EnvConfig().pips_per_reward  # the environment's default scale of the equity reward
_NONE = -1  # pending_step / settled_step of no decision


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
class Settlement:
    """The reward of an earlier decision, completed by a later bar's mark."""

    step: int  # session step of the decision
    ts: int  # its bar (epoch seconds)
    reward: float


@dataclass(frozen=True)
class StepOutcome:
    # This decision's reward as the environment pays it (amddp1 clipped); None while it waits for the
    # next bar's mark (equity reward, a position left open).
    reward: float | None
    valid: bool  # the action was legal in the state it met
    trade: ClosedTrade | None  # the trade this bar closed, if any
    settled: Settlement | None = None  # an earlier decision's reward, completed by this bar's mark


@dataclass
class PositionState:
    """Flat, or one open position, marked at bar ``marked_step`` of the current session."""

    pip: float
    spread_pips: float = DEFAULT_SPREAD_PIPS
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
    # The equity reward of the last decision while it waits for the next mark (pending_step -1: none).
    pending_step: int = _NONE
    pending_ts: int = 0
    pending_penalty: float = 0.0
    pending_realised: float = 0.0
    pending_before: float = 0.0
    pending_pips_per_reward: float = PIPS_PER_REWARD
    # A pending reward the last mark settled, until it is handed out (settled_step -1: none).
    settled_step: int = _NONE
    settled_ts: int = 0
    settled_reward: float = 0.0

    # ------------------------------------------------------------ per bar
    def mark(self, close: float, step: int) -> None:
        """Mark to market at a bar's close (the environment's ``mark_to_market``); settles the
        pending equity reward of the previous decision, if any."""
        if self.side:
            book = self._book()
            mark_to_market(book, np.array([close]), np.array([step]), self.pip, self.spread_pips)
            self._keep(book)
        self.marked_step = step
        if self.pending_step != _NONE:
            if self.settled_step != _NONE:
                raise RuntimeError("a settled reward was never handed out (take_settled)")
            self.settled_reward = float(
                equity_reward(
                    self.pending_penalty,
                    self.pending_before,
                    self.pending_realised,
                    self._open_equity(),
                    self.pending_pips_per_reward,
                )
            )
            self.settled_step, self.settled_ts = self.pending_step, self.pending_ts
            self._clear_pending()

    def take_settled(self) -> Settlement | None:
        """The reward the last mark settled, if not handed out yet (then it is forgotten)."""
        if self.settled_step == _NONE:
            return None
        settled = Settlement(self.settled_step, self.settled_ts, self.settled_reward)
        self.settled_step, self.settled_ts, self.settled_reward = _NONE, 0, 0.0
        return settled

    @property
    def reward_pending(self) -> bool:
        """The last decision's reward waits for the next mark."""
        return self.pending_step != _NONE

    def _clear_pending(self) -> None:
        self.pending_step, self.pending_ts = _NONE, 0
        self.pending_penalty = self.pending_realised = self.pending_before = 0.0
        self.pending_pips_per_reward = PIPS_PER_REWARD

    def marked(self, close: float, step: int) -> PositionState:
        """A marked copy: what the window of that bar shows, without changing this state."""
        copy = replace(self)
        copy.mark(close, step)
        return copy

    def features(self) -> np.ndarray:
        """The 6 position columns (float32), computed by the environment's own function."""
        if not self.side:  # +0.0 everywhere, as in the environment's windows (never -0.0)
            return np.zeros(6, dtype=np.float32)
        return position_features(self._book())[0]

    def _book(self) -> Book:
        """This position as the one row of a book (``shared.trading.book``)."""
        return Book(
            side=np.array([self.side], dtype=np.int8),
            entry_price=np.array([self.entry_price]),
            entry_bar=np.array([self.entry_step], dtype=np.int64),
            peak=np.array([self.peak]),
            trackers=np.array([[self.pnl], [self.bars_since_entry], [self.dd], [self.min_dd], [self.acc_dd]]),
        )

    def _keep(self, book: Book) -> None:
        """Take the state of the one-row ``book`` back."""
        self.side = int(book.side[0])
        self.entry_price = float(book.entry_price[0])
        self.entry_step = int(book.entry_bar[0])
        self.peak = float(book.peak[0])
        self.pnl, self.bars_since_entry, self.dd, self.min_dd, self.acc_dd = book.trackers[:, 0].tolist()

    def _open_equity(self) -> float:
        return float(open_equity(self._book())[0])

    def apply(
        self,
        action: int,
        close: float,
        step: int,
        ts: int,
        last_bar: bool,
        reward: str = DEFAULT_REWARD,
        pips_per_reward: float = PIPS_PER_REWARD,
    ) -> StepOutcome:
        """The decision of the bar at ``step`` (already marked), then the session-end close if due.

        ``reward`` names the reward to pay (``shared.reward.REWARDS``); ``pips_per_reward`` scales the
        equity reward. The outcome also hands out the reward this bar's mark settled, if any.
        """
        equity = reward_name(reward) == "equity"
        if self.pending_step != _NONE:
            raise RuntimeError(f"mark step {step} before applying its decision: a reward is pending")
        settled = self.take_settled()
        action = int(rules.Action(action))  # a ValueError for 4 and above
        key = rules.step_key(action, self.side != 0)
        before = self._open_equity()  # the equity step of the environment: open P&L at this mark
        trade = None
        if rules.EVENT[key] == rules.EVENT_OPEN:
            self._open(int(rules.ENTRY_SIDE[action]), close, step, ts)
        elif rules.EVENT[key] == rules.EVENT_CLOSE:
            trade = self.close(close, step, ts, EXIT_CLOSE)
        if last_bar and self.side:
            trade = self.close(close, step, ts, EXIT_SESSION_END)
        valid = bool(rules.LEGAL[key])
        # At most one trade a step: a close leaves the position flat.
        realised = trade.pnl_pips if trade is not None else 0.0
        if not equity:
            closed = np.arange(1 if trade is not None else 0)
            value = float(amddp1_reward(np.array([key]), closed, np.array([realised]))[0])
            return StepOutcome(value, valid, trade, settled)
        penalty = float(rules.INVALID_PENALTY[key])
        if self.side:  # the equity after the step is marked at the next bar
            self.pending_step, self.pending_ts = step, ts
            self.pending_penalty, self.pending_realised, self.pending_before = penalty, realised, before
            self.pending_pips_per_reward = pips_per_reward
            return StepOutcome(None, valid, trade, settled)
        value = float(equity_reward(penalty, before, realised, self._open_equity(), pips_per_reward))
        return StepOutcome(value, valid, trade, settled)

    def _open(self, side: int, close: float, step: int, ts: int) -> None:
        book = self._book()
        open_positions(
            book, np.array([0]), np.array([side]), np.array([close]), np.array([step]), self.spread_pips
        )
        self._keep(book)
        self.entry_ts = ts

    def adopt(self, side: int, price: float, step: int, ts: int) -> None:
        """Take on a position found at the broker (reconciliation): opened at ``price`` as of ``step``,
        as an entry there would have been. Only the live stack does this; the backtest never does."""
        if self.side:
            raise ValueError("close the open position before adopting another")
        if side not in (1, -1):
            raise ValueError(f"side must be 1 or -1, got {side}")
        self._open(side, price, step, ts)

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
