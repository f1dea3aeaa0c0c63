"""``smz up``: the main job. The whole live stack replaying a market into paper trading.

1. Prepare the market (idempotent): by default a seeded synthetic market with a planted edge
   (``--market synthetic``, docs/SYNTHETIC_MARKET.md); ``--market gbpjpy-sample`` takes the bundled
   three weeks of real GBPJPY bars instead.
2. If the checkpoint directory holds no checkpoint, train one first (progress bar): on the synthetic
   market a small network for a fixed number of episodes with the default recipe (about three
   minutes on two cores), so the demo is reproducible.
3. Start Redis if none answers, the broker gateway (paper broker), inference and the feature builder,
   which replays the sessions of one split (the test split: bars training never saw) through Redis
   into paper trading, as a live feed would.
4. At the end, print what the agent did live beside ``smz evaluate`` of the same checkpoint on the
   same sessions (they must agree trade for trade) and the baselines on those sessions.
Ctrl-C stops everything cleanly.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import httpx
import numpy as np
import redis
from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from services.jobs.evaluate import run_evaluate, session_starts
from services.jobs.features import run_features
from services.jobs.ingest import run_ingest
from services.jobs.stack import LiveStack, StackConfig, smz_argv
from services.jobs.synth import run_synth
from services.settings import SharedSettings
from shared.model.checkpoint_root import list_checkpoints
from shared.sessions import SESSION_BARS
from shared.store import Store
from shared.trading.rules import side_name

REPO = Path(__file__).resolve().parents[2]
SAMPLE = REPO / "data" / "sample" / "HISTDATA_COM_ASCII_GBPJPY_M1_2017-01-sample.zip"
SAMPLE_INSTRUMENT = "GBPJPY"
SYNTH_INSTRUMENT = "SYNTHJPY"
SYNTH_BARS = 200_000
SYNTH_SEED = 0
# The demo's training run: a small network (hidden 64) for a fixed number of episodes with the default
# recipe, its temperature falling over those episodes. The CI-sized learning test trains the same.
DEMO_EPISODES = 768
DEMO_TRAIN_ARGS = (
    "--episodes", str(DEMO_EPISODES), "--workers", "1", "--set", "sessions_per_round=128",
    "--set", "updates_per_round=400", "--set", f"validate_every={DEMO_EPISODES}",
    "--set", "validation_sessions=64", "--set", "hidden=64", "--set", "tcn_channels=16",
    "--set", f"temperature_decay_episodes={DEMO_EPISODES}", "--set", "seed=0",
)  # fmt: skip


@dataclass(frozen=True)
class DemoMarket:
    name: str
    instrument: str
    description: str
    prepare: Callable[[Path, Console], None]
    train_args: Callable[[float], tuple[str, ...]]  # given --train-minutes
    has_oracle: bool


def prepare_sample(db: Path, console: Console) -> None:
    """Ingest and featurise the bundled real GBPJPY sample."""
    summary = run_ingest([SAMPLE], instrument=SAMPLE_INSTRUMENT, db=db, fmt="auto", tz=None, strict=False)
    console.print(summary.render())
    features = run_features(db, SAMPLE_INSTRUMENT)
    console.print(f"features: {features['bars']} bars, schema {features['schema_hash']}")


def prepare_synthetic(db: Path, console: Console) -> None:
    """Generate the seeded synthetic market once (the same seed gives the same bars) and featurise it."""
    with Store(db) as store:
        stored = len(store.load_bars(SYNTH_INSTRUMENT).ts) if SYNTH_INSTRUMENT in store.instruments() else 0
    if stored == 0:
        run_synth(db, SYNTH_INSTRUMENT, SYNTH_BARS, SYNTH_SEED)
        features = run_features(db, SYNTH_INSTRUMENT)
        console.print(f"synthetic market: {features['bars']} bars (seed {SYNTH_SEED}), featurised")
    else:
        console.print(f"synthetic market: {stored} bars in {db}")


MARKETS = {
    "synthetic": DemoMarket(
        "synthetic",
        SYNTH_INSTRUMENT,
        f"synthetic {SYNTH_INSTRUMENT}, {SYNTH_BARS:,} bars, seed {SYNTH_SEED}, with a planted edge",
        prepare_synthetic,
        lambda minutes: DEMO_TRAIN_ARGS,
        True,
    ),
    "gbpjpy-sample": DemoMarket(
        "gbpjpy-sample",
        SAMPLE_INSTRUMENT,
        "real GBPJPY bars, the bundled three weeks of January 2017",
        prepare_sample,
        lambda minutes: (
            "--minutes",
            str(minutes),
            "--set",
            "validate_every=64",
            "--set",
            "validation_sessions=16",
        ),
        False,
    ),
}


def train_if_needed(
    db: Path, checkpoints: Path, market: DemoMarket, minutes: float, run_dir: Path, console: Console
) -> None:
    """A first training run when there is no checkpoint yet, with a progress bar."""
    if checkpoints.exists() and list_checkpoints(checkpoints):
        console.print(f"checkpoint: using {checkpoints} (latest {list_checkpoints(checkpoints)[-1].version})")
        return
    args = market.train_args(minutes)
    by_episodes = "--episodes" in args
    what = f"{DEMO_EPISODES} episodes" if by_episodes else f"{minutes:g} minutes"
    console.print(f"no checkpoint in {checkpoints}: training for {what} on the {market.name} market first")
    log_path = run_dir / "logs" / "trainer.log"
    log_path.parent.mkdir(parents=True, exist_ok=True)
    argv = smz_argv(
        "train", "--db", str(db), "--instrument", market.instrument, "--out", str(checkpoints), *args
    )
    budget = float(DEMO_EPISODES) if by_episodes else minutes * 60.0
    env = {**os.environ, "SMZ_TRAINER_METRICS_PORT": "0"}  # the demo's trainer serves no metrics
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
        proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, env=env)
        task = progress.add_task("train", total=budget, status="")
        started = time.monotonic()
        history = checkpoints / "history.jsonl"
        while proc.poll() is None:
            status, episodes = _training_status(history)
            done = episodes if by_episodes else time.monotonic() - started
            progress.update(task, completed=min(done, budget), status=status)
            time.sleep(0.5)
        progress.update(task, completed=budget, status=_training_status(history)[0])
    if proc.returncode != 0 or not list_checkpoints(checkpoints):
        tail = "\n".join(log_path.read_text(errors="replace").splitlines()[-20:])
        raise RuntimeError(f"training failed (exit code {proc.returncode}); {log_path} ends:\n{tail}")


def _training_status(history: Path) -> tuple[str, float]:
    if not history.exists():
        return "", 0.0
    records = []
    for line in history.read_text().splitlines():
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError:
            continue  # a line still being written
    rounds = [r for r in records if r.get("kind") == "round"]
    validations = [r for r in records if r.get("kind") == "validation"]
    status, episodes = "", 0.0
    if rounds:  # validation records come after their round
        status = f"episodes {rounds[-1]['episodes']} updates {rounds[-1]['updates']}"
        episodes = float(rounds[-1]["episodes"])
    if validations:
        v = validations[-1]
        status += (
            f"  validation {v['validation_expectancy_pips']:+.2f} pips"
            f" over {int(v['validation_trades'])} trades"
        )
    return status, episodes


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
    table.add_row("paper account", config.shared.account)
    table.add_row("logs and ledger", str(config.run_dir))
    return table


def _last_bar_traded(config: StackConfig) -> str | None:
    """Open time (ISO, UTC) of the last bar whose order the gateway applied for this run's account."""
    response = httpx.get(
        f"{config.gateway_url}/v1/positions",
        params={"account": config.shared.account, "instrument": config.instrument},
        headers={"Authorization": f"Bearer {config.token}"},
        timeout=10.0,
    )
    response.raise_for_status()
    last = max((int(p["as_of_bar_ts"]) for p in response.json()), default=0)
    return datetime.fromtimestamp(last, UTC).isoformat() if last else None


