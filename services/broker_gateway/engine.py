"""Order processing: one bar's order through the risk checks, the position state machine, the broker,
the ledger and Redis, serialised per (account, instrument).

The trading arithmetic is ``shared.position.PositionState``'s alone (the backtest's, bit for bit),
rewards included: the order names the reward (the served model's), and the result reports this
decision's reward when it is known and the earlier decision's reward this bar's mark settled
(``shared.wire.OrderResult``). An order is planned on copies of the state (``plan.OrderPlanner``);
the broker executes what the plan says, each call journalled here first; only then is the new state
committed (ledger first, then memory, then Redis: ``publisher``). A broker refusal therefore leaves
the position as it was; an unknown outcome is reconciled (``reconcile``).
"""

from __future__ import annotations

import logging
import threading
import time

from services.broker_gateway.brokers import (
    Broker,
    BrokerError,
    Fill,
    OutcomeUnknownError,
    PaperBroker,
)
from services.broker_gateway.errors import OrderConflictError, OrderRejectedError
from services.broker_gateway.ledger import Ledger, PositionRecord, TradeRecord
from services.broker_gateway.metrics import GatewayMetrics
from services.broker_gateway.plan import OrderPlan, OrderPlanner, utc
from services.broker_gateway.publisher import PositionPublisher
from services.broker_gateway.reconcile import Reconciler
from services.broker_gateway.risk import RiskLimits, TradingDay
from services.broker_gateway.settings import GatewaySettings
from shared.instruments import pip_size
from shared.position import PositionState
from shared.reward import ACTIONS
from shared.trading.rules import side_name
from shared.wire import OrderRequest, OrderResult

logger = logging.getLogger(__name__)

__all__ = ["Gateway", "OrderConflictError", "OrderRejectedError"]

# A close is judged against the last one only within this time: after a longer gap any price goes.
PRICE_BAND_LOOKBACK_SECONDS = 3600


