"""A seeded synthetic 1-minute FX market with a planted, learnable trend edge, and its oracle.

The close, in pips, is the sum of a *trend level* and a *noise level*. The trend level moves only
inside trend regimes, by a steady drift of a fraction of the local per-bar sigma. The noise level is
driven by fat-tailed Student-t shocks, each partly permanent and partly reverting at a fixed rate per
bar, so no-trend stretches are choppy, mostly mean-reverting noise, while trends drift steadily with a
volatility rise. A trend therefore shows up within a couple of dozen bars of its onset as a 60-bar
breakout: high momentum, price at the top (bottom) of its 60-bar range, and an expanding range.

``regime[t]`` is the regime driving the move from bar t to bar t+1: an oracle that sees it at bar t
and fills at bar t's close earns the drift. Pure: no I/O. See docs/SYNTHETIC_MARKET.md.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from shared.bars import Bars
from shared.instruments import pip_size, price_decimals
from shared.reward import Action

# Actions (CONTRACT section 5).
HOLD, BUY, SELL, CLOSE = Action.HOLD, Action.BUY, Action.SELL, Action.CLOSE

MINUTE_SECONDS = 60
DAY_MINUTES = 24 * 60
WEEK_MINUTES = 7 * DAY_MINUTES
# Minute of the week counted from Monday 00:00 UTC; the market is closed in [Fri 22:00, Sun 22:00).
FRIDAY_CLOSE_MINUTE = 4 * DAY_MINUTES + 22 * 60
SUNDAY_OPEN_MINUTE = 6 * DAY_MINUTES + 22 * 60
# 1970-01-01 was a Thursday: 3 days after a Monday.
EPOCH_MINUTE_OF_WEEK = 3 * DAY_MINUTES


@dataclass(frozen=True)
class SynthParams:
    """Every knob of the synthetic market. The defaults are the tuned market of the docs."""

    # --- noise, in pips per 1-minute bar
    sigma_pips: float = 0.5  # mean per-bar sigma of the shocks outside trends, over the UTC day
    t_dof: float = 5.0  # Student-t degrees of freedom of the shocks (fat tails), > 2
    permanent_shock_share: float = 0.5  # part of each shock that stays; the rest reverts
    noise_reversion: float = 0.1  # share of the reverting part that decays per bar, in [0, 0.5]
    # --- intraday volatility cycle: multiplier of sigma, a quiet level with Gaussian bumps at the
    # London and New York opens, normalised to mean 1 over the 24 hours
    quiet_level: float = 0.6
    london_open_hour: float = 8.0
    london_peak: float = 1.6
    new_york_open_hour: float = 13.5
    new_york_peak: float = 1.8
    open_width_hours: float = 1.75  # standard deviation of each bump
    # --- regimes: the planted edge
    trend_mean_bars: float = 90.0  # trend lengths are trend_min_bars + a geometric excess
    trend_min_bars: int = 20
    flat_mean_bars: float = 120.0  # no-trend stretches between trends, same shape
    flat_min_bars: int = 20
    drift_sigmas: float = 0.8  # drift per bar in a trend, in units of the local no-trend sigma
    trend_vol_multiplier: float = 1.3  # trends come with a volatility rise
    # Trend signs are fair coins nudged against the trend level's relative distance from the start
    # price (P(up) = 0.5 - level_reversion * distance, within [0.1, 0.9]) so that prices stay
    # positive over any length; the nudge is 0.05 at a 10% distance, which takes a year or more.
    level_reversion: float = 0.5
    # --- bar shape and data gaps
    wick_sigmas: float = 0.35  # mean wick beyond the body (exponential), in local sigmas
    missing_minute_rate: float = 0.001  # chance per open minute that a run of missing minutes starts
    max_missing_minutes: int = 3  # runs are 1..max minutes long, uniformly

    def __post_init__(self) -> None:
        positive = ("sigma_pips", "trend_mean_bars", "flat_mean_bars", "trend_vol_multiplier", "quiet_level")
        for name in positive:
            if not getattr(self, name) > 0:
                raise ValueError(f"SynthParams.{name} must be positive, got {getattr(self, name)}")
        if not self.t_dof > 2:
            raise ValueError(f"SynthParams.t_dof must exceed 2 for a finite variance, got {self.t_dof}")
        if not 0 <= self.permanent_shock_share <= 1:
            raise ValueError(
                f"SynthParams.permanent_shock_share must be in [0, 1], got {self.permanent_shock_share}"
            )
        if not 0 <= self.noise_reversion <= 0.5:
            raise ValueError(f"SynthParams.noise_reversion must be in [0, 0.5], got {self.noise_reversion}")
        for kind in ("trend", "flat"):
            min_bars, mean_bars = getattr(self, f"{kind}_min_bars"), getattr(self, f"{kind}_mean_bars")
            if not 1 <= min_bars <= mean_bars:
                raise ValueError(f"SynthParams needs 1 <= {kind}_min_bars <= {kind}_mean_bars")
        if not 0 <= self.missing_minute_rate < 0.1 or self.max_missing_minutes < 1:
            raise ValueError("SynthParams.missing_minute_rate must be in [0, 0.1), max_missing_minutes >= 1")

    def trend_share(self) -> float:
        """Expected share of bars in a trend regime."""
        return self.trend_mean_bars / (self.trend_mean_bars + self.flat_mean_bars)


@dataclass(frozen=True)
class SyntheticMarket:
    """Bars plus the hidden regime per bar (+1 up-trend, -1 down-trend, 0 no trend)."""

    bars: Bars
    regime: np.ndarray  # int8; regime[t] drives the move from bar t to bar t+1
    params: SynthParams = field(default_factory=SynthParams)  # the params it was made with
    seed: int | None = None  # the seed it was generated with, for the record


# Where a synthetic market starts, by the pip size of the instrument it is generated for: a yen-like
# level for a 0.01 pip, a euro-dollar-like level for a 0.0001 pip.
_START_PRICE_BY_PIP = {0.01: 140.0, 0.0001: 1.2}


def start_price(instrument: str) -> float:
    return _START_PRICE_BY_PIP[pip_size(instrument)]


def parse_utc_seconds(text: str) -> int:
    """Epoch seconds of an ISO-8601 UTC time such as '2020-01-06T00:00:00Z'."""
    stripped = text.strip()
    for suffix in ("Z", "+00:00"):
        if stripped.endswith(suffix):
            stripped = stripped[: -len(suffix)]
    return int(np.datetime64(stripped, "s").astype(np.int64))


def is_market_open(ts: np.ndarray) -> np.ndarray:
    """True for bar open times from Sunday 22:00 to Friday 21:59 UTC."""
    minutes = np.asarray(ts, dtype=np.int64) // MINUTE_SECONDS
    minute_of_week = (minutes + EPOCH_MINUTE_OF_WEEK) % WEEK_MINUTES
    return (minute_of_week < FRIDAY_CLOSE_MINUTE) | (minute_of_week >= SUNDAY_OPEN_MINUTE)


def intraday_multiplier(ts: np.ndarray, params: SynthParams) -> np.ndarray:
    """Volatility multiplier by UTC minute of the day: quiet Asian night, busy London and NY opens."""
    hours = np.arange(DAY_MINUTES) / 60.0
    per_minute = np.full(DAY_MINUTES, params.quiet_level)
    for center, peak in (
        (params.london_open_hour, params.london_peak),
        (params.new_york_open_hour, params.new_york_peak),
    ):
        distance = (hours - center + 12.0) % 24.0 - 12.0  # circular, in hours
        per_minute += (peak - params.quiet_level) * np.exp(-0.5 * (distance / params.open_width_hours) ** 2)
    per_minute /= per_minute.mean()  # so that sigma_pips is the mean over the day
    minute_of_day = (np.asarray(ts, dtype=np.int64) // MINUTE_SECONDS) % DAY_MINUTES
    return per_minute[minute_of_day]


def _timestamps(n_bars: int, start_s: int, params: SynthParams, rng: np.random.Generator) -> np.ndarray:
    """Open minutes of the trading week from ``start`` on, with rare short runs of missing minutes."""
    first_minute = -(-start_s // MINUTE_SECONDS)  # the first whole minute at or after start
    # Open minutes are 5/7 of the calendar; the margin covers missing minutes and a partial week.
    missing_share = params.missing_minute_rate * params.max_missing_minutes
    n_calendar = int(n_bars * 7 / 5 * (1 + 2 * missing_share)) + 2 * WEEK_MINUTES
    while True:
        ts = (first_minute + np.arange(n_calendar, dtype=np.int64)) * MINUTE_SECONDS
        ts = ts[is_market_open(ts)]
        keep = np.ones(len(ts), dtype=bool)
        gap_starts = np.flatnonzero(rng.random(len(ts)) < params.missing_minute_rate)
        gap_lengths = rng.integers(1, params.max_missing_minutes + 1, size=len(gap_starts))
        for offset in range(params.max_missing_minutes):
            missing = gap_starts[gap_lengths > offset] + offset
            keep[missing[missing < len(ts)]] = False
        keep[0] = True  # the series starts at the first open minute
        ts = ts[keep]
        if len(ts) >= n_bars:
            return ts[:n_bars]
        n_calendar *= 2  # never reached with sane params; deterministic all the same


def _regime_segments(
    n_bars: int, params: SynthParams, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Alternating no-trend / trend stretches covering exactly n_bars: (starts, lengths, is_trend)."""

    def stretch_lengths(min_bars: int, mean_bars: float, size: int) -> np.ndarray:
        excess = rng.geometric(1.0 / (mean_bars - min_bars + 1.0), size=size) - 1
        return min_bars + excess.astype(np.int64)

    n_pairs = int(n_bars / (params.trend_mean_bars + params.flat_mean_bars) * 1.3) + 8
    while True:
        flat = stretch_lengths(params.flat_min_bars, params.flat_mean_bars, n_pairs)
        trend = stretch_lengths(params.trend_min_bars, params.trend_mean_bars, n_pairs)
        lengths = np.column_stack([flat, trend]).ravel()
        if int(lengths.sum()) >= n_bars:
            break
        n_pairs *= 2
    ends = np.cumsum(lengths)
    n_segments = int(np.searchsorted(ends, n_bars, side="left")) + 1
    lengths = lengths[:n_segments].copy()
    lengths[-1] -= int(ends[n_segments - 1]) - n_bars  # cut the last stretch at n_bars
    is_trend = np.arange(n_segments) % 2 == 1
    starts = np.concatenate([[0], np.cumsum(lengths)[:-1]])
    return starts, lengths, is_trend