def _gateway_trades(config: StackConfig) -> list[dict[str, object]]:
    response = httpx.get(
        f"{config.gateway_url}/v1/trades",
        params={"account": config.shared.account, "instrument": config.instrument, "limit": 100_000},
        headers={"Authorization": f"Bearer {config.token}"},
        timeout=10.0,
    )
    response.raise_for_status()
    return list(response.json())


@dataclass(frozen=True)
class ReplayPlan:
    """The sessions to replay: the backtest's tiled sessions of one split, back to back in time."""

    starts: np.ndarray  # bar indices of the sessions
    start: datetime  # open time of the first session's first bar
    end: datetime | None  # the replay stops before this bar (None: the data's end)
    bars: int  # live bars replayed


def plan_replay(db: Path, instrument: str, split: str, bars: int | None) -> ReplayPlan:
    """The split's sessions, or those of them that end within its first ``bars`` live bars."""
    if bars is not None and bars < 1:
        raise ValueError("--bars must be at least 1")
    with Store(db, read_only=True) as store:
        dataset = store.load_dataset(instrument)
    starts = session_starts(dataset, split)
    if len(starts) == 0:
        raise LookupError(f"{instrument} has no complete session in its {split} split to replay")
    first = int(starts[0])
    if bars is not None:
        starts = starts[starts + SESSION_BARS <= first + bars]
        if len(starts) == 0:
            raise ValueError(f"--bars {bars} holds no whole session; give at least {SESSION_BARS}")
    ts = dataset.bars.ts
    stop = int(starts[-1]) + SESSION_BARS  # the bar after the last session
    end = datetime.fromtimestamp(int(ts[stop]), UTC) if stop < len(ts) else None
    return ReplayPlan(starts, datetime.fromtimestamp(int(ts[first]), UTC), end, stop - first)