class Gateway:
    """The broker gateway's state and its order processing; ``start()`` before use, ``stop()`` after."""

    def __init__(
        self, settings: GatewaySettings, broker: Broker, metrics: GatewayMetrics | None = None
    ) -> None:
        self.settings = settings
        self.broker = broker
        self.metrics = metrics or GatewayMetrics()
        self.metrics.trading_day = TradingDay(settings.day_boundary, settings.day_boundary_zone)
        max_loss, stale = settings.risk_limits()
        self.risk = RiskLimits(
            max_loss, stale, day=TradingDay(settings.day_boundary, settings.day_boundary_zone)
        )
        self.broker_mismatches: list[str] = []
        self._ledger: Ledger | None = None
        self._positions: dict[tuple[str, str], PositionRecord] = {}
        self._locks: dict[tuple[str, str], threading.Lock] = {}
        self._guard = threading.Lock()  # the two dicts above
        self._control_lock = threading.Lock()
        # Fills learnt by lookup that an order being recorded again must use (the reconciler's).
        self._known_fills: dict[str, Fill] = {}
        self._pinned_account: str | None = None  # the one account name a non-paper gateway trades
        self._reconcile_thread: threading.Thread | None = None
        self.reconciler = Reconciler(self)
        self.publisher = PositionPublisher(settings, self.metrics, self._positions.get, self._lock_for)
        self._stopping = threading.Event()

    @property
    def ledger(self) -> Ledger:
        if self._ledger is None:
            raise RuntimeError("the gateway is not started")
        return self._ledger

    # ------------------------------------------------------------ lifecycle
    def start(self) -> None:
        """Open the ledger, restore positions, kill switch and metrics, publish the positions."""
        self._ledger = Ledger(self.settings.ledger_db)
        control = self.ledger.get_control("halted") or {}
        if self.settings.start_halted and not control.get("halted"):
            self.set_halted(True, "SMZ_GATEWAY_START_HALTED")
        else:
            self.risk.halted = bool(control.get("halted"))
            self.metrics.halted.set(int(self.risk.halted))
        for record in self.ledger.positions():
            self._configure(record)
            self._positions[(record.account, record.instrument)] = record
        self._restore_metrics()
        for record in self._positions.values():
            self.publisher.publish(record)
        logger.info(
            "ledger %s: %d positions restored (%d open), trading %s",
            self.settings.ledger_db,
            len(self._positions),
            sum(1 for r in self._positions.values() if r.state.side),
            "HALTED" if self.risk.halted else "on",
        )
        self.reconciler.pin_broker_account()
        self.reconciler.restore_halts()
        self.reconcile()  # open intents of a previous run first, then the positions
        self._stopping.clear()
        self.publisher.start()
        if self.settings.reconcile_seconds > 0 and not isinstance(self.broker, PaperBroker):
            self._reconcile_thread = threading.Thread(
                target=self.reconciler.run_every, name="gateway-reconcile", daemon=True
            )
            self._reconcile_thread.start()

    def stop(self) -> None:
        self._stopping.set()
        if self._reconcile_thread is not None:
            self._reconcile_thread.join(timeout=10)
            self._reconcile_thread = None
        self.publisher.stop()
        shutdown = getattr(self.broker, "shutdown", None)
        if callable(shutdown):
            shutdown()
        if self._ledger is not None:
            self._ledger.close()
            self._ledger = None

    def _configure(self, record: PositionRecord) -> None:
        """Use the configured spread for trades still to open (an open trade keeps its own)."""
        state = record.state
        if state.spread_pips != self.settings.shared.spread_pips:
            if state.side:
                logger.warning(
                    "%s/%s: open position keeps its spread of %g pips (configured: %g) until it closes",
                    record.account,
                    record.instrument,
                    state.spread_pips,
                    self.settings.shared.spread_pips,
                )
            else:
                state.spread_pips = self.settings.shared.spread_pips

    def _restore_metrics(self) -> None:
        for instrument, kind, action, status, count in self.ledger.order_counts():
            label = "SESSION_BREAK" if kind == "session_break" else ACTIONS[action]
            self.metrics.orders.labels(instrument, label, status).inc(count)
        trades = self.ledger.trade_pnls()
        last_active: dict[str, int] = {}
        for account, _, exit_ts, _ in trades:
            last_active[account] = max(exit_ts, last_active.get(account, exit_ts))
        for record in self._positions.values():
            if record.last_bar_ts is not None:
                last_active[record.account] = max(record.last_bar_ts, last_active.get(record.account, 0))
        self.metrics.account_label.restore(last_active)
        for account, instrument, exit_ts, pnl in trades:
            self.metrics.trade(account, instrument, exit_ts, pnl)
        for record in self._positions.values():
            if record.last_bar_ts is not None:
                self.metrics.bar(record.account, record.instrument, record.last_bar_ts)
        for account, instrument in {(r.account, r.instrument) for r in self._positions.values()}:
            self._refresh_position_metrics(account, instrument)

    def reconcile(self) -> list[str]:
        """Resolve the journal's open calls and make the positions the broker's (``Reconciler``)."""
        return self.reconciler.reconcile()

    def instrument_halts(self) -> dict[str, str]:
        return self.reconciler.instrument_halts()

    # --------------------------------------------------------------- orders
    def submit(self, req: OrderRequest, replay: bool = False) -> OrderResult:
        """Process one order (or replay its first result); raises OrderConflictError for a 409.
        ``replay``: an order the broker executed before the process stopped, recorded now with the
        fills reconciliation learnt (no risk checks: it executed already)."""
        started = time.perf_counter()
        label = "SESSION_BREAK" if req.kind == "session_break" else ACTIONS[req.action]
        key = (req.account, req.instrument)
        with self._lock_for(key):
            stored = self.ledger.find_order(req.idempotency_key)
            if stored is not None:
                if (stored.account, stored.instrument, stored.bar_ts) != (*key, req.bar_ts):
                    self.metrics.order(req.instrument, label, "conflict")
                    raise OrderConflictError(
                        f"idempotency key {req.idempotency_key!r} was already used for another order "
                        f"({stored.account}/{stored.instrument}, bar {utc(stored.bar_ts)})"
                    )
                self.metrics.order(req.instrument, label, "duplicate")
                # A repeated order is how a lost position message shows (the feature builder re-sends
                # its window): publish the position again.
                record = self._positions.get(key)
                if record is not None:
                    self.publisher.publish(record)
                return stored.result.model_copy(update={"duplicate": True})
            current = self._positions.get(key) or self._new_position(req)
            last = current.last_bar_ts
            if last is not None and req.bar_ts <= last:
                self.metrics.order(req.instrument, label, "out_of_order")
                raise OrderConflictError(
                    f"out of order: bar {utc(req.bar_ts)} ({req.bar_ts}) is not after the last "
                    f"processed bar {utc(last)} ({last}) of {req.account}/{req.instrument}; "
                    "a stale or replayed bar under a new idempotency key is refused"
                )
            self._check_account(req, label)
            self._check_price_band(req, current, label)
            plan = OrderPlanner(self, req, current, replay).plan()
            try:
                self.ledger.record(
                    req, plan.result, plan.position, plan.trades, plan.fills, self.broker.name, time.time()
                )
            except Exception:
                # The broker may have executed: say exactly what, so the ledger can be repaired.
                logger.critical(
                    "ledger write failed for order %s after broker fills %s", req.idempotency_key, plan.fills
                )
                raise
            with self._guard:
                self._positions[key] = plan.position
            self.publisher.publish(plan.position)
        self._observe(req, plan, label, started)
        if plan.unknown and not replay:
            self.reconcile()  # the broker is asked now; the periodic reconciliation goes on asking
        return plan.result

    def _check_account(self, req: OrderRequest, label: str) -> None:
        """With a broker that nets per account (OANDA), one gateway trades one account name."""
        if isinstance(self.broker, PaperBroker):
            return
        with self._control_lock:
            # Read from the ledger once, then kept: not a ledger query on every order.
            if self._pinned_account is None:
                self._pinned_account = self.ledger.get_control("gateway_account")
            if self._pinned_account is None:
                self.ledger.set_control("gateway_account", req.account, time.time())
                self._pinned_account = req.account
                return
            pinned = self._pinned_account
        if pinned != req.account:
            self.metrics.order(req.instrument, label, "conflict")
            raise OrderConflictError(
                f"this gateway trades account {pinned!r} at {self.broker.name} only, not {req.account!r}: "
                "run one gateway (and broker account) per account"
            )

    def _check_price_band(self, req: OrderRequest, current: PositionRecord, label: str) -> None:
        last, band = current.last_close, self.settings.price_band
        if last is None or current.last_bar_ts is None or band <= 0:
            return
        if req.bar_ts - current.last_bar_ts > PRICE_BAND_LOOKBACK_SECONDS:
            return
        move = req.close / last - 1.0
        if abs(move) > band:
            self.metrics.order(req.instrument, label, "rejected")
            raise OrderRejectedError(
                f"close {req.close} is {move:+.1%} from the last close {last} of {req.account}/"
                f"{req.instrument} (bar {utc(current.last_bar_ts)}); the price band is +-{band:.0%}"
            )

    def _lock_for(self, key: tuple[str, str]) -> threading.Lock:
        with self._guard:
            return self._locks.setdefault(key, threading.Lock())

    def _new_position(self, req: OrderRequest) -> PositionRecord:
        state = PositionState(pip=pip_size(req.instrument), spread_pips=self.settings.shared.spread_pips)
        return PositionRecord(req.account, req.instrument, state)

    def _call_broker(self, what: str, req: OrderRequest, client_id: str, side: int) -> Fill:
        """One broker call, journalled: the intent is committed before the call and resolved after it
        (filled with the order's ledger write; rejected or unknown at once)."""
        known = self._known_fills.get(client_id)
        if known is not None:  # reconciliation recording an order whose fill it looked up
            return known
        self.ledger.add_intent(req, client_id, what, side, time.time())
        try:
            if what == "open":
                fill = self.broker.open(req.account, req.instrument, side, client_id, req.close)
            else:
                fill = self.broker.close(req.account, req.instrument, client_id, req.close)
        except BrokerError as exc:
            self.ledger.resolve_intent(client_id, "rejected", str(exc), time.time())
            raise
        except OutcomeUnknownError as exc:
            self.ledger.resolve_intent(client_id, "unknown", str(exc), time.time())
            raise
        except Exception as exc:  # an adapter's bug: it may have sent the order, so the outcome is unknown
            logger.exception("broker %s %s failed unexpectedly", self.broker.name, what)
            self.ledger.resolve_intent(client_id, "unknown", f"{type(exc).__name__}: {exc}", time.time())
            raise OutcomeUnknownError(f"unexpected broker error: {type(exc).__name__}: {exc}") from exc
        logger.info(
            "%s/%s %s %s: model %s, broker %s (order %s, trade %s)",
            req.account,
            req.instrument,
            what,
            side_name(side),
            req.close,
            fill.price,
            fill.order_id,
            fill.trade_id,
        )
        return fill

    def _day_pnl(self, account: str, start: int, end: int, pending: list[TradeRecord]) -> float:
        """The account's P&L of the trading day [start, end): the ledger's closed trades, this order's
        not yet written, and the unrealised P&L of its open positions at their last marks."""
        pnl = self.ledger.daily_pnl(account, start, end)
        pnl += sum(t.trade.pnl_pips for t in pending if start <= t.trade.exit_ts < end)
        with self._guard:
            open_pnl = sum(
                r.state.pnl for r in self._positions.values() if r.account == account and r.state.side
            )
        return pnl + open_pnl

    # -------------------------------------------------------------- outputs
    def _observe(self, req: OrderRequest, plan: OrderPlan, label: str, started: float) -> None:
        m = self.metrics
        m.order(req.instrument, label, plan.result.status)
        m.bar(req.account, req.instrument, req.bar_ts)
        for t in plan.trades:
            m.trade(req.account, req.instrument, t.trade.exit_ts, t.trade.pnl_pips)
        self._refresh_position_metrics(req.account, req.instrument)
        m.order_seconds.observe(time.perf_counter() - started)
        if req.published_at > 0:
            m.bar_to_order.observe(max(time.time() - req.published_at, 0.0))

    def _refresh_position_metrics(self, account: str, instrument: str) -> None:
        """The position gauges of ``account``'s label (accounts labelled "other" are summed)."""
        label = self.metrics.account_label
        account = label(account)
        with self._guard:
            records = [r for r in self._positions.values() if r.instrument == instrument]
        states = [r.state for r in records if label(r.account) == account]
        self.metrics.positions(
            account, instrument, sum(s.side for s in states), sum(s.pnl for s in states if s.side)
        )

    # ------------------------------------------------------------- controls
    def set_halted(self, halted: bool, reason: str = "") -> dict[str, object]:
        """The kill switch: takes effect in memory first (safety), then persists in the ledger."""
        now = time.time()
        with self._control_lock:
            self.risk.halted = halted
            self.metrics.halted.set(int(halted))
            control = {"halted": halted, "reason": reason, "since": int(now)}
            self.ledger.set_control("halted", control, now)
        logger.warning("trading %s%s", "HALTED" if halted else "resumed", f": {reason}" if reason else "")
        return control

    def halt_status(self) -> dict[str, object]:
        control = self.ledger.get_control("halted") or {"halted": False, "reason": "", "since": 0}
        control["halted"] = self.risk.halted
        return control

    def positions(self) -> list[PositionRecord]:
        with self._guard:
            return sorted(self._positions.values(), key=lambda r: (r.account, r.instrument))
