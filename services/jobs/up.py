"""``smz up``: the main job. For now (before the live stack exists) it runs the whole data pipeline
on the bundled real sample: ingest, features, and the baselines on every split."""

from __future__ import annotations

from pathlib import Path

from rich.console import Console
from rich.table import Table

from services.jobs.evaluate import run_evaluate
from services.jobs.features import run_features
from services.jobs.ingest import run_ingest
from shared.policies import BASELINES
from shared.sessions import SPLITS

REPO = Path(__file__).resolve().parents[2]
SAMPLE = REPO / "data" / "sample" / "HISTDATA_COM_ASCII_GBPJPY_M1_2017-01-sample.zip"
SAMPLE_INSTRUMENT = "GBPJPY"


def run_up(db: Path, console: Console | None = None) -> list[dict[str, object]]:
    console = console or Console()
    console.rule("micro-muzero: data pipeline on the bundled GBPJPY sample")
    summary = run_ingest([SAMPLE], instrument=SAMPLE_INSTRUMENT, db=db, fmt="auto", tz=None, strict=False)
    console.print(summary.render())
    features = run_features(db, SAMPLE_INSTRUMENT)
    console.print(
        f"features: {features['bars']} bars, schema {features['schema_hash']} "
        f"(version {features['schema_version']})"
    )
    reports = []
    table = Table(title=f"Baselines on {SAMPLE_INSTRUMENT} sample (4-pip spread)")
    for column in ("split", "policy", "sessions", "trades", "expectancy", "win rate", "SQN", "max DD"):
        table.add_column(column, justify="right")
    for split in SPLITS:
        for policy in BASELINES:
            report, _ = run_evaluate(db, SAMPLE_INSTRUMENT, split, policy)
            reports.append(report)
            table.add_row(
                split,
                policy,
                str(report["sessions"]),
                str(report["trades"]),
                f"{report['expectancy_pips']:.2f}",
                f"{report['win_rate']:.1%}",
                f"{report['sqn']:.2f}",
                f"{report['max_drawdown_pips']:.1f}",
            )
    console.print(table)
    console.print(f"database: {db}  (try: smz evaluate --db {db} --instrument GBPJPY --policy momentum)")
    return reports
