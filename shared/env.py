"""The vectorised trading environment of SPEC section 5: many sessions stepped in lockstep.

One row per session; every step is a handful of numpy operations over all rows, never a Python loop
per session. Observations are the (32, 15) windows of SPEC section 2: 9 market feature columns from
the precomputed feature matrix and 6 position columns, the same on every row of a window.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from shared.instruments import pip_size
from shared.reward import (
    CLOSE_FLAT_REWARD,
    HOLD_FLAT_REWARD,
    HOLD_IN_POSITION_REWARD,
    N_ACTIONS,
    OPEN_IN_POSITION_REWARD,
    OPEN_REWARD,
    REWARD_CLIP,
    Action,
    amddp1,
    legal_actions,
)
from shared.schema import N_FEATURES, N_MARKET, N_POSITION, POSITION_SCALE, WINDOW
from shared.sessions import SESSION_BARS

EXIT_CLOSE = "close"
EXIT_SESSION_END = "session_end"


@dataclass(frozen=True)
class EnvConfig:
    spread_pips: float = 4.0  # round-trip cost, charged once when a trade closes
    session_bars: int = SESSION_BARS
    reward_clip: float = REWARD_CLIP


@dataclass(frozen=True)
class MarketData:
    """What the environment reads of one instrument: times, closes and the market feature matrix."""

    instrument: str
    ts: np.ndarray  # int64 epoch seconds
    close: np.ndarray  # float64
    features: np.ndarray  # (n, 9) market features
    windows: np.ndarray = field(init=False, repr=False)  # (n - 31, 32, 9) view: windows[b - 31]

    def __post_init__(self) -> None:
        n = len(self.ts)
        if len(self.close) != n or self.features.shape != (n, N_MARKET):
            raise ValueError(
                f"market data mismatch: {n} timestamps, {len(self.close)} closes, "
                f"features {self.features.shape} (want ({n}, {N_MARKET}))"
            )
        feats = np.ascontiguousarray(self.features, dtype=np.float32)
        object.__setattr__(self, "features", feats)
        object.__setattr__(self, "windows", sliding_window_view(feats, (WINDOW, N_MARKET))[:, 0])

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
        return [
            {
                "instrument": self.instrument,
                "side": "long" if self.side[i] > 0 else "short",
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


def position_features(
    side: np.ndarray,
    pnl_pips: np.ndarray,
    bars_since_entry: np.ndarray,
    dd: np.ndarray,
    min_dd: np.ndarray,
    acc_dd: np.ndarray,
    out: np.ndarray | None = None,
) -> np.ndarray:
    """(n, 6) position columns of SPEC section 2; all 0 for flat rows."""
    n = len(side)
    if out is None:
        out = np.empty((n, N_POSITION), dtype=np.float32)
    in_position = side != 0
    out[:, 0] = side
    out[:, 1] = np.tanh(pnl_pips / POSITION_SCALE)
    out[:, 2] = np.tanh(bars_since_entry / POSITION_SCALE)
    out[:, 3] = np.tanh(dd / POSITION_SCALE)
    out[:, 4] = np.tanh(min_dd / POSITION_SCALE)
    out[:, 5] = np.tanh(acc_dd / POSITION_SCALE)
    out[:, 1:] *= in_position[:, None]
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
        self._trades: list[dict[str, np.ndarray]] = []
        self.action_counts = np.zeros(N_ACTIONS, dtype=np.int64)
        self.n = 0

    # ----------------------------------------------------------- lifecycle
    def reset(self, starts: np.ndarray) -> np.ndarray:
        starts = np.asarray(starts, dtype=np.int64)
        self._check_starts(starts)
        n = len(starts)
        self.n = n
        self.start = starts.copy()
        self.step_in_session = np.zeros(n, dtype=np.int64)
        self.bar = starts.copy()
        self.side = np.zeros(n, dtype=np.int8)
        self.entry_price = np.zeros(n)
        self.entry_bar = np.zeros(n, dtype=np.int64)
        self.pnl = np.zeros(n)
        self.peak = np.zeros(n)
        self.dd = np.zeros(n)
        self.min_dd = np.zeros(n)
        self.acc_dd = np.zeros(n)
        self._obs = np.empty((n, WINDOW, N_FEATURES), dtype=np.float32)
        self._pos = np.empty((n, N_POSITION), dtype=np.float32)
        self._rows = np.arange(n)
        return self.observation()

    def reset_rows(self, rows: np.ndarray, starts: np.ndarray) -> np.ndarray:
        """Start new sessions on some rows (flat); returns the full observation batch."""
        rows = np.asarray(rows, dtype=np.int64)
        starts = np.asarray(starts, dtype=np.int64)
        self._check_starts(starts)
        self.start[rows] = starts
        self.bar[rows] = starts
        self.step_in_session[rows] = 0
        for arr in (self.side, self.entry_price, self.entry_bar, self.pnl, self.peak):
            arr[rows] = 0
        for arr in (self.dd, self.min_dd, self.acc_dd):
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
        bars_since = (self.bar - self.entry_bar).astype(np.float64)
        return position_features(
            self.side, self.pnl, bars_since, self.dd, self.min_dd, self.acc_dd, out=self._pos
        )

    def observation(self) -> np.ndarray:
        """(n, 32, 15) float32 windows at each row's current bar (a buffer reused by every step)."""
        obs = self._obs
        obs[:, :, :N_MARKET] = self.market.windows[self.bar - (WINDOW - 1)]
        obs[:, :, N_MARKET:] = self.position_features()[:, None, :]
        return obs

    # ---------------------------------------------------------------- step
    def step(self, actions: np.ndarray) -> StepResult:
        actions = np.asarray(actions)
        if actions.shape != (self.n,):
            raise ValueError(f"expected {self.n} actions, got shape {actions.shape}")
        if actions.size and (actions.min() < 0 or actions.max() >= N_ACTIONS):
            raise ValueError(f"actions must be in 0..{N_ACTIONS - 1}")
        cfg = self.config
        close = self.market.close[self.bar]
        flat = self.side == 0
        is_open = (actions == Action.BUY) | (actions == Action.SELL)
        is_close = actions == Action.CLOSE
        is_hold = actions == Action.HOLD

        opening = is_open & flat
        closing = is_close & ~flat
        valid = is_hold | opening | closing

        reward = np.where(is_hold, np.where(flat, HOLD_FLAT_REWARD, HOLD_IN_POSITION_REWARD), 0.0)
        reward += np.where(is_open, np.where(flat, OPEN_REWARD, OPEN_IN_POSITION_REWARD), 0.0)
        reward += np.where(is_close & flat, CLOSE_FLAT_REWARD, 0.0)

        if closing.any():
            reward += self._close(closing, close, EXIT_CLOSE)
        if opening.any():
            rows = np.flatnonzero(opening)
            self.side[rows] = np.where(actions[rows] == Action.BUY, 1, -1)
            self.entry_price[rows] = close[rows]
            self.entry_bar[rows] = self.bar[rows]
            self.pnl[rows] = -cfg.spread_pips
            self.peak[rows] = -cfg.spread_pips
            self.dd[rows] = 0.0
            self.min_dd[rows] = 0.0
            self.acc_dd[rows] = 0.0

        last_bar = self.step_in_session == cfg.session_bars - 1
        forced = last_bar & (self.side != 0)
        if forced.any():
            reward += self._close(forced, close, EXIT_SESSION_END)

        np.clip(reward, -cfg.reward_clip, cfg.reward_clip, out=reward)
        self.action_counts += np.bincount(actions, minlength=N_ACTIONS)

        # Move to the next bar; finished rows stay on their last bar until reset.
        self.step_in_session += 1
        done = self.step_in_session >= cfg.session_bars
        self.bar += ~done
        self._mark_to_market()
        return StepResult(self.observation(), reward, done, valid)

    def _close(self, rows_mask: np.ndarray, close: np.ndarray, reason: str) -> np.ndarray:
        """Close the masked rows' positions at this bar's close; AMDDP1 per row (0 elsewhere)."""
        rows = np.flatnonzero(rows_mask)
        side = self.side[rows]
        exit_price = close[rows]
        pnl = side * (exit_price - self.entry_price[rows]) / self.pip - self.config.spread_pips
        ts = self.market.ts
        self._trades.append(
            {
                "session": rows,
                "side": side.copy(),
                "entry_ts": ts[self.entry_bar[rows]],
                "entry_price": self.entry_price[rows].copy(),
                "exit_ts": ts[self.bar[rows]],
                "exit_price": exit_price,
                "pnl_pips": pnl,
                "bars_held": self.bar[rows] - self.entry_bar[rows],
                "exit_reason": np.full(len(rows), reason),
            }
        )
        self.side[rows] = 0
        out = np.zeros(self.n)
        out[rows] = amddp1(pnl)
        return out

    def _mark_to_market(self) -> None:
        """Update the open positions' P&L and drawdown trackers at the current bar's close."""
        in_position = self.side != 0
        if not in_position.any():
            return
        rows = np.flatnonzero(in_position)
        pnl = self.side[rows] * (self.market.close[self.bar[rows]] - self.entry_price[rows]) / self.pip
        pnl -= self.config.spread_pips
        peak = np.maximum(self.peak[rows], pnl)
        dd = pnl - peak
        self.pnl[rows] = pnl
        self.peak[rows] = peak
        self.dd[rows] = dd
        self.min_dd[rows] = np.minimum(self.min_dd[rows], dd)
        self.acc_dd[rows] -= dd

    # -------------------------------------------------------------- trades
    def trade_log(self) -> TradeLog:
        """Every trade closed since construction, in closing order."""
        cols = TRADE_COLUMNS[1:]
        if not self._trades:
            empty = {
                "session": np.zeros(0, np.int64),
                "side": np.zeros(0, np.int8),
                "entry_ts": np.zeros(0, np.int64),
                "entry_price": np.zeros(0),
                "exit_ts": np.zeros(0, np.int64),
                "exit_price": np.zeros(0),
                "pnl_pips": np.zeros(0),
                "bars_held": np.zeros(0, np.int64),
                "exit_reason": np.zeros(0, dtype="<U11"),
            }
            return TradeLog(self.market.instrument, *(empty[c] for c in cols))
        return TradeLog(self.market.instrument, *(np.concatenate([t[c] for t in self._trades]) for c in cols))
