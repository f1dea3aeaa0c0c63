"""The batch jobs end to end through the real CLI: synth -> features -> evaluate, and the sample."""

from __future__ import annotations

import csv
import json
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from services.cli import app
from shared.sessions import tile_sessions
from shared.store import Store

runner = CliRunner()


def smz(*args: str) -> str:
    result = runner.invoke(app, [str(a) for a in args])
    assert result.exit_code == 0, result.output
    return result.output


def last_json(output: str) -> dict:
    return json.loads(output.strip().splitlines()[-1])


@pytest.fixture(scope="module")
def sample_zip(sample_dir: Path) -> Path:
    return sample_dir / "HISTDATA_COM_ASCII_GBPJPY_M1_2017-01-sample.zip"


@pytest.fixture(scope="module")
def synth_db(tmp_path_factory: pytest.TempPathFactory) -> Path:
    db = tmp_path_factory.mktemp("synth") / "synth.duckdb"
    smz("synth", "--db", db, "--instrument", "SYNTHJPY", "--bars", "120000", "--seed", "11")
    out = smz("features", "--db", db, "--instrument", "SYNTHJPY")
    assert "test:" in out and last_json(out)["bars"] == 120_000
    return db


def test_oracle_wins_and_random_pays_the_spread_on_the_synthetic_test_split(synth_db: Path) -> None:
    oracle = last_json(smz("evaluate", "--db", synth_db, "--instrument", "SYNTHJPY", "--policy", "oracle"))
    random = last_json(smz("evaluate", "--db", synth_db, "--instrument", "SYNTHJPY", "--policy", "random"))
    hold = last_json(smz("evaluate", "--db", synth_db, "--instrument", "SYNTHJPY", "--policy", "hold"))
    assert oracle["split"] == "test" and oracle["trades"] > 50
    assert oracle["expectancy_pips"] > 10.0
    assert -5.0 < random["expectancy_pips"] < -3.0 and random["trades"] > 1000
    assert hold["trades"] == 0 and hold["action_distribution"]["HOLD"] == 1.0
    for key in (
        "expectancy_pips",
        "expectancy_ci95",
        "edge",
        "win_rate",
        "sqn",
        "trades",
        "sessions",
        "total_pips",
        "pips_per_session",
        "max_drawdown_pips",
        "trades_per_session",
        "sessions_with_trade_share",
        "long_entry_share",
        "flat_hold_share",
        "health",
        "spread_pips",
    ):
        assert key in oracle, key
    assert set(oracle["action_distribution"]) == {"HOLD", "BUY", "SELL", "CLOSE"}
    # Edge: the oracle's interval lies above 0; random's below; HOLD's is (0, 0) and 0 pips.
    low, high = oracle["expectancy_ci95"]
    assert 0 < low < oracle["expectancy_pips"] < high and oracle["edge"] is True
    assert random["expectancy_ci95"][1] < 0 and random["edge"] is False
    assert hold["expectancy_ci95"] == [0.0, 0.0] and hold["total_pips"] == 0.0 and hold["edge"] is False
    assert oracle["pips_per_session"] == pytest.approx(oracle["total_pips"] / oracle["sessions"])
    # Health: the oracle and random trade on both sides; HOLD never trades.
    assert oracle["health"] == "healthy" and random["health"] == "healthy"
    assert hold["health"] == "never_trades" and hold["flat_hold_share"] == 1.0
    assert 0 < oracle["flat_hold_share"] < 1 and 0 < oracle["long_entry_share"] < 1


def test_random_is_reproducible_and_seeded(synth_db: Path) -> None:
    args = (
        "evaluate",
        "--db",
        synth_db,
        "--instrument",
        "SYNTHJPY",
        "--policy",
        "random",
        "--split",
        "validation",
    )
    a, b = last_json(smz(*args)), last_json(smz(*args))
    c = last_json(smz(*args, "--seed", "5"))
    assert a == b and a["total_pips"] != c["total_pips"]


