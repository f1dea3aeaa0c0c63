"""Messages between the live services (Redis streams and HTTP), one definition each.

Flow of one closed bar:
  feature_builder --WindowMessage--> Redis stream ``smz:windows``
  inference worker (consumer group) --OrderRequest--> broker_gateway ``POST /v1/orders``
  broker_gateway --PositionMessage--> Redis key ``smz:position:<account>:<instrument>`` and stream
  ``smz:positions``, which the feature builder waits on before it publishes the next bar's window.
"""

from __future__ import annotations

import time
from datetime import datetime
from typing import Annotated, Literal

import numpy as np
from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PrivateAttr,
    WithJsonSchema,
    field_validator,
    model_validator,
)

from shared.bar_checks import check_bar_ts, check_price
from shared.decision_bars import DECISION_BARS, MAX_DECISION_BARS, HeldPosition, window_from_bars
from shared.position import PIPS_PER_REWARD, ClosedTrade
from shared.reward import DEFAULT_REWARD, N_ACTIONS, reward_name
from shared.schema import (
    FEATURE_RANGES,
    FEATURES,
    N_FEATURES,
    N_MARKET,
    SCHEMA_HASH,
    SCHEMA_VERSION,
    WARMUP_BARS,
    WINDOW,
)
from shared.trading.rules import SIDE_NAMES

WINDOWS_STREAM = "smz:windows"
POSITIONS_STREAM = "smz:positions"
INFERENCE_GROUP = "inference"

NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._:-]*$"  # accounts and session ids: they go into Redis keys
INSTRUMENT_FIELD = Field(min_length=3, max_length=16, pattern=r"^[A-Z0-9]+$")
_LOW = np.array([lo for lo, _ in FEATURE_RANGES], dtype=np.float32)
_HIGH = np.array([hi for _, hi in FEATURE_RANGES], dtype=np.float32)


def position_key(account: str, instrument: str) -> str:
    return f"smz:position:{account}:{instrument}"


def idempotency_key(account: str, instrument: str, bar_ts: int) -> str:
    """One order per (account, instrument, bar): a retry of the same bar is the same order."""
    return f"{account}:{instrument}:{bar_ts}"


def check_window(window: np.ndarray) -> np.ndarray:
    """Validate a (32, 15) observation window; returns it as float32 or raises ValueError saying why.

    Values are checked as the model sees them, after the float32 cast (1e39 is finite in float64 and
    infinite in float32), and against each feature's range (``shared.schema.FEATURE_RANGES``)."""
    w64 = np.asarray(window, dtype=np.float64)
    if w64.shape != (WINDOW, N_FEATURES):
        raise ValueError(f"window must be {WINDOW} rows x {N_FEATURES} columns, got shape {w64.shape}")
    with np.errstate(over="ignore"):
        w = w64.astype(np.float32)
    bad = ~np.isfinite(w)
    if bad.any():
        r, c = np.argwhere(bad)[0]
        raise ValueError(f"window holds a non-finite number at row {r}, column {c} (as float32)")
    pos = w[:, N_MARKET:]
    if not (pos == pos[-1]).all():
        raise ValueError("position columns 9-14 must be the same on every row (the current position)")
    side, pips, bars, from_peak, max_dd, acc_dd = pos[-1]
    if side not in (-1.0, 0.0, 1.0):
        raise ValueError(f"position_side (column 9) must be -1, 0 or 1, got {side}")
    if side == 0.0 and (pos[-1, 1:] != 0.0).any():
        raise ValueError("a flat position (column 9 = 0) must have columns 10-14 all 0")
    if not all(-1.0 <= v <= 1.0 for v in (pips, bars, from_peak, max_dd, acc_dd)):
        raise ValueError("position columns 10-14 are tanh-scaled and must lie in [-1, 1]")
    if bars < 0 or from_peak > 0 or max_dd > 0 or acc_dd < 0:
        raise ValueError(
            "impossible position state: need bars_since_entry >= 0, pips_from_peak <= 0, "
            "max_drawdown_pips <= 0, accumulated_dd >= 0"
        )
    outside = (w < _LOW) | (w > _HIGH)
    if outside.any():
        r, c = np.argwhere(outside)[0]
        lo, hi = FEATURE_RANGES[c]
        raise ValueError(
            f"window value {float(w64[r, c])!r} at row {r}, column {c} ({FEATURES[c]}) is outside "
            f"the feature's range [{lo:g}, {hi:g}]"
        )
    return w


def _bar_time(value: object) -> object:
    """An ISO-8601 time with its UTC offset (or an aware datetime) as epoch seconds; anything else goes
    on to the int check (epoch seconds are a JSON number, not a string)."""
    if isinstance(value, str):
        value = datetime.fromisoformat(value)  # a ValueError says the text is not a time
    if not isinstance(value, datetime):
        return value
    if value.tzinfo is None:
        raise ValueError(f"time {value.isoformat()} has no UTC offset: add 'Z' or '+00:00' (bars are UTC)")
    seconds = value.timestamp()
    if seconds != int(seconds):
        raise ValueError(f"time {value.isoformat()!r} is not a whole second")
    return int(seconds)


