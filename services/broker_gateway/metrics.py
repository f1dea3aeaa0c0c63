"""Prometheus metrics of the broker gateway (served on ``GET /metrics``), for the live-trading board.

Labels are the instrument, the account and a few fixed values, never a key. What is kept per account
(positions, P&L, trades) carries the account; to keep cardinality bounded, at most ``ACCOUNT_LABELS``
account names get a label of their own (``AccountLabels``) and any further account counts as "other".
Ratios (win ratio, expectancy) are not exported: the dashboards compute them from the counters with
``increase()`` over a window, so they span restarts and never mix two accounts.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping
from dataclasses import dataclass

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from services.broker_gateway.risk import TradingDay
from services.observability import LATENCY_BUCKETS
from shared.instruments import KNOWN_INSTRUMENTS, instrument_label

# Symmetric around 0, finer near the 4-pip spread where most trades end.
_PNL_EDGES = (1, 2, 3, 4, 5, 7.5, 10, 15, 20, 30, 40, 50, 60)
TRADE_PNL_BUCKETS = (*(-e for e in reversed(_PNL_EDGES)), 0, *_PNL_EDGES)
ORDER_SECONDS_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
# Account names with a label of their own: `smz up` paper-trades a new account every run, so a ledger
# collects accounts without end. At start the ledger's RESTORED_ACCOUNT_LABELS most recently active
# accounts are named and its older ones count as "other", leaving room for the new accounts.
ACCOUNT_LABELS = 16
RESTORED_ACCOUNT_LABELS = 8
OTHER_ACCOUNT = "other"
RESULTS = ("win", "loss")


class AccountLabels:
    """Account names as label values: the first ``capacity`` accounts keep their name, later ones are
    "other", so a client naming new accounts cannot create series without end."""

    def __init__(self, capacity: int = ACCOUNT_LABELS) -> None:
        self.capacity = capacity
        self._named: set[str] = set()
        self._other: set[str] = set()  # the ledger's older accounts: "other" without taking a name
        self._lock = threading.Lock()

    def __call__(self, account: str) -> str:
        with self._lock:
            if account in self._named:
                return account
            if account not in self._other and len(self._named) < self.capacity:
                self._named.add(account)
                return account
        return OTHER_ACCOUNT

    def restore(self, last_active: Mapping[str, int], limit: int = RESTORED_ACCOUNT_LABELS) -> None:
        """Name the ``limit`` accounts of the ledger with the latest activity (epoch seconds); the
        ledger's other accounts count as "other", leaving the free names to new accounts."""
        ranked = sorted(last_active, key=lambda a: (last_active[a], a), reverse=True)
        for account in ranked[:limit]:
            self(account)
        with self._lock:
            self._other.update(a for a in ranked[limit:] if a not in self._named)


@dataclass
class _TradeStats:
    total: float = 0.0
    day: int = -1  # start (epoch seconds) of the trading day of the daily P&L
    day_pnl: float = 0.0


