"""The vectorised trading environment of SPEC section 5: many sessions stepped in lockstep.

One row per session; every step is a handful of numpy operations over all rows, never a Python loop
per session. Observations are the (32, 15) windows of SPEC section 2: 9 market feature columns from
the precomputed feature matrix and 6 position columns, the same on every row of a window.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

import numpy as np
from numpy.lib.stride_tricks import as_strided

from shared.instruments import DEFAULT_SPREAD_PIPS, pip_size
from shared.reward import REWARD_CLIP, amddp1, legal_actions, reward_name
from shared.schema import N_FEATURES, N_MARKET, N_POSITION, POSITION_SCALE, WINDOW
from shared.sessions import SESSION_BARS
from shared.trading.rules import (
    BUY,
    EVENT,
    EVENT_CLOSE,
    EVENT_OPEN,
    INVALID_PENALTY,
    LEGAL,
    N_ACTIONS,
    STEP_REWARD,
    side_name,
)

_POSITION_BYTES = np.dtype(f"V{N_POSITION * 4}")  # the six float32 position columns as one item

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
    features: np.ndarray  # (n, 9) market features (stored as float32)
    windows: np.ndarray = field(init=False, repr=False)  # (n - 31, 480) float32 view, see below

    def __post_init__(self) -> None:
        n = len(self.ts)
        if len(self.close) != n or self.features.shape != (n, N_MARKET):
            raise ValueError(
                f"market data mismatch: {n} timestamps, {len(self.close)} closes, "
                f"features {self.features.shape} (want ({n}, {N_MARKET}))"
            )
        # Rows already 15 wide (position columns zero), so a window is one contiguous gather.
        padded = np.zeros((n, N_FEATURES), dtype=np.float32)
        padded[:, :N_MARKET] = self.features
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


def scale_position_trackers(
    side: np.ndarray, trackers: np.ndarray, out: np.ndarray | None = None
) -> np.ndarray:
    """(n, 6) float32 position columns from the side and the raw trackers (P&L pips, bars since
    entry, pips from peak, max drawdown, accumulated drawdown): the one definition that the
    environment and the live position state (``shared.position``) both use."""
    # float32 tanh is vectorised (float64 tanh is a scalar libm call per element, 4x slower).
    scaled = (trackers * ((side != 0) / POSITION_SCALE)[:, None]).astype(np.float32)
    if out is None:
        out = np.empty((len(side), N_POSITION), dtype=np.float32)
    out[:, 0] = side
    np.tanh(scaled, out=out[:, 1:])
    return out


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
        self.side = np.zeros(n, dtype=np.int8)
        self.entry_price = np.zeros(n)
        self.entry_bar = np.zeros(n, dtype=np.int64)
        self.peak = np.zeros(n)
        # Position trackers before scaling, one column each, so the features are a few array ops:
        # P&L pips, bars since entry, pips from peak, max drawdown, accumulated drawdown.
        self.trackers = np.zeros((n, N_POSITION - 1))
        self.pnl, self.bars_since_entry, self.dd, self.min_dd, self.acc_dd = self.trackers.T
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
        for arr in (self.side, self.entry_price, self.entry_bar, self.peak, self.trackers):
            arr[rows] = 0
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

    def position_features(self) -> np.ndarray:
        """(n, 6) float32 position columns at each row's current bar."""
        return scale_position_trackers(self.side, self.trackers, out=self._pos)

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
            target[in_position] = self.position_features()[in_position].view(_POSITION_BYTES)
        return obs

    # ---------------------------------------------------------------- step
    def step(self, actions: np.ndarray) -> StepResult:
        actions = np.asarray(actions)
        if actions.shape != (self.n,):
            raise ValueError(f"expected {self.n} actions, got shape {actions.shape}")
        if actions.dtype.kind not in "iub":
            raise ValueError(f"actions must be integers in 0..{N_ACTIONS - 1}")
        # (action, in position) -> one table lookup each, and one count of both.
        key = actions.astype(np.int64, copy=False) * 2 + (self.side != 0)
        try:
            counts = np.bincount(key, minlength=2 * N_ACTIONS)  # also validates the actions
        except ValueError as exc:
            raise ValueError(f"actions must be integers in 0..{N_ACTIONS - 1}") from exc
        if len(counts) > 2 * N_ACTIONS:
            raise ValueError(f"actions must be integers in 0..{N_ACTIONS - 1}")
        self.action_counts += counts[0::2] + counts[1::2]
        self.flat_action_counts += counts[0::2]
        cfg = self.config
        equity = cfg.reward == "equity"
        valid = LEGAL[key]
        event = EVENT[key]
        traded = False
        if equity:
            reward = INVALID_PENALTY[key]
            equity_before = np.where(self.side != 0, self.pnl, 0.0)  # open P&L; realised so far is 0
            realised = np.zeros(self.n)
        else:
            reward = STEP_REWARD[key]

        if np.count_nonzero(event):
            closing = np.flatnonzero(event == EVENT_CLOSE)
            if len(closing):
                pnl = self._close(closing, _EXIT_CLOSE)
                if equity:
                    realised[closing] += pnl
                else:
                    reward[closing] += amddp1(pnl)
                traded = True
            opening = np.flatnonzero(event == EVENT_OPEN)
            if len(opening):
                self.side[opening] = np.where(actions[opening] == BUY, 1, -1)
                self.entry_price[opening] = self.close_now[opening]
                self.entry_bar[opening] = self.bar[opening]
                self.peak[opening] = -cfg.spread_pips
                self.trackers[opening] = 0.0
                self.pnl[opening] = -cfg.spread_pips

        last = cfg.session_bars - 1
        step = self._common_step
        if step is not None:
            forced = np.flatnonzero(self.side != 0) if step == last else None
        else:
            forced = np.flatnonzero((self.step_in_session == last) & (self.side != 0))
        if forced is not None and len(forced):
            pnl = self._close(forced, _EXIT_SESSION_END)
            if equity:
                realised[forced] += pnl
            else:
                reward[forced] += amddp1(pnl)
            traded = True
        if traded and not equity:  # only AMDDP1 can leave the clip range
            np.minimum(reward, cfg.reward_clip, out=reward)
            np.maximum(reward, -cfg.reward_clip, out=reward)

        # Move to the next bar; finished rows stay on their last bar until reset.
        self.step_in_session += 1
        if step is not None:
            self._common_step = step + 1
            finished = step + 1 >= cfg.session_bars
            done = self._all_done if finished else self._none_done
            if not finished:
                self.bar += 1
        else:
            done = self.step_in_session >= cfg.session_bars
            self.bar += ~done
        self._mark_to_market()
        if equity:
            equity_after = realised + np.where(self.side != 0, self.pnl, 0.0)
            reward += (equity_after - equity_before) / cfg.pips_per_reward
        return StepResult(self.observation(), reward, done, valid)

    def _close(self, rows: np.ndarray, reason: int) -> np.ndarray:
        """Close the positions of ``rows`` at this bar's close; returns their P&L pips after spread."""
        # The mark-to-market P&L at this bar is exactly the trade's P&L after spread.
        pnl = self.pnl[rows]
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
        """Update the open positions' P&L and drawdown trackers at the current bar's close.

        Computed for every row (cheaper than selecting); flat rows' trackers are masked out of the
        features and reset when a position opens.
        """
        close = self.market.close[self.bar]
        self.close_now = close
        pnl = self.pnl
        np.subtract(close, self.entry_price, out=pnl)
        pnl *= self.side
        pnl /= self.pip
        pnl -= self.config.spread_pips
        np.subtract(self.bar, self.entry_bar, out=self.bars_since_entry, casting="unsafe")
        np.maximum(self.peak, pnl, out=self.peak)
        np.subtract(pnl, self.peak, out=self.dd)
        np.minimum(self.min_dd, self.dd, out=self.min_dd)
        self.acc_dd -= self.dd

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