def run_up(
    db: Path,
    checkpoints: Path | None,
    run_dir: Path,
    train_minutes: float = 3.0,
    pace_ms: float = 20.0,
    exit_when_done: bool = False,
    console: Console | None = None,
    bars: int | None = None,
    market: str = "synthetic",
    split: str = "test",
) -> dict[str, object]:
    """``bars``: replay only the sessions that end within the split's first that many bars."""
    console = console or Console()
    if market not in MARKETS:
        raise ValueError(f"unknown market {market!r}; choose {' or '.join(MARKETS)}")
    demo = MARKETS[market]
    checkpoints = checkpoints or Path("runs") / f"demo-{demo.name}"
    console.rule(f"micro-muzero: the live stack on {demo.description}")
    demo.prepare(db, console)
    train_if_needed(db, checkpoints, demo, train_minutes, run_dir, console)
    plan = plan_replay(db, demo.instrument, split, bars)
    config = run_config(db, demo.instrument, checkpoints, run_dir, plan, pace_ms)
    stack = LiveStack(config)
    stop = threading.Event()
    previous = signal.signal(signal.SIGINT, lambda signum, frame: stop.set())
    signal.signal(signal.SIGTERM, lambda signum, frame: stop.set())
    summary: dict[str, object] = {}
    try:
        if stack.ensure_redis():
            console.print(f"started a private Redis at {config.shared.redis_url}")
        stack.start_services()
        console.print(_endpoints(config))
        console.print(
            f"replaying {plan.bars} bars ({len(plan.starts)} sessions of the {split} split, from "
            f"{plan.start:%Y-%m-%d %H:%M} UTC) at {pace_ms:g} ms per bar into paper trading"
        )
        _watch_replay(stack, stop, console)
        # Ctrl-C (or SIGTERM) during the replay stops the feature builder too: say so, not "finished".
        console.print("replay stopped early" if stop.is_set() else "replay finished")
        summary = summarise(db, demo, split, plan, config, console, complete=not stop.is_set())
        console.print(json.dumps(summary))
        if not exit_when_done:
            console.print("the stack keeps serving; Ctrl-C stops it")
            while not stop.is_set():
                _check_serving(stack)
                time.sleep(0.5)
    finally:
        console.print("stopping the stack")
        stack.stop()
        signal.signal(signal.SIGINT, previous)
        _delete_run_streams(config)
    return summary


