"""TensorBoard event files of a training run, in ``<out>/tensorboard/``, written beside ``history.jsonl``
from the same records, so ``tensorboard --logdir runs/`` compares runs.

The step of every scalar is the run's episode count: it grows with every round (the update count
stays 0 while replay fills, and a validation shares its round's updates), and it is what the
temperature schedule and ``validate_every`` count, so runs with different ``updates_per_round`` or
worker counts line up. The update count is a scalar of its own (``progress/updates``).
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path
from typing import Any

from tensorboardX import SummaryWriter

from shared.reward import ACTIONS

TENSORBOARD_DIR = "tensorboard"  # in the checkpoint root

# A round record's key -> its tag; loss_* and action_shares are mapped by rule (round_scalars).
ROUND_TAGS = {
    "updates": "progress/updates",
    "temperature": "selfplay/temperature",
    "trades": "selfplay/trades",
    "selfplay_expectancy_pips": "selfplay/expectancy_pips",
    "selfplay_weights_step": "selfplay/weights_step",
    "replay_trajectories": "replay/trajectories",
    "replay_trade_share": "replay/trade_share",
    "selfplay_bar_steps_per_second": "speed/selfplay_bar_steps_per_second",
    "updates_per_second": "speed/updates_per_second",
}
NOT_SCALARS = {"kind", "episodes", "version"}  # the step, the record's kind, a checkpoint's name
LOSS_PREFIX = "loss_"
VALIDATION_PREFIX = "validation_"


def record_scalars(record: dict[str, Any]) -> dict[str, float]:
    """``{tag: value}`` of a history record (``kind`` "round" or "validation")."""
    round_ = record["kind"] == "round"
    scalars: dict[str, float] = {}
    for key, value in record.items():
        if key in NOT_SCALARS or (not round_ and key == "updates"):
            continue
        if key == "action_shares" and round_:
            scalars |= {f"selfplay/action_share/{a}": float(s) for a, s in zip(ACTIONS, value, strict=True)}
        elif key in ROUND_TAGS and round_:
            scalars[ROUND_TAGS[key]] = float(value)
        elif key.startswith(LOSS_PREFIX) and round_:
            scalars[f"loss/{key.removeprefix(LOSS_PREFIX)}"] = float(value)
        elif key.startswith(VALIDATION_PREFIX) and not round_:
            scalars[f"validation/{key.removeprefix(VALIDATION_PREFIX)}"] = float(value)
        else:
            # A new history field without a tag costs its curve, not the run.
            warnings.warn(
                f"history field {key!r} has no TensorBoard tag (services/trainer/board.py)",
                stacklevel=2,
            )
    return scalars


class TrainingBoard:
    """The run's event writer: one file per trainer start, all in ``<out>/tensorboard/``."""

    def __init__(self, root: Path, episodes: int) -> None:
        """``episodes``: the count the run starts (or resumes) at. Events a crashed run wrote past its
        last checkpoint are purged from the view (TensorBoard hides every step >= ``purge_step``), so a
        resumed run's curves go on from the checkpoint instead of doubling back."""
        self.writer = SummaryWriter(
            logdir=str(root / TENSORBOARD_DIR),
            purge_step=episodes + 1,
            # The file is named by the second it opens in (and overwritten on a clash): the pid and
            # the episode count keep two starts apart, in start order when the second is the same.
            filename_suffix=f".{os.getpid()}.ep{episodes:09d}",
        )

    def write(self, record: dict[str, Any]) -> None:
        for tag, value in record_scalars(record).items():
            self.writer.add_scalar(tag, value, int(record["episodes"]))
        # A round is seconds to minutes long: flushing each keeps a killed run's curves up to date.
        self.writer.flush()

    def close(self) -> None:
        self.writer.close()
