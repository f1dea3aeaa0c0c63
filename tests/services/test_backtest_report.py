"""`smz evaluate`'s summary table and its HTML report (`--report DIR`), opened in a real headless
Chromium: it renders with no console error, and holds the equity chart and the trades table."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.deploy.helpers import tool
from tests.headless_chromium import HeadlessChromium, PageLoad
from tests.services.test_evaluate_job import last_json, smz

# What the browser reads of a report once it has loaded.
EVERY_IMAGE_DRAWN = "Array.from(document.images).every(img => img.complete && img.naturalWidth > 0)"
EQUITY_CHART_WIDTH = "document.querySelector('#equity-chart img').naturalWidth"
EQUITY_CAPTION = "document.querySelector('#equity-chart figcaption').textContent"
TRADE_ROWS = "document.querySelectorAll('#trades tbody tr').length"
TRADE_HEADERS = "Array.from(document.querySelectorAll('#trades thead th')).map(th => th.textContent)"
TABLE_IDS = "Array.from(document.querySelectorAll('table[id]')).map(table => table.id)"
REPORT_CHECKS = (EVERY_IMAGE_DRAWN, EQUITY_CHART_WIDTH, EQUITY_CAPTION, TRADE_ROWS, TRADE_HEADERS, TABLE_IDS)


def evaluate_with_report(db: Path, out: Path, *options: str) -> tuple[str, Path]:
    """`smz evaluate ... --report out` of the momentum baseline over all splits: output and report."""
    output = smz(
        "evaluate", "--db", db, "--instrument", "GBPJPY", "--policy", "momentum", "--split", "all",
        *options, "--report", out,
    )  # fmt: skip
    return output, out / "report.html"


def open_in_chromium(page: Path, checks: tuple[str, ...] = REPORT_CHECKS) -> PageLoad:
    with HeadlessChromium(tool("chromium", packages="chromium")) as browser:
        return browser.load(page.as_uri(), checks)


def assert_report_rendered(page: PageLoad, trades: int) -> None:
    assert page.errors == []
    assert page.values[EVERY_IMAGE_DRAWN] is True and page.values[EQUITY_CHART_WIDTH] > 500
    assert "beside the baselines" in page.values[EQUITY_CAPTION]
    assert page.values[TRADE_ROWS] == min(trades, 5_000)
    assert page.values[TRADE_HEADERS][:3] == ["#", "side", "entry_ts"]
    assert {"summary", "comparison", "by-side", "by-exit-reason", "by-hour", "by-month", "trades"} <= set(
        page.values[TABLE_IDS]
    )


@pytest.fixture(scope="module")
def sample_db(tmp_path_factory: pytest.TempPathFactory, sample_dir: Path) -> Path:
    db = tmp_path_factory.mktemp("sample") / "sample.duckdb"
    smz(
        "ingest",
        sample_dir / "HISTDATA_COM_ASCII_GBPJPY_M1_2017-01-sample.zip",
        "--instrument",
        "GBPJPY",
        "--db",
        db,
    )
    smz("features", "--db", db, "--instrument", "GBPJPY")
    return db


@pytest.fixture(scope="module")
def sample_report(sample_db: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[str, Path]:
    return evaluate_with_report(sample_db, tmp_path_factory.mktemp("report"))


def test_table_comes_before_the_unchanged_json_line(sample_db: Path, sample_report: tuple[str, Path]) -> None:
    plain = smz(
        "evaluate", "--db", sample_db, "--instrument", "GBPJPY", "--policy", "momentum", "--split", "all"
    )
    output, report = sample_report
    assert last_json(output) == last_json(plain)  # --report adds files and tables, not numbers
    for label in ("expectancy", "95% interval", "profit factor", "SQN", "Sharpe", "longest drawdown"):
        assert label in plain, label
    assert "by side" in plain and "by exit reason" in plain and "session_end" in plain
    assert "beside the baselines" not in plain  # the baselines run only for a plot or a report
    assert "beside the baselines" in output and f"report: {report}" in output


def test_report_is_one_self_contained_file(sample_report: tuple[str, Path]) -> None:
    output, report = sample_report
    text = report.read_text()
    assert text.startswith("<!doctype html>") and "<script" not in text
    assert "http://" not in text and "https://" not in text  # nothing to fetch: it opens offline
    assert text.count("src='data:image/png;base64,") == 3  # equity, drawdown, P&L histogram
    assert f"All {last_json(output)['trades']:,} trades" in text


def test_report_renders_in_headless_chromium(sample_report: tuple[str, Path]) -> None:
    output, report = sample_report
    assert_report_rendered(open_in_chromium(report), last_json(output)["trades"])


def test_the_browser_check_sees_errors(tmp_path: Path) -> None:
    """The check above can fail: a console error, an exception and a missing image are each reported."""
    page = tmp_path / "broken.html"
    page.write_text(
        "<!doctype html><html><head><meta charset='utf-8'><link rel='icon' href='data:,'></head><body>"
        "<img src='missing.png'><script>console.error('drawn wrong'); undefined_name();</script>"
        "</body></html>"
    )
    errors = open_in_chromium(page, checks=()).errors
    assert any("drawn wrong" in e for e in errors) and any("undefined_name" in e for e in errors)
    assert any("missing.png" in e or "ERR_FILE_NOT_FOUND" in e for e in errors), errors


@pytest.mark.slow
def test_report_of_momentum_on_gbpjpy_2017(shared_data_dir: Path, tmp_path: Path) -> None:
    """The acceptance run: the whole of 2017, every split, the momentum baseline."""
    db = tmp_path / "gbpjpy.duckdb"
    year = shared_data_dir / "fx" / "GBPJPY" / "HISTDATA_COM_ASCII_GBPJPY_M1_2017.zip"
    smz("ingest", year, "--instrument", "GBPJPY", "--db", db)
    smz("features", "--db", db, "--instrument", "GBPJPY")
    output, report = evaluate_with_report(db, tmp_path / "report")
    summary = last_json(output)
    assert summary["sessions"] > 900 and summary["trades"] > 5_000
    assert_report_rendered(open_in_chromium(report), summary["trades"])
    assert f"The first 5,000 of {summary['trades']:,} trades" in report.read_text()