class GatewayMetrics:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        self._define_order_metrics(self.registry)
        self._define_pnl_metrics(self.registry)
        self._define_fault_metrics(self.registry)
        self._define_latency_metrics(self.registry)
        self._stats: dict[tuple[str, str], _TradeStats] = {}  # by (account label, instrument)
        self.instruments: set[str] = set(KNOWN_INSTRUMENTS)  # label allowlist of order counts
        self.account_label = AccountLabels()
        self.trading_day = TradingDay()  # the gateway sets its own: the daily P&L gauge follows it
        self._last_bar: dict[str, int] = {}

    def _define_order_metrics(self, r: CollectorRegistry) -> None:
        self.orders = Counter(
            "smz_gateway_orders",
            "Orders by requested action (SESSION_BREAK for session breaks) and outcome: filled, held, "
            "refused, duplicate (replayed), out_of_order, conflict",
            ["instrument", "action", "status"],
            registry=r,
        )
        self.trades = Counter(
            "smz_gateway_trades",
            "Closed trades by result (a win has P&L > 0 pips); restored from the ledger at start",
            ["instrument", "account", "result"],
            registry=r,
        )
        # Expectancy = (profit - loss) / trades and profit factor = profit / loss, over any window.
        self.gross_profit = Counter(
            "smz_gateway_gross_profit_pips",
            "Sum of the P&L of the winning trades, pips; restored from the ledger at start",
            ["instrument", "account"],
            registry=r,
        )
        self.gross_loss = Counter(
            "smz_gateway_gross_loss_pips",
            "Sum of the losses of the other trades as a positive number, pips; restored from the ledger",
            ["instrument", "account"],
            registry=r,
        )

    def _define_pnl_metrics(self, r: CollectorRegistry) -> None:
        per_account = ["instrument", "account"]
        self.realized = Gauge(
            "smz_gateway_realized_pnl_pips",
            "P&L of every closed trade of the account in the ledger (all time), pips",
            per_account,
            registry=r,
        )
        self.unrealized = Gauge(
            "smz_gateway_unrealized_pnl_pips",
            "P&L of the open position at its last mark (spread included), pips",
            per_account,
            registry=r,
        )
        self.position_side = Gauge(
            "smz_gateway_position_side",
            "Open position side: 1 long, -1 short, 0 flat",
            per_account,
            registry=r,
        )
        self.trade_pnl = Histogram(
            "smz_gateway_trade_pnl_pips",
            "P&L of each closed trade, pips (its _sum falls with losses: use the gross_* counters for sums)",
            per_account,
            buckets=TRADE_PNL_BUCKETS,
            registry=r,
        )
        self.daily_pnl = Gauge(
            "smz_gateway_daily_pnl_pips",
            "P&L of the account's trades closed in the trading day of its last bar, pips",
            per_account,
            registry=r,
        )

    def _define_fault_metrics(self, r: CollectorRegistry) -> None:
        self.halted = Gauge("smz_gateway_halted", "1 while the kill switch refuses new entries", registry=r)
        self.risk_refusals = Counter(
            "smz_gateway_risk_refusals", "Entries refused by a risk check", ["reason"], registry=r
        )
        # The broker journal and reconciliation (docs/GATEWAY.md).
        self.instrument_halted = Gauge(
            "smz_gateway_instrument_halted",
            "1 while an instrument's entries wait for a broker outcome or a reconciliation",
            ["instrument"],
            registry=r,
        )
        self.unknown_outcomes = Counter(
            "smz_gateway_broker_unknown_outcomes",
            "Broker calls whose outcome was unknown (5xx, timeout, failed lookup, a book that differs)",
            registry=r,
        )
        self.position_mismatches = Counter(
            "smz_gateway_position_mismatches",
            "Positions reconciliation found different at the broker (and made the ledger follow)",
            ["instrument"],
            registry=r,
        )
        self.open_intents = Gauge(
            "smz_gateway_open_broker_intents",
            "Journalled broker calls whose outcome is not resolved yet",
            registry=r,
        )
        self.broker_errors = Counter(
            "smz_gateway_broker_errors", "Broker calls that failed or were refused", registry=r
        )
        self.publish_errors = Counter(
            "smz_gateway_publish_errors", "Positions that could not be published to Redis", registry=r
        )

    def _define_latency_metrics(self, r: CollectorRegistry) -> None:
        self.order_seconds = Histogram(
            "smz_gateway_order_seconds",
            "Processing time of an order (broker, ledger and Redis included)",
            buckets=ORDER_SECONDS_BUCKETS,
            registry=r,
        )
        self.bar_to_order = Histogram(
            "smz_gateway_bar_to_order_seconds",
            "From the window's publication (published_at) to the order's position being published",
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.last_bar_ts = Gauge(
            "smz_gateway_last_bar_timestamp_seconds",
            "Open time (epoch seconds UTC) of the last bar an order was processed for",
            ["instrument"],
            registry=r,
        )
        self._lock = threading.Lock()  # trade stats are updated from several request threads

    def day_of(self, ts: int) -> int:
        """The start (epoch seconds) of the trading day holding ``ts``."""
        return self.trading_day.bounds(ts)[0]

    def order(self, instrument: str, action: str, status: str) -> None:
        """Count one order; a refused order's made-up instrument counts as "other"."""
        self.orders.labels(instrument_label(instrument, self.instruments), action, status).inc()

    def bar(self, account: str, instrument: str, bar_ts: int) -> None:
        """A bar was processed: its time, and a new trading day resets the daily P&L."""
        with self._lock:
            label = self.account_label(account)
            self._roll_day(label, instrument, self._stats_of(label, instrument), self.day_of(bar_ts))
            # Several accounts may trade an instrument: the gauge shows the newest bar of any.
            self._last_bar[instrument] = max(bar_ts, self._last_bar.get(instrument, bar_ts))
            self.last_bar_ts.labels(instrument).set(self._last_bar[instrument])

    def trade(self, account: str, instrument: str, exit_ts: int, pnl_pips: float) -> None:
        """A closed trade (also each trade of the ledger at startup, so the totals span restarts)."""
        account = self.account_label(account)
        with self._lock:
            stats = self._stats_of(account, instrument)
            stats.total += pnl_pips
            day = self.day_of(exit_ts)
            self._roll_day(account, instrument, stats, day)
            if day == stats.day:
                stats.day_pnl += pnl_pips
            self.realized.labels(instrument, account).set(stats.total)
            self.daily_pnl.labels(instrument, account).set(stats.day_pnl)
        self.trade_pnl.labels(instrument, account).observe(pnl_pips)
        self.trades.labels(instrument, account, "win" if pnl_pips > 0 else "loss").inc()
        if pnl_pips > 0:
            self.gross_profit.labels(instrument, account).inc(pnl_pips)
        else:
            self.gross_loss.labels(instrument, account).inc(-pnl_pips)

    def _stats_of(self, account: str, instrument: str) -> _TradeStats:
        stats = self._stats.get((account, instrument))
        if stats is None:
            stats = self._stats[(account, instrument)] = _TradeStats()
            # Every trade series exists from the account's first bar on, at 0: increase() then counts
            # the first trade too, and a window without trades reads 0, not nothing.
            for result in RESULTS:
                self.trades.labels(instrument, account, result)
            self.gross_profit.labels(instrument, account)
            self.gross_loss.labels(instrument, account)
            self.trade_pnl.labels(instrument, account)
            self.realized.labels(instrument, account).set(0.0)
        return stats

    def _roll_day(self, account: str, instrument: str, stats: _TradeStats, day: int) -> None:
        if day > stats.day:
            stats.day, stats.day_pnl = day, 0.0
            self.daily_pnl.labels(instrument, account).set(0.0)

    def positions(self, account: str, instrument: str, side: int, unrealized_pips: float) -> None:
        """The open position of ``account`` (a label: "other" sums the accounts without one)."""
        self.position_side.labels(instrument, account).set(side)
        self.unrealized.labels(instrument, account).set(unrealized_pips)
