"""``smz ingest`` end to end: files and zips in, bars and rejected rows in DuckDB, the summary out."""

from __future__ import annotations

import time
import zipfile
from datetime import UTC, datetime
from pathlib import Path

import pytest
from typer.testing import CliRunner

from services.cli import app
from services.jobs.ingest import IngestError, IngestSummary, run_ingest
from shared.store import Store


def epoch(text: str) -> int:
    return int(datetime.fromisoformat(text).replace(tzinfo=UTC).timestamp())


def utc(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=UTC)


def stored_rejects(db: Path, instrument: str) -> list[tuple[str, int, str]]:
    with Store(db) as store:
        rows = store.con.execute(
            "SELECT file, line, reason FROM rejected_rows WHERE instrument = ? ORDER BY file, line",
            [instrument],
        ).fetchall()
    return [(str(f), int(n), str(r)) for f, n, r in rows]


def stored_ts(db: Path, instrument: str) -> list[int]:
    with Store(db) as store:
        return store.load_bars(instrument).ts.tolist()


def count_rows(db: Path) -> tuple[int, int]:
    with Store(db) as store:
        return int(store.scalar("SELECT count(*) FROM bars")), int(
            store.scalar("SELECT count(*) FROM rejected_rows")
        )


# ------------------------------------------------------- hand-written fixtures
# name: (rejected lines by reason incl. conflicts, UTC times of the stored bars, exact duplicates, rows read)
FIXTURES = {
    "broken_histdata_ascii.csv": (
        {
            "wrong_field_count": [4, 5, 25],
            "bad_timestamp": [6, 7, 8, 9, 26],
            "unparseable_number": [10, 11],
            "non_finite": [12, 13, 27],
            "non_positive_price": [14, 15],
            "high_below_low": [16],
            "open_outside_range": [17],
            "close_outside_range": [18],
            "bad_volume": [19, 20],
            "conflicting_duplicate": [22],
        },
        ["2017-01-02T07:00", "2017-01-02T07:01", "2017-01-02T07:18", "2017-01-02T07:21", "2017-01-02T09:00"],
        1,
        27,
    ),
    "broken_histdata_mt.csv": (
        {
            "wrong_field_count": [5, 6],
            "bad_timestamp": [3, 4, 11],
            "unparseable_number": [7],
            "high_below_low": [10],
        },
        ["2017-01-02T07:00", "2017-01-02T07:01", "2017-01-02T07:07", "2017-01-02T07:09", "2017-01-02T07:10"],
        1,
        13,
    ),
    "broken_header.csv": (
        {
            "wrong_field_count": [11],
            "bad_timestamp": [6, 7, 8, 13],
            "high_below_low": [12],
            "bad_volume": [15],
            "conflicting_duplicate": [14],
        },
        ["2025-06-26T03:42", "2025-06-26T03:43", "2025-06-26T03:44", "2025-06-26T03:45", "2025-06-26T03:49"],
        1,
        14,
    ),
}


@pytest.mark.parametrize("name", sorted(FIXTURES))
def test_broken_fixture_counts_lines_and_every_valid_row_stored(
    test_data_dir: Path, db_path: Path, name: str
) -> None:
    rejected, bar_times, duplicates, rows_read = FIXTURES[name]
    summary = run_ingest([test_data_dir / name], instrument="TESTPAIR", db=db_path)

    assert not summary.failed
    assert summary.rows_read == rows_read
    assert summary.stored == len(bar_times)
    assert summary.duplicates == duplicates
    expected_counts = {reason: len(lines) for reason, lines in rejected.items()}
    assert summary.rejected == expected_counts
    assert summary.rows_read == summary.stored + summary.duplicates + summary.rejected_total  # nothing lost
    assert stored_rejects(db_path, "TESTPAIR") == sorted(
        (name, line, reason) for reason, lines in rejected.items() for line in lines
    )
    assert stored_ts(db_path, "TESTPAIR") == [epoch(t) for t in bar_times]
    assert summary.first_stored == utc(bar_times[0])
    assert summary.last_stored == utc(bar_times[-1])
    text = summary.render()
    for reason, count in expected_counts.items():
        assert f"{reason}" in text and f"{count:,}" in text


