"""The ``torch_fast`` backend: torch eager on rewritten modules (also what ``torchscript`` traces and the
ONNX export writes), and ``auto``'s path for large batches.

The one-hot columns of each first Linear become a gather of weight rows (bias folded in), the policy
and value networks' first layers run as one (H, 2H) matmul, and the value scalar is computed in the graph.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from shared.model.inference.protocol import ModelFunctions, eval_copy, float_rows, index_rows
from shared.model.networks import MLPResidualBlock, MuZeroNetwork
from shared.model.support import logits_to_scalar


def split_project(project: nn.Linear, hidden: int, sizes: tuple[int, ...]) -> tuple[torch.Tensor, ...]:
    """Linear over [hidden, one-hot a, one-hot b, ...] -> hidden weight and one (size, H) row table each.

    one_hot(a) @ W[:, cols].T is row ``a`` of W[:, cols].T, so the concat becomes a gather; the bias
    is folded into the first table.
    """
    weight = project.weight.detach()
    tables = []
    start = hidden
    for size in sizes:
        tables.append(weight[:, start : start + size].T.contiguous())
        start += size
    tables[0] = tables[0] + project.bias.detach()
    return (weight[:, :hidden].contiguous(), *tables)


class _PolicyValueHeads(nn.Module):
    """Policy and value networks on one hidden state; their first Linear runs as one matmul."""

    def __init__(self, model: MuZeroNetwork) -> None:
        super().__init__()
        policy_first: MLPResidualBlock = model.policy.blocks[0]
        value_first: MLPResidualBlock = model.value.blocks[0]
        self.hidden_size = model.cfg.hidden
        self.support_size = model.cfg.support_size
        self.first_fc1 = nn.Linear(self.hidden_size, 2 * self.hidden_size)
        with torch.no_grad():
            self.first_fc1.weight.copy_(torch.cat([policy_first.fc1.weight, value_first.fc1.weight]))
            self.first_fc1.bias.copy_(torch.cat([policy_first.fc1.bias, value_first.fc1.bias]))
        self.policy_norm1, self.policy_fc2, self.policy_norm2 = (
            policy_first.norm1,
            policy_first.fc2,
            policy_first.norm2,
        )
        self.value_norm1, self.value_fc2, self.value_norm2 = (
            value_first.norm1,
            value_first.fc2,
            value_first.norm2,
        )
        self.policy_rest = nn.Sequential(*list(model.policy.blocks)[1:])
        self.value_rest = nn.Sequential(*list(model.value.blocks)[1:])
        self.policy_head = model.policy.head
        self.value_head = model.value.head

    def forward(self, hidden: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        both = self.first_fc1(hidden)
        policy_y = F.relu(self.policy_norm1(both[:, : self.hidden_size]))
        value_y = F.relu(self.value_norm1(both[:, self.hidden_size :]))
        policy_x = F.relu(hidden + self.policy_norm2(self.policy_fc2(policy_y)))
        value_x = F.relu(hidden + self.value_norm2(self.value_fc2(value_y)))
        policy_logits = self.policy_head(self.policy_rest(policy_x))
        value = logits_to_scalar(self.value_head(self.value_rest(value_x)), self.support_size)
        return policy_logits, value


class FastInitial(nn.Module):
    def __init__(self, model: MuZeroNetwork) -> None:
        super().__init__()
        self.representation = model.representation
        self.heads = _PolicyValueHeads(model)

    def forward(self, windows: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        hidden = self.representation(windows)
        policy_logits, value = self.heads(hidden)
        return hidden, policy_logits, value


class FastOutcome(nn.Module):
    def __init__(self, model: MuZeroNetwork) -> None:
        super().__init__()
        cfg = model.cfg
        w_hidden, action_rows = split_project(model.outcome.project, cfg.hidden, (cfg.n_actions,))
        self.register_buffer("w_hidden", w_hidden)
        self.register_buffer("action_rows", action_rows)
        self.blocks = model.outcome.blocks
        self.head = model.outcome.head

    def forward(self, hidden: torch.Tensor, actions: torch.Tensor) -> torch.Tensor:
        x = F.linear(hidden, self.w_hidden) + self.action_rows[actions]
        return torch.softmax(self.head(self.blocks(x)), dim=-1)


class FastRecurrent(nn.Module):
    def __init__(self, model: MuZeroNetwork) -> None:
        super().__init__()
        cfg = model.cfg
        w_hidden, action_rows, outcome_rows = split_project(
            model.dynamics.project, cfg.hidden, (cfg.n_actions, cfg.n_outcomes)
        )
        self.register_buffer("w_hidden", w_hidden)
        self.register_buffer("action_rows", action_rows)
        self.register_buffer("outcome_rows", outcome_rows)
        self.blocks = model.dynamics.blocks
        self.next_hidden = model.dynamics.next_hidden
        self.next_norm = model.dynamics.next_norm
        self.reward = model.dynamics.reward
        self.heads = _PolicyValueHeads(model)

    def forward(
        self, hidden: torch.Tensor, actions: torch.Tensor, outcomes: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        x = F.linear(hidden, self.w_hidden) + self.action_rows[actions] + self.outcome_rows[outcomes]
        x = self.blocks(x)
        next_hidden = self.next_norm(self.next_hidden(x))
        reward = self.reward(x).squeeze(-1)
        policy_logits, value = self.heads(next_hidden)
        return next_hidden, reward, policy_logits, value


class TorchModulesFunctions:
    """numpy in/out around three torch callables (eager fast modules or their TorchScript)."""

    def __init__(self, initial: nn.Module, outcome: nn.Module, recurrent: nn.Module) -> None:
        self._initial, self._outcome, self._recurrent = initial, outcome, recurrent

    def initial(self, windows: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        with torch.inference_mode():
            hidden, policy, value = self._initial(torch.from_numpy(float_rows(windows)))
            return hidden.numpy(), policy.numpy(), value.numpy()

    def outcome_probs(self, hidden: np.ndarray, actions: np.ndarray) -> np.ndarray:
        with torch.inference_mode():
            return self._outcome(
                torch.from_numpy(float_rows(hidden)), torch.from_numpy(index_rows(actions))
            ).numpy()

    def recurrent(
        self, hidden: np.ndarray, actions: np.ndarray, outcomes: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        with torch.inference_mode():
            out = self._recurrent(
                torch.from_numpy(float_rows(hidden)),
                torch.from_numpy(index_rows(actions)),
                torch.from_numpy(index_rows(outcomes)),
            )
            return tuple(t.numpy() for t in out)  # type: ignore[return-value]


def fast_modules(model: MuZeroNetwork) -> tuple[FastInitial, FastOutcome, FastRecurrent]:
    snapshot = eval_copy(model)
    modules = FastInitial(snapshot).eval(), FastOutcome(snapshot).eval(), FastRecurrent(snapshot).eval()
    for module in modules:
        for parameter in module.parameters():
            parameter.requires_grad_(False)
    return modules


def example_inputs(model: MuZeroNetwork, rows: int = 8) -> tuple[tuple[torch.Tensor, ...], ...]:
    cfg = model.cfg
    generator = torch.Generator().manual_seed(0)
    hidden = torch.randn(rows, cfg.hidden, generator=generator)
    actions = torch.arange(rows) % cfg.n_actions
    outcomes = torch.arange(rows) % cfg.n_outcomes
    windows = torch.randn(rows, cfg.window, cfg.n_features, generator=generator)
    return (windows,), (hidden, actions), (hidden, actions, outcomes)


def torch_fast_functions(model: MuZeroNetwork, threads: int | None = None) -> ModelFunctions:
    if threads is not None:
        torch.set_num_threads(threads)
    return TorchModulesFunctions(*fast_modules(model))


def torchscript_functions(model: MuZeroNetwork, threads: int | None = None) -> ModelFunctions:
    """trace -> freeze -> optimize_for_inference of the fast modules (no compiler needed)."""
    if threads is not None:
        torch.set_num_threads(threads)
    scripted = []
    with torch.inference_mode(False), torch.no_grad():
        for module, example in zip(fast_modules(model), example_inputs(model), strict=True):
            traced = torch.jit.trace(module, example, check_trace=False)
            scripted.append(torch.jit.optimize_for_inference(torch.jit.freeze(traced)))
    return TorchModulesFunctions(*scripted)
