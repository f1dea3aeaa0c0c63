"""``smz evaluate``: run a policy over every session of a split and report SPEC section 9 metrics."""

from __future__ import annotations

import csv
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

from shared.env import TRADE_LOG_FIELDS, EnvConfig, MarketData
from shared.evaluation import EvaluationResult, evaluate_policy
from shared.model.checkpoint import MANIFEST_FILE, load_checkpoint, read_pointer, resolve_checkpoint
from shared.model.inference import make_model_functions
from shared.policies import HoldPolicy, MomentumPolicy, OraclePolicy, Policy, RandomPolicy, SearchPolicy
from shared.search import SearchConfig
from shared.sessions import SPLITS, tile_sessions
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


def checkpoint_policy(path: Path, simulations: int = 25) -> tuple[Policy, str]:
    """The agent of a checkpoint (a checkpoint directory, or a root meaning its best, else latest)."""
    which = "best" if read_pointer(path, "best") else "latest"
    resolved = resolve_checkpoint(path, which) if not (path / MANIFEST_FILE).exists() else path
    loaded = load_checkpoint(resolved)
    fns = make_model_functions(loaded.model, "auto")
    return SearchPolicy(fns, SearchConfig(num_simulations=simulations)), loaded.manifest.version


def run_evaluate(
    db: Path,
    instrument: str,
    split: str,
    policy_name: str,
    seed: int = 0,
    spread_pips: float = 4.0,
    trades_csv: Path | None = None,
    checkpoint: Path | None = None,
) -> tuple[dict[str, object], EvaluationResult]:
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; choose one of {', '.join(SPLITS)}")
    with Store(db, read_only=True) as store:
        dataset = store.load_dataset(instrument)
        if checkpoint is None:
            policy = make_policy(policy_name, store, instrument, dataset.bars.ts, seed)
    version = None
    if checkpoint is not None:
        policy, version = checkpoint_policy(checkpoint)
        policy_name = "muzero"
    starts = tile_sessions(dataset.starts_of(split))
    if len(starts) == 0:
        raise LookupError(f"{instrument} has no complete session in the {split} split")
    market = MarketData(instrument, dataset.bars.ts, dataset.bars.close, dataset.features)
    result = evaluate_policy(market, starts, policy, EnvConfig(spread_pips=spread_pips))
    if trades_csv is not None:
        write_trades_csv(result, trades_csv)
    report = {
        "instrument": instrument,
        "split": split,
        "policy": policy_name,
        **({"checkpoint": version} if version else {}),
        "spread_pips": spread_pips,
        **result.metrics.model_dump(),
    }
    return report, result


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
