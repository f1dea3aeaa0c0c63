"""``smz evaluate``: run a policy over every session of a split and report SPEC section 9 metrics."""

from __future__ import annotations

import csv
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

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
) -> tuple[dict[str, object], EvaluationResult]:
    """Evaluate a baseline, or a checkpoint's agent, over the sessions of a split and date range.

    ``plot`` writes a PNG of the equity curve with the baselines beside it, on the same sessions.
    """
    with Store(db, read_only=True) as store:
        dataset = store.load_dataset(instrument)
        starts = session_starts(dataset, split, start, end)
        if len(starts) == 0:
            window = f" between {start} and {end}" if start or end else ""
            raise LookupError(f"{instrument} has no complete session in the {split} split{window}")
        has_regimes = len(store.load_regimes(instrument)[1]) > 0
        policies: dict[str, Policy] = {}
        names = [policy_name] if checkpoint is None else []
        if plot is not None:
            names += [*BASELINES, *(["oracle"] if has_regimes else [])]
        for name in dict.fromkeys(names):
            policies[name] = make_policy(name, store, instrument, dataset.bars.ts, seed)
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
    result = results[policy_name]
    if trades_csv is not None:
        write_trades_csv(result, trades_csv)
    if plot is not None:
        title = f"{instrument} {split}" + (f" ({version})" if version else "")
        plot_equity(results, policy_name, title, plot)
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
        **result.metrics.model_dump(),
    }
    return report, result


def plot_equity(results: dict[str, EvaluationResult], main: str, title: str, path: Path) -> Path:
    """Cumulative P&L in pips at each trade's exit time, one line per policy."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(11, 5))
    for name, result in results.items():
        trades = result.trades.chronological()
        times = [datetime.fromtimestamp(int(t), UTC) for t in trades.exit_ts]
        m = result.metrics
        low, high = m.expectancy_ci95
        label = (
            f"{name}: {m.expectancy_pips:+.2f} pips/trade (95% CI {low:+.2f} to {high:+.2f}"
            f"{', edge' if m.edge else ''}) over {m.trades} trades, {m.health}"
        )
        ax.step(
            times,
            np.cumsum(trades.pnl_pips),
            where="post",
            label=label,
            linewidth=2.0 if name == main else 1.0,
        )
    ax.axhline(0.0, color="grey", linewidth=0.5)  # HOLD's equity: no trade, 0 pips
    ax.set(title=f"equity, {title}", xlabel="exit time (UTC)", ylabel="cumulative P&L (pips)")
    ax.legend(fontsize=8)
    fig.autofmt_xdate()
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def _iso(ts: int) -> str:
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def write_trades_csv(result: EvaluationResult, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    rows = result.trades.rows()
    with path.open("w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=TRADE_LOG_FIELDS)
        writer.writeheader()
        for row in rows:
            row["entry_ts"] = _iso(int(row["entry_ts"]))  # type: ignore[arg-type]
            row["exit_ts"] = _iso(int(row["exit_ts"]))  # type: ignore[arg-type]
            writer.writerow(row)