BarTime = Annotated[
    int,
    BeforeValidator(_bar_time),
    WithJsonSchema(
        {
            "anyOf": [{"type": "integer"}, {"type": "string", "format": "date-time"}],
            "description": "a bar's open time: epoch seconds, or ISO-8601 with its UTC offset",
        }
    ),
]


class OhlcBar(BaseModel):
    """One closed 1-minute bid bar of a decision request."""

    model_config = ConfigDict(extra="forbid")

    ts: BarTime
    open: float
    high: float
    low: float
    close: float


SideName = Literal["flat", "long", "short"]
_SIDES = {name: side for side, name in SIDE_NAMES.items()}


class HeldPositionIn(BaseModel):
    """The position held when the last bar closed (``shared.decision_bars.HeldPosition``)."""

    model_config = ConfigDict(extra="forbid")

    side: SideName = "flat"
    entry_ts: BarTime | None = Field(None, description="open time of the bar at whose close it was entered")
    entry_price: float | None = Field(None, description="its entry price; default: that bar's close")
    spread_pips: float | None = Field(
        None, ge=0, le=1000, allow_inf_nan=False, description="round-trip cost; default: the instrument's"
    )

    def held(self) -> HeldPosition:
        return HeldPosition(_SIDES[self.side], self.entry_ts, self.entry_price, self.spread_pips)


class DecisionRequest(BaseModel):
    """``POST /v1/decisions``: one instrument, and either its observation window or its recent bars
    and the position held (the service then computes the window as the live feature builder does)."""

    model_config = ConfigDict(extra="forbid")

    instrument: str = INSTRUMENT_FIELD
    window: list[list[float]] | None = Field(
        None, description=f"{WINDOW} rows (oldest first) x {N_FEATURES} features"
    )
    bars: Annotated[list[OhlcBar], Field(max_length=MAX_DECISION_BARS)] | None = Field(
        None,
        description=f"instead of a window: the last {DECISION_BARS} to {MAX_DECISION_BARS} closed 1-minute "
        f"bid bars, oldest first (the bar decided on and {WARMUP_BARS} bars of gap-free history)",
    )
    position: HeldPositionIn | None = Field(None, description="with bars: the position held (default flat)")
    schema_hash: str = Field(SCHEMA_HASH, max_length=64, description="feature schema hash of the window")
    _observation: np.ndarray | None = PrivateAttr(None)

    @field_validator("schema_hash")
    @classmethod
    def _same_schema(cls, value: str) -> str:
        if value != SCHEMA_HASH:
            raise ValueError(f"window made under feature schema {value!r}; this service uses {SCHEMA_HASH!r}")
        return value

    @field_validator("window")
    @classmethod
    def _valid_window(cls, value: list[list[float]] | None) -> list[list[float]] | None:
        if value is None:
            return None
        if len(value) != WINDOW or any(len(row) != N_FEATURES for row in value):
            lengths = sorted({len(row) for row in value})
            raise ValueError(
                f"window must be {WINDOW} rows x {N_FEATURES} columns, got {len(value)} rows of {lengths}"
            )
        check_window(np.asarray(value))
        return value

    @model_validator(mode="after")
    def _window_or_bars(self) -> DecisionRequest:
        if (self.window is None) == (self.bars is None):
            raise ValueError("give exactly one of window (the observation) or bars (the last 1-minute bars)")
        if self.bars is None:
            if self.position is not None:
                raise ValueError("position goes with bars: a window holds its position in columns 9-14")
            return self
        held = HeldPosition() if self.position is None else self.position.held()
        self._observation = check_window(window_from_bars(self.instrument, self.bars, held, time.time()))
        return self

    def observation(self) -> np.ndarray:
        """The (32, 15) float32 window to decide on: the one given, or the one made of the bars."""
        if self._observation is not None:
            return self._observation
        return check_window(np.asarray(self.window))

    @property
    def bar_ts(self) -> int | None:
        """The bar decided on, for a request of bars."""
        return None if self.bars is None else self.bars[-1].ts


RewardName = Literal["equity", "amddp1"]


def _bar_ts_now(value: int) -> int:
    return check_bar_ts(value)


def _close_price(value: float) -> float:
    return check_price(value)


def _reward_name(value: object) -> object:
    return reward_name(value) if isinstance(value, str) else value


