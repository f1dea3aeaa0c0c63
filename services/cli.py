"""``smz``: the one command line that fronts every job."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from enum import StrEnum
from pathlib import Path
from typing import Annotated

import typer

from shared.instruments import DEFAULT_SPREAD_PIPS

app = typer.Typer(help="micro-muzero: Stochastic MuZero on 1-minute forex bars.", no_args_is_help=True)

DbOption = Annotated[Path, typer.Option("--db", help="DuckDB file holding the data set.")]
InstrumentOption = Annotated[str, typer.Option("--instrument", help="Instrument name, e.g. GBPJPY.")]


class InputFormat(StrEnum):
    auto = "auto"
    histdata_ascii = "histdata-ascii"
    histdata_mt = "histdata-mt"
    csv = "csv"


@app.command()
def ingest(
    paths: Annotated[list[Path], typer.Argument(help="Bar files: .csv or the vendor's .zip.")],
    instrument: InstrumentOption,
    db: DbOption,
    fmt: Annotated[InputFormat, typer.Option("--format", help="Input format.")] = InputFormat.auto,
    tz: Annotated[
        str | None,
        typer.Option(help="Zone of naive timestamps (default: UTC-5 for HistData, required for MT4)."),
    ] = None,
    strict: Annotated[
        bool, typer.Option(help="Fail with exit code 2, writing nothing, on any bad row.")
    ] = False,
) -> None:
    """Load 1-minute bars into the database, rejecting invalid rows with a reason."""
    from services.jobs.ingest import IngestError, run_ingest

    try:
        summary = run_ingest(paths, instrument=instrument, db=db, fmt=fmt.value, tz=tz, strict=strict)
    except IngestError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from exc
    typer.echo(summary.render())
    if summary.failed:
        raise typer.Exit(2)


@app.callback()
def _root() -> None:
    """micro-muzero: Stochastic MuZero on 1-minute forex bars."""


def _print_json(payload: dict[str, object]) -> None:
    typer.echo(json.dumps(payload, sort_keys=False))


@app.command()
def features(db: DbOption, instrument: InstrumentOption) -> None:
    """Compute features, outcomes, session starts and the 70/15/15 split for stored bars."""
    from services.jobs.features import run_features

    try:
        summary = run_features(db, instrument)
    except (LookupError, ValueError) as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from exc
    for split, counts in summary["splits"].items():  # type: ignore[union-attr]
        typer.echo(f"{split:>10}: {counts['sessions']:>6} sessions ({counts['valid_starts']} valid starts)")
    _print_json(summary)


class PolicyName(StrEnum):
    hold = "hold"
    random = "random"
    momentum = "momentum"
    oracle = "oracle"


class SplitName(StrEnum):
    train = "train"
    validation = "validation"
    test = "test"
    all = "all"


@app.command()
def evaluate(
    db: DbOption,
    instrument: InstrumentOption,
    policy: Annotated[PolicyName, typer.Option(help="Baseline policy to run.")] = PolicyName.momentum,
    split: Annotated[SplitName, typer.Option(help="Which chronological split.")] = SplitName.test,
    seed: Annotated[int, typer.Option(help="Seed of the random policy.")] = 0,
    spread: Annotated[float, typer.Option(help="Round-trip spread in pips.")] = DEFAULT_SPREAD_PIPS,
    trades_csv: Annotated[Path | None, typer.Option("--trades-csv", help="Write the trade log here.")] = None,
    checkpoint: Annotated[
        Path | None,
        typer.Option(
            help="Evaluate the agent of this checkpoint (a checkpoint directory, or a root: its best)."
        ),
    ] = None,
    start: Annotated[
        datetime | None, typer.Option(help="Only sessions starting at or after this UTC time.")
    ] = None,
    end: Annotated[datetime | None, typer.Option(help="Only sessions ending before this UTC time.")] = None,
    plot: Annotated[
        Path | None, typer.Option(help="Write a PNG equity curve here, with the baselines beside it.")
    ] = None,
    report: Annotated[
        Path | None,
        typer.Option(
            help="Write a self-contained HTML report into this directory (report.html): equity and "
            "drawdown beside the baselines, P&L histogram, breakdowns, the trades."
        ),
    ] = None,
) -> None:
    """Run a policy over every session of a split (and date range); prints a summary table, and the
    last line is the metrics as JSON."""
    from rich.console import Console

    from services.jobs.backtest_report import REPORT_FILE
    from services.jobs.evaluate import run_evaluate
    from shared.model.checkpoint import CheckpointError

    try:
        summary, _ = run_evaluate(
            db,
            instrument,
            split.value,
            policy.value,
            seed=seed,
            spread_pips=spread,
            trades_csv=trades_csv,
            checkpoint=checkpoint,
            start=_utc(start),
            end=_utc(end),
            plot=plot,
            report_dir=report,
            console=Console(),
        )
    except (LookupError, ValueError, CheckpointError) as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from exc
    if report is not None:
        typer.echo(f"report: {report / REPORT_FILE}")
    _print_json(summary)


def _utc(moment: datetime | None) -> datetime | None:
    """Times given without a zone are UTC."""
    if moment is None or moment.tzinfo is not None:
        return moment
    return moment.replace(tzinfo=UTC)


@app.command()
def synth(
    db: DbOption,
    instrument: InstrumentOption,
    bars: Annotated[int, typer.Option("--bars", help="Number of 1-minute bars.")] = 200_000,
    seed: Annotated[int, typer.Option(help="Seed: the same seed gives the same market.")] = 0,
) -> None:
    """Generate a synthetic market with a planted, learnable edge (docs/SYNTHETIC_MARKET.md)."""
    from services.jobs.synth import run_synth

    try:
        summary = run_synth(db, instrument, bars, seed)
    except ValueError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from exc
    typer.echo(f"next: smz features --db {db} --instrument {instrument}")
    _print_json(summary)


class DemoMarketName(StrEnum):
    synthetic = "synthetic"
    gbpjpy_sample = "gbpjpy-sample"


@app.command()
def up(
    market: Annotated[
        DemoMarketName,
        typer.Option(
            help="synthetic: a seeded market with a planted edge and a small agent trained on it in "
            "about three minutes; gbpjpy-sample: the bundled real GBPJPY bars."
        ),
    ] = DemoMarketName.synthetic,
    db: Annotated[Path, typer.Option("--db", help="DuckDB file for the demo data.")] = Path(
        "data/demo.duckdb"
    ),
    checkpoints: Annotated[
        Path | None,
        typer.Option(help="Checkpoint directory; trained first if it holds none (default runs/demo-MARKET)."),
    ] = None,
    run_dir: Annotated[Path, typer.Option(help="Logs and the gateway's ledger.")] = Path("runs/live"),
    train_minutes: Annotated[
        float, typer.Option(help="Length of the first training run on gbpjpy-sample.")
    ] = 3.0,
    split: Annotated[SplitName, typer.Option(help="Replay the sessions of this split.")] = SplitName.test,
    pace_ms: Annotated[
        float, typer.Option(help="Replay pace in ms per bar (0: as fast as possible).")
    ] = 20.0,
    exit_when_done: Annotated[
        bool, typer.Option(help="Stop the stack when the replay is over instead of serving on.")
    ] = False,
    bars: Annotated[
        int | None,
        typer.Option(
            help="Replay only the sessions that end within the split's first N bars (default: all)."
        ),
    ] = None,
) -> None:
    """The main job: the whole live stack replaying a market into paper trading, then the agent's live
    trades beside its backtest and the baselines on the same sessions."""
    from services.jobs.stack import StackError
    from services.jobs.up import run_up

    try:
        summary = run_up(
            db,
            checkpoints,
            run_dir,
            train_minutes,
            pace_ms,
            exit_when_done,
            bars=bars,
            market=market.value,
            split=split.value,
        )
    except (StackError, RuntimeError, ValueError, LookupError) as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(1) from exc
    _print_json(summary)


class RecipeName(StrEnum):
    equity = "equity"
    seed = "seed"


class RewardName(StrEnum):
    equity = "equity"
    amddp1 = "amddp1"


ConfigOption = Annotated[
    Path | None,
    typer.Option(
        "--config",
        help="TOML config file (docs/CONFIG.md): a \\[shared] table and one per service (\\[trainer], "
        "\\[training], \\[model], \\[gateway], \\[inference], \\[feature_builder]). Default: "
        "$SMZ_CONFIG. Precedence: option > environment variable > file > default.",
    ),
]


@app.command()
def train(
    db: Annotated[Path | None, typer.Option("--db", help="DuckDB file holding the data set.")] = None,
    instrument: Annotated[str | None, typer.Option("--instrument", help="Instrument, e.g. GBPJPY.")] = None,
    out: Annotated[
        Path | None, typer.Option("--out", help="Checkpoint directory (resumes from its latest).")
    ] = None,
    minutes: Annotated[float | None, typer.Option(help="Train for this many minutes.")] = None,
    episodes: Annotated[int | None, typer.Option(help="Train for this many more episodes.")] = None,
    workers: Annotated[
        int | None,
        typer.Option(
            help="Processes: 1 alternates self-play and learning; W >= 2 adds W - 1 self-play processes "
            "(default 1)."
        ),
    ] = None,
    ray: Annotated[
        str | None,
        typer.Option(
            "--ray",
            metavar="ADDRESS",
            help="Self-play on Ray actors instead of --workers: a cluster's ADDRESS (host:port), auto (the "
            "cluster RAY_ADDRESS or `ray start` names), or local (a Ray started for this run). "
            "Needs Ray, the package's ray extra.",
        ),
    ] = None,
    actors: Annotated[
        int | None, typer.Option(help="Ray self-play actors with --ray, one CPU each (default 2).")
    ] = None,
    recipe: Annotated[
        RecipeName | None,
        typer.Option(
            help="Defaults of the training configuration: equity (the recipe that learns; docs/TRAINING.md) "
            "or seed (the original design's values, which do not learn). Default: equity."
        ),
    ] = None,
    reward: Annotated[
        RewardName | None,
        typer.Option(
            help="Reward of self-play: equity (equity change per step / 10 pips) or amddp1 (the seed's). "
            "Default: the recipe's."
        ),
    ] = None,
    config: ConfigOption = None,
    set_: Annotated[
        list[str] | None,
        typer.Option(
            "--set",
            help="KEY=VALUE, repeatable: any field of the trainer settings (sessions_per_round=128), the "
            "training configuration (td_steps=10) or a fresh run's model (hidden=64); checked, and wins "
            "over the options above. docs/TRAINING.md lists them.",
        ),
    ] = None,
) -> None:
    """Self-play, replay, MuZero learning, validation and checkpoints; resumes automatically."""
    import signal

    def _terminate(signum: int, frame: object) -> None:
        # SIGTERM (docker stop, kubectl delete) unwinds like Ctrl-C, so self-play processes are stopped.
        raise SystemExit(128 + signum)

    signal.signal(signal.SIGTERM, _terminate)
    from services.logging_setup import configure_logging, shared_log_format
    from services.settings import config_file_from
    from services.trainer.settings import training_run_from
    from services.trainer.worker import run_training

    options = {"db": db, "instrument": instrument, "out": out, "minutes": minutes, "episodes": episodes}
    options |= {"workers": workers, "reward": reward.value if reward is not None else None}
    options |= {"ray": ray, "actors": actors}
    try:
        config_file = config_file_from(config)
        configure_logging("info", shared_log_format(config_file))
        run = training_run_from(config_file, options, recipe.value if recipe else None, set_ or [])
        summary = run_training(run.settings, run.training, run.model)
    except (LookupError, ValueError) as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from exc
    _print_json(summary)


class LiveService(StrEnum):
    feature_builder = "feature-builder"
    inference = "inference"
    broker_gateway = "broker-gateway"


@app.command()
def serve(
    service: Annotated[LiveService, typer.Argument(help="Which live service to run.")],
    config: ConfigOption = None,
) -> None:
    """Run one live service until Ctrl-C or SIGTERM; settings come from SMZ_* environment variables and
    the config file (docs/CONFIG.md)."""
    import importlib

    module = importlib.import_module(f"services.{service.value.replace('-', '_')}.main")
    module.main(config)


@app.command()
def report(
    checkpoint_dir: Annotated[Path, typer.Argument(help="A checkpoint root written by smz train.")],
    out: Annotated[
        Path | None, typer.Option(help="Folder for the PNGs (default: CHECKPOINT_DIR/report).")
    ] = None,
) -> None:
    """PNG plots of a training run: losses, action shares, validation expectancy and equity."""
    from services.jobs.report import run_report

    try:
        written = run_report(checkpoint_dir, out)
    except LookupError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from exc
    for path in written:
        typer.echo(str(path))


@app.command()
def rollout(
    version: Annotated[
        str | None, typer.Argument(help="Checkpoint version to serve (a directory name under --checkpoints).")
    ] = None,
    checkpoints: Annotated[
        Path | None,
        typer.Option(help="Checkpoint root to verify VERSION in (a copy or mount of the cluster's volume)."),
    ] = None,
    namespace: Annotated[
        str, typer.Option("--namespace", "-n", help="Kubernetes namespace.")
    ] = "micro-muzero",
    deployment: Annotated[str, typer.Option(help="The inference Deployment.")] = "inference",
    timeout: Annotated[
        str, typer.Option(help="How long `kubectl rollout status` waits, e.g. 90s, 10m.")
    ] = "10m",
    undo: Annotated[bool, typer.Option("--undo", help="Go back to the previous revision instead.")] = False,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Verify, print the kubectl commands, run none.")
    ] = False,
    kubectl: Annotated[str, typer.Option(help="The kubectl binary.")] = "kubectl",
    context: Annotated[
        str | None, typer.Option(help="kubeconfig context (default: the current one).")
    ] = None,
) -> None:
    """Roll a verified checkpoint version out to the inference Deployment, or back (docs/K8S.md)."""
    from services.jobs import rollout as job

    target = job.Target(namespace, deployment, timeout, kubectl, context)
    try:
        if undo:
            if version is not None:
                raise job.RolloutError("give either VERSION or --undo, not both")
            job.undo(target, runner=job.DEFAULT_RUNNER, dry_run=dry_run, echo=typer.echo)
        else:
            if version is None or checkpoints is None:
                raise job.RolloutError("give VERSION and --checkpoints DIR (or --undo)")
            job.rollout(
                version, checkpoints, target, runner=job.DEFAULT_RUNNER, dry_run=dry_run, echo=typer.echo
            )
    except job.RolloutError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from exc
    except job.KubectlError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(1) from exc


model_app = typer.Typer(help="The six networks.", no_args_is_help=True)
app.add_typer(model_app, name="model")


@model_app.command("info")
def model_info() -> None:
    """Print the model config and the exact parameter count of each network."""
    from shared.model.config import ModelConfig
    from shared.model.networks import MuZeroNetwork, parameter_count, parameter_counts_by_network

    config = ModelConfig()
    net = MuZeroNetwork(config)
    for name, count in parameter_counts_by_network(net).items():
        typer.echo(f"{name:>15}: {count:>10,}")
    typer.echo(f"{'total':>15}: {parameter_count(net):>10,}")
    _print_json({"parameters": parameter_count(net), "config": config.model_dump(mode="json")})


def main() -> None:
    app()


if __name__ == "__main__":
    main()
