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
from datetime import UTC, datetime
from pathlib import Path
from typing import Protocol

import httpx
import numpy as np

from services.feature_builder.validation import LiveBar
from services.jobs.ingest import resolve_inputs
from shared.bars import Bars
from shared.ingest import AUTO, ParsedFile, RejectedRow, parse_bars, parse_zone
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
    "from_oanda_instrument",
    "parse_rfc3339",
    "rfc3339",
    "to_oanda_instrument",
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
OANDA_MAX_COUNT = 5000  # the v20 API's limit on candles per request


def to_oanda_instrument(instrument: str) -> str:
    """GBPJPY -> GBP_JPY."""
    if len(instrument) != 6:
        raise ValueError(f"cannot map {instrument!r} to an OANDA currency pair (want 6 letters like GBPJPY)")
    return f"{instrument[:3]}_{instrument[3:]}"


def from_oanda_instrument(name: str) -> str:
    """GBP_JPY -> GBPJPY."""
    return name.replace("_", "")


def rfc3339(ts: int) -> str:
    return datetime.fromtimestamp(ts, tz=UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def parse_rfc3339(text: str) -> int:
    """Epoch seconds of an OANDA RFC 3339 time like ``2017-01-03T00:01:00.000000000Z`` (UTC)."""
    if not text.endswith("Z"):
        raise ValueError(f"expected a UTC time ending in Z, got {text!r}")
    base, _, fraction = text[:-1].partition(".")
    if fraction and not fraction.isdigit():
        raise ValueError(f"bad fraction of a second in {text!r}")
    return int(datetime.fromisoformat(base).replace(tzinfo=UTC).timestamp())


class OandaSource:
    """Closed M1 bid candles of the OANDA v20 REST API, polled every ``poll_seconds``.

    ``history``: ``GET /v3/instruments/{GBP_JPY}/candles?granularity=M1&price=B&count=N+1`` (the last
    candle is usually still forming). ``bars``: ``...&from=<last ts + 60 s>``; only complete candles
    are used, each once. HTTP and decoding errors are logged and retried with exponential backoff.
    """

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
        self.oanda_instrument = to_oanda_instrument(instrument)
        self.history_bars = history_bars
        self.poll_seconds = poll_seconds
        self.backoff_initial = backoff_initial
        self.backoff_max = backoff_max
        self.last_ts: int | None = None
        self.requests = 0
        self.errors = 0
        self._client = httpx.Client(
            base_url=base_url.rstrip("/"),
            headers={"Authorization": f"Bearer {token}", "Accept-Datetime-Format": "RFC3339"},
            timeout=timeout,
        )
        self._path = f"/v3/instruments/{self.oanda_instrument}/candles"

    def close(self) -> None:
        self._client.close()

    def history(self, stop: threading.Event) -> list[LiveBar]:
        count = self.history_bars + 1
        if count > OANDA_MAX_COUNT:
            log.warning(
                "OANDA serves at most %d candles per request; history limited to that", OANDA_MAX_COUNT
            )
            count = OANDA_MAX_COUNT
        bars = self._fetch_retrying({"count": count}, stop)
        return self._new(bars or [])

    def bars(self, stop: threading.Event) -> Iterator[LiveBar]:
        while not stop.is_set():
            params: dict[str, object] = (
                {"count": 2} if self.last_ts is None else {"from": rfc3339(self.last_ts + 60), "count": 500}
            )
            fetched = self._fetch_retrying(params, stop)
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

    def _fetch_retrying(self, params: dict[str, object], stop: threading.Event) -> list[LiveBar] | None:
        backoff = self.backoff_initial
        while not stop.is_set():
            try:
                return self._fetch(params)
            except (httpx.HTTPError, ValueError, KeyError, TypeError) as exc:
                self.errors += 1
                log.error("OANDA candles request %s failed: %s; retrying in %.1f s", params, exc, backoff)
                if stop.wait(backoff):
                    break
                backoff = min(backoff * 2, self.backoff_max)
        return None

    def _fetch(self, params: dict[str, object]) -> list[LiveBar]:
        """The complete candles of one response, in time order (stops at the first incomplete one)."""
        self.requests += 1
        response = self._client.get(self._path, params={"granularity": "M1", "price": "B", **params})
        response.raise_for_status()
        body = response.json()
        if body.get("instrument", self.oanda_instrument) != self.oanda_instrument:
            raise ValueError(f"asked for {self.oanda_instrument}, got candles of {body.get('instrument')}")
        bars = []
        for candle in body["candles"]:
            if not candle.get("complete", False):
                break  # only the last candle is ever incomplete; never skip past one
            bid = candle["bid"]
            bars.append(
                LiveBar(
                    self.instrument,
                    parse_rfc3339(candle["time"]),
                    float(bid["o"]),
                    float(bid["h"]),
                    float(bid["l"]),
                    float(bid["c"]),
                    float(candle.get("volume", 0)),
                )
            )
        return bars
