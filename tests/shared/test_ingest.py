"""The pure parser: formats, zones, validation reasons and line numbers, duplicate classification."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pytest

from shared.ingest import (
    HEADER_CSV,
    HISTDATA_ASCII,
    HISTDATA_MT,
    REJECT_REASONS,
    IngestFormatError,
    ParsedFile,
    detect_format,
    line_texts,
    parse_bars,
    parse_zone,
    split_duplicates,
)


def epoch(text: str) -> int:
    """Epoch seconds of an ISO UTC time like '2017-01-02T07:00'."""
    return int(datetime.fromisoformat(text).replace(tzinfo=UTC).timestamp())


def reasons_by_line(parsed: ParsedFile) -> dict[int, str]:
    return {row.line: row.reason for row in parsed.rejects}


# The hand-written fixtures in tests/data: rejected lines with their reason, and the valid lines with
# their UTC open times. Duplicates are not the parser's business: it returns them as valid rows.
ASCII_REJECTS = {
    4: "wrong_field_count",
    5: "wrong_field_count",
    6: "bad_timestamp",  # Feb 30
    7: "bad_timestamp",  # wrong shape
    8: "bad_timestamp",  # second 60
    9: "bad_timestamp",  # not on a whole minute
    10: "unparseable_number",
    11: "unparseable_number",  # empty field
    12: "non_finite",
    13: "non_finite",
    14: "non_positive_price",  # open 0 (also outside the range: the first reason wins)
    15: "non_positive_price",
    16: "high_below_low",  # open above high too
    17: "open_outside_range",
    18: "close_outside_range",
    19: "bad_volume",
    20: "bad_volume",  # nan volume
    25: "wrong_field_count",
    26: "bad_timestamp",  # bad number and volume too
    27: "non_finite",  # 1e999 overflows
}
ASCII_VALID = {
    1: "2017-01-02T07:00",
    2: "2017-01-02T07:01",
    21: "2017-01-02T07:01",  # exact copy of line 2
    22: "2017-01-02T07:01",  # same time as line 2, different open
    24: "2017-01-02T07:18",
    28: "2017-01-02T07:21",
    29: "2017-01-02T09:00",
}
MT_REJECTS = {
    3: "bad_timestamp",
    4: "bad_timestamp",
    5: "wrong_field_count",
    6: "wrong_field_count",
    7: "unparseable_number",
    10: "high_below_low",
    11: "bad_timestamp",  # hour 24
}
MT_VALID = {
    1: "2017-01-02T07:00",
    2: "2017-01-02T07:01",
    8: "2017-01-02T07:07",
    9: "2017-01-02T07:07",
    13: "2017-01-02T07:09",  # blanks around a number are accepted
    14: "2017-01-02T07:10",  # a leading '+' too
}
CSV_REJECTS = {
    6: "bad_timestamp",  # no zone
    7: "bad_timestamp",  # 30 seconds past the minute
    8: "bad_timestamp",  # a fraction of a second
    11: "wrong_field_count",
    12: "high_below_low",
    13: "bad_timestamp",  # offset +25:00
    15: "bad_volume",
}
CSV_VALID = {
    2: "2025-06-26T03:42",
    3: "2025-06-26T03:43",  # nanosecond fraction of zeros
    4: "2025-06-26T03:44",  # +01:00
    5: "2025-06-26T03:45",  # -05:00
    9: "2025-06-26T03:49",  # space separator, no seconds
    10: "2025-06-26T03:42",  # +00:00, same bar as line 2
    14: "2025-06-26T03:43",
}
FIXTURES = {
    "broken_histdata_ascii.csv": (HISTDATA_ASCII, ASCII_REJECTS, ASCII_VALID),
    "broken_histdata_mt.csv": (HISTDATA_MT, MT_REJECTS, MT_VALID),
    "broken_header.csv": (HEADER_CSV, CSV_REJECTS, CSV_VALID),
}


@pytest.mark.parametrize("name", sorted(FIXTURES))
@pytest.mark.parametrize("line_end", [b"\n", b"\r\n"])
def test_fixture_reasons_lines_and_valid_rows(test_data_dir: Path, name: str, line_end: bytes) -> None:
    fmt, rejects, valid = FIXTURES[name]
    data = (test_data_dir / name).read_bytes().replace(b"\n", line_end)
    assert detect_format(data) == fmt
    parsed = parse_bars(data, source=name)
    assert parsed.fmt == fmt
    assert reasons_by_line(parsed) == rejects
    assert parsed.line.tolist() == sorted(valid)
    assert parsed.ts.tolist() == [epoch(valid[n]) for n in sorted(valid)]
    assert parsed.rows_read == len(rejects) + len(valid)
    assert all(row.file == name for row in parsed.rejects)


def test_rejected_row_keeps_the_line_text(test_data_dir: Path) -> None:
    data = (test_data_dir / "broken_histdata_ascii.csv").read_bytes().replace(b"\n", b"\r\n")
    parsed = parse_bars(data, source="x.csv")
    text = {row.line: row.text for row in parsed.rejects}
    assert text[25] == "hello"
    assert text[10] == "20170102 020700;abc;144.300000;144.280000;144.290000;0"
    assert line_texts(data, [1, 25]) == {
        1: "20170102 020000;144.236000;144.236000;144.236000;144.236000;0",
        25: "hello",
    }


def test_valid_values_are_parsed_exactly(test_data_dir: Path) -> None:
    parsed = parse_bars((test_data_dir / "broken_histdata_ascii.csv").read_bytes(), source="x")
    row = parsed.line.tolist().index(28)
    assert (parsed.open[row], parsed.high[row], parsed.low[row], parsed.close[row]) == (
        144.29,
        144.3,
        144.28,
        144.29,
    )
    assert parsed.volume[row] == 12.5
    csv = parse_bars((test_data_dir / "broken_header.csv").read_bytes(), source="x")
    assert csv.volume.tolist() == [10, 11, 12, 0, 14, 10, 11]


def test_every_reason_has_a_priority_and_the_first_wins() -> None:
    assert len(set(REJECT_REASONS)) == len(REJECT_REASONS)
    assert REJECT_REASONS.index("bad_timestamp") < REJECT_REASONS.index("unparseable_number")
    # nan open, high below low, negative volume: non_finite comes first
    parsed = parse_bars(b"20170102 020000;nan;1;2;1.5;-1\n", source="x", fmt=HISTDATA_ASCII)
    assert reasons_by_line(parsed) == {1: "non_finite"}
    # unparseable volume is an unparseable number, not a bad volume
    parsed = parse_bars(b"20170102 020000;1;2;1;1.5;x\n", source="x", fmt=HISTDATA_ASCII)
    assert reasons_by_line(parsed) == {1: "unparseable_number"}


def test_flat_bars_are_valid() -> None:
    parsed = parse_bars(b"2017.01.02,02:00,1.5,1.5,1.5,1.5,0\n", source="x")
    assert not parsed.rejects
    assert len(parsed) == 1


def test_blank_lines_are_not_rows_and_keep_line_numbers() -> None:
    data = b"\n\n20170102 020000;1;1;1;1;0\n  \n\t\n20170102 020100;1;1;1;1;0"  # no final newline
    parsed = parse_bars(data, source="x")
    assert parsed.rows_read == 2
    assert parsed.line.tolist() == [3, 6]
    assert parsed.rejects == []


def test_undecodable_bytes_reject_only_their_row() -> None:
    data = b"20170102 020000;1;1;1;1;0\n20170102 020100;\xff1;1;1;1;0\n20170102 020200;1;1;1;1;0\n"
    parsed = parse_bars(data, source="x")
    assert reasons_by_line(parsed) == {2: "unparseable_number"}
    assert parsed.line.tolist() == [1, 3]
    assert parsed.rejects[0].text == "20170102 020100;\ufffd1;1;1;1;0"


def test_a_stray_carriage_return_rejects_its_row_only() -> None:
    data = b"20170102 020000;1;1;1;1;0\r\n20170102 020100;1;1\r;1;1;0\r\n20170102 020200;1;1;1;1;0\r\n"
    parsed = parse_bars(data, source="x")
    assert reasons_by_line(parsed) == {2: "unparseable_number"}
    assert parsed.line.tolist() == [1, 3]


def test_utf8_bom_before_the_header_is_ignored() -> None:
    data = b"\xef\xbb\xbftime,open,high,low,close\n2025-06-26T03:42:00Z,1,2,1,1.5\n"
    parsed = parse_bars(data, source="x")
    assert parsed.fmt == HEADER_CSV
    assert parsed.ts.tolist() == [epoch("2025-06-26T03:42")]
    assert parsed.volume.tolist() == [0.0]  # no volume column: volume 0


def test_header_csv_zone_spellings() -> None:
    data = (
        b"time,open,high,low,close\n"
        b"2026-01-05T21:28:00.000000000Z,1,1,1,1\n"
        b"2026-01-05T22:29:00+01:00,1,1,1,1\n"
        b"2026-01-05T16:30:00-0500,1,1,1,1\n"
        b"2026-01-06T03:01:00+05:30,1,1,1,1\n"
        b"2026-01-05T21:32:00z,1,1,1,1\n"
        b"2026-01-05T21:33:00+00,1,1,1,1\n"
    )
    parsed = parse_bars(data, source="x")
    assert parsed.rejects == []
    minutes = [(t - epoch("2026-01-05T21:28")) // 60 for t in parsed.ts.tolist()]
    assert minutes == [0, 1, 2, 3, 4, 5]


def test_header_csv_ignores_the_zone_argument() -> None:
    data = b"time,open,high,low,close\n2025-06-26T03:42:00Z,1,1,1,1\n"
    parsed = parse_bars(data, source="x", zone=parse_zone("+02:00"))
    assert parsed.ts.tolist() == [epoch("2025-06-26T03:42")]
    assert parsed.zone == "in values"


def test_histdata_default_zone_is_fixed_utc_minus_5_all_year() -> None:
    data = b"20170102 020000;1;1;1;1;0\n20170702 020000;1;1;1;1;0\n"  # winter and summer
    parsed = parse_bars(data, source="x")
    assert parsed.zone == "-05:00"
    assert parsed.ts.tolist() == [epoch("2017-01-02T07:00"), epoch("2017-07-02T07:00")]
    parsed_utc = parse_bars(data, source="x", zone=parse_zone("UTC"))
    assert parsed_utc.ts.tolist() == [epoch("2017-01-02T02:00"), epoch("2017-07-02T02:00")]
    parsed_east = parse_bars(data, source="x", zone=parse_zone("+02:00"))
    assert parsed_east.ts.tolist() == [epoch("2017-01-02T00:00"), epoch("2017-07-02T00:00")]


def test_iana_zone_with_daylight_saving() -> None:
    # Athens: EET (+2) in winter, EEST (+3) in summer; 2017-03-26 03:00 -> 04:00, 2017-10-29 04:00 -> 03:00.
    data = (
        b"2017.01.02,12:00,1,1,1,1,0\n"
        b"2017.06.01,12:00,1,1,1,1,0\n"
        b"2017.03.26,03:30,1,1,1,1,0\n"  # skipped by the clocks
        b"2017.10.29,03:30,1,1,1,1,0\n"  # happens twice
        b"2017.03.26,04:00,1,1,1,1,0\n"
        b"2017.10.29,04:00,1,1,1,1,0\n"
        b"2017.10.29,02:59,1,1,1,1,0\n"
    )
    parsed = parse_bars(data, source="x", zone=parse_zone("Europe/Athens"))
    assert reasons_by_line(parsed) == {3: "nonexistent_local_time", 4: "ambiguous_local_time"}
    assert parsed.ts.tolist() == [
        epoch("2017-01-02T10:00"),
        epoch("2017-06-01T09:00"),
        epoch("2017-03-26T01:00"),
        epoch("2017-10-29T02:00"),
        epoch("2017-10-28T23:59"),
    ]


def test_parse_zone() -> None:
    assert parse_zone("UTC").offset_seconds == 0
    assert parse_zone("+02:00").offset_seconds == 7200
    assert parse_zone("-0500").offset_seconds == -18000
    assert parse_zone("UTC+2").offset_seconds == 7200
    assert parse_zone("+05:30").name == "+05:30"
    athens = parse_zone("Europe/Athens")
    assert athens.offset_seconds is None and athens.name == "Europe/Athens"
    for bad in ("Mars/Olympus", "+25:00", "", "EST5EDT;rm"):
        with pytest.raises(IngestFormatError):
            parse_zone(bad)


def test_detect_format_errors() -> None:
    with pytest.raises(IngestFormatError, match="cannot detect"):
        detect_format(b"hello;world\n")
    with pytest.raises(IngestFormatError, match="no rows"):
        detect_format(b"\n \n")
    with pytest.raises(IngestFormatError, match="unknown format"):
        parse_bars(b"20170102 020000;1;1;1;1;0\n", source="x", fmt="excel")
    with pytest.raises(IngestFormatError, match="header"):
        parse_bars(b"time,open,high,low,close,spread\n", source="x")
    with pytest.raises(IngestFormatError, match="empty"):
        parse_bars(b"", source="x", fmt=HEADER_CSV)


def test_empty_file_with_an_explicit_format_has_no_rows() -> None:
    parsed = parse_bars(b"", source="x", fmt=HISTDATA_MT)
    assert parsed.rows_read == 0 and len(parsed) == 0 and parsed.rejects == []


def test_a_file_of_garbage_rejects_every_row() -> None:
    data = b"".join(b"%d;x\n" % i for i in range(1000))
    parsed = parse_bars(data, source="x", fmt=HISTDATA_ASCII)
    assert parsed.rows_read == 1000
    assert parsed.rejected_by_reason() == {"wrong_field_count": 1000}


def test_split_duplicates_in_input_and_against_stored() -> None:
    ts = np.array([100, 160, 100, 100, 220, 280, 280])
    values = np.array(
        [
            [1, 2, 1, 1, 0],
            [1, 2, 1, 1, 0],
            [1, 2, 1, 1, 0],  # exact copy of row 0
            [1, 2, 1, 1.5, 0],  # conflicts with row 0
            [1, 2, 1, 1, 0],  # conflicts with the stored bar at 220
            [1, 2, 1, 1, 0],  # equals the stored bar at 280
            [1, 2, 1, 1, 5],  # conflicts with the stored bar at 280 (volume differs)
        ],
        dtype=float,
    )
    stored_ts = np.array([40, 220, 280])
    stored_values = np.array([[9, 9, 9, 9, 0], [2, 2, 2, 2, 0], [1, 2, 1, 1, 0]], dtype=float)
    split = split_duplicates(ts, values, stored_ts, stored_values)
    assert split.new.tolist() == [True, True, False, False, False, False, False]
    assert split.duplicate.tolist() == [False, False, True, False, False, True, False]
    assert split.conflict.tolist() == [False, False, False, True, True, False, True]


def test_split_duplicates_first_seen_wins_regardless_of_time_order() -> None:
    ts = np.array([300, 100, 300])
    values = np.array([[2, 2, 2, 2, 0], [1, 1, 1, 1, 0], [3, 3, 3, 3, 0]], dtype=float)
    split = split_duplicates(ts, values, np.zeros(0, np.int64), np.zeros((0, 5)))
    assert split.new.tolist() == [True, True, False]
    assert split.conflict.tolist() == [False, False, True]
