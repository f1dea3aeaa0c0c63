"""The ``numba`` backend's path for large batches: torch's MKL GEMM per layer, on zero-copy numpy views
into reused buffers, and numba row kernels for bias + LayerNorm (+ residual) (+ ReLU).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import numpy as np
import torch

from shared.model.inference.kernels.primitives import (
    NORM,
    NORM_RELU,
    NORM_RESIDUAL_RELU,
    add_rows,
    softmax_rows,
    value_rows,
)
from shared.model.inference.packing import PackedNetwork, Representation, to_float32
from shared.model.inference.protocol import float_rows, index_rows
from shared.model.networks import MuZeroNetwork

RowsKernel = Callable[[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray, int], None]


def mm(a: np.ndarray, b: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
    """a @ b through torch's MKL GEMM on zero-copy views.

    Not np.matmul: numpy's OpenBLAS pool spins after each call and starves numba's parallel row
    kernels (measured 7.6 ms instead of 1.1 ms per 1024-row layer at 2 threads); torch's GEMM and
    numba's OpenMP layer share one OpenMP runtime and do not fight.
    """
    if out is None:
        out = np.empty((a.shape[0], b.shape[1]), np.float32)
    torch.mm(torch.from_numpy(a), torch.from_numpy(b), out=torch.from_numpy(out))
    return out


class Conv(NamedTuple):
    weight: np.ndarray  # (K * C_in, C_out): im2col columns [x(t - (K-1)d), ..., x(t)] -> C_out
    bias: np.ndarray
    dilation: int
    kernel: int


class GemmWeights(NamedTuple):
    """Transposed copies, so that every layer is x (M, in) @ w_t (in, out) with both contiguous."""

    square_t: np.ndarray  # (L, H, H)
    policy_value_fc1_t: np.ndarray  # (H, 2H): the policy and value networks' first Linear as one
    outcome_t: np.ndarray
    reward_t: np.ndarray
    policy_t: np.ndarray
    value_t: np.ndarray
    convs: tuple[Conv, ...]
    attention_w: np.ndarray  # (C,)
    attention_b: float
    project_t: np.ndarray  # (C + F, H)
    project_b: np.ndarray


def _transposed(x: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(x.T)


def pack_gemm(snapshot: MuZeroNetwork, network: PackedNetwork) -> GemmWeights:
    layers, heads, layout, rep = network.layers, network.heads, network.layout, snapshot.representation
    first_layers = layers.weight[[layout.policy_first, layout.value_first]]
    return GemmWeights(
        square_t=np.ascontiguousarray(layers.weight.transpose(0, 2, 1)),
        policy_value_fc1_t=_transposed(first_layers.reshape(-1, first_layers.shape[2])),
        outcome_t=_transposed(heads.outcome_w),
        reward_t=_transposed(heads.reward_w),
        policy_t=_transposed(heads.policy_w),
        value_t=_transposed(heads.value_w),
        convs=tuple(
            Conv(
                np.ascontiguousarray(
                    to_float32(c.conv.weight).transpose(2, 1, 0).reshape(-1, c.conv.out_channels)
                ),
                to_float32(c.conv.bias),
                c.conv.dilation[0],
                c.conv.kernel_size[0],
            )
            for c in rep.convs
        ),
        attention_w=to_float32(rep.attention.weight).reshape(-1),
        attention_b=float(rep.attention.bias),
        project_t=_transposed(to_float32(rep.project.weight)),
        project_b=to_float32(rep.project.bias),
    )


class GemmPath:
    """The three calls as GEMMs; outputs are fresh arrays, intermediates live in one reused buffer."""

    def __init__(
        self,
        snapshot: MuZeroNetwork,
        network: PackedNetwork,
        representation: Representation,
        rows_kernel: RowsKernel,
    ) -> None:
        self.cfg = snapshot.cfg
        self.network, self.representation = network, representation
        self.weights = pack_gemm(snapshot, network)
        self._rows_kernel = rows_kernel
        self._workspace = np.empty((0,), np.float32)
        self._empty_rows = np.zeros((0, self.cfg.hidden), np.float32)
        self._no_index = np.zeros(0, np.int64)

    def _buffers(self, rows: int, count: int, width: int) -> list[np.ndarray]:
        """``count`` (rows, width) float32 views into one reused allocation (no per-call page faults)."""
        need = rows * width * count
        if self._workspace.size < need:
            self._workspace = np.empty(need, np.float32)
        return [
            self._workspace[i * rows * width : (i + 1) * rows * width].reshape(rows, width)
            for i in range(count)
        ]

    def _norm(self, y: np.ndarray, layer: int, residual: np.ndarray, mode: int) -> None:
        layers = self.network.layers
        self._rows_kernel(
            y, layers.bias[layer], layers.norm_gain[layer], layers.norm_shift[layer], residual, mode
        )

    def _blocks(
        self, x: np.ndarray, first_layer: int, n_blocks: int, tmp: np.ndarray, tmp2: np.ndarray
    ) -> np.ndarray:
        """MLPResidualBlocks on rows x; returns the buffer holding the result (x, tmp2 swap)."""
        for block in range(n_blocks):
            fc1 = first_layer + 2 * block
            mm(x, self.weights.square_t[fc1], tmp)
            self._norm(tmp, fc1, x, NORM_RELU)
            mm(tmp, self.weights.square_t[fc1 + 1], tmp2)
            self._norm(tmp2, fc1 + 1, x, NORM_RESIDUAL_RELU)
            x, tmp2 = tmp2, x
        return x

    def _heads(self, state: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Policy logits and value scalars; both networks' first Linear runs as one (H, 2H) GEMM."""
        weights, heads, layout = self.weights, self.network.heads, self.network.layout
        rows, width = state.shape
        x_policy, x_value, tmp, tmp2 = self._buffers(rows, 6, width)[:4]
        both = self._workspace[4 * rows * width : 6 * rows * width].reshape(rows, 2 * width)
        policy, value = layout.policy_first, layout.value_first
        mm(state, weights.policy_value_fc1_t, both)
        policy_y, value_y = both[:, :width], both[:, width:]
        self._norm(policy_y, policy, state, NORM_RELU)
        self._norm(value_y, value, state, NORM_RELU)
        mm(policy_y, weights.square_t[policy + 1], x_policy)
        self._norm(x_policy, policy + 1, state, NORM_RESIDUAL_RELU)
        mm(value_y, weights.square_t[value + 1], x_value)
        self._norm(x_value, value + 1, state, NORM_RESIDUAL_RELU)
        x_policy = self._blocks(x_policy, policy + 2, layout.policy_blocks - 1, tmp, tmp2)
        policy_logits = mm(x_policy, weights.policy_t) + heads.policy_b
        x_value = self._blocks(x_value, value + 2, layout.value_blocks - 1, tmp, tmp2)
        value_logits = mm(x_value, weights.value_t)
        value_scalars = np.empty(rows, np.float32)
        value_rows(value_logits, heads.value_b, layout.support_size, value_scalars)
        return policy_logits, value_scalars

    def _representation(self, windows: np.ndarray) -> np.ndarray:
        """The TCN as im2col GEMMs (torch, never numpy's OpenBLAS: see ``mm``), then pooling and blocks."""
        weights, rep = self.weights, self.representation
        rows, steps, _ = windows.shape
        x = windows
        for i, conv in enumerate(weights.convs):
            pad = (conv.kernel - 1) * conv.dilation
            padded = np.zeros((rows, steps + pad, x.shape[2]), np.float32)
            padded[:, pad:] = x
            columns = np.concatenate(
                [padded[:, k * conv.dilation : k * conv.dilation + steps] for k in range(conv.kernel)], axis=2
            )
            y = mm(columns.reshape(rows * steps, -1), conv.weight).reshape(rows, steps, -1)
            np.maximum(y + conv.bias, 0.0, out=y)
            x = y if i == 0 else x + y
        scores = (x * weights.attention_w).sum(axis=2) + weights.attention_b  # (M, T)
        scores = np.exp(scores - scores.max(axis=1, keepdims=True))
        scores /= scores.sum(axis=1, keepdims=True)
        pooled = (scores[:, :, None] * x).sum(axis=1)
        features = np.concatenate([pooled, windows[:, -1, :]], axis=1).astype(np.float32)
        state = mm(features, weights.project_t) + weights.project_b
        tmp, tmp2 = self._buffers(rows, 2, self.cfg.hidden)
        layout = self.network.layout
        hidden = self._blocks(
            state, layout.representation_first, layout.representation_blocks, tmp, tmp2
        ).copy()
        mean = hidden.mean(axis=1, keepdims=True)
        centred = hidden - mean
        variance = (centred * centred).mean(axis=1, keepdims=True)
        normed = centred / np.sqrt(variance + float(rep.norm_eps[0])) * rep.norm_gain + rep.norm_shift
        return normed.astype(np.float32)

    def initial(self, windows: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        hidden = self._representation(float_rows(windows))
        policy_logits, value = self._heads(hidden)
        return hidden, policy_logits, value

    def outcome_probs(self, hidden: np.ndarray, actions: np.ndarray) -> np.ndarray:
        hidden, actions = float_rows(hidden), index_rows(actions)
        heads, layout = self.network.heads, self.network.layout
        rows = hidden.shape[0]
        probs = np.empty((rows, self.cfg.n_outcomes), np.float32)
        x, tmp, tmp2 = self._buffers(rows, 3, self.cfg.hidden)
        mm(hidden, self.weights.square_t[layout.outcome_project], x)
        add_rows(x, heads.outcome_action_rows, actions, self._empty_rows, self._no_index)
        x = self._blocks(x, layout.outcome_first, layout.outcome_blocks, tmp, tmp2)
        softmax_rows(mm(x, self.weights.outcome_t), heads.outcome_b, probs)
        return probs

    def recurrent(
        self, hidden: np.ndarray, actions: np.ndarray, outcomes: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        hidden, actions, outcomes = float_rows(hidden), index_rows(actions), index_rows(outcomes)
        heads, layout = self.network.heads, self.network.layout
        rows, width = hidden.shape
        x, tmp, tmp2 = self._buffers(rows, 3, width)
        mm(hidden, self.weights.square_t[layout.dynamics_project], x)
        add_rows(x, heads.dynamics_action_rows, actions, heads.dynamics_outcome_rows, outcomes)
        x = self._blocks(x, layout.dynamics_first, layout.dynamics_blocks, tmp, tmp2)
        reward = mm(x, self.weights.reward_t).reshape(-1) + heads.reward_b[0]
        next_hidden = mm(x, self.weights.square_t[layout.next_hidden])  # fresh array: it is returned
        self._norm(next_hidden, layout.next_hidden, next_hidden, NORM)
        policy_logits, value = self._heads(next_hidden)
        return next_hidden, reward.astype(np.float32), policy_logits, value
