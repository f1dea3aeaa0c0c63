"""``smz evaluate``: run a policy over every session of a split and report CONTRACT section 9 metrics."""

from __future__ import annotations

import csv
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

import numpy as np
from rich.console import Console

from services.jobs.backtest_report import equity_figure, print_summary, utc_time, write_html_report
from shared.backtest_report import BacktestSummary, backtest_summary
from shared.dataset import Dataset
from shared.env import TRADE_LOG_FIELDS, EnvConfig, MarketData
from shared.evaluation import EvaluationResult, evaluate_policy
from shared.instruments import DEFAULT_SPREAD_PIPS
from shared.model.checkpoint import MANIFEST_FILE, load_checkpoint
from shared.model.checkpoint_root import read_pointer, resolve_checkpoint
from shared.model.inference import make_model_functions
from shared.policies import (
    BASELINES,
    HoldPolicy,
    MomentumPolicy,
    OraclePolicy,
    Policy,
    RandomPolicy,
    SearchPolicy,
)
from shared.search import EntryGate, SearchConfig
from shared.sessions import SESSION_BARS, SPLITS, tile_sessions
from shared.store import Store


def make_policy(name: str, store: Store, instrument: str, bars_ts: np.ndarray, seed: int) -> Policy:
    if name == "hold":
        return HoldPolicy()
    if name == "random":
        return RandomPolicy(seed)
    if name == "momentum":
        return MomentumPolicy()
    if name == "oracle":
        regime_ts, regime = store.load_regimes(instrument)
        if len(regime) == 0:
            raise LookupError(
                f"{instrument} has no hidden regimes: the oracle exists only for synthetic markets "
                "made with `smz synth`"
            )
        if not np.array_equal(regime_ts, bars_ts):
            raise LookupError(f"{instrument}: the stored regimes do not line up with the stored bars")
        return OraclePolicy(regime)
    raise ValueError(f"unknown policy {name!r}; choose hold, random, momentum or oracle")


@dataclass(frozen=True)
class CheckpointAgent:
    """A checkpoint's agent as it is served: the serving search with the entry gate of its manifest."""

    policy: Policy
    version: str
    reward: str  # the reward it was trained with, which its backtest computes
    gate: EntryGate | None


def checkpoint_policy(path: Path, simulations: int = 25) -> CheckpointAgent:
    """The agent of a checkpoint (a checkpoint directory, or a root meaning its best, else latest)."""
    which = "best" if read_pointer(path, "best") else "latest"
    resolved = resolve_checkpoint(path, which) if not (path / MANIFEST_FILE).exists() else path
    loaded = load_checkpoint(resolved)
    fns = make_model_functions(loaded.model, "auto")
    gate = EntryGate.from_manifest(loaded.manifest.serving)
    config = SearchConfig(num_simulations=simulations).gated(gate)
    return CheckpointAgent(SearchPolicy(fns, config), loaded.manifest.version, loaded.manifest.reward, gate)


def session_starts(
    dataset: Dataset, split: str, start: datetime | None = None, end: datetime | None = None
) -> np.ndarray:
    """Non-overlapping sessions of a split (or of ``all`` splits) that lie wholly in [start, end)."""
    if split != "all" and split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; choose one of {', '.join(SPLITS)} or all")
    names = SPLITS if split == "all" else (split,)
    starts = np.sort(np.concatenate([dataset.starts_of(name) for name in names]))
    ts = dataset.bars.ts
    if start is not None:
        starts = starts[ts[starts] >= int(start.timestamp())]
    if end is not None:
        starts = starts[ts[starts + SESSION_BARS - 1] < int(end.timestamp())]
    return tile_sessions(starts)


@dataclass(frozen=True)
class Backtest:
    """One ``smz evaluate`` run: its JSON line, and each policy run on the same sessions."""

    report: dict[str, object]  # the JSON line: the run's settings and the policy's metrics
    policy: str  # the evaluated policy's key in ``results`` ("muzero" for a checkpoint's agent)
    results: dict[str, EvaluationResult]  # the policy first, then the baselines when asked for
    session_ts: np.ndarray  # (sessions, 2): first and last bar time of each evaluated session
    title: str
    _summaries: dict[str, BacktestSummary] = field(default_factory=dict, repr=False, compare=False)

    @property
    def result(self) -> EvaluationResult:
        return self.results[self.policy]

    def summary(self, name: str) -> BacktestSummary:
        """The report's numbers of one result, computed when first asked for (a table or a report)."""
        if name not in self._summaries:
            self._summaries[name] = backtest_summary(self.results[name].trades, self.session_ts)
        return self._summaries[name]