def test_gaps_are_counted_in_the_stored_series(test_data_dir: Path, db_path: Path) -> None:
    summary = run_ingest([test_data_dir / "broken_histdata_ascii.csv"], instrument="TESTPAIR", db=db_path)
    # 07:00 07:01 | 07:18 07:21 | 09:00: two gaps over 10 minutes
    assert (summary.gaps_over_10min, summary.gap_scope, summary.gap_scope_bars) == (2, "stored series", 5)


def test_first_stored_row_wins_and_values_are_exact(test_data_dir: Path, db_path: Path) -> None:
    run_ingest([test_data_dir / "broken_histdata_ascii.csv"], instrument="TESTPAIR", db=db_path)
    with Store(db_path) as store:
        bars = store.load_bars("TESTPAIR")
    # line 2 (open 144.240) is kept over the conflicting line 22 (open 144.241)
    assert bars.open[1] == 144.24
    assert (bars.high[3], bars.low[3], bars.close[3], bars.volume[3]) == (144.3, 144.28, 144.29, 12.5)


def test_reingest_adds_nothing(test_data_dir: Path, db_path: Path) -> None:
    path = test_data_dir / "broken_histdata_ascii.csv"
    first = run_ingest([path], instrument="TESTPAIR", db=db_path)
    before = count_rows(db_path)
    again = run_ingest([path], instrument="TESTPAIR", db=db_path)
    assert again.stored == 0
    assert again.duplicates == first.stored + first.duplicates
    assert again.rejected == first.rejected  # the same rows are reported again ...
    assert count_rows(db_path) == before  # ... but not stored twice
    assert again.first_stored is None and again.first_valid == utc("2017-01-02T07:00")
    assert "no new bar stored" in again.render()


def test_conflict_with_a_stored_bar_keeps_the_stored_one(tmp_path: Path, db_path: Path) -> None:
    first = tmp_path / "first.csv"
    first.write_bytes(b"20170102 020000;1.0;2.0;1.0;1.5;0\n20170102 020100;1.5;2.0;1.0;1.6;0\n")
    second = tmp_path / "second.csv"
    second.write_bytes(
        b"20170102 020100;1.5;2.0;1.0;1.6;0\n"  # same as stored: duplicate
        b"20170102 020000;1.0;2.0;1.0;1.7;0\n"  # different close: conflict
        b"20170102 020200;1.6;2.0;1.0;1.7;0\n"  # new
    )
    run_ingest([first], instrument="TESTPAIR", db=db_path)
    summary = run_ingest([second], instrument="TESTPAIR", db=db_path)
    assert (summary.stored, summary.duplicates, summary.rejected) == (1, 1, {"conflicting_duplicate": 1})
    assert stored_rejects(db_path, "TESTPAIR") == [("second.csv", 2, "conflicting_duplicate")]
    with Store(db_path) as store:
        bars = store.load_bars("TESTPAIR")
        text = store.scalar("SELECT text FROM rejected_rows")
    assert bars.close.tolist() == [1.5, 1.6, 1.7]
    assert text == "20170102 020000;1.0;2.0;1.0;1.7;0"


