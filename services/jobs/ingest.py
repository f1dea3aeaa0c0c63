"""``smz ingest``: read bar files and the vendor's zips, validate, deduplicate, store, summarise.

The steps, in an order that writes nothing unless everything before succeeded:

1. check the arguments and open every input (plain files, or the ``.csv`` members of a zip);
2. parse each file (``shared.ingest.parse_bars``): valid bars plus rejected rows with reasons;
3. deduplicate the valid rows across all inputs and against the bars already stored: an exact copy is
   a duplicate (skipped), a different bar at a taken timestamp is a ``conflicting_duplicate`` (rejected;
   the first one seen, or the stored one, is kept);
4. with ``strict`` and any rejected row: fail, writing nothing; otherwise write bars and rejected rows
   in one transaction.

Rejected rows are stored by (instrument, file, line), ``file`` being the input's file name or
``archive.zip:member.csv``, so re-ingesting the same file adds no new ones.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import duckdb
import numpy as np

from shared.bars import SESSION_GAP_SECONDS, Bars, gap_breaks
from shared.ingest import (
    AUTO,
    FORMATS,
    REJECT_REASONS,
    DuplicateSplit,
    IngestFormatError,
    ParsedFile,
    RejectedRow,
    Zone,
    line_texts,
    parse_bars,
    parse_zone,
    split_duplicates,
)
from shared.inputs import IngestError, InputFile, resolve_inputs
from shared.instruments import validate_instrument
from shared.store import Store

SHOWN_REJECTS = 10  # rejected rows printed in the summary; all of them go to the rejected_rows table


# ---------------------------------------------------------------- summary
@dataclass(frozen=True)
class FileSummary:
    """What happened to the rows of one input file."""

    source: str  # file name, or "archive.zip:member.csv"
    fmt: str
    zone: str
    rows_read: int
    stored: int
    duplicates: int
    rejected: dict[str, int]  # by reason, in REJECT_REASONS order, non-zero only

    @property
    def rejected_total(self) -> int:
        return sum(self.rejected.values())


@dataclass(frozen=True)
class IngestSummary:
    """The outcome of one ``smz ingest`` run. ``render()`` is what the command prints."""

    instrument: str
    db: str
    strict: bool
    failed: bool  # strict mode met rejected rows: nothing was written
    files: list[FileSummary]
    rows_read: int  # non-blank rows, csv headers excluded
    stored: int  # bars added to the store by this run
    duplicates: int  # exact copies of an earlier input row or a stored bar, skipped
    rejected: dict[str, int]  # by reason, in REJECT_REASONS order, non-zero only
    first_stored: datetime | None  # UTC open time of the first and last bar stored by this run
    last_stored: datetime | None
    first_valid: datetime | None  # UTC open time of the first and last valid input row
    last_valid: datetime | None
    gaps_over_10min: int  # neighbouring bars more than 10 minutes apart, in ``gap_scope``
    gap_scope: str  # "stored series" (after this ingest) or "valid input rows" (when nothing was written)
    gap_scope_bars: int  # bars in that scope
    seconds: float
    sample_rejects: list[RejectedRow] = field(default_factory=list)  # the first few, for the printout

    @property
    def rejected_total(self) -> int:
        return sum(self.rejected.values())

    def render(self) -> str:
        out = [f"ingest {self.instrument} into {self.db}" + (" (strict)" if self.strict else "")]
        if len(self.files) > 1:
            for f in self.files:
                out.append(
                    f"  {f.source}: {f.fmt}, zone {f.zone}: read {f.rows_read:,}, stored {f.stored:,}, "
                    f"duplicates {f.duplicates:,}, rejected {f.rejected_total:,}"
                )
        elif self.files:
            out.append(f"  {self.files[0].source}: {self.files[0].fmt}, zone {self.files[0].zone}")
        out.append(f"rows read      {self.rows_read:,}")
        out.append(f"stored         {self.stored:,}" + (" (nothing written)" if self.failed else ""))
        out.append(f"duplicates     {self.duplicates:,} (exact copies of an earlier row or a stored bar)")
        out.append(f"rejected       {self.rejected_total:,}")
        for reason, count in self.rejected.items():
            out.append(f"  {reason:<24}{count:,}")
        if self.sample_rejects:
            out.append("first rejected rows:")
        for row in self.sample_rejects:
            out.append(f"  {row.file}:{row.line}: {row.reason}: {row.text[:100]}")
        if self.rejected_total > len(self.sample_rejects):
            where = "nothing stored" if self.failed else "all are in the rejected_rows table"
            out.append(f"  ... {self.rejected_total - len(self.sample_rejects):,} more ({where})")
        if self.first_stored is not None:
            out.append(f"first stored   {_iso(self.first_stored)}")
            out.append(f"last stored    {_iso(self.last_stored)}")
        elif self.first_valid is not None:
            out.append(f"first valid    {_iso(self.first_valid)} (no new bar stored)")
            out.append(f"last valid     {_iso(self.last_valid)}")
        scope = (
            f"in the stored {self.instrument} series after this ingest"
            if self.gap_scope == "stored series"
            else "between the valid input rows"
        )
        out.append(f"gaps > 10 min  {self.gaps_over_10min:,} {scope} ({self.gap_scope_bars:,} bars)")
        if self.failed:
            out.append(
                f"FAILED (--strict): {self.rejected_total:,} rejected rows; nothing was written to {self.db}"
            )
        out.append(f"took           {self.seconds:.1f} s")
        return "\n".join(out)


def _iso(moment: datetime | None) -> str:
    return "-" if moment is None else moment.strftime("%Y-%m-%dT%H:%M:%SZ")


def _utc(epoch_seconds: int) -> datetime:
    return datetime.fromtimestamp(int(epoch_seconds), tz=UTC)


def _count_by_reason(rows: Sequence[RejectedRow]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for row in rows:
        counts[row.reason] = counts.get(row.reason, 0) + 1
    return {reason: counts[reason] for reason in REJECT_REASONS if reason in counts}


# -------------------------------------------------------------------- job
def run_ingest(
    paths: Sequence[Path | str],
    *,
    instrument: str,
    db: Path | str,
    fmt: str = AUTO,
    tz: str | None = None,
    strict: bool = False,
) -> IngestSummary:
    """Ingest bar files into the store at ``db``; see the module docstring for the rules.

    Raises ``IngestError`` (nothing written) for a bad instrument name, format or zone, a missing or
    unreadable file, a zip without a ``.csv``, or a file whose format cannot be read.
    """
    started = time.perf_counter()
    zone = _checked_options(instrument, fmt, tz)
    db_path = Path(db)
    inputs = resolve_inputs(paths)
    parsed = _parse_inputs(inputs, fmt, zone)
    ts, columns, file_index, line = _valid_rows(parsed)

    # A new database has nothing stored: skip creating it until there is something to write.
    store = _open_store(db_path) if db_path.exists() else None
    try:
        split = _split_against_store(store, instrument, ts, columns)
        conflicts = _conflict_rejects(inputs, file_index[split.conflict], line[split.conflict])
        rejects_by_file = [
            sorted(p.rejects + conflicts.get(k, []), key=lambda r: r.line) for k, p in enumerate(parsed)
        ]
        all_rejects = [row for rows in rejects_by_file for row in rows]
        failed = strict and bool(all_rejects)

        new_order = np.flatnonzero(split.new)
        new_order = new_order[np.argsort(ts[new_order], kind="stable")]
        stored_count = 0
        if not failed:
            if store is None:
                store = _open_store(db_path)
            new_bars = Bars(instrument, ts[new_order], *(column[new_order] for column in columns))
            try:
                with store.transaction():
                    stored_count = store.insert_bars(new_bars)
                    store.insert_rejects(instrument, all_rejects)
            except duckdb.Error as exc:
                raise IngestError(f"writing to {db_path} failed, nothing was written: {exc}") from exc
            gaps = store.count_gaps(instrument, SESSION_GAP_SECONDS)
            gap_scope, gap_scope_bars = "stored series", store.count_bars(instrument)
        else:
            unique_ts = np.unique(ts)
            gaps = int(gap_breaks(unique_ts).sum())
            gap_scope, gap_scope_bars = "valid input rows", len(unique_ts)
    finally:
        if store is not None:
            store.close()

    files = _file_summaries(parsed, rejects_by_file, file_index, split, failed)
    stored_ts = ts[new_order] if not failed else ts[:0]
    return IngestSummary(
        instrument=instrument,
        db=str(db_path),
        strict=strict,
        failed=failed,
        files=files,
        rows_read=sum(p.rows_read for p in parsed),
        stored=stored_count,
        duplicates=int(np.count_nonzero(split.duplicate)),
        rejected=_count_by_reason(all_rejects),
        first_stored=_utc(stored_ts[0]) if len(stored_ts) else None,
        last_stored=_utc(stored_ts[-1]) if len(stored_ts) else None,
        first_valid=_utc(ts.min()) if len(ts) else None,
        last_valid=_utc(ts.max()) if len(ts) else None,
        gaps_over_10min=gaps,
        gap_scope=gap_scope,
        gap_scope_bars=gap_scope_bars,
        seconds=time.perf_counter() - started,
        sample_rejects=all_rejects[:SHOWN_REJECTS],
    )


def _checked_options(instrument: str, fmt: str, tz: str | None) -> Zone | None:
    """The zone ``tz`` names (None: the format's own), after checking the instrument and format."""
    try:
        validate_instrument(instrument)
    except ValueError as exc:
        raise IngestError(str(exc)) from exc
    if fmt not in (AUTO, *FORMATS):
        raise IngestError(f"unknown format {fmt!r}; use one of {', '.join((AUTO, *FORMATS))}")
    try:
        return parse_zone(tz) if tz is not None else None
    except IngestFormatError as exc:
        raise IngestError(str(exc)) from exc


def _parse_inputs(inputs: Sequence[InputFile], fmt: str, zone: Zone | None) -> list[ParsedFile]:
    parsed: list[ParsedFile] = []
    for item in inputs:
        try:
            parsed.append(parse_bars(item.read(), source=item.label, fmt=fmt, zone=zone))
        except IngestFormatError as exc:
            raise IngestError(f"{item.label}: {exc}") from exc
    return parsed


def _valid_rows(parsed: Sequence[ParsedFile]) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """All valid rows of the run in input order (files as given, lines in file order): times, the
    (5, n) columns open, high, low, close, volume (one contiguous row each), file index, line number."""
    ts = np.concatenate([p.ts for p in parsed])
    columns = np.empty((5, len(ts)))
    for k, name in enumerate(("open", "high", "low", "close", "volume")):
        columns[k] = np.concatenate([getattr(p, name) for p in parsed])
    file_index = np.repeat(np.arange(len(parsed)), [len(p) for p in parsed])
    line = np.concatenate([p.line for p in parsed])
    return ts, columns, file_index, line


def _file_summaries(
    parsed: Sequence[ParsedFile],
    rejects_by_file: Sequence[Sequence[RejectedRow]],
    file_index: np.ndarray,
    split: DuplicateSplit,
    failed: bool,
) -> list[FileSummary]:
    new_by_file = np.bincount(file_index[split.new], minlength=len(parsed))
    duplicates_by_file = np.bincount(file_index[split.duplicate], minlength=len(parsed))
    return [
        FileSummary(
            source=p.source,
            fmt=p.fmt,
            zone=p.zone,
            rows_read=p.rows_read,
            stored=0 if failed else int(new_by_file[k]),
            duplicates=int(duplicates_by_file[k]),
            rejected=_count_by_reason(rejects_by_file[k]),
        )
        for k, p in enumerate(parsed)
    ]


def _open_store(path: Path) -> Store:
    try:
        return Store(path)
    except duckdb.Error as exc:
        raise IngestError(f"cannot open the database {path}: {exc}") from exc


def _split_against_store(
    store: Store | None, instrument: str, ts: np.ndarray, columns: np.ndarray
) -> DuplicateSplit:
    """New, duplicate and conflicting input rows against the stored bars between the first and last
    input timestamp (all a duplicate can collide with)."""
    if store is None or len(ts) == 0:
        empty = np.zeros(0)
        stored = Bars(instrument, np.zeros(0, dtype=np.int64), empty, empty, empty, empty, empty)
    else:
        stored = store.load_bars(instrument, int(ts.min()), int(ts.max()) + 1)
    stored_columns = np.column_stack((stored.open, stored.high, stored.low, stored.close, stored.volume))
    return split_duplicates(ts, columns.T, stored.ts, stored_columns)


def _conflict_rejects(
    inputs: Sequence[InputFile], file_index: np.ndarray, line: np.ndarray
) -> dict[int, list[RejectedRow]]:
    """Rejected rows for conflicting duplicates, by input index; re-reads only the files that have any."""
    out: dict[int, list[RejectedRow]] = {}
    for k in np.unique(file_index):
        lines = sorted(int(n) for n in line[file_index == k])
        texts = line_texts(inputs[int(k)].read(), lines)
        out[int(k)] = [RejectedRow(inputs[int(k)].label, n, "conflicting_duplicate", texts[n]) for n in lines]
    return out


__all__ = ["FileSummary", "IngestError", "IngestSummary", "InputFile", "resolve_inputs", "run_ingest"]
