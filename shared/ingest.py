"""Parse 1-minute bar files into validated columns: bytes of one file in, arrays and rejected rows out.

Pure: no database, no file system. ``services.jobs.ingest`` reads the files and writes the store.

Formats (``FORMATS``):

- ``histdata-ascii``: ``YYYYMMDD HHMMSS;open;high;low;close;volume``, no header.
- ``histdata-mt``: ``YYYY.MM.DD,HH:MM,open,high,low,close,volume``, no header (also MetaTrader 4 exports).
- ``csv``: a header row ``time,open,high,low,close[,volume]`` (volume defaults to 0); ``time`` is ISO-8601
  with an explicit zone (``Z``, ``+HH:MM``, ``+HHMM``, ``+HH``), optional seconds and fraction.

Zones: the two header-less formats carry naive local times, converted to UTC with a ``Zone``: a fixed
offset (HistData is fixed EST, ``-05:00``, all year) or an IANA name for broker time with daylight saving.
With an IANA zone, a wall time that does not exist (spring forward) is rejected as
``nonexistent_local_time`` and one that occurs twice (fall back) as ``ambiguous_local_time``: which of the
two instants was meant cannot be known from the row, and a guess would silently shift an hour of bars.

Every non-blank row is either a valid bar or a ``RejectedRow`` with the first failing reason in
``REJECT_REASONS`` order and its 1-based line number in the file. Blank lines are not rows.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from io import BytesIO
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pa_csv

HISTDATA_ASCII = "histdata-ascii"
HISTDATA_MT = "histdata-mt"
HEADER_CSV = "csv"
AUTO = "auto"
FORMATS: tuple[str, ...] = (HISTDATA_ASCII, HISTDATA_MT, HEADER_CSV)

HISTDATA_ZONE = "-05:00"  # HistData: fixed EST, no daylight saving, so UTC = local + 5 h

# The order is the priority: a row failing several checks gets the first reason that applies.
REJECT_REASONS: tuple[str, ...] = (
    "wrong_field_count",
    "bad_timestamp",
    "nonexistent_local_time",
    "ambiguous_local_time",
    "unparseable_number",
    "non_finite",  # a price is nan or inf
    "non_positive_price",
    "high_below_low",
    "open_outside_range",
    "close_outside_range",
    "bad_volume",  # volume negative, nan or inf
    "conflicting_duplicate",  # decided by ``split_duplicates``, not by the parser
)


@dataclass(frozen=True)
class RejectedRow:
    """A row of an input file that is not a valid bar, kept with where it was and why."""

    file: str
    line: int  # 1-based line number in the file
    reason: str  # one of REJECT_REASONS
    text: str


_REASON_CODE = {reason: code for code, reason in enumerate(REJECT_REASONS, start=1)}

MAX_REJECT_TEXT = 500  # characters of a rejected line kept for the report

_UTF8_BOM = b"\xef\xbb\xbf"
_CSV_COLUMNS = ("time", "open", "high", "low", "close")
_DECIMAL = r"^[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?$"  # what the float cast accepts, minus nan/inf
_NON_FINITE = r"^[+-]?(nan|inf|infinity)$"
_ISO_TIME = (
    r"^(?P<date>\d{4}-\d{2}-\d{2})[T ](?P<hm>\d{2}:\d{2})(?::(?P<sec>\d{2})(?:[.,](?P<frac>\d+))?)?"
    r"(?P<zone>[Zz]|[+-]\d{2}(?::?\d{2})?)$"
)
_FIXED_ZONE = re.compile(r"^(?:UTC|GMT)?([+-])(\d{1,2})(?::?(\d{2}))?$", re.IGNORECASE)
_ASCII_FIRST_FIELD = re.compile(rb"^\d{8} \d{6};")
_MT_FIRST_FIELDS = re.compile(rb"^\d{4}\.\d{2}\.\d{2},\d{2}:\d{2},")


class IngestFormatError(ValueError):
    """The input as a whole cannot be read: unknown or undetectable format, bad header, bad zone."""


# ------------------------------------------------------------------ zones
@dataclass(frozen=True)
class Zone:
    """The zone of naive local timestamps: a fixed offset east of UTC, or an IANA zone with DST rules."""

    name: str
    offset_seconds: int | None  # None for an IANA zone


def parse_zone(text: str) -> Zone:
    """``UTC``, a fixed offset (``+02:00``, ``-0500``, ``UTC+2``) or an IANA name (``Europe/Athens``)."""
    spec = text.strip()
    if spec.upper() in ("UTC", "GMT", "Z"):
        return Zone("UTC", 0)
    fixed = _FIXED_ZONE.match(spec)
    if fixed:
        sign, hours, minutes = fixed.group(1), int(fixed.group(2)), int(fixed.group(3) or 0)
        if hours > 23 or minutes > 59:
            raise IngestFormatError(f"zone offset {text!r} is out of range (at most +/-23:59)")
        offset = (hours * 3600 + minutes * 60) * (-1 if sign == "-" else 1)
        return Zone(f"{sign}{hours:02d}:{minutes:02d}", offset)
    try:
        ZoneInfo(spec)
        # Arrow converts with its own copy of the zone database: make sure it knows the name too.
        pc.assume_timezone(pa.array([0], pa.timestamp("s")), timezone=spec)
    except (ZoneInfoNotFoundError, ValueError, pa.ArrowInvalid) as exc:
        raise IngestFormatError(
            f"unknown zone {text!r}: use UTC, a fixed offset like +02:00, or an IANA name like Europe/Athens"
        ) from exc
    return Zone(spec, None)


# ------------------------------------------------------------------ lines
@dataclass(frozen=True)
class _Lines:
    """Where each line of a file starts and ends (line end excluded); index i is line i + 1."""

    data: bytes
    start: np.ndarray  # int64 byte offsets
    end: np.ndarray

    def __len__(self) -> int:
        return len(self.start)

    def raw(self, index: int) -> bytes:
        return self.data[self.start[index] : self.end[index]]

    def text(self, index: int) -> str:
        return _line_text(self.raw(index))

    def is_blank(self, index: int) -> bool:
        return not self.raw(index).strip()

    def first_non_blank(self) -> int | None:
        return next((i for i in range(len(self)) if not self.is_blank(i)), None)


def _index_lines(data: bytes) -> _Lines:
    """Split at ``\n`` with numpy (no Python object per line); a ``\r`` before the ``\n`` is dropped."""
    buffer = np.frombuffer(data, dtype=np.uint8)
    newline = np.flatnonzero(buffer == ord("\n"))
    start = np.concatenate(([0], newline + 1)).astype(np.int64)
    end = np.concatenate((newline, [len(data)])).astype(np.int64)
    if data.startswith(_UTF8_BOM):
        start[0] = len(_UTF8_BOM)
    if b"\r" in data:
        end -= (end > start) & (buffer[np.maximum(end - 1, 0)] == ord("\r"))
    return _Lines(data, start, end)


def _line_text(line: bytes) -> str:
    text = line.decode("utf-8", errors="replace")
    return text if len(text) <= MAX_REJECT_TEXT else text[:MAX_REJECT_TEXT] + "..."


def line_texts(data: bytes, line_numbers: Iterable[int]) -> dict[int, str]:
    """The text of the given 1-based lines of a file, as the parser reports it in rejected rows."""
    lines = _index_lines(data)
    return {n: lines.text(n - 1) for n in line_numbers}


# ---------------------------------------------------------------- formats
def detect_format(data: bytes) -> str:
    """The format of a file, from its first non-blank line; IngestFormatError if it matches none."""
    lines = _index_lines(data[: 1 << 20])
    first = lines.first_non_blank()
    if first is None:
        raise IngestFormatError("the file has no rows; cannot detect its format")
    line = lines.raw(first).strip()
    if _ASCII_FIRST_FIELD.match(line):
        return HISTDATA_ASCII
    if _MT_FIRST_FIELDS.match(line):
        return HISTDATA_MT
    if line.split(b",")[0].strip().lower() == b"time":
        return HEADER_CSV
    raise IngestFormatError(
        f"cannot detect the format from the first line {_line_text(line)!r}; expected "
        "'YYYYMMDD HHMMSS;o;h;l;c;v' (histdata-ascii), 'YYYY.MM.DD,HH:MM,o,h,l,c,v' (histdata-mt) or a "
        "header row 'time,open,high,low,close[,volume]' (csv); pass --format to choose"
    )


# ----------------------------------------------------------------- parser
@dataclass(frozen=True)
class ParsedFile:
    """The valid bars of one file in file order (not deduplicated), and its rejected rows."""

    source: str
    fmt: str
    zone: str  # the zone naive timestamps were read in, or "in values" for the header CSV
    rows_read: int  # non-blank rows, header excluded: len(ts) + len(rejects)
    ts: np.ndarray  # int64 UTC epoch seconds
    open: np.ndarray  # float64
    high: np.ndarray
    low: np.ndarray
    close: np.ndarray
    volume: np.ndarray
    line: np.ndarray  # int64, 1-based line number of each valid row
    rejects: list[RejectedRow]  # sorted by line

    def __len__(self) -> int:
        return len(self.ts)

    def rejected_by_reason(self) -> dict[str, int]:
        counts: dict[str, int] = {}
        for row in self.rejects:
            counts[row.reason] = counts.get(row.reason, 0) + 1
        return {reason: counts[reason] for reason in REJECT_REASONS if reason in counts}


@dataclass(frozen=True)
class _Layout:
    delimiter: bytes
    n_fields: int
    has_volume: bool
    price_fields: tuple[int, ...]  # column index of open, high, low, close[, volume]


_LAYOUTS = {
    HISTDATA_ASCII: _Layout(b";", 6, True, (1, 2, 3, 4, 5)),
    HISTDATA_MT: _Layout(b",", 7, True, (2, 3, 4, 5, 6)),
}


def _csv_layout(header: bytes) -> _Layout:
    names = tuple(name.strip().lower() for name in _line_text(header).split(","))
    if names not in (_CSV_COLUMNS, (*_CSV_COLUMNS, "volume")):
        raise IngestFormatError(
            f"csv header {','.join(names)!r} must be 'time,open,high,low,close' or "
            "'time,open,high,low,close,volume'"
        )
    has_volume = len(names) == 6
    return _Layout(b",", len(names), has_volume, (1, 2, 3, 4, 5) if has_volume else (1, 2, 3, 4))


def parse_bars(data: bytes, *, source: str, fmt: str = AUTO, zone: Zone | None = None) -> ParsedFile:
    """Parse and validate the bytes of one file.

    ``source`` names the file in rejected rows (e.g. ``archive.zip:member.csv``). ``zone`` applies to the
    header-less formats and defaults to HistData's fixed ``-05:00``; the header CSV carries its zone in
    every value and ignores it.
    """
    if fmt == AUTO:
        fmt = detect_format(data)
    if fmt not in FORMATS:
        raise IngestFormatError(f"unknown format {fmt!r}; use one of {', '.join((AUTO, *FORMATS))}")
    lines = _index_lines(data)
    first_row = 0
    if fmt == HEADER_CSV:
        header_index = lines.first_non_blank()
        if header_index is None:
            raise IngestFormatError("the csv file is empty; it needs a header row time,open,high,low,close")
        layout = _csv_layout(lines.raw(header_index))
        first_row = header_index + 1
        zone_name = "in values"
    else:
        layout = _LAYOUTS[fmt]
        zone = zone or parse_zone(HISTDATA_ZONE)
        zone_name = zone.name

    # Triage by delimiter count keeps exact line numbers; only lines with the right count reach Arrow.
    delimiter_at = np.flatnonzero(np.frombuffer(data, dtype=np.uint8) == layout.delimiter[0])
    delimiters = np.searchsorted(delimiter_at, lines.end) - np.searchsorted(delimiter_at, lines.start)
    in_rows = np.arange(len(lines)) >= first_row
    candidate = in_rows & (delimiters == layout.n_fields - 1)
    dropped = np.flatnonzero(in_rows & ~candidate & (lines.end > lines.start))  # wrong count or blank
    wrong_count_index = [int(i) for i in dropped if not lines.is_blank(int(i))]
    candidate_index = np.flatnonzero(candidate)

    columns = _read_fields(lines, first_row, dropped, len(candidate_index), layout)
    if fmt == HEADER_CSV:
        utc, bad_time = _parse_iso_times(columns[0])
        zone_problem = None
    else:
        local, bad_time = _parse_histdata_times(columns, fmt)
        utc, zone_problem = _to_utc(local, zone)
    values, unparseable, non_finite = _parse_numbers([columns[i] for i in layout.price_fields])
    if not layout.has_volume:
        values = np.column_stack((values, np.zeros(len(values))))
        unparseable = np.column_stack((unparseable, np.zeros(len(values), dtype=bool)))
        non_finite = np.column_stack((non_finite, np.zeros(len(values), dtype=bool)))

    reason = _reject_reasons(bad_time, zone_problem, values, unparseable, non_finite)
    valid = reason == 0
    rejects = [RejectedRow(source, i + 1, "wrong_field_count", lines.text(i)) for i in wrong_count_index]
    for row in np.flatnonzero(~valid):
        index = int(candidate_index[row])
        rejects.append(RejectedRow(source, index + 1, REJECT_REASONS[reason[row] - 1], lines.text(index)))
    rejects.sort(key=lambda r: r.line)
    return ParsedFile(
        source=source,
        fmt=fmt,
        zone=zone_name,
        rows_read=len(candidate_index) + len(wrong_count_index),
        ts=utc[valid],
        open=values[valid, 0],
        high=values[valid, 1],
        low=values[valid, 2],
        close=values[valid, 3],
        volume=values[valid, 4],
        line=candidate_index[valid].astype(np.int64) + 1,
        rejects=rejects,
    )


def _reject_reasons(
    bad_time: np.ndarray,
    zone_problem: np.ndarray | None,
    values: np.ndarray,
    unparseable: np.ndarray,
    non_finite: np.ndarray,
) -> np.ndarray:
    """The first reason each row fails (a ``_REASON_CODE``), 0 for a valid row; checked in order."""
    reason = np.zeros(len(bad_time), dtype=np.int8)

    def mark(name: str, rows: np.ndarray) -> None:
        reason[(reason == 0) & rows] = _REASON_CODE[name]

    mark("bad_timestamp", bad_time)
    if zone_problem is not None:
        mark("nonexistent_local_time", zone_problem == 1)
        mark("ambiguous_local_time", zone_problem == 2)
    mark("unparseable_number", unparseable.any(axis=1))
    mark("non_finite", non_finite[:, :4].any(axis=1))
    o, h, lo, c, v = values.T  # nan compares False: rows with nan are already marked above
    mark("non_positive_price", (values[:, :4] <= 0).any(axis=1))
    mark("high_below_low", h < lo)
    mark("open_outside_range", (o < lo) | (o > h))
    mark("close_outside_range", (c < lo) | (c > h))
    mark("bad_volume", non_finite[:, 4] | (v < 0))
    return reason


def _read_fields(
    lines: _Lines, first_row: int, dropped: np.ndarray, n_rows: int, layout: _Layout
) -> list[pa.Array]:
    """Every field of the lines from ``first_row`` on, except ``dropped`` ones, as string columns.

    The file's bytes go to the CSV reader as they are (it skips empty lines) when nothing is dropped;
    otherwise a copy without the dropped lines' text does. One row per remaining line, in file order.
    """
    names = [f"f{i}" for i in range(layout.n_fields)]
    if n_rows == 0:
        return [pa.array([], pa.string()) for _ in names]
    data = lines.data
    position = int(lines.start[first_row])
    pieces = []
    for index in dropped:  # ascending; the newline after a dropped line stays and reads as an empty line
        pieces.append(data[position : lines.start[index]])
        position = int(lines.end[index])
    pieces.append(data[position:])
    text = pieces[0] if len(pieces) == 1 else b"".join(pieces)
    if b"\r" in text:
        # A CR that does not end a line would end a row for the CSV reader: make it an invalid character.
        buffer = np.frombuffer(text, dtype=np.uint8)
        carriage = np.flatnonzero(buffer[:-1] == ord("\r"))
        stray = carriage[buffer[carriage + 1] != ord("\n")]
        if len(stray):
            buffer = buffer.copy()
            buffer[stray] = ord("?")
            text = buffer.tobytes()
    if not text.isascii():
        # Keep the rows: undecodable bytes make their field invalid, not the file unreadable.
        text = text.decode("utf-8", errors="replace").encode("utf-8")
    table = pa_csv.read_csv(
        BytesIO(text),
        read_options=pa_csv.ReadOptions(column_names=names, block_size=1 << 24),
        parse_options=pa_csv.ParseOptions(
            delimiter=layout.delimiter.decode(), quote_char=False, ignore_empty_lines=True
        ),
        convert_options=pa_csv.ConvertOptions(column_types=dict.fromkeys(names, pa.string())),
    )
    if table.num_rows != n_rows:
        raise AssertionError(f"csv reader returned {table.num_rows} rows for {n_rows} lines")
    return [table.column(name).combine_chunks() for name in names]


def _fixed_width_digits(column: pa.Array, template: str) -> tuple[np.ndarray, np.ndarray]:
    """(characters (n, width) as uint8, matches) of strings that must match ``template`` exactly.

    In the template ``9`` stands for any ASCII digit and every other character for itself. Reads the
    Arrow buffers with numpy: no Python object per row.
    """
    width = len(template)
    n = len(column)
    offset_type = np.int64 if pa.types.is_large_string(column.type) else np.int32
    _, offsets_buffer, data_buffer = column.buffers()
    offsets = np.frombuffer(offsets_buffer, dtype=offset_type)[column.offset : column.offset + n + 1]
    data = np.frombuffer(data_buffer, dtype=np.uint8) if data_buffer is not None else np.zeros(0, np.uint8)
    matches = np.diff(offsets) == width
    if n == 0 or len(data) == 0:
        return np.zeros((n, width), dtype=np.uint8), np.zeros(n, dtype=bool)
    if matches.all():  # the usual case: rows sit back to back, so the bytes reshape without a copy
        chars = data[offsets[0] : offsets[0] + n * width].reshape(n, width)
    else:
        chars = data[np.minimum(offsets[:-1, None].astype(np.int64) + np.arange(width), len(data) - 1)]
    for position, expected in enumerate(template.encode()):
        if expected == ord("9"):
            matches &= (chars[:, position] - ord("0")).astype(np.uint8) <= 9  # uint8 wraps below '0'
        else:
            matches &= chars[:, position] == expected
    return chars, matches


def _number(chars: np.ndarray, start: int, stop: int) -> np.ndarray:
    """The decimal number written in columns [start, stop) of a fixed-width character matrix."""
    value = np.zeros(len(chars), dtype=np.int64)
    for position in range(start, stop):
        value = value * 10 + (chars[:, position].astype(np.int64) - ord("0"))
    return value


def _epoch_seconds(
    year: np.ndarray,
    month: np.ndarray,
    day: np.ndarray,
    hour: np.ndarray,
    minute: np.ndarray,
    second: np.ndarray,
    valid: np.ndarray,
) -> tuple[np.ndarray, np.ndarray]:
    """Epoch seconds of calendar fields read as UTC, and which are real times on a whole minute.

    Checked field by field because a lenient parser would normalise Feb 30 to Mar 2 or 24:00 to the
    next day. A 1-minute bar opens on a whole minute; zone offsets are whole minutes too.
    """
    valid = valid & (month >= 1) & (month <= 12) & (day >= 1) & (hour <= 23) & (minute <= 59) & (second == 0)
    months = np.where(valid, (year - 1970) * 12 + month - 1, 0)
    first_day = months.astype("datetime64[M]").astype("datetime64[D]").astype(np.int64)
    next_first_day = (months + 1).astype("datetime64[M]").astype("datetime64[D]").astype(np.int64)
    valid &= day <= next_first_day - first_day
    seconds = (first_day + day - 1) * 86400 + hour * 3600 + minute * 60 + second
    return np.where(valid, seconds, 0), valid


def _parse_histdata_times(columns: Sequence[pa.Array], fmt: str) -> tuple[np.ndarray, np.ndarray]:
    """(naive local epoch seconds, bad_timestamp mask) of the header-less formats."""
    if fmt == HISTDATA_ASCII:
        chars, ok = _fixed_width_digits(pc.ascii_trim_whitespace(columns[0]), "99999999 999999")
        year, month, day = _number(chars, 0, 4), _number(chars, 4, 6), _number(chars, 6, 8)
        hour, minute, second = _number(chars, 9, 11), _number(chars, 11, 13), _number(chars, 13, 15)
    else:
        date, ok_date = _fixed_width_digits(pc.ascii_trim_whitespace(columns[0]), "9999.99.99")
        time, ok_time = _fixed_width_digits(pc.ascii_trim_whitespace(columns[1]), "99:99")
        year, month, day = _number(date, 0, 4), _number(date, 5, 7), _number(date, 8, 10)
        hour, minute, second = _number(time, 0, 2), _number(time, 3, 5), np.zeros(len(ok_date), np.int64)
        ok = ok_date & ok_time
    seconds, valid = _epoch_seconds(year, month, day, hour, minute, second, ok)
    return seconds, ~valid


def _parse_iso_times(text: pa.Array) -> tuple[np.ndarray, np.ndarray]:
    """(UTC epoch seconds, bad_timestamp mask) of ISO-8601 times with an explicit zone."""
    parts = pc.extract_regex(pc.ascii_trim_whitespace(text), pattern=_ISO_TIME)
    matched = pc.is_valid(parts).to_numpy(zero_copy_only=False)

    def part(name: str) -> pa.Array:
        return pc.fill_null(pc.struct_field(parts, name), "")

    date, ok_date = _fixed_width_digits(part("date"), "9999-99-99")
    hm, ok_hm = _fixed_width_digits(part("hm"), "99:99")
    second_text = part("sec")
    # Seconds are optional in ISO-8601; the regex guarantees two digits where present.
    second_text = pc.if_else(pc.equal(second_text, ""), "00", second_text)
    second = pc.cast(second_text, pa.int64()).to_numpy()
    # The store keeps whole seconds: a non-zero fraction would be silently truncated.
    whole_second = pc.match_substring_regex(part("frac"), r"^0*$").to_numpy(zero_copy_only=False)
    seconds, valid = _epoch_seconds(
        _number(date, 0, 4),
        _number(date, 5, 7),
        _number(date, 8, 10),
        _number(hm, 0, 2),
        _number(hm, 3, 5),
        second,
        matched & ok_date & ok_hm & whole_second,
    )
    zone = pc.replace_substring(part("zone"), ":", "")
    zone = pc.if_else(pc.match_substring_regex(zone, r"^[Zz]?$"), "+0000", zone)
    zone = pc.if_else(pc.equal(pc.utf8_length(zone), 3), pc.binary_join_element_wise(zone, "00", ""), zone)
    sign = np.where(pc.starts_with(zone, "-").to_numpy(zero_copy_only=False), -1, 1)
    hours = pc.cast(pc.utf8_slice_codeunits(zone, 1, 3), pa.int64()).to_numpy()
    minutes = pc.cast(pc.utf8_slice_codeunits(zone, 3, 5), pa.int64()).to_numpy()
    valid &= (hours <= 23) & (minutes <= 59)
    return seconds - sign * (hours * 3600 + minutes * 60), ~valid


def _to_utc(local: np.ndarray, zone: Zone) -> tuple[np.ndarray, np.ndarray | None]:
    """UTC seconds from local wall-clock seconds; per row 0 ok, 1 nonexistent, 2 ambiguous (IANA only)."""
    if zone.offset_seconds is not None:
        return local - zone.offset_seconds, None
    wall = pa.array(local, pa.timestamp("s"))
    earliest = pc.assume_timezone(wall, timezone=zone.name, ambiguous="earliest", nonexistent="earliest")
    latest = pc.assume_timezone(wall, timezone=zone.name, ambiguous="latest", nonexistent="latest")
    two_readings = pc.not_equal(earliest, latest).to_numpy(zero_copy_only=False)
    # A skipped wall time maps to instants whose wall time differs from it; a repeated one maps back exactly.
    round_trips = pc.equal(pc.local_timestamp(earliest), wall).to_numpy(zero_copy_only=False)
    problem = np.zeros(len(local), dtype=np.int8)
    problem[two_readings & ~round_trips] = 1
    problem[two_readings & round_trips] = 2
    return earliest.cast(pa.int64()).to_numpy(), problem


def _parse_numbers(columns: Sequence[pa.Array]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(values (n, k) float64, unparseable (n, k), non-finite (n, k)) for k numeric string columns."""
    n = len(columns[0])
    values = np.empty((n, len(columns)), dtype=np.float64)
    unparseable = np.zeros((n, len(columns)), dtype=bool)
    for k, column in enumerate(columns):
        try:  # the common case: the whole column casts (the cast accepts exactly decimals, nan and inf)
            values[:, k] = pc.cast(column, pa.float64()).to_numpy()
            continue
        except pa.ArrowInvalid:
            column = pc.ascii_trim_whitespace(column)  # blanks around a number are harmless
        is_number = pc.or_(
            pc.match_substring_regex(column, _DECIMAL),
            pc.match_substring_regex(column, _NON_FINITE, ignore_case=True),
        )
        unparseable[:, k] = ~is_number.to_numpy(zero_copy_only=False)
        values[:, k] = pc.cast(pc.if_else(is_number, column, "nan"), pa.float64()).to_numpy()
    # Overflowing literals like 1e999 parse to inf and count as non-finite too.
    non_finite = ~np.isfinite(values) & ~unparseable
    return values, unparseable, non_finite


