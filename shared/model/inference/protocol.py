"""What the search sees of a model: three calls over numpy arrays, and the helpers every backend shares."""

from __future__ import annotations

import copy
from typing import Protocol

import numpy as np

from shared.model.networks import MuZeroNetwork


class ModelFunctions(Protocol):
    def initial(self, windows: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """windows (M, 32, 15) float32 -> hidden (M, H), policy logits (M, A), value (M,) scalar."""
        ...

    def outcome_probs(self, hidden: np.ndarray, actions: np.ndarray) -> np.ndarray:
        """hidden (M, H) float32, actions (M,) int -> (M, O) probabilities."""
        ...

    def recurrent(
        self, hidden: np.ndarray, actions: np.ndarray, outcomes: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """-> next hidden (M, H), reward (M,), policy logits (M, A), value (M,) scalar."""
        ...


def float_rows(x: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(x, dtype=np.float32)


def index_rows(x: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(x, dtype=np.int64)


def eval_copy(model: MuZeroNetwork) -> MuZeroNetwork:
    """A frozen snapshot: later training steps on ``model`` do not leak into a running search."""
    snapshot = copy.deepcopy(model).eval()
    for parameter in snapshot.parameters():
        parameter.requires_grad_(False)
    return snapshot