def test_several_files_in_one_run_deduplicate_across_files(test_data_dir: Path, db_path: Path) -> None:
    ascii_path = test_data_dir / "broken_histdata_ascii.csv"
    mt_path = test_data_dir / "broken_histdata_mt.csv"  # same minutes, partly different prices
    summary = run_ingest([ascii_path, mt_path], instrument="TESTPAIR", db=db_path)
    by_file = {f.source: f for f in summary.files}
    assert by_file["broken_histdata_ascii.csv"].stored == 5
    mt = by_file["broken_histdata_mt.csv"]
    # MT lines 1 and 2 equal ASCII lines 1 and 2 exactly; 07:07, 07:09, 07:10 are new minutes.
    assert (mt.stored, mt.duplicates) == (3, 3)
    assert mt.rejected_total == 7 and "conflicting_duplicate" not in mt.rejected
    assert summary.stored == 8
    text = summary.render()
    assert (
        "broken_histdata_ascii.csv: histdata-ascii" in text and "broken_histdata_mt.csv: histdata-mt" in text
    )


def test_zip_members_are_named_archive_colon_member(
    tmp_path: Path, test_data_dir: Path, db_path: Path
) -> None:
    archive = tmp_path / "vendor.zip"
    with zipfile.ZipFile(archive, "w") as z:
        z.writestr("bars.csv", (test_data_dir / "broken_histdata_mt.csv").read_bytes())
        z.writestr("gaps.txt", "a vendor's gap report, not bars")
    summary = run_ingest([archive], instrument="TESTPAIR", db=db_path)
    assert summary.stored == 5
    assert {f for f, _, _ in stored_rejects(db_path, "TESTPAIR")} == {"vendor.zip:bars.csv"}


def test_iana_zone_through_the_job(tmp_path: Path, db_path: Path) -> None:
    path = tmp_path / "mt4_export.csv"
    path.write_bytes(b"2017.10.29,03:30,1,1,1,1,0\n2017.10.29,05:00,1,1,1,1,7\n")
    summary = run_ingest([path], instrument="TESTPAIR", db=db_path, tz="Europe/Athens")
    assert summary.rejected == {"ambiguous_local_time": 1}
    assert summary.files[0].zone == "Europe/Athens"
    assert stored_ts(db_path, "TESTPAIR") == [epoch("2017-10-29T03:00")]


# -------------------------------------------------------------------- strict
def test_strict_writes_nothing_and_exits_2(test_data_dir: Path, db_path: Path) -> None:
    result = CliRunner().invoke(
        app,
        [
            "ingest",
            str(test_data_dir / "broken_histdata_mt.csv"),
            *("--instrument", "TESTPAIR", "--db", str(db_path), "--strict"),
        ],
    )
    assert result.exit_code == 2, result.output
    assert "FAILED (--strict)" in result.output
    assert "bad_timestamp" in result.output and "wrong_field_count" in result.output
    assert not db_path.exists()  # not even created


def test_strict_on_an_existing_database_leaves_it_unchanged(test_data_dir: Path, db_path: Path) -> None:
    clean = test_data_dir / "broken_header.csv"
    run_ingest([clean], instrument="OTHER", db=db_path)
    before = count_rows(db_path)
    summary = run_ingest(
        [test_data_dir / "broken_histdata_ascii.csv"], instrument="TESTPAIR", db=db_path, strict=True
    )
    assert summary.failed and summary.stored == 0
    assert summary.rejected["conflicting_duplicate"] == 1
    assert summary.gap_scope == "valid input rows"
    assert count_rows(db_path) == before


def test_strict_conflict_with_a_stored_bar_fails(tmp_path: Path, db_path: Path) -> None:
    path = tmp_path / "a.csv"
    path.write_bytes(b"20170102 020000;1.0;2.0;1.0;1.5;0\n")
    run_ingest([path], instrument="TESTPAIR", db=db_path)
    changed = tmp_path / "b.csv"
    changed.write_bytes(b"20170102 020000;1.0;2.0;1.0;1.6;0\n20170102 020100;1.0;2.0;1.0;1.6;0\n")
    summary = run_ingest([changed], instrument="TESTPAIR", db=db_path, strict=True)
    assert summary.failed and summary.rejected == {"conflicting_duplicate": 1}
    assert count_rows(db_path) == (1, 0)


