"""One instrument mapper for OANDA data and execution (they used to disagree on non-6-letter names)."""

from __future__ import annotations

import pytest

from services.broker_gateway.brokers import BrokerError
from services.feature_builder.sources import OandaSource
from services.oanda.execution import OandaBroker
from services.oanda.instruments import from_oanda_instrument, to_oanda_instrument


@pytest.mark.parametrize(
    ("ours", "theirs"),
    [("GBPJPY", "GBP_JPY"), ("USDJPY", "USD_JPY"), ("XAUUSD", "XAU_USD"), ("DE30EUR", "DE30_EUR")],
)
def test_names_map_both_ways(ours: str, theirs: str) -> None:
    assert to_oanda_instrument(ours) == theirs and from_oanda_instrument(theirs) == ours


@pytest.mark.parametrize("name", ["SYNTHJPY", "JPY", "GBPJPY1", "gbpjpy", "ABCDEFGHIJK"])
def test_names_without_an_oanda_instrument_are_refused(name: str) -> None:
    with pytest.raises(ValueError):
        to_oanda_instrument(name)


def test_data_and_execution_use_the_same_mapper() -> None:
    source = OandaSource("DE30EUR", "http://127.0.0.1:1", "t", history_bars=1)
    assert source.feed.oanda_instrument == "DE30_EUR"
    source.close()
    broker = OandaBroker(account_id="101", token="t", base_url="http://127.0.0.1:1")
    assert broker.sync.__module__ == "services.oanda.execution"
    with pytest.raises(BrokerError, match="cannot map 'SYNTHJPY'"):  # refused: nothing was sent
        broker.open("acct", "SYNTHJPY", 1, "c1", 1.0)
    broker.shutdown()
