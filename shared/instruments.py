"""Instrument conventions (SPEC section 1)."""

from __future__ import annotations

import re

_NAME = re.compile(r"^[A-Z0-9]{3,16}$")


def validate_instrument(name: str) -> str:
    """Return the canonical instrument name or raise ValueError with what is wrong."""
    if not _NAME.match(name):
        raise ValueError(f"instrument name {name!r} must be 3-16 upper-case letters or digits, like 'GBPJPY'")
    return name


def pip_size(instrument: str) -> float:
    """0.01 for pairs quoted in JPY, 0.0001 otherwise."""
    validate_instrument(instrument)
    return 0.01 if instrument.endswith("JPY") else 0.0001