def _decaying_sum(shocks: np.ndarray, decay: float) -> np.ndarray:
    """y[t] = decay * y[t-1] + shocks[t] with y[-1] = 0, exactly, without a loop over bars.

    Within blocks of B bars, y = decay^j * cumsum(shocks * decay^-j) plus the carried start value;
    B keeps decay^-B below e^20 so the rescaling loses no precision. The carry between blocks is a
    short Python loop over n/B blocks.
    """
    n = len(shocks)
    if decay <= 0.0:
        return shocks.copy()
    block = 256 if decay >= 1.0 else int(max(1, min(256, 20.0 / -np.log(decay))))
    n_blocks = -(-n // block)
    padded = np.zeros(n_blocks * block)
    padded[:n] = shocks
    grid = padded.reshape(n_blocks, block)
    powers = decay ** np.arange(block, dtype=np.float64)
    local = np.cumsum(grid / powers, axis=1) * powers  # response to the block's own shocks
    carry_in = np.empty(n_blocks)  # y just before each block
    carry = 0.0
    decay_block = decay**block
    block_ends = local[:, -1].tolist()
    for k in range(n_blocks):
        carry_in[k] = carry
        carry = decay_block * carry + block_ends[k]
    out = local + carry_in[:, None] * (powers * decay)[None, :]
    return out.ravel()[:n]


def generate_synthetic_market(
    instrument: str,
    n_bars: int,
    seed: int,
    start: str = "2020-01-06T00:00:00Z",
    params: SynthParams | None = None,
) -> SyntheticMarket:
    """Synthetic 1-minute bid bars with hidden trend regimes; the same seed gives the same market."""
    if n_bars < 1:
        raise ValueError(f"n_bars must be at least 1, got {n_bars}")
    params = params or SynthParams()
    pip = pip_size(instrument)
    rng = np.random.default_rng(seed)

    ts = _timestamps(n_bars, parse_utc_seconds(start), params, rng)
    bar_sigma = params.sigma_pips * intraday_multiplier(ts, params)
    # Everything about "the move t -> t+1" is indexed by t and scaled by the sigma at bar t+1's time.
    move_sigma = np.append(bar_sigma[1:], bar_sigma[-1])
    up_drift = params.drift_sigmas * move_sigma

    # ---- regimes: alternating no-trend / trend stretches; signs chosen one trend at a time
    seg_starts, seg_lengths, seg_is_trend = _regime_segments(n_bars, params, rng)
    seg_up_drift = np.add.reduceat(up_drift, seg_starts)
    coins = rng.random(len(seg_starts)).tolist()
    start_pips = start_price(instrument) / pip
    seg_sign = np.zeros(len(seg_starts), dtype=np.int8)
    trend_level = 0.0  # pips above the start price gained by the trends so far
    for i in np.flatnonzero(seg_is_trend).tolist():
        p_up = min(0.9, max(0.1, 0.5 - params.level_reversion * trend_level / start_pips))
        seg_sign[i] = 1 if coins[i] < p_up else -1
        trend_level += seg_sign[i] * float(seg_up_drift[i])
    regime = np.repeat(seg_sign, seg_lengths)
    in_trend = regime != 0

    # ---- closes in pips: start + trend level + noise level
    shock_sigma = move_sigma * np.where(in_trend, params.trend_vol_multiplier, 1.0)
    unit_t = rng.standard_t(params.t_dof, size=n_bars) / np.sqrt(params.t_dof / (params.t_dof - 2.0))
    shocks = shock_sigma * unit_t
    permanent = params.permanent_shock_share
    noise_after_move = permanent * np.cumsum(shocks) + (1.0 - permanent) * _decaying_sum(
        shocks, 1.0 - params.noise_reversion
    )
    trend_after_move = np.cumsum(regime * up_drift)
    close_pips = start_pips + np.concatenate([[0.0], (trend_after_move + noise_after_move)[:-1]])

    # ---- OHLC on the price grid (a tenth of a pip); open = previous close
    decimals = price_decimals(instrument)
    close = np.round(close_pips * pip, decimals)
    open_ = np.concatenate([close[:1], close[:-1]])
    bar_in_trend = np.concatenate([[False], in_trend[:-1]])  # the move into bar t is bar t-1's
    wick_scale = (
        params.wick_sigmas * pip * bar_sigma * np.where(bar_in_trend, params.trend_vol_multiplier, 1.0)
    )
    # Rounding is monotonic, so high >= max(open, close) and low <= min(open, close) survive it.
    high = np.round(np.maximum(open_, close) + rng.exponential(1.0, n_bars) * wick_scale, decimals)
    low = np.round(np.minimum(open_, close) - rng.exponential(1.0, n_bars) * wick_scale, decimals)
    if not bool(np.all(low > 0)):
        raise ValueError("synthetic prices went non-positive; lower sigma_pips or raise level_reversion")

    bars = Bars(instrument, ts, open_, high, low, close, np.zeros(n_bars))
    return SyntheticMarket(bars=bars, regime=regime.astype(np.int8), params=params, seed=seed)


def oracle_actions(regime_at_bars: np.ndarray, side: np.ndarray) -> np.ndarray:
    """The oracle's action per row: BUY/SELL when flat in a trend, CLOSE once it no longer matches.

    ``regime_at_bars`` holds the regime at each row's current bar, ``side`` the row's position
    (-1 short, 0 flat, 1 long). Always legal: BUY/SELL only when flat, CLOSE only in a position.
    """
    regime = np.asarray(regime_at_bars)
    side = np.asarray(side)
    actions = np.full(np.broadcast_shapes(regime.shape, side.shape), HOLD, dtype=np.int64)
    flat = side == 0
    actions[flat & (regime > 0)] = BUY
    actions[flat & (regime < 0)] = SELL
    actions[(side != 0) & (regime != side)] = CLOSE
    return actions


def regime_runs(regime: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Runs of equal regime: (value of each run, length of each run), in order."""
    regime = np.asarray(regime)
    if len(regime) == 0:
        return regime[:0], np.zeros(0, dtype=np.int64)
    starts = np.flatnonzero(np.concatenate([[True], regime[1:] != regime[:-1]]))
    lengths = np.diff(np.append(starts, len(regime)))
    return regime[starts], lengths
