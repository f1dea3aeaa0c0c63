"""Where closed 1-minute bars come from: replay of a DuckDB store or a bar file, or the OANDA v20 feed.

Every source has the same two calls (``BarSource``): ``history(stop)``, the warm-up bars before the
first live bar (oldest first), then ``bars(stop)``, the live closed bars in time order until the
source ends (replay) or ``stop`` is set. Sources pass bars on as they find them; the builder
validates every bar (``validation.validate_bar``).

Replay pacing (``Pacer``): as fast as possible (``pace_ms=0``), one bar every ``pace_ms`` ms, or real
time (each bar released at its timestamp's distance from the first live bar's). Pacing is a
schedule, not a sleep per bar: time the builder spends (waiting for positions) counts toward it.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import httpx
import numpy as np

from services.feature_builder.validation import LiveBar
from services.oanda.data import OANDA_MAX_COUNT, CandleFeed
from shared.bars import Bars
from shared.ingest import AUTO, ParsedFile, RejectedRow, parse_bars, parse_zone
from shared.inputs import resolve_inputs
from shared.store import Store

log = logging.getLogger(__name__)

__all__ = [
    "BarRows",
    "BarSource",
    "LiveBar",
    "OandaSource",
    "Pacer",
    "ReplaySource",
    "duckdb_source",
    "file_source",
]


class BarSource(Protocol):
    instrument: str

    def history(self, stop: threading.Event) -> list[LiveBar]:
        """Warm-up bars before the first live bar, oldest first (nothing is published for them)."""
        ...

    def bars(self, stop: threading.Event) -> Iterator[LiveBar]:
        """Live closed bars in time order; ends with the replay, or when ``stop`` is set."""
        ...

    def close(self) -> None: ...


# ------------------------------------------------------------------ replay
@dataclass(frozen=True)
class BarRows:
    """Bars as columns in the order they were found (not checked for order: the builder does that)."""

    ts: np.ndarray  # int64 epoch seconds
    open: np.ndarray
    high: np.ndarray
    low: np.ndarray
    close: np.ndarray
    volume: np.ndarray

    def __len__(self) -> int:
        return len(self.ts)

    @staticmethod
    def from_bars(bars: Bars) -> BarRows:
        return BarRows(bars.ts, bars.open, bars.high, bars.low, bars.close, bars.volume)

    @staticmethod
    def concat(parts: Sequence[BarRows | ParsedFile]) -> BarRows:
        cols = ("ts", "open", "high", "low", "close", "volume")
        if not parts:
            return BarRows(np.zeros(0, np.int64), *(np.zeros(0) for _ in cols[1:]))
        return BarRows(*(np.concatenate([getattr(p, c) for p in parts]) for c in cols))

    def take(self, index: np.ndarray | slice) -> BarRows:
        cols = (self.ts, self.open, self.high, self.low, self.close, self.volume)
        return BarRows(*(c[index] for c in cols))

    def live_bars(self, instrument: str) -> Iterator[LiveBar]:
        columns = (self.ts, self.open, self.high, self.low, self.close, self.volume)
        chunk = 4096  # Python numbers, converted a chunk at a time
        for lo in range(0, len(self), chunk):
            rows = zip(*(c[lo : lo + chunk].tolist() for c in columns), strict=True)
            for ts, o, h, low, c, v in rows:
                yield LiveBar(instrument, int(ts), o, h, low, c, v)


class Pacer:
    """When to release the i-th live bar of a replay, as seconds after the first one."""

    def __init__(self, pace_ms: float = 0.0, realtime: bool = False) -> None:
        if pace_ms < 0:
            raise ValueError(f"pace_ms must be >= 0, got {pace_ms}")
        self.pace_ms = pace_ms
        self.realtime = realtime

    @property
    def paced(self) -> bool:
        return self.realtime or self.pace_ms > 0

    def offset(self, index: int, ts: int, first_ts: int) -> float:
        if self.realtime:
            return float(ts - first_ts)
        return index * self.pace_ms / 1000.0

    def describe(self) -> str:
        if self.realtime:
            return "real time"
        return f"{self.pace_ms:g} ms per bar" if self.pace_ms else "as fast as possible"


class ReplaySource:
    """Bars held in memory, released by a ``Pacer``."""

    def __init__(
        self, instrument: str, history: BarRows, live: BarRows, pacer: Pacer | None = None, name: str = ""
    ) -> None:
        self.instrument = instrument
        self.history_rows = history
        self.live_rows = live
        self.pacer = pacer or Pacer()
        self.name = name or "replay"
        self.rejects: list[RejectedRow] = []  # rows the file parser refused (file replay)

    def __len__(self) -> int:
        return len(self.live_rows)

    def history(self, stop: threading.Event) -> list[LiveBar]:
        return list(self.history_rows.live_bars(self.instrument))

    def bars(self, stop: threading.Event) -> Iterator[LiveBar]:
        started = time.monotonic()
        first_ts: int | None = None
        for index, bar in enumerate(self.live_rows.live_bars(self.instrument)):
            if first_ts is None:
                first_ts = bar.ts
            if self.pacer.paced:
                delay = started + self.pacer.offset(index, bar.ts, first_ts) - time.monotonic()
                if delay > 0 and stop.wait(delay):
                    return
            if stop.is_set():
                return
            yield bar

    def close(self) -> None:
        pass


def _split_history(
    rows: BarRows, start: int | None, end: int | None, history_bars: int
) -> tuple[BarRows, BarRows]:
    """History = the last ``history_bars`` rows before ``start`` (or the first ``history_bars`` rows
    without a start); live = the rows in [start, end) after them, in their order."""
    if start is None:
        history = rows.take(slice(0, history_bars))
        rest = rows.take(slice(history_bars, None))
    else:
        before = np.flatnonzero(rows.ts < start)
        history = rows.take(before[-history_bars:] if history_bars else before[:0])
        rest = rows.take(np.flatnonzero(rows.ts >= start))
    if end is not None:
        rest = rest.take(np.flatnonzero(rest.ts < end))
    return history, rest


def _warn_short_history(name: str, history: BarRows, history_bars: int) -> None:
    if len(history) < history_bars:
        log.warning(
            "%s: only %d history bars before the start (wanted %d): the first live bars warm up the "
            "features and sessions instead",
            name,
            len(history),
            history_bars,
        )


def duckdb_source(
    db: Path | str,
    instrument: str,
    *,
    start: int | None = None,
    end: int | None = None,
    history_bars: int,
    pacer: Pacer | None = None,
) -> ReplaySource:
    """Replay the bars of ``instrument`` in ``db`` with start <= ts < end; history from the same DB.

    Everything is read once, and the database closed, before the replay starts.
    """
    with Store(db, read_only=True) as store:
        if start is None:
            history, live = _split_history(
                BarRows.from_bars(store.load_bars(instrument, None, end)), None, end, history_bars
            )
        else:
            history = _bars_before(store, instrument, start, history_bars)
            live = BarRows.from_bars(store.load_bars(instrument, start, end))
    if len(history) + len(live) == 0:
        raise LookupError(f"no {instrument} bars in {db}; run `smz ingest` first")
    name = f"duckdb {db}"
    _warn_short_history(name, history, history_bars)
    return ReplaySource(instrument, history, live, pacer, name)


def _bars_before(store: Store, instrument: str, start: int, count: int) -> BarRows:
    """The last ``count`` bars before ``start``: reads a widening span back, not the whole series."""
    span = 2 * 86_400
    while True:
        lo = start - span
        bars = store.load_bars(instrument, max(lo, 0), start)
        if len(bars) >= count or lo <= 0:
            return BarRows.from_bars(bars.slice(max(len(bars) - count, 0), len(bars)))
        span *= 4


def file_source(
    path: Path | str,
    instrument: str,
    *,
    fmt: str = AUTO,
    tz: str | None = None,
    start: int | None = None,
    end: int | None = None,
    history_bars: int,
    pacer: Pacer | None = None,
) -> ReplaySource:
    """Replay a bar file (or the vendor's zip) in file order, parsed exactly as ``smz ingest`` parses it.

    Rows the parser refuses are kept in ``source.rejects`` (the service logs and counts them); the
    valid rows go through the builder's own checks, so duplicates and disorder are rejected there.
    """
    parsed = [
        parse_bars(item.read(), source=item.label, fmt=fmt, zone=parse_zone(tz) if tz else None)
        for item in resolve_inputs([path])
    ]
    rows = BarRows.concat(parsed)
    history, live = _split_history(rows, start, end, history_bars)
    name = f"file {path}"
    _warn_short_history(name, history, history_bars)
    source = ReplaySource(instrument, history, live, pacer, name)
    source.rejects = [row for p in parsed for row in p.rejects]
    return source


# ------------------------------------------------------------------- OANDA
class OandaSource:
    """Closed M1 bid candles of the OANDA v20 feed (``services.oanda.data``), polled every
    ``poll_seconds``: ``history`` asks for the last N+1 candles (the last one is usually still
    forming), ``bars`` for those from the last bar on; each complete candle is handed out once. HTTP and
    decoding errors are logged and retried with exponential backoff."""

    def __init__(
        self,
        instrument: str,
        base_url: str,
        token: str,
        *,
        history_bars: int,
        poll_seconds: float = 5.0,
        backoff_initial: float = 1.0,
        backoff_max: float = 60.0,
        timeout: float = 10.0,
    ) -> None:
        self.instrument = instrument
        self.feed = CandleFeed(instrument, base_url, token, timeout)
        self.history_bars = history_bars
        self.poll_seconds = poll_seconds
        self.backoff_initial = backoff_initial
        self.backoff_max = backoff_max
        self.last_ts: int | None = None
        self.errors = 0

    @property
    def requests(self) -> int:
        return self.feed.requests

    def close(self) -> None:
        self.feed.close()

    def history(self, stop: threading.Event) -> list[LiveBar]:
        count = self.history_bars + 1
        if count > OANDA_MAX_COUNT:
            log.warning(
                "OANDA serves at most %d candles per request; history limited to that", OANDA_MAX_COUNT
            )
            count = OANDA_MAX_COUNT
        bars = self._fetch_retrying(None, count, stop)
        return self._new(bars or [])

    def bars(self, stop: threading.Event) -> Iterator[LiveBar]:
        while not stop.is_set():
            since = None if self.last_ts is None else self.last_ts + 60
            fetched = self._fetch_retrying(since, 2 if since is None else 500, stop)
            if fetched is None:
                return
            yield from self._new(fetched)
            if len(fetched) < 500:  # a full page means more to catch up with: poll again at once
                stop.wait(self.poll_seconds)

    def _new(self, bars: list[LiveBar]) -> list[LiveBar]:
        """The bars after the last one handed out, each once."""
        out = []
        for bar in bars:
            if self.last_ts is None or bar.ts > self.last_ts:
                out.append(bar)
                self.last_ts = bar.ts
        return out

    def _fetch_retrying(self, since: int | None, count: int, stop: threading.Event) -> list[LiveBar] | None:
        backoff = self.backoff_initial
        while not stop.is_set():
            try:
                return [LiveBar(self.instrument, *c) for c in self.feed.complete(since, count)]
            except (httpx.HTTPError, ValueError, KeyError, TypeError) as exc:
                self.errors += 1
                log.error(
                    "OANDA candles request (since %s, count %d) failed: %s; retrying in %.1f s",
                    since,
                    count,
                    exc,
                    backoff,
                )
                if stop.wait(backoff):
                    break
                backoff = min(backoff * 2, self.backoff_max)
        return None