def _load_policies(
    db: Path,
    instrument: str,
    sessions: tuple[str, datetime | None, datetime | None],
    main: list[str],
    baselines: bool,
    seed: int,
) -> tuple[Dataset, np.ndarray, dict[str, Policy]]:
    """The data set, the session starts of (split, start, end), and the ``main`` policies followed by
    the baselines (and the oracle where the market has hidden regimes) when asked for."""
    split, start, end = sessions
    with Store(db, read_only=True) as store:
        dataset = store.load_dataset(instrument)
        starts = session_starts(dataset, split, start, end)
        if len(starts) == 0:
            window = f" between {start} and {end}" if start or end else ""
            raise LookupError(f"{instrument} has no complete session in the {split} split{window}")
        has_regimes = len(store.load_regimes(instrument)[1]) > 0
        names = main + ([*BASELINES, *(["oracle"] if has_regimes else [])] if baselines else [])
        policies = {
            name: make_policy(name, store, instrument, dataset.bars.ts, seed) for name in dict.fromkeys(names)
        }
    return dataset, starts, policies


def run_backtest(
    db: Path,
    instrument: str,
    sessions: tuple[str, datetime | None, datetime | None],
    policy_name: str,
    *,
    checkpoint: Path | None = None,
    seed: int = 0,
    spread_pips: float = DEFAULT_SPREAD_PIPS,
    baselines: bool = False,
) -> Backtest:
    """Evaluate a baseline, or a checkpoint's agent, over the sessions of (split, start, end); with
    ``baselines``, every baseline too (and the oracle where it exists) on the same sessions."""
    split, start, end = sessions
    main = [policy_name] if checkpoint is None else []
    dataset, starts, policies = _load_policies(db, instrument, sessions, main, baselines, seed)
    agent = None
    if checkpoint is not None:
        agent = checkpoint_policy(checkpoint)
        policy_name = "muzero"
        policies = {policy_name: agent.policy, **policies}
    version = agent.version if agent else None
    market = MarketData(instrument, dataset.bars.ts, dataset.bars.close, dataset.features)
    # A checkpoint's backtest computes the reward it was trained with (trades and P&L are the same).
    env_config = EnvConfig(spread_pips=spread_pips, reward=agent.reward if agent else "equity")
    results = {name: evaluate_policy(market, starts, p, env_config) for name, p in policies.items()}
    report = {
        "instrument": instrument,
        "split": split,
        **({"start": start.isoformat()} if start else {}),
        **({"end": end.isoformat()} if end else {}),
        "policy": policy_name,
        **({"checkpoint": version} if version else {}),
        **({"entry_gate": agent.gate.model_dump() if agent.gate else None} if agent else {}),
        "reward": env_config.reward,
        "spread_pips": spread_pips,
        **results[policy_name].metrics.model_dump(),
    }
    return Backtest(
        report=report,
        policy=policy_name,
        results=results,
        session_ts=np.stack([dataset.bars.ts[starts], dataset.bars.ts[starts + SESSION_BARS - 1]], axis=1),
        title=f"{instrument} {split}" + (f" ({version})" if version else ""),
    )


def run_evaluate(
    db: Path,
    instrument: str,
    split: str,
    policy_name: str,
    seed: int = 0,
    spread_pips: float = DEFAULT_SPREAD_PIPS,
    trades_csv: Path | None = None,
    checkpoint: Path | None = None,
    start: datetime | None = None,
    end: datetime | None = None,
    plot: Path | None = None,
    report_dir: Path | None = None,
    console: Console | None = None,
) -> tuple[dict[str, object], EvaluationResult]:
    """Evaluate a baseline, or a checkpoint's agent, over the sessions of a split and date range;
    return the JSON line and the policy's result.

    ``plot`` writes a PNG of the equity curve with the baselines beside it, on the same sessions;
    ``report_dir`` the HTML report (``report.html``) with them; ``console`` gets the summary table.
    """
    backtest = run_backtest(
        db, instrument, (split, start, end), policy_name, checkpoint=checkpoint, seed=seed,
        spread_pips=spread_pips, baselines=plot is not None or report_dir is not None,
    )  # fmt: skip
    if trades_csv is not None:
        write_trades_csv(backtest.result, trades_csv)
    if plot is not None:
        plot_equity(backtest.results, backtest.policy, backtest.title, plot)
    if report_dir is not None:
        write_html_report(backtest, report_dir)
    if console is not None:
        print_summary(backtest, console)
    return backtest.report, backtest.result


def plot_equity(results: dict[str, EvaluationResult], main: str, title: str, path: Path) -> Path:
    """Cumulative P&L in pips at each trade's exit time, one line per policy."""
    path.parent.mkdir(parents=True, exist_ok=True)
    equity_figure(results, main, title).savefig(path, dpi=100)
    return path


def write_trades_csv(result: EvaluationResult, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    rows = result.trades.rows()
    with path.open("w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=TRADE_LOG_FIELDS)
        writer.writeheader()
        for row in rows:
            row["entry_ts"] = utc_time(int(row["entry_ts"]))  # type: ignore[arg-type]
            row["exit_ts"] = utc_time(int(row["exit_ts"]))  # type: ignore[arg-type]
            writer.writerow(row)
