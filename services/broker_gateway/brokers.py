"""The broker interface the gateway executes opens and closes through, and the paper broker."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol, runtime_checkable


@dataclass(frozen=True)
class Fill:
    """One executed market order."""

    price: float  # the broker's fill price
    order_id: str = ""  # the broker's id of the order (or of its fill transaction)
    trade_id: str = ""  # the broker's id of the trade it opened or closed ("," between several)


@dataclass(frozen=True)
class BrokerPosition:
    """An open position as the broker reports it."""

    instrument: str  # our name, e.g. GBPJPY
    side: int  # 1 long, -1 short
    units: float
    average_price: float


class BrokerError(RuntimeError):
    """The broker refused or failed an order, which therefore did not execute; the message says why."""


@runtime_checkable
class Broker(Protocol):
    """What the gateway needs of a broker. ``open`` and ``close`` either execute or raise BrokerError.

    ``client_order_id`` is unique per market order (the order's idempotency key, with a suffix for
    forced closes), so a broker that supports client ids can refuse a double send and a lost response
    can be looked up. ``price_hint`` is the model's price, the bar's close.
    """

    name: str

    def open(self, account: str, instrument: str, side: int, client_order_id: str, price_hint: float) -> Fill:
        """Open a position of ``side`` (1 long, -1 short) at market."""
        ...

    def close(self, account: str, instrument: str, client_order_id: str, price_hint: float) -> Fill:
        """Close the open position of ``instrument`` at market."""
        ...

    def sync(self, account: str) -> list[BrokerPosition]:
        """The positions the broker holds open."""
        ...


class PaperBroker:
    """Fills every order at the price given (the bar's close): no I/O and no book of its own, so the
    ledger is the only record and a restart cannot disagree with it."""

    name = "paper"

    def open(self, account: str, instrument: str, side: int, client_order_id: str, price_hint: float) -> Fill:
        if side not in (1, -1):
            raise BrokerError(f"side must be 1 (long) or -1 (short), got {side}")
        return Fill(
            price=price_hint, order_id=f"paper:{client_order_id}", trade_id=f"paper:{client_order_id}"
        )

    def close(self, account: str, instrument: str, client_order_id: str, price_hint: float) -> Fill:
        return Fill(price=price_hint, order_id=f"paper:{client_order_id}")

    def sync(self, account: str) -> list[BrokerPosition]:
        return []