def test_strict_with_only_exact_duplicates_succeeds(tmp_path: Path, db_path: Path) -> None:
    path = tmp_path / "a.csv"
    path.write_bytes(b"20170102 020000;1.0;2.0;1.0;1.5;0\n20170102 020000;1.0;2.0;1.0;1.5;0\n")
    result = CliRunner().invoke(
        app, ["ingest", str(path), "--instrument", "TESTPAIR", "--db", str(db_path), "--strict"]
    )
    assert result.exit_code == 0, result.output
    assert count_rows(db_path) == (1, 0)


# -------------------------------------------------------------------- errors
def _garbage_zip(tmp_path: Path) -> Path:
    path = tmp_path / "broken.zip"
    path.write_bytes(b"this is not a zip")
    return path


def _zip_without_csv(tmp_path: Path) -> Path:
    path = tmp_path / "nocsv.zip"
    with zipfile.ZipFile(path, "w") as z:
        z.writestr("readme.txt", "no bars here")
    return path


def _csv(tmp_path: Path, content: bytes = b"20170102 020000;1;1;1;1;0\n") -> Path:
    path = tmp_path / "ok.csv"
    path.write_bytes(content)
    return path


@pytest.mark.parametrize(
    ("make_paths", "kwargs", "message"),
    [
        (lambda t: [t / "missing.csv"], {}, "no such file"),
        (lambda t: [t], {}, "not a file"),
        (lambda t: [_garbage_zip(t)], {}, "not a readable zip"),
        (lambda t: [_zip_without_csv(t)], {}, "holds no .csv"),
        (lambda t: [_csv(t)], {"fmt": "excel"}, "unknown format"),
        (lambda t: [_csv(t)], {"instrument": "gbpjpy"}, "instrument name"),
        (lambda t: [_csv(t)], {"tz": "Mars/Olympus"}, "unknown zone"),
        (lambda t: [_csv(t, b"hello world\n")], {}, "cannot detect"),
        (lambda t: [_csv(t), t / "missing.csv"], {}, "no such file"),
    ],
)
def test_bad_input_raises_and_writes_nothing(
    tmp_path: Path, db_path: Path, make_paths: object, kwargs: dict[str, str], message: str
) -> None:
    paths = make_paths(tmp_path)  # type: ignore[operator]
    arguments = {"instrument": "TESTPAIR", **kwargs}
    with pytest.raises(IngestError, match=message):
        run_ingest(paths, db=db_path, **arguments)  # type: ignore[arg-type]
    assert not db_path.exists()


def test_cli_reports_errors_with_exit_2(tmp_path: Path, db_path: Path) -> None:
    result = CliRunner().invoke(
        app, ["ingest", str(tmp_path / "missing.csv"), "--instrument", "TESTPAIR", "--db", str(db_path)]
    )
    assert result.exit_code == 2
    assert "error:" in result.output and "no such file" in result.output


def test_cli_prints_the_summary(test_data_dir: Path, db_path: Path) -> None:
    result = CliRunner().invoke(
        app,
        [
            "ingest",
            str(test_data_dir / "broken_header.csv"),
            "--instrument",
            "TESTPAIR",
            "--db",
            str(db_path),
        ],
    )
    assert result.exit_code == 0, result.output
    assert "rows read      14" in result.output
    assert "first stored   2025-06-26T03:42:00Z" in result.output


# ----------------------------------------------------------------- real data
SAMPLE_ZIP = "HISTDATA_COM_ASCII_GBPJPY_M1_2017-01-sample.zip"


def test_shipped_sample_ingests_cleanly(sample_dir: Path, db_path: Path) -> None:
    summary = run_ingest([sample_dir / SAMPLE_ZIP], instrument="GBPJPY", db=db_path, fmt="histdata-ascii")
    assert (summary.rows_read, summary.stored, summary.duplicates, summary.rejected) == (
        20_884,
        20_884,
        0,
        {},
    )
    assert summary.files[0].source == f"{SAMPLE_ZIP}:DAT_ASCII_GBPJPY_M1_2017-01-sample.csv"
    assert summary.first_stored == utc("2017-01-02T07:00")
    assert summary.last_stored == utc("2017-01-20T21:59")


