"""Everything besides the weights that a restart needs, stored as checkpoint extra files without
pickle: optimiser tensors in safetensors, its settings and the counters in JSON, replay as .npz."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import safetensors.torch
import torch

OPTIMIZER_TENSORS = "optimizer.safetensors"
TRAINER_STATE = "trainer.json"
REPLAY_FILE = "replay.npz"
VALIDATION_TRADES = "validation_trades.csv"
HISTORY_FILE = "history.jsonl"  # in the checkpoint root: one JSON object per round or validation


def append_history(root: Path, record: dict[str, object]) -> None:
    """Append one line; a crash can only cut the last line, which ``read_history`` skips."""
    root.mkdir(parents=True, exist_ok=True)
    with (root / HISTORY_FILE).open("a") as fh:
        fh.write(json.dumps(record) + "\n")


def read_history(root: Path) -> list[dict[str, object]]:
    path = root / HISTORY_FILE
    if not path.exists():
        return []
    records = []
    for line in path.read_text().splitlines():
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError:
            continue  # a line cut by a crash
    return records


@dataclass
class Counters:
    episodes: int = 0
    updates: int = 0
    bar_steps: int = 0
    # The best checkpoint's validation pips per session as served (the entry gate applied).
    best_score: float | None = None
    best_version: str | None = None


def optimizer_to_files(optimizer: torch.optim.Optimizer) -> tuple[bytes, dict[str, object]]:
    state = optimizer.state_dict()
    tensors: dict[str, torch.Tensor] = {}
    for index, slots in state["state"].items():
        for name, value in slots.items():
            tensors[f"{index}.{name}"] = torch.as_tensor(value).contiguous()
    return safetensors.torch.save(tensors), {"param_groups": state["param_groups"]}


def optimizer_from_files(optimizer: torch.optim.Optimizer, data: bytes, meta: dict[str, object]) -> None:
    tensors = safetensors.torch.load(data)
    slots: dict[int, dict[str, torch.Tensor]] = {}
    for key, value in tensors.items():
        index, name = key.split(".", 1)
        slots.setdefault(int(index), {})[name] = value
    optimizer.load_state_dict({"state": slots, "param_groups": meta["param_groups"]})


def trainer_state_json(
    counters: Counters,
    rng: np.random.Generator,
    optimizer_meta: dict[str, object],
    training: dict[str, object] | None = None,
) -> bytes:
    """``training``: the hyper-parameters of the run (TrainingConfig), kept so a checkpoint says how it
    was trained (the reward among them); a resume takes its settings from the command line."""
    payload = {
        "counters": asdict(counters),
        "training": training or {},
        "numpy_rng": rng.bit_generator.state,
        "torch_rng": torch.get_rng_state().tolist(),
        "optimizer": optimizer_meta,
    }
    return json.dumps(payload).encode()


def restore_trainer_state(data: bytes, rng: np.random.Generator) -> tuple[Counters, dict[str, object]]:
    payload = json.loads(data)
    rng.bit_generator.state = payload["numpy_rng"]
    torch.set_rng_state(torch.tensor(payload["torch_rng"], dtype=torch.uint8))
    # Checkpoints before the entry gate ranked by expectancy; that number is not a score of this kind.
    counters = {k: v for k, v in payload["counters"].items() if k != "best_expectancy"}
    return Counters(**counters), payload["optimizer"]
