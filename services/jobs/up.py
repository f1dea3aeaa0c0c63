"""``smz up``: the main job. The whole live stack on the bundled real sample, in paper trading.

1. Ingest the bundled GBPJPY sample and build its features (idempotent).
2. If the checkpoint directory holds no checkpoint, train a short run to make one (progress bar).
3. Start Redis if none answers, the broker gateway (paper broker), inference and the feature builder,
   which replays the sample's bars into paper trading through Redis, as a live feed would.
4. Print where the APIs, docs and metrics are; Ctrl-C stops everything cleanly.
"""

from __future__ import annotations

import json
import signal
import subprocess
import time
from datetime import UTC, datetime
from pathlib import Path

import httpx
import numpy as np
from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from services.feature_builder.settings import DEFAULT_HISTORY_BARS
from services.jobs.features import run_features
from services.jobs.ingest import run_ingest
from services.jobs.stack import LiveStack, StackConfig, smz_argv
from shared.metrics import trade_metrics
from shared.model.checkpoint import list_checkpoints
from shared.reward import N_ACTIONS
from shared.store import Store

REPO = Path(__file__).resolve().parents[2]
SAMPLE = REPO / "data" / "sample" / "HISTDATA_COM_ASCII_GBPJPY_M1_2017-01-sample.zip"
SAMPLE_INSTRUMENT = "GBPJPY"


def prepare_sample(db: Path, console: Console) -> int:
    """Ingest and featurise the bundled sample; returns its bar count."""
    summary = run_ingest([SAMPLE], instrument=SAMPLE_INSTRUMENT, db=db, fmt="auto", tz=None, strict=False)
    console.print(summary.render())
    features = run_features(db, SAMPLE_INSTRUMENT)
    console.print(f"features: {features['bars']} bars, schema {features['schema_hash']}")
    return int(features["bars"])  # type: ignore[call-overload]


def train_if_needed(db: Path, checkpoints: Path, minutes: float, run_dir: Path, console: Console) -> None:
    """A short training run when there is no checkpoint yet, with a progress bar over its time budget."""
    if checkpoints.exists() and list_checkpoints(checkpoints):
        console.print(f"checkpoint: using {checkpoints} (latest {list_checkpoints(checkpoints)[-1].version})")
        return
    console.print(f"no checkpoint in {checkpoints}: training for {minutes:g} minutes on the sample first")
    log_path = run_dir / "logs" / "trainer.log"
    log_path.parent.mkdir(parents=True, exist_ok=True)
    argv = smz_argv(
        "train",
        "--db",
        str(db),
        "--instrument",
        SAMPLE_INSTRUMENT,
        "--out",
        str(checkpoints),
        "--minutes",
        str(minutes),
        "--initial-temperature",
        "1",
        "--validate-every",
        "64",
        "--validation-sessions",
        "16",
    )
    budget = minutes * 60.0
    with (
        log_path.open("ab") as log,
        Progress(
            TextColumn("[bold]training"),
            BarColumn(),
            TextColumn("{task.fields[status]}"),
            TimeElapsedColumn(),
            console=console,
        ) as progress,
    ):
        proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT)
        task = progress.add_task("train", total=budget, status="")
        started = time.monotonic()
        history = checkpoints / "history.jsonl"
        while proc.poll() is None:
            status = ""
            if history.exists():
                records = [json.loads(line) for line in history.read_text().splitlines() if line]
                rounds = [r for r in records if r.get("kind") == "round"]
                validations = [r for r in records if r.get("kind") == "validation"]
                if rounds:  # validation records carry no update count
                    status = f"episodes {rounds[-1]['episodes']} updates {rounds[-1]['updates']}"
                if validations:
                    v = validations[-1]
                    status += (
                        f"  validation {v['validation_expectancy_pips']:+.2f} pips"
                        f" over {int(v['validation_trades'])} trades"
                    )
            progress.update(task, completed=min(time.monotonic() - started, budget), status=status)
            time.sleep(0.5)
        progress.update(task, completed=budget)
    if proc.returncode != 0 or not list_checkpoints(checkpoints):
        tail = "\n".join(log_path.read_text(errors="replace").splitlines()[-20:])
        raise RuntimeError(f"training failed (exit code {proc.returncode}); {log_path} ends:\n{tail}")


def _endpoints(config: StackConfig) -> Table:
    table = Table(title="micro-muzero live stack (paper trading)")
    table.add_column("what")
    table.add_column("where")
    table.add_row("inference API docs", f"{config.inference_url}/docs")
    table.add_row("decide (POST)", f"{config.inference_url}/v1/decisions")
    table.add_row("broker gateway docs", f"{config.gateway_url}/docs")
    table.add_row("positions / trades", f"{config.gateway_url}/v1/positions  {config.gateway_url}/v1/trades")
    table.add_row("gateway token", f"{config.token}  (header: Authorization: Bearer <token>)")
    table.add_row(
        "metrics",
        f"{config.inference_url}/metrics  {config.gateway_url}/metrics  "
        f"http://{config.host}:{config.feature_builder_metrics_port}/metrics",
    )
    table.add_row("paper account", config.account)
    table.add_row("logs and ledger", str(config.run_dir))
    return table