def test_trade_log_csv_matches_the_metrics(synth_db: Path, tmp_path: Path) -> None:
    path = tmp_path / "trades.csv"
    report = last_json(
        smz(
            "evaluate",
            "--db",
            synth_db,
            "--instrument",
            "SYNTHJPY",
            "--policy",
            "oracle",
            "--trades-csv",
            path,
        )
    )
    with path.open() as fh:
        rows = list(csv.DictReader(fh))
    assert len(rows) == report["trades"]
    assert sum(float(r["pnl_pips"]) for r in rows) == pytest.approx(report["total_pips"])
    assert rows[0]["entry_ts"].endswith("Z") and rows[0]["side"] in {"long", "short"}
    assert {r["exit_reason"] for r in rows} <= {"close", "session_end"}


def test_oracle_refused_on_real_data_and_missing_features(tmp_path: Path, sample_zip: Path) -> None:
    db = tmp_path / "real.duckdb"
    smz("ingest", sample_zip, "--instrument", "GBPJPY", "--db", db)
    result = runner.invoke(app, ["evaluate", "--db", str(db), "--instrument", "GBPJPY"])
    assert result.exit_code == 2 and "smz features" in result.output
    smz("features", "--db", db, "--instrument", "GBPJPY")
    result = runner.invoke(app, ["evaluate", "--db", str(db), "--instrument", "GBPJPY", "--policy", "oracle"])
    assert result.exit_code == 2 and "synthetic" in result.output
    report = last_json(smz("evaluate", "--db", db, "--instrument", "GBPJPY", "--policy", "momentum"))
    assert report["sessions"] > 0


@pytest.mark.slow
def test_up_trains_on_the_synthetic_market_and_trades_like_its_backtest(tmp_path: Path) -> None:
    """The README's first command on its defaults, cut to 1,440 bars: it trains the demo agent,
    paper-trades the test split live, and its summary equals `smz evaluate` of the same checkpoint
    on the same sessions, with the baselines and the oracle beside it."""
    checkpoints, run_dir = tmp_path / "checkpoints", tmp_path / "live"
    db = tmp_path / "demo.duckdb"
    common = ("--db", db, "--checkpoints", checkpoints, "--run-dir", run_dir)
    out = smz("up", *common, "--pace-ms", "0", "--bars", "1440", "--exit-when-done")
    assert "no checkpoint in" in out and "training for 768 episodes on the synthetic market" in out
    assert "replay finished" in out and "live = backtest, trade for trade" in out
    summary = last_json(out)
    with Store(db, read_only=True) as store:
        ds = store.load_dataset("SYNTHJPY")
    tiled = tile_sessions(ds.starts_of("test"))
    replayed = tiled[tiled + 360 <= tiled[0] + 1440]  # the sessions inside the first 1,440 bars
    assert summary["instrument"] == "SYNTHJPY" and summary["sessions"] == len(replayed) >= 3
    assert summary["matches_backtest"] is True
    assert summary["entry_gate"]["allow_entries"] is True  # type: ignore[index]
    assert summary["trades"] == summary["backtest"]["trades"] >= 2  # type: ignore[index]
    assert summary["expectancy_pips"] == pytest.approx(summary["backtest"]["expectancy_pips"])  # type: ignore[index]
    assert set(summary["baselines"]) == {"hold", "random", "momentum", "oracle"}  # type: ignore[arg-type]
    # The gateway applied the order of the last session's last bar.
    last_bar = int(ds.bars.ts[int(replayed[-1]) + 359])
    assert summary["last_bar_traded"] == datetime.fromtimestamp(last_bar, UTC).isoformat()
    # A second run finds the checkpoint and trains no more.
    again = smz("up", *common, "--pace-ms", "0", "--bars", "360", "--exit-when-done")
    assert "checkpoint: using" in again and "training for" not in again
    assert last_json(again)["matches_backtest"] is True


