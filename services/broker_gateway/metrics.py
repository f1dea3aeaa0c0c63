"""Prometheus metrics of the broker gateway (served on ``GET /metrics``), for the live-trading board.

Labels are the instrument and a few fixed values, never the account or a key, to keep cardinality low:
position gauges are sums over the accounts trading an instrument.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from services.broker_gateway.risk import TradingDay
from services.observability import LATENCY_BUCKETS
from shared.instruments import KNOWN_INSTRUMENTS, instrument_label

# Symmetric around 0, finer near the 4-pip spread where most trades end.
_PNL_EDGES = (1, 2, 3, 4, 5, 7.5, 10, 15, 20, 30, 40, 50, 60)
TRADE_PNL_BUCKETS = (*(-e for e in reversed(_PNL_EDGES)), 0, *_PNL_EDGES)
ORDER_SECONDS_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


@dataclass
class _TradeStats:
    trades: int = 0
    wins: int = 0
    total: float = 0.0
    day: int = -1  # UTC day (epoch days) of the daily P&L
    day_pnl: float = 0.0


class GatewayMetrics:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        self._define_order_metrics(self.registry)
        self._define_pnl_metrics(self.registry)
        self._define_fault_metrics(self.registry)
        self._define_latency_metrics(self.registry)
        self._stats: dict[str, _TradeStats] = {}
        self.instruments: set[str] = set(KNOWN_INSTRUMENTS)  # label allowlist of order counts
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
            "Closed trades (a win has P&L > 0 pips)",
            ["instrument", "result"],
            registry=r,
        )

    def _define_pnl_metrics(self, r: CollectorRegistry) -> None:
        self.realized = Gauge(
            "smz_gateway_realized_pnl_pips",
            "Cumulative P&L of closed trades, pips",
            ["instrument"],
            registry=r,
        )
        self.unrealized = Gauge(
            "smz_gateway_unrealized_pnl_pips",
            "P&L of the open positions at their last mark (spread included), pips",
            ["instrument"],
            registry=r,
        )
        self.position_side = Gauge(
            "smz_gateway_position_side",
            "Open position side: 1 long, -1 short, 0 flat",
            ["instrument"],
            registry=r,
        )
        self.trade_pnl = Histogram(
            "smz_gateway_trade_pnl_pips",
            "P&L of each closed trade, pips",
            buckets=TRADE_PNL_BUCKETS,
            registry=r,
        )
        self.win_rate = Gauge(
            "smz_gateway_win_rate", "Share of closed trades with P&L > 0", ["instrument"], registry=r
        )
        self.expectancy = Gauge(
            "smz_gateway_expectancy_pips", "Mean P&L per closed trade, pips", ["instrument"], registry=r
        )
        self.daily_pnl = Gauge(
            "smz_gateway_daily_pnl_pips",
            "P&L of trades closed in the UTC day of the instrument's last bar, pips",
            ["instrument"],
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

    def bar(self, instrument: str, bar_ts: int) -> None:
        """A bar was processed: its time, and a new UTC day resets the daily P&L."""
        with self._lock:
            stats = self._stats.setdefault(instrument, _TradeStats())
            self._roll_day(instrument, stats, self.day_of(bar_ts))
            # Several accounts may trade an instrument: the gauge shows the newest bar of any.
            self._last_bar[instrument] = max(bar_ts, self._last_bar.get(instrument, bar_ts))
            self.last_bar_ts.labels(instrument).set(self._last_bar[instrument])

    def trade(self, instrument: str, exit_ts: int, pnl_pips: float) -> None:
        """A closed trade (also each trade of the ledger at startup, so the totals span restarts)."""
        with self._lock:
            stats = self._stats.setdefault(instrument, _TradeStats())
            stats.trades += 1
            stats.wins += pnl_pips > 0
            stats.total += pnl_pips
            day = self.day_of(exit_ts)
            if day > stats.day:
                self._roll_day(instrument, stats, day)
            if day == stats.day:
                stats.day_pnl += pnl_pips
            self.realized.labels(instrument).set(stats.total)
            self.win_rate.labels(instrument).set(stats.wins / stats.trades)
            self.expectancy.labels(instrument).set(stats.total / stats.trades)
            self.daily_pnl.labels(instrument).set(stats.day_pnl)
        self.trade_pnl.observe(pnl_pips)
        self.trades.labels(instrument, "win" if pnl_pips > 0 else "loss").inc()

    def _roll_day(self, instrument: str, stats: _TradeStats, day: int) -> None:
        if day > stats.day:
            stats.day, stats.day_pnl = day, 0.0
            self.daily_pnl.labels(instrument).set(0.0)

    def positions(self, instrument: str, side: int, unrealized_pips: float) -> None:
        self.position_side.labels(instrument).set(side)
        self.unrealized.labels(instrument).set(unrealized_pips)
