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


@app.command()
def train(
    db: DbOption,
    instrument: InstrumentOption,
    out: Annotated[Path, typer.Option("--out", help="Checkpoint directory (resumes from its latest).")],
    minutes: Annotated[float | None, typer.Option(help="Train for this many minutes.")] = None,
    episodes: Annotated[int | None, typer.Option(help="Train for this many more episodes.")] = None,
    workers: Annotated[
        int | None,
        typer.Option(
            help="Processes: 1 alternates self-play and learning; W >= 2 adds W - 1 self-play processes "
            "(default 1)."
        ),
    ] = None,
    sessions_per_round: Annotated[
        int | None, typer.Option(help="Self-play sessions stepped together (default 64).")
    ] = None,
    updates_per_round: Annotated[
        int | None,
        typer.Option(help="Learner updates per round, per --sessions-per-round episodes (default 128)."),
    ] = None,
    validate_every: Annotated[
        int | None, typer.Option(help="Episodes between validations (default 512).")
    ] = None,
    seed: Annotated[int | None, typer.Option(help="Seed of a fresh run (default 0).")] = None,
    recipe: Annotated[
        RecipeName | None,
        typer.Option(
            help="Defaults of the options below: equity (the recipe that learns; docs/TRAINING.md) or "
            "seed (the original design's values, which do not learn); default equity. An option given wins."
        ),
    ] = None,
    temperature_decay_episodes: Annotated[
        int | None,
        typer.Option(help="Episodes over which the visit temperature falls (equity 3,000; seed 50,000)."),
    ] = None,
    initial_temperature: Annotated[
        float | None, typer.Option(help="Visit temperature of the first episode (equity 1; seed 10).")
    ] = None,
    final_temperature: Annotated[
        float | None, typer.Option(help="Visit temperature once the decay is over (equity 0.25; seed 1).")
    ] = None,
    td_steps: Annotated[
        int | None, typer.Option(help="n of the n-step value target (equity 30; seed 10).")
    ] = None,
    validation_sessions: Annotated[
        int | None, typer.Option(help="Validation sessions per validation, at most (default 64).")
    ] = None,
    reward: Annotated[
        RewardName | None,
        typer.Option(
            help="Reward of self-play: equity (equity change per step / 10 pips) or amddp1 (the seed's; "
            "docs/TRAINING.md). Default: the recipe's (equity; seed: amddp1)."
        ),
    ] = None,
    event_share: Annotated[
        float | None,
        typer.Option(
            help="Share of each batch unrolled from just before a BUY, SELL or CLOSE (equity 0.5; seed 0)."
        ),
    ] = None,
    policy_weight: Annotated[
        float | None, typer.Option(help="Weight of the policy loss (equity 0; seed 0.25).")
    ] = None,
    explore_in_position: Annotated[
        float | None,
        typer.Option(
            help="Share of self-play's decisions in a position that explore with root noise and "
            "temperature (equity 0.03; seed 1, every one); the rest act greedily."
        ),
    ] = None,
    hidden: Annotated[
        int | None,
        typer.Option(help="Hidden size of a fresh run's networks (default 256; the demo's small model: 64)."),
    ] = None,
    tcn_channels: Annotated[
        int | None,
        typer.Option(help="TCN channels of a fresh run's representation (default 48; small: 16)."),
    ] = None,
    config: Annotated[
        Path | None,
        typer.Option(
            "--config",
            help="TOML file: a \\[trainer] table of these settings and a \\[training] table of the training "
            "configuration (recipe included). Precedence: option > SMZ_TRAINER_* variable > file > default.",
        ),
    ] = None,
    set_: Annotated[
        list[str] | None,
        typer.Option(
            "--set",
            help="KEY=VALUE of the training configuration (any field of shared.training.config."
            "TrainingConfig, e.g. --set batch_size=128); repeatable; wins over the file and the options.",
        ),
    ] = None,
) -> None:
    """Self-play, replay, MuZero learning, validation and checkpoints; resumes automatically."""
    import signal

    def _terminate(signum: int, frame: object) -> None:
        # SIGTERM (docker stop, kubectl delete) unwinds like Ctrl-C, so self-play processes are stopped.
        raise SystemExit(128 + signum)

    signal.signal(signal.SIGTERM, _terminate)
    from services.trainer.settings import TrainerSettings
    from services.trainer.worker import run_training

    try:
        settings = TrainerSettings.load(
            config,
            db=db,
            instrument=instrument,
            out=out,
            minutes=minutes,
            episodes=episodes,
            workers=workers,
            sessions_per_round=sessions_per_round,
            updates_per_round=updates_per_round,
            validate_every=validate_every,
            validation_sessions=validation_sessions,
            seed=seed,
        )
        from services.trainer.settings import training_from

        given = {
            "temperature_decay_episodes": temperature_decay_episodes,
            "initial_temperature": initial_temperature,
            "final_temperature": final_temperature,
            "td_steps": td_steps,
            "reward": reward.value if reward is not None else None,
            "event_share": event_share,
            "policy_weight": policy_weight,
            "explore_in_position": explore_in_position,
        }
        config_model = training_from(
            config_file=config,
            recipe=recipe.value if recipe is not None else None,
            options={k: v for k, v in given.items() if v is not None},
            assignments=set_ or [],
        )
        from shared.model.config import ModelConfig

        sizes = {k: v for k, v in {"hidden": hidden, "tcn_channels": tcn_channels}.items() if v is not None}
        summary = run_training(settings, config_model, ModelConfig(**sizes) if sizes else None)
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
) -> None:
    """Run one live service until Ctrl-C or SIGTERM; settings come from SMZ_* environment variables
    (docs/LIVE.md lists them)."""
    import importlib

    module = importlib.import_module(f"services.{service.value.replace('-', '_')}.main")
    module.main()


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