@pytest.mark.slow
def test_up_on_the_real_sample_is_one_option_away(tmp_path: Path) -> None:
    checkpoints, run_dir = tmp_path / "checkpoints", tmp_path / "live"
    common = ("--db", tmp_path / "demo.duckdb", "--checkpoints", checkpoints, "--run-dir", run_dir)
    out = smz(
        "up", "--market", "gbpjpy-sample", *common, "--train-minutes", "0.2", "--pace-ms", "0",
        "--bars", "360", "--exit-when-done",
    )  # fmt: skip
    assert "training for 0.2 minutes on the gbpjpy-sample market" in out
    summary = last_json(out)
    assert summary["instrument"] == "GBPJPY" and summary["sessions"] == 1
    assert summary["matches_backtest"] is True and "oracle" not in summary["baselines"]  # type: ignore[operator]
    # The gateway applied the order of the session's last bar.
    with Store(tmp_path / "demo.duckdb", read_only=True) as store:
        ds = store.load_dataset("GBPJPY")
    first = int(tile_sessions(ds.starts_of("test"))[0])
    assert summary["last_bar_traded"] == datetime.fromtimestamp(int(ds.bars.ts[first + 359]), UTC).isoformat()


def test_model_info_prints_the_exact_parameter_count() -> None:
    out = smz("model", "info")
    assert "2,446,738" in out and last_json(out)["parameters"] == 2_446_738


def test_date_range_all_splits_and_equity_plot(synth_db: Path, tmp_path: Path) -> None:
    base = ("evaluate", "--db", synth_db, "--instrument", "SYNTHJPY", "--policy", "momentum")
    everything = last_json(smz(*base, "--split", "all"))
    splits = [last_json(smz(*base, "--split", s))["sessions"] for s in ("train", "validation", "test")]
    assert everything["sessions"] == sum(splits)
    # 120,000 synthetic bars start on 2020-01-06; a range keeps only the sessions wholly inside it.
    ranged = last_json(smz(*base, "--split", "all", "--start", "2020-02-01", "--end", "2020-03-01"))
    assert 0 < ranged["sessions"] < everything["sessions"]
    assert ranged["start"] == "2020-02-01T00:00:00+00:00" and ranged["end"] == "2020-03-01T00:00:00+00:00"
    trades = tmp_path / "trades.csv"
    png = tmp_path / "equity.png"
    smz(
        *base,
        "--split",
        "all",
        "--start",
        "2020-02-01",
        "--end",
        "2020-03-01",
        "--trades-csv",
        trades,
        "--plot",
        png,
    )
    with trades.open() as fh:
        rows = list(csv.DictReader(fh))
    assert len(rows) == ranged["trades"]
    assert all(r["entry_ts"] >= "2020-02-01" and r["exit_ts"] < "2020-03-01" for r in rows)
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 20_000
    result = runner.invoke(app, [str(a) for a in (*base, "--start", "2031-01-01")])
    assert result.exit_code == 2 and "no complete session" in result.output


def test_up_compares_only_the_trades_of_the_backtests_sessions() -> None:
    """A live session cut short by a gap is one the backtest never starts: its trades stand apart."""
    from services.jobs.up import split_by_sessions

    first = np.array([1_000, 30_000])  # two backtest sessions: [1,000, 22,540] and [30,000, 51,540]
    last = first + 359 * 60
    kept = ("long", 1_060, 1.0, 2_000, 1.1, 5.0, "close")
    cut = ("short", 23_000, 1.0, 24_000, 0.9, 6.0, "session_break")  # between them: a broken session
    second = ("long", 30_000, 1.0, 51_540, 1.2, 9.0, "session_end")
    early = ("long", 500, 1.0, 900, 1.2, 9.0, "close")  # before any session
    inside, outside = split_by_sessions([kept, cut, second, early], first, last)
    assert inside == [kept, second] and outside == [cut, early]
