"""The vectorised trading environment of CONTRACT section 5: many sessions stepped in lockstep.

One row per session; every step is a handful of numpy operations over all rows, never a Python loop
per session. Observations are the (32, 15) windows of CONTRACT section 2: 9 market feature columns from
the precomputed feature matrix and 6 position columns, the same on every row of a window.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

import numpy as np
from numpy.lib.stride_tricks import as_strided

from shared.instruments import DEFAULT_SPREAD_PIPS, pip_size
from shared.schema import N_FEATURES, N_MARKET, N_POSITION, WINDOW
from shared.sessions import SESSION_BARS
from shared.trading.book import Book, mark_to_market, open_equity, open_positions, position_features
from shared.trading.rewards import amddp1_reward, equity_reward, reward_name
from shared.trading.rules import (
    ENTRY_SIDE,
    EVENT,
    EVENT_CLOSE,
    EVENT_OPEN,
    INVALID_PENALTY,
    LEGAL,
    N_ACTIONS,
    REWARD_CLIP,
    legal_actions,
    side_name,
    step_key,
)

_POSITION_BYTES = np.dtype(f"V{N_POSITION * 4}")  # the six float32 position columns as one item
_NO_ROWS = np.zeros(0, dtype=np.int64)

EXIT_CLOSE = "close"
EXIT_SESSION_END = "session_end"
_EXIT_CLOSE, _EXIT_SESSION_END = 0, 1
_EXIT_REASONS = (EXIT_CLOSE, EXIT_SESSION_END)


@dataclass(frozen=True)
class EnvConfig:
    spread_pips: float = DEFAULT_SPREAD_PIPS  # round-trip cost, charged once when a trade closes
    session_bars: int = SESSION_BARS
    reward_clip: float = REWARD_CLIP
    # "equity" (default): the change of the session's equity (realised plus open P&L after spread)
    # over the step, in units of ``pips_per_reward``, plus the penalties of invalid actions; not
    # clipped, so a trade's rewards add up to its P&L. "amddp1": the seed's action table and AMDDP1,
    # clipped to +-reward_clip (shared.reward says why it is not the default). Trades, P&L and
    # observations are the same under both.
    reward: Literal["equity", "amddp1"] = "equity"
    pips_per_reward: float = 10.0

    def __post_init__(self) -> None:
        object.__setattr__(self, "reward", reward_name(self.reward))
        if not self.pips_per_reward > 0:
            raise ValueError("pips_per_reward must be positive")


@dataclass(frozen=True)
class MarketData:
    """What the environment reads of one instrument: times, closes and the market feature matrix."""

    instrument: str
    ts: np.ndarray  # int64 epoch seconds
    close: np.ndarray  # float64
    features: np.ndarray  # (n, 9) market features, or the (n, 15) float32 ``rows`` of another MarketData
    rows: np.ndarray = field(init=False, repr=False)  # (n, 15) float32: the features, zero position columns
    windows: np.ndarray = field(init=False, repr=False)  # (n - 31, 480) float32 view, see below

    def __post_init__(self) -> None:
        n = len(self.ts)
        rows = self.features.shape == (n, N_FEATURES) and self.features.dtype == np.float32
        if len(self.close) != n or not (rows or self.features.shape == (n, N_MARKET)):
            raise ValueError(
                f"market data mismatch: {n} timestamps, {len(self.close)} closes, "
                f"features {self.features.shape} (want ({n}, {N_MARKET}))"
            )
        if rows:
            # Already padded rows (a Ray actor's, from the object store): shared, not copied.
            padded = self.features
            if padded[:, N_MARKET:].any():
                raise ValueError("padded market rows must have zero position columns")
        else:
            # Rows already 15 wide (position columns zero), so a window is one contiguous gather.
            padded = np.zeros((n, N_FEATURES), dtype=np.float32)
            padded[:, :N_MARKET] = self.features
        object.__setattr__(self, "rows", padded)
        object.__setattr__(self, "features", padded[:, :N_MARKET])
        # Window ending at bar b is row b - 31 of this read-only view: 480 contiguous floats.
        windows = as_strided(
            padded,
            shape=(max(n - WINDOW + 1, 0), WINDOW * N_FEATURES),
            strides=(padded.strides[0], padded.strides[1]),
            writeable=False,
        )
        object.__setattr__(self, "windows", windows)

    @property
    def pip(self) -> float:
        return pip_size(self.instrument)

    def __len__(self) -> int:
        return len(self.ts)


@dataclass(frozen=True)
class TradeLog:
    """Closed trades, one entry per array element, in the order they closed."""

    instrument: str
    session: np.ndarray  # int64 row of the environment
    side: np.ndarray  # int8: 1 long, -1 short
    entry_ts: np.ndarray  # int64 epoch seconds
    entry_price: np.ndarray
    exit_ts: np.ndarray
    exit_price: np.ndarray
    pnl_pips: np.ndarray
    bars_held: np.ndarray  # int64
    exit_reason: np.ndarray  # str: "close" or "session_end"

    def __len__(self) -> int:
        return len(self.pnl_pips)

    def chronological(self) -> TradeLog:
        order = np.lexsort((self.session, self.exit_ts))
        return TradeLog(
            self.instrument,
            *(getattr(self, name)[order] for name in TRADE_COLUMNS[1:]),
        )

    def rows(self) -> list[dict[str, object]]:
        """One dict per trade, keyed by ``TRADE_LOG_FIELDS``."""
        return [
            {
                "instrument": self.instrument,
                "side": side_name(self.side[i]),
                "entry_ts": int(self.entry_ts[i]),
                "entry_price": float(self.entry_price[i]),
                "exit_ts": int(self.exit_ts[i]),
                "exit_price": float(self.exit_price[i]),
                "pnl_pips": float(self.pnl_pips[i]),
                "bars_held": int(self.bars_held[i]),
                "exit_reason": str(self.exit_reason[i]),
            }
            for i in range(len(self))
        ]


TRADE_COLUMNS = (
    "instrument",
    "session",
    "side",
    "entry_ts",
    "entry_price",
    "exit_ts",
    "exit_price",
    "pnl_pips",
    "bars_held",
    "exit_reason",
)
# The trade log as users see it (CSV, API): the internal session row is left out.
TRADE_LOG_FIELDS = tuple(name for name in TRADE_COLUMNS if name != "session")


def _joined(parts: list[np.ndarray]) -> np.ndarray:
    if len(parts) == 1:
        return parts[0]
    return np.concatenate(parts) if parts else _NO_ROWS


@dataclass
class StepResult:
    observation: np.ndarray  # (n, 32, 15) float32 at the next bar
    reward: np.ndarray  # (n,) float64, clipped
    done: np.ndarray  # (n,) bool: the session ended with this step
    valid: np.ndarray  # (n,) bool: the action was legal


class TradingEnv:
    """Sessions of ``config.session_bars`` bars each, stepped together.

    ``reset(starts)`` places one session per row at the given bar indices; every ``step(actions)``
    applies one action per row at its current bar and moves to the next bar. Rows whose session has
    ended report ``done`` and can be restarted with ``reset_rows``.
    """

    def __init__(self, market: MarketData, config: EnvConfig | None = None) -> None:
        self.market = market
        self.config = config or EnvConfig()
        self.pip = market.pip
        self._trades: list[tuple] = []
        self.action_counts = np.zeros(N_ACTIONS, dtype=np.int64)
        self.flat_action_counts = np.zeros(N_ACTIONS, dtype=np.int64)  # decisions taken while flat
        self.n = 0

    # ----------------------------------------------------------- lifecycle
    def reset(self, starts: np.ndarray) -> np.ndarray:
        starts = np.asarray(starts, dtype=np.int64)
        self._check_starts(starts)
        n = len(starts)
        self.n = n
        self.start = starts.copy()
        self.step_in_session = np.zeros(n, dtype=np.int64)
        # While every row is at the same step (the usual lockstep case) it is kept as one int, which
        # turns the end-of-session checks into a Python comparison.
        self._common_step: int | None = 0
        self.bar = starts.copy()
        self.close_now = self.market.close[self.bar]
        self.book = Book.flat(n)  # the open positions, a row per session (shared.trading.book)
        # Its columns by name: the same arrays, only ever changed in place.
        self.side, self.entry_price, self.entry_bar, self.peak, self.trackers = self.book
        self._pos = np.empty((n, N_POSITION), dtype=np.float32)
        self._all_done = np.ones(n, dtype=bool)
        self._none_done = np.zeros(n, dtype=bool)
        self._all_done.flags.writeable = self._none_done.flags.writeable = False
        return self.observation()

    def reset_rows(self, rows: np.ndarray, starts: np.ndarray) -> np.ndarray:
        """Start new sessions on some rows (flat); returns the full observation batch."""
        rows = np.asarray(rows, dtype=np.int64)
        starts = np.asarray(starts, dtype=np.int64)
        self._check_starts(starts)
        self.start[rows] = starts
        self.bar[rows] = starts
        self.close_now[rows] = self.market.close[starts]
        self.step_in_session[rows] = 0
        self._common_step = int(self.step_in_session[0]) if (self.step_in_session == 0).all() else None
        for column in self.book:
            column[rows] = 0
        return self.observation()

    def _check_starts(self, starts: np.ndarray) -> None:
        n_bars = len(self.market)
        if len(starts) and (starts.min() < WINDOW - 1 or starts.max() + self.config.session_bars > n_bars):
            raise ValueError(
                f"session starts must lie in [{WINDOW - 1}, {n_bars - self.config.session_bars}] "
                f"so that the window and the whole session exist; got {starts.min()}..{starts.max()}"
            )

    # --------------------------------------------------------- observation
    def legal_actions(self) -> np.ndarray:
        return legal_actions(self.side)

    def observation(self) -> np.ndarray:
        """(n, 32, 15) float32 windows at each row's current bar (a new array each call)."""
        obs = self.market.windows[self.bar - (WINDOW - 1)].reshape(self.n, WINDOW, N_FEATURES)
        # The six position columns of a row are 24 contiguous bytes: copy them as one opaque item per
        # window row (a float-by-float broadcast runs a slow inner loop of length 6).
        target = np.ndarray(
            shape=(self.n, WINDOW),
            dtype=_POSITION_BYTES,
            buffer=obs,
            offset=N_MARKET * obs.itemsize,
            strides=(obs.strides[0], obs.strides[1]),
        )
        # Flat rows' position columns are already zero in the gathered windows.
        in_position = np.flatnonzero(self.side)
        if len(in_position):
            features = position_features(self.book, out=self._pos)
            target[in_position] = features[in_position].view(_POSITION_BYTES)
        return obs

    # ---------------------------------------------------------------- step
    def step(self, actions: np.ndarray) -> StepResult:
        actions = np.asarray(actions)
        key = self._step_keys(actions)
        cfg = self.config
        equity_before = open_equity(self.book) if cfg.reward == "equity" else None
        event = EVENT[key]
        closed: list[np.ndarray] = []  # rows that closed a trade, and its P&L (at most one a row)
        closed_pnl: list[np.ndarray] = []
        if np.count_nonzero(event):
            closing = np.flatnonzero(event == EVENT_CLOSE)
            if len(closing):
                closed.append(closing)
                closed_pnl.append(self._close(closing, _EXIT_CLOSE))
            opening = np.flatnonzero(event == EVENT_OPEN)
            if len(opening):
                side = ENTRY_SIDE[actions[opening]]
                open_positions(
                    self.book, opening, side, self.close_now[opening], self.bar[opening], cfg.spread_pips
                )
        forced = self._session_end_rows()
        if forced is not None and len(forced):
            closed.append(forced)
            closed_pnl.append(self._close(forced, _EXIT_SESSION_END))
        rows, pnl = _joined(closed), _joined(closed_pnl)
        done = self._next_bar()
        self._mark_to_market()
        if equity_before is None:
            reward = amddp1_reward(key, rows, pnl, cfg.reward_clip)
        else:
            realised = np.zeros(self.n)
            realised[rows] += pnl
            open_after = open_equity(self.book)
            reward = equity_reward(
                INVALID_PENALTY[key], equity_before, realised, open_after, cfg.pips_per_reward
            )
        return StepResult(self.observation(), reward, done, LEGAL[key])

    def _step_keys(self, actions: np.ndarray) -> np.ndarray:
        """Each row's ``step_key`` (action, in a position), after checking the actions; counts them."""
        if actions.shape != (self.n,):
            raise ValueError(f"expected {self.n} actions, got shape {actions.shape}")
        if actions.dtype.kind not in "iub":
            raise ValueError(f"actions must be integers in 0..{N_ACTIONS - 1}")
        key = step_key(actions.astype(np.int64, copy=False), self.side != 0)
        try:
            counts = np.bincount(key, minlength=2 * N_ACTIONS)  # also validates the actions
        except ValueError as exc:
            raise ValueError(f"actions must be integers in 0..{N_ACTIONS - 1}") from exc
        if len(counts) > 2 * N_ACTIONS:
            raise ValueError(f"actions must be integers in 0..{N_ACTIONS - 1}")
        self.action_counts += counts[0::2] + counts[1::2]
        self.flat_action_counts += counts[0::2]
        return key

    def _session_end_rows(self) -> np.ndarray | None:
        """The rows holding a position at their session's last bar (None: no row is there)."""
        last = self.config.session_bars - 1
        step = self._common_step
        if step is not None:
            return np.flatnonzero(self.side != 0) if step == last else None
        return np.flatnonzero((self.step_in_session == last) & (self.side != 0))

    def _next_bar(self) -> np.ndarray:
        """Move every row to its next bar; finished rows stay on their last bar until reset. Returns
        which rows' sessions ended with this step."""
        session_bars = self.config.session_bars
        self.step_in_session += 1
        step = self._common_step
        if step is not None:
            self._common_step = step + 1
            finished = step + 1 >= session_bars
            if not finished:
                self.bar += 1
            return self._all_done if finished else self._none_done
        done = self.step_in_session >= session_bars
        self.bar += ~done
        return done

    def _close(self, rows: np.ndarray, reason: int) -> np.ndarray:
        """Close the positions of ``rows`` at this bar's close; returns their P&L pips after spread."""
        # The mark-to-market P&L at this bar is exactly the trade's P&L after spread.
        pnl = self.book.pnl[rows]
        # Raw columns only; timestamps and labels are filled in once, by trade_log().
        self._trades.append(
            (
                rows,
                self.side[rows],
                self.entry_bar[rows],
                self.bar[rows],
                self.entry_price[rows],
                self.close_now[rows],
                pnl,
                reason,
            )
        )
        self.side[rows] = 0
        return pnl

    def _mark_to_market(self) -> None:
        """Mark every row's position at its current bar's close."""
        self.close_now = self.market.close[self.bar]
        mark_to_market(self.book, self.close_now, self.bar, self.pip, self.config.spread_pips)

    # -------------------------------------------------------------- trades
    def trade_log(self) -> TradeLog:
        """Every trade closed since construction, in closing order."""
        chunks = self._trades
        ts = self.market.ts

        def column(i: int, dtype: type) -> np.ndarray:
            return np.concatenate([c[i] for c in chunks]) if chunks else np.zeros(0, dtype)

        entry_bar = column(2, np.int64)
        exit_bar = column(3, np.int64)
        reasons = np.repeat(
            np.array([_EXIT_REASONS[c[7]] for c in chunks], dtype="<U11"), [len(c[0]) for c in chunks]
        )
        return TradeLog(
            self.market.instrument,
            session=column(0, np.int64),
            side=column(1, np.int8),
            entry_ts=ts[entry_bar],
            entry_price=column(4, np.float64),
            exit_ts=ts[exit_bar],
            exit_price=column(5, np.float64),
            pnl_pips=column(6, np.float64),
            bars_held=exit_bar - entry_bar,
            exit_reason=reasons,
        )