class Decision(BaseModel):
    instrument: str
    action: int = Field(ge=0, lt=N_ACTIONS)
    action_name: str
    visit_policy: list[float]
    root_value: float
    outcome_probabilities: list[float]  # (UP, NEUTRAL, DOWN) after the chosen action
    model_version: str
    search_ms: float
    # The reward the model was trained with (its manifest's), which the gateway computes for its orders.
    reward: RewardName = DEFAULT_REWARD
    pips_per_reward: float = PIPS_PER_REWARD
    # The feature schema of the window decided on (a decision from bars computed it under this one).
    schema_version: int = SCHEMA_VERSION
    schema_hash: str = SCHEMA_HASH
    bar_ts: int | None = None  # the bar decided on, for a decision from bars


class WindowMessage(BaseModel):
    """One tradeable closed bar (``kind="window"``), or the first bar after a gap that broke a
    session (``kind="session_break"``: no window, the gateway closes any open position)."""

    kind: Literal["window", "session_break"] = "window"
    instrument: str = INSTRUMENT_FIELD
    bar_ts: int  # bar open time, epoch seconds UTC
    close: float
    schema_hash: str = Field(SCHEMA_HASH, max_length=64)
    session_id: str = Field(max_length=64)
    step: int = Field(ge=-1, le=100_000)  # bar's step in its session (-1 for a session break)
    last_bar: bool = False
    window: list[list[float]] | None = None
    published_at: float = Field(0.0, ge=0, allow_inf_nan=False)  # epoch seconds, for bar-to-order latency

    _bar_ts = field_validator("bar_ts")(_bar_ts_now)
    _close = field_validator("close")(_close_price)

    @model_validator(mode="after")
    def _window_for_windows(self) -> WindowMessage:
        if self.kind == "window":
            if self.window is None:
                raise ValueError("a window message needs its window")
            if self.schema_hash != SCHEMA_HASH:
                raise ValueError(
                    f"window made under feature schema {self.schema_hash!r}, not {SCHEMA_HASH!r}"
                )
        return self

    def array(self) -> np.ndarray:
        if self.window is None:
            raise ValueError("no window in a session break")
        return check_window(np.asarray(self.window))


class OrderRequest(BaseModel):
    """``POST /v1/orders`` on the broker gateway."""

    model_config = ConfigDict(extra="forbid")

    idempotency_key: str = Field(min_length=1, max_length=200, pattern=NAME_PATTERN)
    account: str = Field(min_length=1, max_length=64, pattern=NAME_PATTERN)
    instrument: str = INSTRUMENT_FIELD
    bar_ts: int
    close: float
    action: int = Field(ge=0, lt=N_ACTIONS)
    kind: Literal["decision", "session_break"] = "decision"
    session_id: str = Field(max_length=64)
    step: int = Field(ge=-1, le=100_000)
    last_bar: bool = False
    model_version: str = Field("", max_length=128)
    published_at: float = Field(0.0, ge=0, allow_inf_nan=False)
    # The reward the gateway computes (the one the model was trained with: ``shared.reward``; earlier
    # names accepted) and the equity reward's scale, as in the model's training configuration.
    reward: RewardName = DEFAULT_REWARD
    pips_per_reward: float = Field(PIPS_PER_REWARD, gt=0, le=1e6, allow_inf_nan=False)

    _reward = field_validator("reward", mode="before")(_reward_name)
    _bar_ts = field_validator("bar_ts")(_bar_ts_now)
    _close = field_validator("close")(_close_price)

    @model_validator(mode="after")
    def _decision_step(self) -> OrderRequest:
        if self.kind == "decision" and self.step < 0:
            raise ValueError(f"a decision's step is its bar's step in the session (>= 0), got {self.step}")
        return self


class SettledReward(BaseModel):
    """The reward of an earlier decision (the order of bar ``bar_ts``), known only now."""

    bar_ts: int
    reward: float


class OrderResult(BaseModel):
    """What the gateway did with an order.

    Rewards: ``reward`` is this bar's decision reward (the order's ``reward`` kind, as the backtest's
    environment pays it) when it is known already, else null: an equity reward whose position stays
    open is the change of equity up to the NEXT bar's mark, and a session break decides nothing.
    ``settled`` lists the rewards of earlier decisions this order completed (the pending equity reward
    of the previous bar's decision, settled by this bar's mark or forced close): zero or one entry.
    Each decision's reward is therefore reported exactly once, here or in a later order's ``settled``;
    ``GET /v1/rewards`` lists them per decision. A decision the broker refused did nothing: reward 0.
    """

    idempotency_key: str
    status: Literal["filled", "held", "refused"]  # held: a HOLD changed nothing
    action: int
    valid: bool
    reason: str = ""
    reward: float | None = None
    settled: list[SettledReward] = Field(default_factory=list)
    trade: ClosedTrade | None = None
    position_side: int = 0
    duplicate: bool = False  # the key was seen before: this is the first result, replayed


class PositionMessage(BaseModel):
    """The gateway's position after a bar's order: what the next window's columns 9-14 start from."""

    account: str
    instrument: str
    as_of_bar_ts: int  # the bar whose order produced this state (0: none yet)
    session_id: str
    state: dict[str, float | int]  # ``PositionState.to_dict()``