def run_config(
    db: Path, instrument: str, checkpoints: Path, run_dir: Path, plan: ReplayPlan, pace_ms: float
) -> StackConfig:
    """The stack of one ``smz up`` run. Each run paper-trades a fresh account (replaying the same bars
    again is a new run, and the ledger keeps the earlier ones) on streams and a consumer of its own: an
    earlier run's entry left pending (Ctrl-C mid-bar) must not become this run's first order."""
    account = "paper-" + datetime.now(UTC).strftime("%Y%m%dT%H%M%S")
    return StackConfig(
        db=db,
        instrument=instrument,
        checkpoint_dir=checkpoints,
        run_dir=run_dir,
        shared=SharedSettings(
            account=account,
            windows_stream=f"smz:{account}:windows",
            positions_stream=f"smz:{account}:positions",
        ),
        pace_ms=pace_ms,
        consumer=f"inference-{account}",
        start=plan.start.isoformat(),
        end=plan.end.isoformat() if plan.end else None,
    )


def _check_serving(stack: LiveStack) -> None:
    for service in (stack.gateway, stack.inference):
        if not service.alive():
            raise RuntimeError(f"{service.name} died; its log ends:\n{service.tail()}")


def _watch_replay(stack: LiveStack, stop: threading.Event, console: Console) -> None:
    """A status line until the feature builder's replay ends (or a stop is asked for)."""
    with Progress(
        TextColumn("[bold]replay"), TextColumn("{task.fields[status]}"), TimeElapsedColumn(), console=console
    ) as progress:
        task = progress.add_task("replay", status="")
        while not stop.is_set() and stack.feature_builder.alive():
            progress.update(task, status=_status(stack.config))
            _check_serving(stack)
            time.sleep(0.5)
        time.sleep(1.0)  # the last bar's order
        progress.update(task, status=_status(stack.config))


def _delete_run_streams(config: StackConfig) -> None:
    """This run's streams are of no use to the next one; the ledger keeps what happened."""
    with contextlib.suppress(redis.RedisError):
        client = redis.Redis.from_url(config.shared.redis_url, socket_connect_timeout=1)
        client.delete(config.shared.windows_stream, config.shared.positions_stream)
        client.close()


