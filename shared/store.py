"""The DuckDB data store: the only module of the core that touches the database.

Timestamps are stored as naive ``TIMESTAMP`` values that mean UTC; in memory they are int64 epoch
seconds (see ``shared.bars.Bars``).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path

import duckdb
import numpy as np
import pyarrow as pa

from shared.bars import Bars
from shared.dataset import Dataset
from shared.ingest import RejectedRow
from shared.schema import MARKET_FEATURES, SCHEMA_HASH, SCHEMA_VERSION, check_schema_hash
from shared.sessions import SPLITS, SplitBoundaries

_FEATURE_COLUMNS = ", ".join(f"{name} DOUBLE" for name in MARKET_FEATURES)

DDL = f"""
CREATE TABLE IF NOT EXISTS bars (
    instrument VARCHAR NOT NULL, ts TIMESTAMP NOT NULL,
    open DOUBLE NOT NULL, high DOUBLE NOT NULL, low DOUBLE NOT NULL, close DOUBLE NOT NULL,
    volume DOUBLE NOT NULL,
    PRIMARY KEY (instrument, ts)
);
CREATE TABLE IF NOT EXISTS rejected_rows (
    instrument VARCHAR NOT NULL, file VARCHAR NOT NULL, line BIGINT NOT NULL,
    reason VARCHAR NOT NULL, text VARCHAR,
    PRIMARY KEY (instrument, file, line)
);
-- Derived tables carry no index: `smz features` replaces an instrument's rows wholesale in one
-- transaction, one row per bar by construction, and an index would triple the write time.
CREATE TABLE IF NOT EXISTS features (
    instrument VARCHAR NOT NULL, ts TIMESTAMP NOT NULL, {_FEATURE_COLUMNS}
);
CREATE TABLE IF NOT EXISTS outcomes (
    instrument VARCHAR NOT NULL, ts TIMESTAMP NOT NULL, outcome TINYINT NOT NULL, sigma DOUBLE NOT NULL
);
CREATE TABLE IF NOT EXISTS session_starts (
    instrument VARCHAR NOT NULL, ts TIMESTAMP NOT NULL, split VARCHAR NOT NULL
);
CREATE TABLE IF NOT EXISTS datasets (
    instrument VARCHAR PRIMARY KEY, schema_version INTEGER NOT NULL, schema_hash VARCHAR NOT NULL,
    n_bars BIGINT NOT NULL, first_ts TIMESTAMP NOT NULL, last_ts TIMESTAMP NOT NULL,
    validation_start TIMESTAMP NOT NULL, test_start TIMESTAMP NOT NULL,
    built_at TIMESTAMP NOT NULL DEFAULT current_timestamp
);
CREATE TABLE IF NOT EXISTS synth_regimes (
    instrument VARCHAR NOT NULL, ts TIMESTAMP NOT NULL, regime TINYINT NOT NULL,
    PRIMARY KEY (instrument, ts)
);
"""


def _ts_array(ts: np.ndarray) -> pa.Array:
    return pa.array(np.asarray(ts, dtype=np.int64).astype("datetime64[s]").astype("datetime64[us]"))


def _epoch_seconds(col: np.ndarray) -> np.ndarray:
    return np.asarray(col).astype("datetime64[s]").astype(np.int64)


class Store:
    """A DuckDB file holding bars, rejects, features, outcomes, sessions and data-set metadata."""

    def __init__(self, path: str | Path, read_only: bool = False) -> None:
        self.path = Path(path)
        if read_only and not self.path.exists():
            raise FileNotFoundError(f"database {self.path} does not exist; run `smz ingest` first")
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.con = duckdb.connect(str(self.path), read_only=read_only)
        if not read_only:
            self.con.execute(DDL)

    def close(self) -> None:
        self.con.close()

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @contextmanager
    def transaction(self) -> Iterator[None]:
        self.con.execute("BEGIN TRANSACTION")
        try:
            yield
        except BaseException:
            self.con.execute("ROLLBACK")
            raise
        self.con.execute("COMMIT")

    def scalar(self, sql: str, params: list[object] | None = None) -> object:
        """First column of the first row, or None; the result is always consumed whole."""
        rows = self.con.execute(sql, params or []).fetchall()
        return rows[0][0] if rows else None

    # ----------------------------------------------------------------- bars
    def insert_bars(self, bars: Bars) -> int:
        """Insert bars whose (instrument, ts) is not stored yet; return how many were added."""
        if len(bars) == 0:
            return 0
        table = pa.table(
            {
                "ts": _ts_array(bars.ts),
                "open": bars.open,
                "high": bars.high,
                "low": bars.low,
                "close": bars.close,
                "volume": bars.volume,
            }
        )
        before = self.count_bars(bars.instrument)
        self.con.register("_new_bars", table)
        try:
            self.con.execute("INSERT OR IGNORE INTO bars SELECT ?, * FROM _new_bars", [bars.instrument])
        finally:
            self.con.unregister("_new_bars")
        return self.count_bars(bars.instrument) - before

    def count_bars(self, instrument: str) -> int:
        return int(self.scalar("SELECT count(*) FROM bars WHERE instrument = ?", [instrument]))

    def load_bars(self, instrument: str, start: int | None = None, stop: int | None = None) -> Bars:
        """Bars of one instrument, optionally limited to epoch seconds [start, stop)."""
        sql = "SELECT ts, open, high, low, close, volume FROM bars WHERE instrument = ?"
        params: list[object] = [instrument]
        if start is not None:
            sql += " AND ts >= to_timestamp(?)::TIMESTAMP"
            params.append(int(start))
        if stop is not None:
            sql += " AND ts < to_timestamp(?)::TIMESTAMP"
            params.append(int(stop))
        cols = self.con.execute(sql + " ORDER BY ts", params).fetchnumpy()
        return Bars(
            instrument,
            _epoch_seconds(cols["ts"]),
            np.asarray(cols["open"], dtype=np.float64),
            np.asarray(cols["high"], dtype=np.float64),
            np.asarray(cols["low"], dtype=np.float64),
            np.asarray(cols["close"], dtype=np.float64),
            np.asarray(cols["volume"], dtype=np.float64),
        )

    def instruments(self) -> list[str]:
        return [r[0] for r in self.con.execute("SELECT DISTINCT instrument FROM bars ORDER BY 1").fetchall()]

    # -------------------------------------------------------------- rejects
    def insert_rejects(self, instrument: str, rows: Iterable[RejectedRow]) -> None:
        rows = list(rows)
        if not rows:
            return
        table = pa.table(
            {
                "instrument": pa.array([instrument] * len(rows), pa.string()),
                "file": pa.array([r.file for r in rows], pa.string()),
                "line": pa.array([r.line for r in rows], pa.int64()),
                "reason": pa.array([r.reason for r in rows], pa.string()),
                "text": pa.array([r.text for r in rows], pa.string()),
            }
        )
        self.con.register("_new_rejects", table)
        try:
            self.con.execute("INSERT OR IGNORE INTO rejected_rows SELECT * FROM _new_rejects")
        finally:
            self.con.unregister("_new_rejects")

    # ------------------------------------------------------------ data sets
    def _insert_with_instrument(self, table: str, instrument: str, rows: pa.Table) -> None:
        """INSERT the columns of ``rows`` after an instrument column given as one SQL parameter
        (a Python list of millions of equal strings costs more than the insert itself)."""
        self.con.register("_rows", rows)
        try:
            self.con.execute(f"INSERT INTO {table} SELECT ?, * FROM _rows", [instrument])
        finally:
            self.con.unregister("_rows")

    def write_dataset(self, ds: Dataset) -> None:
        """Replace the instrument's features, outcomes, sessions and metadata with ``ds``."""
        inst = ds.bars.instrument
        ts = ds.bars.ts
        n = len(ts)
        features = pa.table(
            {"ts": _ts_array(ts), **{name: ds.features[:, i] for i, name in enumerate(MARKET_FEATURES)}}
        )
        outcomes = pa.table(
            {"ts": _ts_array(ts[:-1]), "outcome": pa.array(ds.outcome, pa.int8()), "sigma": ds.sigma}
        )
        split_names = pa.array(list(SPLITS), pa.string())
        sessions = pa.table(
            {
                "ts": _ts_array(ts[ds.session_starts]),
                "split": pa.DictionaryArray.from_arrays(
                    pa.array(ds.session_split, pa.int8()), split_names
                ).cast(pa.string()),
            }
        )
        with self.transaction():
            for table in ("features", "outcomes", "session_starts", "datasets"):
                self.con.execute(f"DELETE FROM {table} WHERE instrument = ?", [inst])
            self._insert_with_instrument("features", inst, features)
            self._insert_with_instrument("outcomes", inst, outcomes)
            self._insert_with_instrument("session_starts", inst, sessions)
            self.con.execute(
                "INSERT INTO datasets VALUES (?, ?, ?, ?, to_timestamp(?)::TIMESTAMP, "
                "to_timestamp(?)::TIMESTAMP, to_timestamp(?)::TIMESTAMP, to_timestamp(?)::TIMESTAMP, "
                "current_timestamp)",
                [
                    inst,
                    SCHEMA_VERSION,
                    SCHEMA_HASH,
                    n,
                    int(ts[0]),
                    int(ts[-1]),
                    ds.bounds.validation_start,
                    ds.bounds.test_start,
                ],
            )

    def load_dataset(self, instrument: str) -> Dataset:
        """The stored data set of an instrument, checked against this code's feature schema."""
        self.check_dataset_schema(instrument)
        bars = self.load_bars(instrument)
        n_stored = self.scalar("SELECT n_bars FROM datasets WHERE instrument = ?", [instrument])
        if n_stored != len(bars):
            raise LookupError(
                f"{instrument} has {len(bars)} bars but its features were built on {n_stored}; "
                f"run `smz features --db {self.path} --instrument {instrument}` again"
            )
        cols = self.con.execute(
            f"SELECT {', '.join(MARKET_FEATURES)} FROM features WHERE instrument = ? ORDER BY ts",
            [instrument],
        ).fetchnumpy()
        features = np.column_stack([np.asarray(cols[name], dtype=np.float64) for name in MARKET_FEATURES])
        out = self.con.execute(
            "SELECT outcome, sigma FROM outcomes WHERE instrument = ? ORDER BY ts", [instrument]
        ).fetchnumpy()
        sess = self.con.execute(
            "SELECT ts, list_position(?, split) - 1 AS split FROM session_starts WHERE instrument = ? "
            "ORDER BY ts",
            [list(SPLITS), instrument],
        ).fetchnumpy()
        starts = np.searchsorted(bars.ts, _epoch_seconds(sess["ts"])).astype(np.int64)
        split = np.asarray(sess["split"], dtype=np.int8)
        bounds_row = self.con.execute(
            "SELECT epoch(validation_start)::BIGINT, epoch(test_start)::BIGINT FROM datasets "
            "WHERE instrument = ?",
            [instrument],
        ).fetchall()[0]
        return Dataset(
            bars,
            features,
            np.asarray(out["outcome"], dtype=np.int8),
            np.asarray(out["sigma"], dtype=np.float64),
            starts,
            split,
            SplitBoundaries(int(bounds_row[0]), int(bounds_row[1])),
        )

    # ---------------------------------------------------- data-set metadata
    def check_dataset_schema(self, instrument: str) -> None:
        found = self.scalar("SELECT schema_hash FROM datasets WHERE instrument = ?", [instrument])
        if found is None:
            raise LookupError(
                f"no features for {instrument} in {self.path}; run `smz features --db {self.path} "
                f"--instrument {instrument}` first"
            )
        check_schema_hash(found, f"the {instrument} data set in {self.path}")

    # ------------------------------------------------------ ingest summary
    def count_gaps(self, instrument: str, longer_than_seconds: int) -> int:
        """How many neighbouring stored bars of an instrument are more than ``longer_than_seconds`` apart."""
        found = self.scalar(
            "SELECT count(*) FROM (SELECT epoch(ts) - epoch(lag(ts) OVER (ORDER BY ts)) AS gap "
            "FROM bars WHERE instrument = ?) WHERE gap > ?",
            [instrument, int(longer_than_seconds)],
        )
        return int(found or 0)

    # ---------------------------------------------------- synthetic regimes
    def insert_regimes(self, instrument: str, ts: np.ndarray, regime: np.ndarray) -> int:
        """Store the hidden regime (+1, 0, -1) of a synthetic market's bars; rows already stored are
        kept (like ``insert_bars``). Returns how many rows were added."""
        ts = np.asarray(ts, dtype=np.int64)
        regime = np.asarray(regime)
        if len(ts) != len(regime):
            raise ValueError(f"regimes: {len(ts)} timestamps but {len(regime)} regime values")
        if len(ts) == 0:
            return 0
        if not bool(np.all(np.isin(regime, (-1, 0, 1)))):
            raise ValueError("regime values must be -1 (down-trend), 0 (no trend) or +1 (up-trend)")
        table = pa.table(
            {
                "instrument": pa.array([instrument] * len(ts), pa.string()),
                "ts": _ts_array(ts),
                "regime": pa.array(regime.astype(np.int8), pa.int8()),
            }
        )
        count_sql = "SELECT count(*) FROM synth_regimes WHERE instrument = ?"
        before = int(self.scalar(count_sql, [instrument]))
        self.con.register("_new_regimes", table)
        try:
            self.con.execute("INSERT OR IGNORE INTO synth_regimes SELECT * FROM _new_regimes")
        finally:
            self.con.unregister("_new_regimes")
        return int(self.scalar(count_sql, [instrument])) - before

    def load_regimes(self, instrument: str) -> tuple[np.ndarray, np.ndarray]:
        """(ts int64 epoch seconds, regime int8) of an instrument, by time; empty if none stored."""
        cols = self.con.execute(
            "SELECT ts, regime FROM synth_regimes WHERE instrument = ? ORDER BY ts", [instrument]
        ).fetchnumpy()
        return _epoch_seconds(cols["ts"]), np.asarray(cols["regime"], dtype=np.int8)


__all__ = ["SCHEMA_HASH", "SCHEMA_VERSION", "RejectedRow", "Store"]
