"""Instruments (CONTRACT section 1): names, and each instrument's metadata written out, not guessed.

Every instrument the stack can trade has one row in ``INSTRUMENTS``: its pip size, how many decimals its
quotes carry and its default round-trip spread. A name without a row is refused with a clear error
wherever a pip or a spread is needed (features, the environment, the live position, the gateway), so a
new market is added here, in one place, instead of being inferred from the letters of its name.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

_NAME = re.compile(r"^[A-Z0-9]{3,16}$")

# The round-trip cost of a trade in pips (CONTRACT section 5), charged once when it closes: every
# instrument's default unless its row says otherwise; services can override it per run (spread_pips).
DEFAULT_SPREAD_PIPS = 4.0


@dataclass(frozen=True)
class Instrument:
    """One market's conventions."""

    name: str
    pip_size: float  # price units of one pip
    price_decimals: int  # quotes carry a tenth of a pip
    spread_pips: float = DEFAULT_SPREAD_PIPS  # default round-trip cost, charged once at the close


def _pair(name: str) -> Instrument:
    # FX convention: pairs quoted in yen move in 0.01, every other major pair in 0.0001.
    if name[3:] == "JPY":
        return Instrument(name, pip_size=0.01, price_decimals=3)
    return Instrument(name, pip_size=0.0001, price_decimals=5)


# The 28 pairs of the eight majors, gold and silver (OANDA's pip locations: XAU_USD -2, XAG_USD -4) and
# the synthetic markets (shared.synth), which take the conventions of the quote currency they mimic.
_MAJORS = ("EUR", "GBP", "AUD", "NZD", "USD", "CAD", "CHF", "JPY")
INSTRUMENTS: dict[str, Instrument] = {
    **{a + b: _pair(a + b) for i, a in enumerate(_MAJORS) for b in _MAJORS[i + 1 :]},
    "XAUUSD": Instrument("XAUUSD", pip_size=0.01, price_decimals=3),
    "XAGUSD": Instrument("XAGUSD", pip_size=0.0001, price_decimals=5),
    "SYNTHJPY": Instrument("SYNTHJPY", pip_size=0.01, price_decimals=3),
    "SYNTHUSD": Instrument("SYNTHUSD", pip_size=0.0001, price_decimals=5),
}

# Instruments that get metric series of their own; any other name is counted as "other", so a client
# cannot create series at will. Services add what they are configured to trade.
KNOWN_INSTRUMENTS: frozenset[str] = frozenset(INSTRUMENTS)
OTHER_INSTRUMENT = "other"


class UnknownInstrumentError(ValueError):
    """An instrument name with no row in ``INSTRUMENTS``: its pip size and spread are unknown."""


def instrument_label(name: str, known: frozenset[str] | set[str] = KNOWN_INSTRUMENTS) -> str:
    """``name`` as a metric label: itself if known, else ``"other"``."""
    return name if name in known else OTHER_INSTRUMENT


def validate_instrument(name: str) -> str:
    """Return the canonical instrument name or raise ValueError with what is wrong."""
    if not _NAME.match(name):
        raise ValueError(f"instrument name {name!r} must be 3-16 upper-case letters or digits, like 'GBPJPY'")
    return name


def instrument(name: str) -> Instrument:
    """The metadata of ``name``, or UnknownInstrumentError naming where to add it."""
    validate_instrument(name)
    try:
        return INSTRUMENTS[name]
    except KeyError:
        raise UnknownInstrumentError(
            f"instrument {name!r} has no pip size or spread on record: add a row for it to "
            "shared/instruments.py INSTRUMENTS (known: the 28 major pairs, XAUUSD, XAGUSD, SYNTHJPY, "
            "SYNTHUSD)"
        ) from None


def pip_size(name: str) -> float:
    """The price move of one pip of ``name`` (0.01 for GBPJPY, 0.0001 for EURUSD)."""
    return instrument(name).pip_size


def price_decimals(name: str) -> int:
    """How many decimals quotes of ``name`` carry (a tenth of a pip)."""
    return instrument(name).price_decimals
