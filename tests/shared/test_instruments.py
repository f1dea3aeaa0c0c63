"""Instrument metadata is written out per instrument, and an instrument without a row is refused."""

from __future__ import annotations

import pytest

from shared.instruments import (
    DEFAULT_SPREAD_PIPS,
    INSTRUMENTS,
    KNOWN_INSTRUMENTS,
    UnknownInstrumentError,
    instrument,
    pip_size,
    price_decimals,
)
from shared.synth import generate_synthetic_market


@pytest.mark.parametrize(
    ("name", "pip", "decimals"),
    [
        ("GBPJPY", 0.01, 3),
        ("USDJPY", 0.01, 3),
        ("EURUSD", 0.0001, 5),
        ("AUDNZD", 0.0001, 5),
        ("XAUUSD", 0.01, 3),
        ("XAGUSD", 0.0001, 5),
        ("SYNTHJPY", 0.01, 3),
        ("SYNTHUSD", 0.0001, 5),
    ],
)
def test_each_instrument_has_its_pip_and_decimals(name: str, pip: float, decimals: int) -> None:
    assert pip_size(name) == pip == instrument(name).pip_size
    assert price_decimals(name) == decimals
    assert instrument(name).spread_pips == DEFAULT_SPREAD_PIPS


def test_the_table_holds_the_majors_metals_and_synthetic_markets() -> None:
    assert len(INSTRUMENTS) == 28 + 2 + 2
    assert frozenset(INSTRUMENTS) == KNOWN_INSTRUMENTS
    assert all(row.name == name for name, row in INSTRUMENTS.items())
    # a tenth of a pip: the decimals follow the pip size
    for row in INSTRUMENTS.values():
        assert 10.0 ** -(row.price_decimals - 1) == pytest.approx(row.pip_size), row.name


@pytest.mark.parametrize("name", ["DE30EUR", "BTCJPY", "TESTPAIR"])
def test_an_instrument_without_a_row_is_refused_not_guessed(name: str) -> None:
    # BTCJPY ends in JPY, but nothing says its pip is 0.01: the old name rule would have guessed.
    with pytest.raises(UnknownInstrumentError, match=r"shared/instruments\.py"):
        pip_size(name)
    with pytest.raises(UnknownInstrumentError):
        generate_synthetic_market(name, 100, seed=1)


def test_a_malformed_name_is_a_value_error() -> None:
    with pytest.raises(ValueError, match="upper-case"):
        instrument("gbp_jpy")