def test_sample_is_the_start_of_the_real_file_byte_for_byte(sample_dir: Path, shared_data_dir: Path) -> None:
    with zipfile.ZipFile(sample_dir / SAMPLE_ZIP) as z:
        sample = z.read("DAT_ASCII_GBPJPY_M1_2017-01-sample.csv")
    with zipfile.ZipFile(shared_data_dir / "fx" / "GBPJPY" / "HISTDATA_COM_ASCII_GBPJPY_M1_2017.zip") as z:
        full = z.read("DAT_ASCII_GBPJPY_M1_2017.csv")
    assert full.startswith(sample)
    assert full[len(sample) : len(sample) + 8] == b"20170122"  # next: Sunday evening's open


def test_gbpjpy_2017(shared_data_dir: Path, db_path: Path) -> None:
    path = shared_data_dir / "fx" / "GBPJPY" / "HISTDATA_COM_ASCII_GBPJPY_M1_2017.zip"
    summary = run_ingest([path], instrument="GBPJPY", db=db_path)
    assert summary.files[0].fmt == "histdata-ascii"
    assert (summary.rows_read, summary.stored, summary.duplicates, summary.rejected) == (
        370_949,
        370_949,
        0,
        {},
    )
    assert summary.first_stored == utc("2017-01-02T07:00")  # file: 20170102 020000 EST
    assert summary.last_stored == utc("2017-12-29T21:55")
    with Store(db_path) as store:
        assert store.count_bars("GBPJPY") == 370_949


def test_usdjpy_2019_repeated_october_hour_is_60_duplicates(shared_data_dir: Path, db_path: Path) -> None:
    path = shared_data_dir / "fx" / "USDJPY" / "HISTDATA_COM_MT_USDJPY_M12019.zip"
    summary = run_ingest([path], instrument="USDJPY", db=db_path)
    assert summary.files[0].fmt == "histdata-mt"
    assert (summary.rows_read, summary.stored, summary.duplicates, summary.rejected) == (
        372_585,
        372_525,
        60,
        {},
    )


USDJPY_YEARS = {  # year: (rows read, duplicates)
    2015: (371_891, 0),
    2016: (372_417, 0),
    2017: (371_298, 0),
    2018: (371_800, 0),
    2019: (372_585, 60),
    2020: (372_200, 60),
    2021: (369_393, 60),
    2022: (372_596, 60),
}


@pytest.mark.slow
def test_all_eight_usdjpy_years(shared_data_dir: Path, db_path: Path) -> None:
    paths = [
        shared_data_dir / "fx" / "USDJPY" / f"HISTDATA_COM_MT_USDJPY_M1{year}.zip" for year in USDJPY_YEARS
    ]
    started = time.perf_counter()
    summary: IngestSummary = run_ingest(paths, instrument="USDJPY", db=db_path)
    seconds = time.perf_counter() - started
    print(f"\n{summary.render()}\ningest of all eight USDJPY years: {seconds:.1f} s")
    for year, file_summary in zip(USDJPY_YEARS, summary.files, strict=True):
        rows, duplicates = USDJPY_YEARS[year]
        assert (file_summary.rows_read, file_summary.duplicates, file_summary.rejected) == (
            rows,
            duplicates,
            {},
        )
        assert file_summary.stored == rows - duplicates
    assert summary.stored == sum(r - d for r, d in USDJPY_YEARS.values())
    with Store(db_path) as store:
        assert store.count_bars("USDJPY") == summary.stored
    assert seconds < 40  # the benchmark's budget for the whole ingest is well under 20 s on 2 cores