def _last_bar_traded(config: StackConfig) -> str | None:
    """Open time (ISO, UTC) of the last bar whose order the gateway applied for this run's account."""
    response = httpx.get(
        f"{config.gateway_url}/v1/positions",
        params={"account": config.account, "instrument": config.instrument},
        headers={"Authorization": f"Bearer {config.token}"},
        timeout=10.0,
    )
    response.raise_for_status()
    last = max((int(p["as_of_bar_ts"]) for p in response.json()), default=0)
    return datetime.fromtimestamp(last, UTC).isoformat() if last else None


def _gateway_trades(config: StackConfig) -> list[dict[str, object]]:
    response = httpx.get(
        f"{config.gateway_url}/v1/trades",
        params={"account": config.account, "instrument": config.instrument, "limit": 100_000},
        headers={"Authorization": f"Bearer {config.token}"},
        timeout=10.0,
    )
    response.raise_for_status()
    return list(response.json())


def run_up(
    db: Path,
    checkpoints: Path,
    run_dir: Path,
    train_minutes: float = 3.0,
    pace_ms: float = 20.0,
    exit_when_done: bool = False,
    console: Console | None = None,
    bars: int | None = None,
) -> dict[str, object]:
    """``bars``: replay only the first that many live bars (after the feature builder's warm-up)."""
    console = console or Console()
    console.rule("micro-muzero: the live stack on the bundled GBPJPY sample")
    prepare_sample(db, console)
    train_if_needed(db, checkpoints, train_minutes, run_dir, console)
    with Store(db, read_only=True) as store:
        ts = store.load_bars(SAMPLE_INSTRUMENT).ts
    live = len(ts) - DEFAULT_HISTORY_BARS  # the feature builder warms up on the first bars
    if bars is not None and bars < 1:
        raise ValueError("--bars must be at least 1")
    total_bars = live if bars is None else min(bars, live)
    end = None
    if total_bars < live:
        end = datetime.fromtimestamp(int(ts[DEFAULT_HISTORY_BARS + total_bars]), UTC).isoformat()
    # Each run paper-trades a fresh account: replaying the same bars again is a new run, and the
    # ledger keeps the earlier ones.
    account = "paper-" + datetime.now(UTC).strftime("%Y%m%dT%H%M%S")
    config = StackConfig(
        db=db,
        instrument=SAMPLE_INSTRUMENT,
        checkpoint_dir=checkpoints,
        run_dir=run_dir,
        pace_ms=pace_ms,
        account=account,
        end=end,
    )
    stack = LiveStack(config)
    stopping = False

    def _stop(signum: int, frame: object) -> None:
        nonlocal stopping
        stopping = True

    previous = signal.signal(signal.SIGINT, _stop)
    signal.signal(signal.SIGTERM, _stop)
    summary: dict[str, object] = {}
    try:
        started_redis = stack.ensure_redis()
        if started_redis:
            console.print(f"started a private Redis at {config.redis_url}")
        stack.start_services()
        console.print(_endpoints(config))
        console.print(f"replaying {total_bars} real bars at {pace_ms:g} ms per bar into paper trading")
        with Progress(
            TextColumn("[bold]replay"),
            TextColumn("{task.fields[status]}"),
            TimeElapsedColumn(),
            console=console,
        ) as progress:
            task = progress.add_task("replay", status="")
            while not stopping and stack.feature_builder.alive():
                progress.update(task, status=_status(config))
                for service in (stack.gateway, stack.inference):
                    if not service.alive():
                        raise RuntimeError(f"{service.name} died; its log ends:\n{service.tail()}")
                time.sleep(0.5)
            time.sleep(1.0)  # the last bar's order
            progress.update(task, status=_status(config))
        trades = _gateway_trades(config)
        pnl = [float(t["pnl_pips"]) for t in trades]  # type: ignore[arg-type]
        metrics = trade_metrics(np.asarray(pnl), 1, np.zeros(N_ACTIONS, dtype=np.int64)) if pnl else None
        summary = {
            "bars": total_bars,
            "last_bar_traded": _last_bar_traded(config),
            "trades": len(trades),
            "expectancy_pips": metrics.expectancy_pips if metrics else 0.0,
            "total_pips": sum(pnl),
        }
        # Ctrl-C (or SIGTERM) during the replay stops the feature builder too: say so, not "finished".
        console.print(f"{'replay stopped early' if stopping else 'replay finished'}: {json.dumps(summary)}")
        if not exit_when_done:
            console.print("the stack keeps serving; Ctrl-C stops it")
            while not stopping:
                for service in (stack.gateway, stack.inference):
                    if not service.alive():
                        raise RuntimeError(f"{service.name} died; its log ends:\n{service.tail()}")
                time.sleep(0.5)
    finally:
        console.print("stopping the stack")
        stack.stop()
        signal.signal(signal.SIGINT, previous)
    return summary


def _status(config: StackConfig) -> str:
    try:
        positions = httpx.get(
            f"{config.gateway_url}/v1/positions",
            params={"account": config.account},
            headers={"Authorization": f"Bearer {config.token}"},
            timeout=2.0,
        ).json()
        trades = _gateway_trades(config)
    except (httpx.HTTPError, ValueError):
        return ""
    pnl = sum(float(t["pnl_pips"]) for t in trades)  # type: ignore[arg-type]
    side = {1: "long", -1: "short", 0: "flat"}
    open_side = next((side.get(int(p.get("side", 0)), "?") for p in positions), "flat")
    return f"trades {len(trades)}  P&L {pnl:+.1f} pips  position {open_side}"
