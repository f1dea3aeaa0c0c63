"""The reference backend: ``MuZeroNetwork`` exactly as written; every other backend is tested against it."""

from __future__ import annotations

import numpy as np
import torch

from shared.model.inference.protocol import eval_copy, float_rows, index_rows
from shared.model.networks import MuZeroNetwork
from shared.model.support import logits_to_scalar


class TorchFunctions:
    """The reference: ``MuZeroNetwork`` exactly as written, eval mode, ``torch.inference_mode``."""

    def __init__(self, model: MuZeroNetwork, threads: int | None = None) -> None:
        self.model = eval_copy(model)
        self.support_size = self.model.cfg.support_size
        if threads is not None:
            torch.set_num_threads(threads)

    def initial(self, windows: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        with torch.inference_mode():
            out = self.model.initial_inference(torch.from_numpy(float_rows(windows)))
            value = logits_to_scalar(out.value_logits, self.support_size)
            return out.hidden.numpy(), out.policy_logits.numpy(), value.numpy()

    def outcome_probs(self, hidden: np.ndarray, actions: np.ndarray) -> np.ndarray:
        with torch.inference_mode():
            probs = self.model.outcome_probabilities(
                torch.from_numpy(float_rows(hidden)), torch.from_numpy(index_rows(actions))
            )
            return probs.numpy()

    def recurrent(
        self, hidden: np.ndarray, actions: np.ndarray, outcomes: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        with torch.inference_mode():
            out = self.model.recurrent_inference(
                torch.from_numpy(float_rows(hidden)),
                torch.from_numpy(index_rows(actions)),
                torch.from_numpy(index_rows(outcomes)),
            )
            value = logits_to_scalar(out.value_logits, self.support_size)
            return out.hidden.numpy(), out.reward.numpy(), out.policy_logits.numpy(), value.numpy()
