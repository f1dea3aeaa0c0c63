"""The feature schema (CONTRACT section 2): one place that names the 15 features and their parameters.

Data sets, checkpoints and windows on the wire carry ``SCHEMA_HASH``; a mismatch is a loud error.
"""

from __future__ import annotations

import hashlib
import json
from typing import Final

SCHEMA_VERSION: Final = 1

MARKET_FEATURES: Final = (
    "position_in_range_60",
    "min_max_scaled_momentum_60",
    "min_max_scaled_rolling_range",
    "min_max_scaled_momentum_5",
    "price_change_pips",
    "dow_cos_final",
    "dow_sin_final",
    "hour_cos_final",
    "hour_sin_final",
)
POSITION_FEATURES: Final = (
    "position_side",
    "position_pips",
    "bars_since_entry",
    "pips_from_peak",
    "max_drawdown_pips",
    "accumulated_dd",
)
FEATURES: Final = MARKET_FEATURES + POSITION_FEATURES
N_MARKET: Final = len(MARKET_FEATURES)  # 9
N_POSITION: Final = len(POSITION_FEATURES)  # 6
N_FEATURES: Final = len(FEATURES)  # 15

# The closed range of each feature, in ``FEATURES`` order: range positions and min-max scalings lie in
# [0, 1], tanh and cos/sin in [-1, 1]; the position's side in {-1, 0, 1}, its drawdowns <= 0, its
# bar count and accumulated drawdown >= 0 (tanh-scaled). A window outside them was not made here.
FEATURE_RANGES: Final = (
    (0.0, 1.0), (0.0, 1.0), (0.0, 1.0), (0.0, 1.0), (-1.0, 1.0), (-1.0, 1.0), (-1.0, 1.0), (-1.0, 1.0),
    (-1.0, 1.0),
    (-1.0, 1.0), (-1.0, 1.0), (0.0, 1.0), (-1.0, 0.0), (-1.0, 0.0), (0.0, 1.0),
)  # fmt: skip

WINDOW: Final = 32  # rows per observation window, row 0 oldest
RANGE_BARS: Final = 60  # w60 window for ranges and min-max scaling
MOMENTUM_LONG: Final = 60
MOMENTUM_SHORT: Final = 5
PRICE_CHANGE_SCALE_PIPS: Final = 10.0
POSITION_SCALE: Final = 100.0  # tanh(x / 100) for the position features

# Outcome labels (CONTRACT section 3) live with the schema: they are part of what a data set means.
OUTCOME_SIGMA_BARS: Final = 20
OUTCOME_THRESHOLD: Final = 0.5
OUTCOMES: Final = ("UP", "NEUTRAL", "DOWN")
UP, NEUTRAL, DOWN = 0, 1, 2

# Bars of gap-free history a bar needs before every feature in its window is fully defined:
# the oldest window row is WINDOW-1 bars back, and mm60(m60) reaches RANGE_BARS-1 + MOMENTUM_LONG
# bars behind that row.
WARMUP_BARS: Final = WINDOW - 1 + RANGE_BARS - 1 + MOMENTUM_LONG


def schema_dict() -> dict[str, object]:
    return {
        "version": SCHEMA_VERSION,
        "features": list(FEATURES),
        "window": WINDOW,
        "range_bars": RANGE_BARS,
        "momentum_long": MOMENTUM_LONG,
        "momentum_short": MOMENTUM_SHORT,
        "price_change_scale_pips": PRICE_CHANGE_SCALE_PIPS,
        "position_scale": POSITION_SCALE,
        "outcome_sigma_bars": OUTCOME_SIGMA_BARS,
        "outcome_threshold": OUTCOME_THRESHOLD,
        "outcomes": list(OUTCOMES),
    }


SCHEMA_HASH: Final = hashlib.sha256(
    json.dumps(schema_dict(), sort_keys=True, separators=(",", ":")).encode()
).hexdigest()[:16]


class SchemaMismatchError(ValueError):
    """Data, a checkpoint or a window was made under another feature schema."""


def check_schema_hash(found: str, where: str) -> None:
    if found != SCHEMA_HASH:
        raise SchemaMismatchError(
            f"{where} was built with feature schema {found!r}, this code uses {SCHEMA_HASH!r} "
            f"(version {SCHEMA_VERSION}); rebuild it with `smz features` or use a matching release"
        )
