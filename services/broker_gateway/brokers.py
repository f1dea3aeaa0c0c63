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
    """The broker refused an order, which certainly did not execute; the message says why."""


class OutcomeUnknownError(RuntimeError):
    """What an order did at the broker is not known (a 5xx, a timeout, a lookup that failed), or the
    broker's book is not what the ledger holds (an open that opened no trade, a close of a position the
    broker no longer has). The gateway halts the instrument's entries and reconciles with the broker,
    which is the truth. Deliberately not a BrokerError: it must never be taken for "did not execute"."""


@runtime_checkable
class Broker(Protocol):
    """What the gateway needs of a broker. ``open`` and ``close`` return the fill, raise BrokerError
    (did not execute) or OutcomeUnknownError (may have executed: reconcile).

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

    def lookup(self, client_order_id: str) -> Fill | None:
        """The fill of the order sent with ``client_order_id``, or None if it never executed; raises
        OutcomeUnknownError while the broker cannot tell."""
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

    def lookup(self, client_order_id: str) -> Fill | None:
        # No book: an order the ledger did not record executed nowhere.
        return None
