"""The gateway's ledger: an embedded DuckDB file of orders, broker fills, trades, positions and controls.

Timestamps are stored as naive ``TIMESTAMP`` values that mean UTC (as in ``shared.store``); in memory
they are int64 epoch seconds. All of an order's rows are written in one transaction, so after a crash
the ledger holds an order either whole or not at all.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Literal

import duckdb

from services.broker_gateway.brokers import Fill
from services.broker_gateway.trade_views import TradeFilter
from shared.env import TRADE_LOG_FIELDS
from shared.position import ClosedTrade, PositionState
from shared.trading.rules import side_name
from shared.wire import OrderRequest, OrderResult, PositionMessage

# Epoch seconds <-> naive UTC TIMESTAMP, independent of the session's TimeZone setting.
_TS = "make_timestamp(CAST(? AS BIGINT) * 1000000)"


def _where(**equal_to: str | None) -> tuple[str, list[str]]:
    """A ``WHERE`` clause (or nothing) requiring each given column to equal its value; None matches all."""
    given = {column: value for column, value in equal_to.items() if value is not None}
    clause = " AND ".join(f"{column} = ?" for column in given)
    return (f" WHERE {clause}" if clause else ""), list(given.values())


def _epoch(column: str) -> str:
    return f"epoch_us({column}) // 1000000"


DDL = """
CREATE SEQUENCE IF NOT EXISTS trade_ids START 1;
CREATE TABLE IF NOT EXISTS orders (
    idempotency_key VARCHAR PRIMARY KEY,
    account VARCHAR NOT NULL, instrument VARCHAR NOT NULL, bar_ts TIMESTAMP NOT NULL,
    kind VARCHAR NOT NULL, action TINYINT NOT NULL,
    session_id VARCHAR NOT NULL, step INTEGER NOT NULL, last_bar BOOLEAN NOT NULL,
    status VARCHAR NOT NULL, reason VARCHAR NOT NULL, model_version VARCHAR NOT NULL,
    model_price DOUBLE NOT NULL,   -- the bar's close: the price the model (and the backtest) trades at
    broker VARCHAR NOT NULL,
    broker_fill_price DOUBLE,      -- the order's first broker fill, if any (all of them: table fills)
    broker_order_id VARCHAR, broker_trade_id VARCHAR,
    created_at TIMESTAMP NOT NULL,
    result JSON NOT NULL           -- the OrderResult, replayed for a duplicate
);
CREATE TABLE IF NOT EXISTS fills (
    idempotency_key VARCHAR NOT NULL, leg TINYINT NOT NULL, client_order_id VARCHAR NOT NULL,
    account VARCHAR NOT NULL, instrument VARCHAR NOT NULL,
    kind VARCHAR NOT NULL, side TINYINT NOT NULL,   -- open or close; side of the position
    model_price DOUBLE NOT NULL, broker VARCHAR NOT NULL, broker_price DOUBLE NOT NULL,
    broker_order_id VARCHAR NOT NULL, broker_trade_id VARCHAR NOT NULL,
    created_at TIMESTAMP NOT NULL,
    PRIMARY KEY (idempotency_key, leg)
);
CREATE TABLE IF NOT EXISTS trades (
    id BIGINT PRIMARY KEY DEFAULT nextval('trade_ids'),   -- closing order
    account VARCHAR NOT NULL, instrument VARCHAR NOT NULL, side TINYINT NOT NULL,
    entry_ts TIMESTAMP NOT NULL, entry_price DOUBLE NOT NULL,
    exit_ts TIMESTAMP NOT NULL, exit_price DOUBLE NOT NULL,
    pnl_pips DOUBLE NOT NULL, bars_held INTEGER NOT NULL, exit_reason VARCHAR NOT NULL,
    model_version VARCHAR NOT NULL,   -- of the model that opened the trade
    session_id VARCHAR NOT NULL, idempotency_key VARCHAR NOT NULL,   -- the order that closed it
    broker_entry_price DOUBLE, broker_exit_price DOUBLE, broker_trade_id VARCHAR
);
CREATE TABLE IF NOT EXISTS positions (
    account VARCHAR NOT NULL, instrument VARCHAR NOT NULL,
    state JSON NOT NULL,               -- PositionState.to_dict()
    as_of_bar_ts TIMESTAMP, session_id VARCHAR NOT NULL, last_bar_ts TIMESTAMP,
    entry_model_version VARCHAR NOT NULL, broker_entry_price DOUBLE, broker_trade_id VARCHAR NOT NULL,
    updated_at TIMESTAMP NOT NULL,
    PRIMARY KEY (account, instrument)
);
CREATE TABLE IF NOT EXISTS controls (
    name VARCHAR PRIMARY KEY, value JSON NOT NULL, updated_at TIMESTAMP NOT NULL
);
CREATE TABLE IF NOT EXISTS broker_intents (   -- the journal: written BEFORE each broker call
    client_order_id VARCHAR PRIMARY KEY,
    idempotency_key VARCHAR NOT NULL, account VARCHAR NOT NULL, instrument VARCHAR NOT NULL,
    kind VARCHAR NOT NULL, side TINYINT NOT NULL,   -- open or close; side of the position
    model_price DOUBLE NOT NULL, bar_ts TIMESTAMP NOT NULL,
    request JSON NOT NULL,                          -- the OrderRequest, to record it once resolved
    status VARCHAR NOT NULL,      -- pending (sent, no answer yet), filled, rejected, unknown
    detail VARCHAR NOT NULL,
    broker_price DOUBLE, broker_order_id VARCHAR, broker_trade_id VARCHAR,
    created_at TIMESTAMP NOT NULL, resolved_at TIMESTAMP
);
CREATE TABLE IF NOT EXISTS rewards (   -- one row per decision, written once its reward is known
    account VARCHAR NOT NULL, instrument VARCHAR NOT NULL,
    bar_ts TIMESTAMP NOT NULL,          -- the decision's bar
    reward DOUBLE NOT NULL, reward_kind VARCHAR NOT NULL,
    idempotency_key VARCHAR NOT NULL,   -- the order that settled it: the decision's own or a later one
    created_at TIMESTAMP NOT NULL,
    PRIMARY KEY (account, instrument, bar_ts)
);
"""

REWARD_COLUMNS = ("account", "instrument", "bar_ts", "reward", "reward_kind", "settled_by")
TRADE_COLUMNS = (
    *TRADE_LOG_FIELDS,
    "model_version",
    "account",
    "broker_entry_price",
    "broker_exit_price",
    "broker_trade_id",
)


@dataclass
class PositionRecord:
    """The gateway's position of one (account, instrument): the state machine and its bookkeeping."""

    account: str
    instrument: str
    state: PositionState
    session_id: str = ""
    last_bar_ts: int | None = None  # the last processed bar (its order produced this state)
    entry_model_version: str = ""
    broker_entry_price: float | None = None
    broker_trade_id: str = ""
    last_close: float | None = None  # the last processed bar's close (the price band's reference)

    def copy(self) -> PositionRecord:
        """An independent copy to plan an order on (``PositionState`` is mutable)."""
        return replace(self, state=replace(self.state))

    def message(self) -> PositionMessage:
        return PositionMessage(
            account=self.account,
            instrument=self.instrument,
            as_of_bar_ts=self.last_bar_ts or 0,
            session_id=self.session_id,
            state=self.state.to_dict(),
        )