# ------------------------------------------------------------- duplicates
@dataclass(frozen=True)
class DuplicateSplit:
    """Per input row exactly one of: new (store it), exact duplicate (skip it), conflicting (reject it)."""

    new: np.ndarray
    duplicate: np.ndarray
    conflict: np.ndarray


def split_duplicates(
    ts: np.ndarray, values: np.ndarray, stored_ts: np.ndarray, stored_values: np.ndarray
) -> DuplicateSplit:
    """Classify input rows (in input order) against earlier input rows and already stored bars.

    ``values`` is (n, 5): open, high, low, close, volume; ``stored_ts`` is sorted and unique. The first
    row seen of a timestamp is kept unless a bar is stored for it; the stored bar always wins.
    """
    n = len(ts)
    order = np.argsort(ts, kind="stable")  # stable: equal timestamps stay in input order
    sorted_ts = ts[order]
    first_of_ts = np.ones(n, dtype=bool)
    first_of_ts[1:] = sorted_ts[1:] != sorted_ts[:-1]
    position = np.searchsorted(stored_ts, sorted_ts)
    in_store = position < len(stored_ts)
    in_store[in_store] = stored_ts[position[in_store]] == sorted_ts[in_store]
    is_new = first_of_ts & ~in_store
    # Only the (few) other rows need their values compared with the row they repeat.
    repeats = np.flatnonzero(~is_new)
    first_seen = order[np.searchsorted(sorted_ts, sorted_ts[repeats], side="left")]
    reference = values[first_seen]
    from_store = in_store[repeats]
    reference[from_store] = stored_values[position[repeats][from_store]]
    same = np.all(values[order[repeats]] == reference, axis=1)
    new = np.zeros(n, dtype=bool)
    new[order[is_new]] = True
    duplicate = np.zeros(n, dtype=bool)
    duplicate[order[repeats[same]]] = True
    conflict = np.zeros(n, dtype=bool)
    conflict[order[repeats[~same]]] = True
    return DuplicateSplit(new, duplicate, conflict)


__all__ = [
    "AUTO",
    "FORMATS",
    "HEADER_CSV",
    "HISTDATA_ASCII",
    "HISTDATA_MT",
    "HISTDATA_ZONE",
    "REJECT_REASONS",
    "DuplicateSplit",
    "IngestFormatError",
    "ParsedFile",
    "Zone",
    "detect_format",
    "line_texts",
    "parse_bars",
    "parse_zone",
    "split_duplicates",
]