def summarise(
    db: Path,
    demo: DemoMarket,
    split: str,
    plan: ReplayPlan,
    config: StackConfig,
    console: Console,
    complete: bool = True,
) -> dict[str, object]:
    """What the agent did live, beside ``smz evaluate`` of the same checkpoint on the same sessions and
    the baselines there. Live and backtest must agree trade for trade over the replayed sessions."""
    with Store(db, read_only=True) as store:
        ts = store.load_bars(demo.instrument).ts
    every = [_trade_key(t) for t in _gateway_trades(config)]
    # Only the backtest's sessions compare: a live session that a gap cut short (exit reason
    # session_break) is one the backtest never starts; its trades are reported apart.
    live, cut_short = split_by_sessions(every, ts[plan.starts], ts[plan.starts + SESSION_BARS - 1])
    common = {"split": split, "start": plan.start, "end": plan.end}
    backtest, result = run_evaluate(
        db, demo.instrument, policy_name="muzero", checkpoint=config.checkpoint_dir, **common
    )  # type: ignore[arg-type]
    expected = [_trade_key(t) for t in result.trades.rows()]
    baselines = {
        name: run_evaluate(db, demo.instrument, policy_name=name, **common)[0]  # type: ignore[arg-type]
        for name in ("hold", "random", "momentum", *(["oracle"] if demo.has_oracle else []))
    }
    pnl = np.array([t[-2] for t in live], dtype=np.float64)
    summary: dict[str, object] = {
        "market": demo.description,
        "instrument": demo.instrument,
        "checkpoint": backtest["checkpoint"],
        "entry_gate": backtest["entry_gate"],
        "sessions": int(backtest["sessions"]),  # type: ignore[call-overload]
        "bars": plan.bars,
        "last_bar_traded": _last_bar_traded(config),
        "trades": len(live),
        "trades_in_sessions_cut_by_gaps": len(cut_short),
        "expectancy_pips": float(pnl.mean()) if len(pnl) else 0.0,
        "total_pips": float(pnl.sum()),
        "backtest": {
            k: backtest[k] for k in ("trades", "expectancy_pips", "total_pips", "expectancy_ci95", "health")
        },
        "matches_backtest": live == expected,
        "baselines": {
            name: {k: r[k] for k in ("trades", "expectancy_pips", "total_pips")}
            for name, r in baselines.items()
        },
    }
    table = Table(title=f"{demo.description}: {summary['sessions']} sessions of the {split} split")
    for column in ("policy", "trades", "pips / trade", "total pips"):
        table.add_column(column, justify="left" if column == "policy" else "right")
    table.add_row(
        f"agent live ({summary['checkpoint']})", str(len(live)), f"{summary['expectancy_pips']:+.2f}",
        f"{summary['total_pips']:+.1f}",
    )  # fmt: skip
    table.add_row(
        "agent backtest (smz evaluate)", str(backtest["trades"]), f"{backtest['expectancy_pips']:+.2f}",
        f"{backtest['total_pips']:+.1f}",
    )  # fmt: skip
    for name, r in baselines.items():
        table.add_row(name, str(r["trades"]), f"{r['expectancy_pips']:+.2f}", f"{r['total_pips']:+.1f}")
    console.print(table)
    if complete:
        verdict = (
            "live = backtest, trade for trade"
            if summary["matches_backtest"]
            else "live DIFFERS from the backtest"
        )
        console.print(verdict)
    return summary


def split_by_sessions(
    trades: list[tuple[object, ...]], first_ts: np.ndarray, last_ts: np.ndarray
) -> tuple[list[tuple[object, ...]], list[tuple[object, ...]]]:
    """Trades (``_trade_key`` tuples) wholly inside one of the sessions [first_ts, last_ts], and the rest."""
    inside, outside = [], []
    for trade in trades:
        entry, exit_ = int(trade[1]), int(trade[3])  # type: ignore[call-overload]
        k = int(np.searchsorted(first_ts, entry, side="right")) - 1
        (inside if k >= 0 and exit_ <= last_ts[k] else outside).append(trade)
    return inside, outside


def _trade_key(trade: dict[str, object]) -> tuple[object, ...]:
    return tuple(
        trade[k]
        for k in ("side", "entry_ts", "entry_price", "exit_ts", "exit_price", "pnl_pips", "exit_reason")
    )


def _status(config: StackConfig) -> str:
    try:
        positions = httpx.get(
            f"{config.gateway_url}/v1/positions",
            params={"account": config.shared.account},
            headers={"Authorization": f"Bearer {config.token}"},
            timeout=2.0,
        ).json()
        trades = _gateway_trades(config)
    except (httpx.HTTPError, ValueError):
        return ""
    pnl = sum(float(t["pnl_pips"]) for t in trades)  # type: ignore[arg-type]
    open_side = next((side_name(int(p.get("side", 0))) for p in positions), "flat")
    return f"trades {len(trades)}  P&L {pnl:+.1f} pips  position {open_side}"
