"""Reads of the ledger's closed trades for dashboards: which trades (a filter the SQL applies before the
limit) and each trade's entry and exit as an event, shaped for Grafana annotations (docs/METRICS.md)."""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Any, Literal

import duckdb
from pydantic import BaseModel

MAX_PATTERN_LENGTH = 200
# Epoch seconds -> the ledger's naive UTC TIMESTAMP (as services.broker_gateway.ledger writes them).
_TS = "make_timestamp(CAST(? AS BIGINT) * 1000000)"


# An in-memory DuckDB that checks patterns (opening one costs ~30 ms, a check well under 1 ms); the
# lock because the API's handlers run in a threadpool.
_checker = duckdb.connect()
_checker_lock = threading.Lock()


def re2_problem(pattern: str) -> str | None:
    """Why DuckDB's RE2 (the engine the filter runs on, as Prometheus') refuses ``pattern``, or None."""
    if len(pattern) > MAX_PATTERN_LENGTH:
        return f"the pattern has {len(pattern)} characters (at most {MAX_PATTERN_LENGTH})"
    with _checker_lock:
        try:
            _checker.execute("SELECT regexp_full_match('', ?)", [pattern])
        except duckdb.Error as exc:
            return f"{pattern!r} is not an RE2 regular expression: {exc}"
    return None


@dataclass(frozen=True)
class TradeFilter:
    """Which closed trades a read returns: exact names, RE2 patterns the whole name must match (as
    Prometheus' ``=~``: Grafana's multi-value variables pass straight through), and a time window
    [start, end] in epoch seconds that the trade overlaps (closed at or after start, opened at or
    before end). ``limit``: the last that many of them, by closing order."""

    instrument: str | None = None
    account: str | None = None
    instrument_match: str | None = None
    account_match: str | None = None
    start: int | None = None
    end: int | None = None
    limit: int = 100

    def __post_init__(self) -> None:
        for name in ("instrument_match", "account_match"):
            pattern = getattr(self, name)
            problem = None if pattern is None else re2_problem(pattern)
            if problem is not None:
                raise ValueError(f"{name}: {problem}")
        if self.start is not None and self.end is not None and self.start > self.end:
            raise ValueError(f"start ({self.start}) is after end ({self.end})")
        if self.limit < 1:
            raise ValueError(f"limit must be at least 1, got {self.limit}")

    def where(self) -> tuple[str, list[Any]]:
        """A ``WHERE`` clause over the trades table (or nothing) and its parameters."""
        clauses: list[str] = []
        params: list[Any] = []
        for sql, value in (
            ("instrument = ?", self.instrument),
            ("account = ?", self.account),
            ("regexp_full_match(instrument, ?)", self.instrument_match),
            ("regexp_full_match(account, ?)", self.account_match),
            (f"exit_ts >= {_TS}", self.start),
            (f"entry_ts <= {_TS}", self.end),
        ):
            if value is not None:
                clauses.append(sql)
                params.append(value)
        return (f" WHERE {' AND '.join(clauses)}" if clauses else ""), params


EventKind = Literal["entry", "exit"]


class TradeEventView(BaseModel):
    """A trade's entry or exit: one Grafana annotation (time, text, tags)."""

    time: int  # epoch seconds UTC of the entry or exit bar
    kind: EventKind
    account: str
    instrument: str
    side: Literal["long", "short"]
    price: float  # the model's price (the bar's close) of the entry or exit
    pnl_pips: float | None  # exits only
    exit_reason: str | None  # exits only
    text: str  # e.g. "long GBPJPY exit at 145.456: +12.3 pips (take_profit)"
    tags: str  # instrument,account,side: Grafana splits an annotation's tags on commas


def trade_events(
    trades: list[dict[str, Any]],
    kind: EventKind | None = None,
    start: int | None = None,
    end: int | None = None,
) -> list[TradeEventView]:
    """The entries and exits (or only ``kind``) of ``trades`` (rows of ``Ledger.trades``) that fall in
    [start, end], in time order (at one bar: exits first, then by account and instrument)."""
    events: list[TradeEventView] = []
    for t in trades:
        common = {
            "account": t["account"],
            "instrument": t["instrument"],
            "side": t["side"],
            "tags": f"{t['instrument']},{t['account']},{t['side']}",
        }
        what, pnl = f"{t['side']} {t['instrument']}", f"{t['pnl_pips']:+.1f}"
        if kind in (None, "entry"):
            events.append(
                TradeEventView(
                    time=t["entry_ts"],
                    kind="entry",
                    price=t["entry_price"],
                    pnl_pips=None,
                    exit_reason=None,
                    text=f"{what} entry at {t['entry_price']:g}",
                    **common,
                )
            )
        if kind in (None, "exit"):
            events.append(
                TradeEventView(
                    time=t["exit_ts"],
                    kind="exit",
                    price=t["exit_price"],
                    pnl_pips=t["pnl_pips"],
                    exit_reason=t["exit_reason"],
                    text=f"{what} exit at {t['exit_price']:g}: {pnl} pips ({t['exit_reason']})",
                    **common,
                )
            )
    inside = [e for e in events if (start is None or e.time >= start) and (end is None or e.time <= end)]
    return sorted(inside, key=lambda e: (e.time, e.kind != "exit", e.account, e.instrument))
