"""The broker journal's other half: reconciliation with the broker, which is the truth.

Every broker call is journalled by the gateway before it is made (``Gateway._call_broker``). Here the
calls whose outcome is open are resolved by client order id, the ledger's positions are made the
broker's, and the instruments whose entries wait for that are halted and resumed (docs/GATEWAY.md,
The broker journal and reconciliation). One reconciliation runs at a time.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import TYPE_CHECKING

from services.broker_gateway.brokers import BrokerError, BrokerPosition, OutcomeUnknownError, PaperBroker
from services.broker_gateway.errors import OrderConflictError, OrderRejectedError
from services.broker_gateway.ledger import PositionRecord, TradeRecord
from shared.instruments import pip_size
from shared.position import EXIT_RECONCILED, PositionState
from shared.trading.rules import side_name

if TYPE_CHECKING:
    from services.broker_gateway.engine import Gateway

logger = logging.getLogger(__name__)


class Reconciler:
    """Reconciliation of one gateway; ``gw`` owns the ledger, the positions and their locks."""

    def __init__(self, gateway: Gateway) -> None:
        self.gw = gateway
        self.halts: dict[str, str] = {}  # instrument -> why its entries wait (persisted in the ledger)
        self._lock = threading.Lock()  # one reconciliation at a time

    def restore_halts(self) -> None:
        """The halts of the last run, from the ledger."""
        self.halts = dict(self.gw.ledger.get_control("instrument_halts") or {})
        for instrument in self.halts:
            self.gw.metrics.instrument_halted.labels(instrument).set(1)

    def pin_broker_account(self) -> None:
        """One broker account per ledger: a ledger that traded another OANDA account refuses to start
        (OANDA nets per account, so two gateways on one account would trade each other's positions)."""
        if isinstance(self.gw.broker, PaperBroker):
            return
        account_id = getattr(self.gw.broker, "account_id", self.gw.settings.oanda_account_id)
        pin = f"{self.gw.broker.name}:{account_id}"
        stored = self.gw.ledger.get_control("broker_account")
        if stored is None:
            self.gw.ledger.set_control("broker_account", pin, time.time())
        elif stored != pin:
            raise RuntimeError(
                f"the ledger {self.gw.settings.ledger_db} belongs to broker account {stored!r}, not {pin!r}: "
                "one broker account per gateway and ledger"
            )

    def reconcile(self) -> list[str]:
        """Resolve the journal's open broker calls by client order id, then (with a broker that keeps a
        book) make the ledger's positions the broker's: the broker is the truth. Instruments with no
        open call left and no mismatch resume their entries. Returns the mismatches found."""
        with self._lock:
            self._resolve_open_intents()
            mismatches, readable = [], True
            if not isinstance(self.gw.broker, PaperBroker):
                mismatches, readable = self._repair_positions()
            self.gw.broker_mismatches = mismatches
            open_calls = {i.instrument for i in self.gw.ledger.open_intents()}
            for instrument in sorted(self.halts):
                # Repaired mismatches agree now; an unreadable book or an open call keeps the halt.
                if readable and instrument not in open_calls:
                    self.set_instrument_halt(instrument, None)
            self.gw.metrics.open_intents.set(len(self.gw.ledger.open_intents()))
            return mismatches

    def run_every(self) -> None:
        while not self.gw._stopping.wait(self.gw.settings.reconcile_seconds):
            try:
                self.reconcile()
            except Exception:  # the loop must outlive any one failure; the next round tries again
                logger.exception("periodic reconciliation failed")

    def _resolve_open_intents(self) -> None:
        for intent in self.gw.ledger.open_intents():
            now = time.time()
            try:
                fill = self.gw.broker.lookup(intent.client_order_id)
            except (OutcomeUnknownError, BrokerError) as exc:
                self.gw.ledger.resolve_intent(intent.client_order_id, "unknown", str(exc), now)
                self.set_instrument_halt(intent.instrument, f"broker call {intent.client_order_id}: {exc}")
                continue
            if fill is None:
                self.gw.ledger.resolve_intent(
                    intent.client_order_id, "rejected", "never executed (looked up by client id)", now
                )
                logger.warning("broker call %s never executed (looked up)", intent.client_order_id)
                continue
            if self.gw.ledger.find_order(intent.idempotency_key) is None:
                # The process stopped between the fill and the ledger write: record the order now, as
                # it would have been, with the fill the broker reports (no second order is sent).
                logger.warning(
                    "broker call %s filled but its order %s was never recorded; recording it",
                    intent.client_order_id,
                    intent.idempotency_key,
                )
                self.gw._known_fills[intent.client_order_id] = fill
                try:
                    self.gw.submit(intent.request, replay=True)
                except (OrderConflictError, OrderRejectedError) as exc:
                    logger.error("cannot record order %s: %s", intent.idempotency_key, exc)
                finally:
                    self.gw._known_fills.pop(intent.client_order_id, None)
            # Recorded by the submit above (or earlier, as refused: then the positions repair it).
            self.gw.ledger.resolve_intent(intent.client_order_id, "filled", "resolved by lookup", now, fill)

    def _repair_positions(self) -> tuple[list[str], bool]:
        """Compare every account's positions with the broker's; where they differ, close the ledger's
        (exit ``reconciled``, at the last close seen) and adopt the broker's. Each mismatch is counted.
        Returns the mismatches and whether every account's book could be read."""
        mismatches: list[str] = []
        readable = True
        accounts = sorted({r.account for r in self.gw._positions.values()})
        for account in accounts:
            try:
                held = {p.instrument: p for p in self.gw.broker.sync(account)}
            except (OutcomeUnknownError, BrokerError) as exc:
                mismatches.append(f"{account}: cannot read the broker's positions: {exc}")
                logger.error("reconciliation: cannot read %s's positions at the broker: %s", account, exc)
                readable = False
                continue
            ours = {
                r.instrument for r in self.gw._positions.values() if r.account == account and r.state.side
            }
            for instrument in sorted(ours | set(held)):
                message = self._repair(account, instrument, held.get(instrument))
                if message is not None:
                    mismatches.append(message)
        return mismatches, readable

    def _repair(self, account: str, instrument: str, broker: BrokerPosition | None) -> str | None:
        key = (account, instrument)
        with self.gw._lock_for(key):
            current = self.gw._positions.get(key)
            ours = current.state.side if current else 0
            theirs = broker.side if broker else 0
            if ours == theirs:
                return None
            message = f"{account}/{instrument}: ledger {side_name(ours)}, broker {side_name(theirs)}" + (
                f" ({broker.units:g} units at {broker.average_price})" if broker else ""
            )
            logger.error("reconciliation: %s; the broker is the truth, the ledger follows", message)
            self.gw.metrics.position_mismatches.labels(instrument).inc()
            if current is None:
                state = PositionState(
                    pip=pip_size(instrument), spread_pips=self.gw.settings.shared.spread_pips
                )
                current = PositionRecord(account, instrument, state)
            work = current.copy()
            trades: list[TradeRecord] = []
            ts = work.last_bar_ts or int(time.time()) // 60 * 60
            if ours:  # closed at the broker (a stop-out, a hand): the trade ends at the last close seen
                last = work.last_close or work.state.entry_price
                trade = work.state.close(last, work.state.marked_step + 1, ts, EXIT_RECONCILED)
                work.state.take_settled()  # a reward this mark settled has no decision to report it
                trades.append(
                    TradeRecord(
                        trade=trade,
                        model_version=work.entry_model_version,
                        session_id=work.session_id,
                        broker_entry_price=work.broker_entry_price,
                        broker_exit_price=None,  # the broker's own close is not ours to know
                        broker_trade_id=work.broker_trade_id,
                    )
                )
                work.entry_model_version, work.broker_entry_price, work.broker_trade_id = "", None, ""
            if broker is not None:
                price = work.last_close or broker.average_price
                work.state.adopt(broker.side, price, max(work.state.marked_step, 0), ts)
                work.entry_model_version = "reconciled"
                work.broker_entry_price = broker.average_price
            self.gw.ledger.repair(work, trades, time.time())
            with self.gw._guard:
                self.gw._positions[key] = work
            for t in trades:
                self.gw.metrics.trade(account, instrument, t.trade.exit_ts, t.trade.pnl_pips)
            self.gw._refresh_position_metrics(account, instrument)
            self.gw.publisher.publish(work)
            return message

    def set_instrument_halt(self, instrument: str, reason: str | None) -> None:
        """Halt (reason) or resume (None) one instrument's entries; persisted in the ledger."""
        with self.gw._control_lock:
            if reason is None:
                if self.halts.pop(instrument, None) is None:
                    return
                logger.warning("%s: entries resume, the broker and the ledger agree", instrument)
            else:
                if instrument not in self.halts:
                    logger.error("%s: entries HALTED until reconciled: %s", instrument, reason)
                self.halts[instrument] = reason
            self.gw.metrics.instrument_halted.labels(instrument).set(int(reason is not None))
            self.gw.ledger.set_control("instrument_halts", self.halts, time.time())

    def instrument_halts(self) -> dict[str, str]:
        with self.gw._control_lock:
            return dict(self.halts)
