"""Instrument names: ours (``GBPJPY``, ``XAUUSD``, ``DE30EUR``) and OANDA's (``GBP_JPY``)."""

from __future__ import annotations

import re

from shared.instruments import validate_instrument

# OANDA's names are BASE_QUOTE: the quote currency is the last three letters of ours.
_OURS = re.compile(r"^(?P<base>[A-Z0-9]{3,5})(?P<quote>[A-Z]{3})$")


def to_oanda_instrument(name: str) -> str:
    """GBPJPY -> GBP_JPY, XAUUSD -> XAU_USD, DE30EUR -> DE30_EUR. A synthetic market has no OANDA name."""
    validate_instrument(name)
    match = _OURS.match(name)
    if match is None or name.startswith("SYNTH"):
        raise ValueError(
            f"cannot map {name!r} to an OANDA instrument: want a base of 3-5 letters or digits and a "
            "3-letter quote currency, like GBPJPY or DE30EUR"
        )
    return f"{match['base']}_{match['quote']}"


def from_oanda_instrument(name: str) -> str:
    """GBP_JPY -> GBPJPY."""
    return name.replace("_", "")