@dataclass(frozen=True)
class TradeRecord:
    """A closed trade with what the ledger keeps beside it."""

    trade: ClosedTrade
    model_version: str
    session_id: str
    broker_entry_price: float | None
    broker_exit_price: float | None
    broker_trade_id: str


@dataclass(frozen=True)
class FillRecord:
    """One broker market order of an order (an order has up to two: an entry and a forced close)."""

    client_order_id: str
    kind: Literal["open", "close"]
    side: int
    model_price: float
    fill: Fill


@dataclass(frozen=True)
class Intent:
    """One broker call of the journal. ``pending``: written before the call and not resolved (the
    process died in between); ``unknown``: the broker's answer left the outcome open."""

    client_order_id: str
    idempotency_key: str
    account: str
    instrument: str
    kind: Literal["open", "close"]
    side: int
    model_price: float
    bar_ts: int
    request: OrderRequest
    status: Literal["pending", "filled", "rejected", "unknown"]
    detail: str


@dataclass(frozen=True)
class StoredOrder:
    account: str
    instrument: str
    bar_ts: int
    result: OrderResult


class Ledger:
    """One DuckDB connection, used under a lock (the gateway's request threads share it)."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._con = duckdb.connect(str(self.path))
        self._lock = threading.Lock()
        self._con.execute(DDL)

    def close(self) -> None:
        with self._lock:
            self._con.close()

    @contextmanager
    def _transaction(self) -> Iterator[duckdb.DuckDBPyConnection]:
        with self._lock:
            self._con.execute("BEGIN TRANSACTION")
            try:
                yield self._con
            except BaseException:
                self._con.execute("ROLLBACK")
                raise
            self._con.execute("COMMIT")

    def _fetch(self, sql: str, params: list[Any] | None = None) -> list[tuple[Any, ...]]:
        with self._lock:
            return self._con.execute(sql, params or []).fetchall()

    def ping(self) -> None:
        self._fetch("SELECT 1")

    # ------------------------------------------------------------ the journal
    def add_intent(
        self, request: OrderRequest, client_order_id: str, kind: str, side: int, now: float
    ) -> None:
        """Journal a broker call before it is made (committed on return). A client id already
        journalled (a retry of an unresolved call) keeps its row, now pending again."""
        with self._transaction() as con:
            con.execute(
                f"INSERT INTO broker_intents VALUES (?, ?, ?, ?, ?, ?, ?, {_TS}, ?, 'pending', '', "
                f"NULL, NULL, NULL, {_TS}, NULL) ON CONFLICT (client_order_id) DO UPDATE SET "
                "status = 'pending', detail = '', resolved_at = NULL",
                [
                    client_order_id,
                    request.idempotency_key,
                    request.account,
                    request.instrument,
                    kind,
                    side,
                    request.close,
                    request.bar_ts,
                    request.model_dump_json(),
                    int(now),
                ],
            )

    def resolve_intent(
        self, client_order_id: str, status: str, detail: str, now: float, fill: Fill | None = None
    ) -> None:
        with self._transaction() as con:
            self._resolve(con, client_order_id, status, detail, int(now), fill)

    @staticmethod
    def _resolve(
        con: duckdb.DuckDBPyConnection, client_id: str, status: str, detail: str, now: int, fill: Fill | None
    ) -> None:
        con.execute(
            f"UPDATE broker_intents SET status = ?, detail = ?, broker_price = ?, broker_order_id = ?, "
            f"broker_trade_id = ?, resolved_at = {_TS} WHERE client_order_id = ?",
            [
                status,
                detail[:2000],
                fill.price if fill else None,
                fill.order_id if fill else None,
                fill.trade_id if fill else None,
                now,
                client_id,
            ],
        )

    def open_intents(self, instrument: str | None = None) -> list[Intent]:
        """Broker calls whose outcome is not known: pending or unknown, oldest first."""
        where, params = _where(instrument=instrument)
        where = (where + " AND" if where else " WHERE") + " status IN ('pending', 'unknown')"
        rows = self._fetch(
            "SELECT client_order_id, idempotency_key, account, instrument, kind, side, model_price, "
            f"{_epoch('bar_ts')}, request, status, detail FROM broker_intents{where} ORDER BY created_at, "
            "client_order_id",
            params,
        )
        return [
            Intent(
                r[0],
                r[1],
                r[2],
                r[3],
                r[4],
                int(r[5]),
                r[6],
                int(r[7]),
                OrderRequest.model_validate_json(r[8]),
                r[9],
                r[10],
            )
            for r in rows
        ]

    def journal(self) -> list[tuple[str, str, str]]:
        """(client order id, status, detail) of every journalled broker call, oldest first."""
        rows = self._fetch(
            "SELECT client_order_id, status, detail FROM broker_intents ORDER BY created_at, client_order_id"
        )
        return [(r[0], r[1], r[2]) for r in rows]

    def intent_counts(self) -> dict[str, int]:
        return {
            status: int(n)
            for status, n in self._fetch("SELECT status, count(*) FROM broker_intents GROUP BY 1")
        }

    # ------------------------------------------------------------ orders
    def find_order(self, key: str) -> StoredOrder | None:
        rows = self._fetch(
            f"SELECT account, instrument, {_epoch('bar_ts')}, result FROM orders WHERE idempotency_key = ?",
            [key],
        )
        if not rows:
            return None
        account, instrument, bar_ts, result = rows[0]
        return StoredOrder(account, instrument, int(bar_ts), OrderResult.model_validate_json(result))

    def record(
        self,
        request: OrderRequest,
        result: OrderResult,
        position: PositionRecord,
        trades: list[TradeRecord],
        fills: list[FillRecord],
        broker: str,
        now: float,
    ) -> None:
        """Write one processed order: the order, its fills and trades, the rewards it settled (this
        decision's, if known, and earlier ones') and the position after it."""
        now_s = int(now)
        with self._transaction() as con:
            self._insert_order(con, request, result, fills, broker, now_s)
            for f in fills:  # the journal: these calls are now known and recorded
                self._resolve(con, f.client_order_id, "filled", "", now_s, f.fill)
            self._insert_fills(con, request, fills, broker, now_s)
            for t in trades:
                self._insert_trade(con, request.account, request.instrument, t, request.idempotency_key)
            self._insert_rewards(con, request, result, now_s)
            self._upsert_position(con, position, now_s)

    @staticmethod
    def _insert_order(
        con: duckdb.DuckDBPyConnection,
        request: OrderRequest,
        result: OrderResult,
        fills: list[FillRecord],
        broker: str,
        now_s: int,
    ) -> None:
        first = fills[0].fill if fills else None
        con.execute(
            f"INSERT INTO orders VALUES (?, ?, ?, {_TS}, {', '.join('?' * 13)}, {_TS}, ?)",
            [
                request.idempotency_key,
                request.account,
                request.instrument,
                request.bar_ts,
                request.kind,
                request.action,
                request.session_id,
                request.step,
                request.last_bar,
                result.status,
                result.reason,
                request.model_version,
                request.close,
                broker,
                first.price if first else None,
                first.order_id if first else None,
                first.trade_id if first else None,
                now_s,
                result.model_dump_json(),
            ],
        )

    @staticmethod
    def _insert_fills(
        con: duckdb.DuckDBPyConnection,
        request: OrderRequest,
        fills: list[FillRecord],
        broker: str,
        now_s: int,
    ) -> None:
        for leg, f in enumerate(fills):
            con.execute(
                f"INSERT INTO fills VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, {_TS})",
                [
                    request.idempotency_key,
                    leg,
                    f.client_order_id,
                    request.account,
                    request.instrument,
                    f.kind,
                    f.side,
                    f.model_price,
                    broker,
                    f.fill.price,
                    f.fill.order_id,
                    f.fill.trade_id,
                    now_s,
                ],
            )

    @staticmethod
    def _insert_rewards(
        con: duckdb.DuckDBPyConnection, request: OrderRequest, result: OrderResult, now_s: int
    ) -> None:
        # This decision's reward in the order's kind; a settled earlier one is an equity reward (the only
        # one that waits for the next bar).
        rewards = [(s.bar_ts, s.reward, "equity") for s in result.settled]
        if request.kind == "decision" and result.reward is not None:
            rewards.append((request.bar_ts, result.reward, request.reward))
        for bar_ts, reward, kind in rewards:
            con.execute(
                f"INSERT INTO rewards VALUES (?, ?, {_TS}, ?, ?, ?, {_TS})",
                [request.account, request.instrument, bar_ts, reward, kind, request.idempotency_key, now_s],
            )

    @staticmethod
    def _insert_trade(
        con: duckdb.DuckDBPyConnection, account: str, instrument: str, t: TradeRecord, closed_by: str
    ) -> None:
        tr = t.trade
        con.execute(
            "INSERT INTO trades (account, instrument, side, entry_ts, entry_price, exit_ts, "
            "exit_price, pnl_pips, bars_held, exit_reason, model_version, session_id, "
            "idempotency_key, broker_entry_price, broker_exit_price, broker_trade_id) "
            f"VALUES (?, ?, ?, {_TS}, ?, {_TS}, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            [
                account,
                instrument,
                tr.side,
                tr.entry_ts,
                tr.entry_price,
                tr.exit_ts,
                tr.exit_price,
                tr.pnl_pips,
                tr.bars_held,
                tr.exit_reason,
                t.model_version,
                t.session_id,
                closed_by,
                t.broker_entry_price,
                t.broker_exit_price,
                t.broker_trade_id,
            ],
        )

    @staticmethod
    def _upsert_position(con: duckdb.DuckDBPyConnection, position: PositionRecord, now_s: int) -> None:
        # UPDATE, and INSERT only the first time: DuckDB's INSERT OR REPLACE deletes and re-inserts
        # the row through the primary-key index, about three times the cost on the order path.
        key = [position.account, position.instrument]
        values = [
            json.dumps(position.state.to_dict()),
            position.last_bar_ts,
            position.session_id,
            position.last_bar_ts,
            position.entry_model_version,
            position.broker_entry_price,
            position.broker_trade_id,
            now_s,
        ]
        updated = con.execute(
            f"UPDATE positions SET state = ?, as_of_bar_ts = {_TS}, session_id = ?, last_bar_ts = {_TS}, "
            f"entry_model_version = ?, broker_entry_price = ?, broker_trade_id = ?, updated_at = {_TS} "
            "WHERE account = ? AND instrument = ?",
            values + key,
        ).fetchone()
        if not updated or not updated[0]:
            con.execute(
                f"INSERT INTO positions VALUES (?, ?, ?, {_TS}, ?, {_TS}, ?, ?, ?, {_TS})", key + values
            )

    def repair(self, position: PositionRecord, trades: list[TradeRecord], now: float) -> None:
        """Reconciliation's change of a position (and the trades it closed), in one transaction."""
        with self._transaction() as con:
            for t in trades:
                self._insert_trade(con, position.account, position.instrument, t, f"reconciled:{int(now)}")
            self._upsert_position(con, position, int(now))

    def order_counts(self) -> list[tuple[str, str, int, str, int]]:
        """(instrument, kind, action, status, count) of every stored order, for the metrics."""
        rows = self._fetch(
            "SELECT instrument, kind, action, status, count(*) FROM orders GROUP BY ALL ORDER BY ALL"
        )
        return [(r[0], r[1], int(r[2]), r[3], int(r[4])) for r in rows]

    # --------------------------------------------------------- positions
    def positions(self) -> list[PositionRecord]:
        rows = self._fetch(
            f"SELECT account, instrument, state, session_id, {_epoch('last_bar_ts')}, entry_model_version, "
            "broker_entry_price, broker_trade_id, (SELECT o.model_price FROM orders o "
            "WHERE o.account = p.account AND o.instrument = p.instrument ORDER BY o.bar_ts DESC LIMIT 1) "
            "FROM positions p ORDER BY account, instrument"
        )
        return [
            PositionRecord(
                account=r[0],
                instrument=r[1],
                state=PositionState.from_dict(json.loads(r[2])),
                session_id=r[3],
                last_bar_ts=None if r[4] is None else int(r[4]),
                entry_model_version=r[5],
                broker_entry_price=r[6],
                broker_trade_id=r[7],
                last_close=r[8],
            )
            for r in rows
        ]

    # ------------------------------------------------------------ trades
    def trades(self, which: TradeFilter | None = None) -> list[dict[str, Any]]:
        """The last ``which.limit`` trades that ``which`` selects (default: the last 100), oldest first."""
        which = which or TradeFilter()
        where, params = which.where()
        sql = (
            f"SELECT id, instrument, side, {_epoch('entry_ts')}, entry_price, {_epoch('exit_ts')}, "
            "exit_price, pnl_pips, bars_held, exit_reason, model_version, account, broker_entry_price, "
            "broker_exit_price, broker_trade_id FROM trades" + where + " ORDER BY id DESC LIMIT ?"
        )
        rows = sorted(self._fetch(sql, [*params, which.limit]))
        out = []
        for r in rows:
            row = dict(zip(TRADE_COLUMNS, r[1:], strict=True))
            row["side"] = side_name(row["side"])
            row["entry_ts"], row["exit_ts"] = int(row["entry_ts"]), int(row["exit_ts"])
            out.append(row)
        return out

    def rewards(
        self, instrument: str | None = None, account: str | None = None, limit: int = 100
    ) -> list[dict[str, Any]]:
        """The last ``limit`` settled decision rewards (optionally of one instrument / account), in bar
        order (per account and instrument)."""
        where, params = _where(instrument=instrument, account=account)
        sql = (
            f"SELECT account, instrument, {_epoch('bar_ts')}, reward, reward_kind, idempotency_key "
            "FROM rewards" + where + " ORDER BY bar_ts DESC, account DESC, instrument DESC LIMIT ?"
        )
        rows = self._fetch(sql, [*params, limit])
        out = [dict(zip(REWARD_COLUMNS, r, strict=True)) for r in reversed(rows)]
        for row in out:
            row["bar_ts"] = int(row["bar_ts"])
        return out

    def trade_pnls(self) -> list[tuple[str, str, int, float]]:
        """(account, instrument, exit_ts, pnl_pips) of every trade in closing order, for the metrics."""
        rows = self._fetch(
            f"SELECT account, instrument, {_epoch('exit_ts')}, pnl_pips FROM trades ORDER BY id"
        )
        return [(r[0], r[1], int(r[2]), float(r[3])) for r in rows]

    def daily_pnl(self, account: str, start: int, end: int) -> float:
        """P&L in pips of the account's trades closed in [start, end) (epoch seconds)."""
        rows = self._fetch(
            f"SELECT coalesce(sum(pnl_pips), 0) FROM trades WHERE account = ? AND exit_ts >= {_TS} "
            f"AND exit_ts < {_TS}",
            [account, start, end],
        )
        return float(rows[0][0])

    # ---------------------------------------------------------- controls
    def get_control(self, name: str) -> Any:
        rows = self._fetch("SELECT value FROM controls WHERE name = ?", [name])
        return json.loads(rows[0][0]) if rows else None

    def set_control(self, name: str, value: Any, now: float) -> None:
        with self._transaction() as con:
            con.execute(
                f"INSERT OR REPLACE INTO controls VALUES (?, ?, {_TS})", [name, json.dumps(value), int(now)]
            )
