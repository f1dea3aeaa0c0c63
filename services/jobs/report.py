"""``smz report CHECKPOINT_DIR``: PNG plots of a training run (curves and the validation equity)."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only, no display

import matplotlib.pyplot as plt
import numpy as np

from services.trainer.state import VALIDATION_TRADES, read_history
from shared.model.checkpoint_root import read_pointer

LOSSES = ("total", "policy", "value", "reward", "outcome")


def run_report(root: Path, out: Path | None = None) -> list[Path]:
    history = read_history(root)
    if not history:
        raise LookupError(f"{root} has no training history (history.jsonl); train into it with `smz train`")
    out = out or root / "report"
    out.mkdir(parents=True, exist_ok=True)
    rounds = [r for r in history if r["kind"] == "round"]
    validations = [r for r in history if r["kind"] == "validation"]
    written = [_training_curves(rounds, validations, out / "training.png")]
    version = read_pointer(root, "best") or read_pointer(root, "latest")
    if version and (root / version / VALIDATION_TRADES).exists():
        written.append(_equity(root / version / VALIDATION_TRADES, version, out / "validation_equity.png"))
    return written


def _training_curves(rounds: list[dict], validations: list[dict], path: Path) -> Path:
    fig, axes = plt.subplots(2, 2, figsize=(12, 8))
    learned = [r for r in rounds if "loss_total" in r]
    for name in LOSSES:
        axes[0, 0].plot([r["updates"] for r in learned], [r[f"loss_{name}"] for r in learned], label=name)
    axes[0, 0].set(title="losses", xlabel="updates")
    axes[0, 0].legend()
    shares = np.array([r["action_shares"] for r in rounds]) if rounds else np.zeros((0, 4))
    for i, name in enumerate(("HOLD", "BUY", "SELL", "CLOSE")):
        axes[0, 1].plot([r["episodes"] for r in rounds], shares[:, i] if len(shares) else [], label=name)
    for level in (0.4, 0.6, 0.9):
        axes[0, 1].axhline(level, color="grey", linewidth=0.5, linestyle="--")
    axes[0, 1].set(title="self-play action shares", xlabel="episodes", ylim=(0, 1))
    axes[0, 1].legend()
    axes[1, 0].plot(
        [v["episodes"] for v in validations], [v["validation_expectancy_pips"] for v in validations], "o-"
    )
    axes[1, 0].axhline(0.0, color="grey", linewidth=0.5)
    axes[1, 0].set(title="validation expectancy (pips/trade)", xlabel="episodes")
    axes[1, 1].plot(
        [r["episodes"] for r in rounds], [r["selfplay_expectancy_pips"] for r in rounds], label="self-play"
    )
    axes[1, 1].set(title="self-play expectancy (pips/trade)", xlabel="episodes")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def _equity(trades_csv: Path, version: str, path: Path) -> Path:
    lines = trades_csv.read_text().splitlines()[1:]  # header "pnl_pips", then one trade per line
    pnl = np.array([float(line) for line in lines if line.strip()])
    fig, ax = plt.subplots(figsize=(10, 4))
    ax.plot(np.concatenate([[0.0], np.cumsum(pnl)]))
    ax.set(title=f"validation equity of {version} ({len(pnl)} trades)", xlabel="trade", ylabel="pips")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path
