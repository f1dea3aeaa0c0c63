"""Instrument conventions (SPEC section 1)."""

from __future__ import annotations

import re

_NAME = re.compile(r"^[A-Z0-9]{3,16}$")

# The round-trip cost of a trade in pips (SPEC section 5), charged once when it closes: one setting
# that the backtest, the live position, the feature builder and the gateway must share.
DEFAULT_SPREAD_PIPS = 4.0

# Instruments that get metric series of their own; any other name is counted as "other", so a client
# cannot create series at will. The 28 pairs of the eight majors, gold and silver, and the synthetic
# market's names; services add what they are configured to trade.
_MAJORS = ("EUR", "GBP", "AUD", "NZD", "USD", "CAD", "CHF", "JPY")
KNOWN_INSTRUMENTS: frozenset[str] = frozenset(
    {a + b for i, a in enumerate(_MAJORS) for b in _MAJORS[i + 1 :]}
    | {"XAUUSD", "XAGUSD", "SYNTHJPY", "SYNTHUSD"}
)
OTHER_INSTRUMENT = "other"


def instrument_label(name: str, known: frozenset[str] | set[str] = KNOWN_INSTRUMENTS) -> str:
    """``name`` as a metric label: itself if known, else ``"other"``."""
    return name if name in known else OTHER_INSTRUMENT


def validate_instrument(name: str) -> str:
    """Return the canonical instrument name or raise ValueError with what is wrong."""
    if not _NAME.match(name):
        raise ValueError(f"instrument name {name!r} must be 3-16 upper-case letters or digits, like 'GBPJPY'")
    return name


def pip_size(instrument: str) -> float:
    """0.01 for pairs quoted in JPY, 0.0001 otherwise."""
    validate_instrument(instrument)
    return 0.01 if instrument.endswith("JPY") else 0.0001
