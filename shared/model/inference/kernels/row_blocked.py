"""The row-blocked kernels (a few to a few tens of rows): one numba dispatch runs a whole network.

Layer by layer over all rows, like the GEMM path, but each layer is ``linear_rows``: every four weight
rows, read once from memory into L1, feed a 4 x 4 tile of dot products (16 accumulators, each x and
weight load used four times); no Python and no BLAS call per layer. fp32 weights only. ``initial``
keeps its TCN per row (``per_row.representation_front``). The scratch is ``Scratch.blocked``, sized by
the caller for the call's rows.

The entry kernels take the same arguments as the per-row ones (``per_row``).
"""

from __future__ import annotations

import numba
import numpy as np

from shared.model.inference.kernels.per_row import representation_front, representation_norm
from shared.model.inference.kernels.primitives import (
    FASTMATH,
    NORM,
    NORM_RELU,
    NORM_RESIDUAL_RELU,
    add_rows,
    named_network,
    rows_kernel_serial,
    softmax_rows,
    value_rows,
)
from shared.model.inference.packing import PackedNetwork, Representation, Scratch, SquareLayers, TcnScratch

# Each tile keeps its accumulators in registers: four weight rows (u0..u3) against up to four rows of
# x (p0..p3), one fused multiply-add per pair and step. Measured per 256 x 256 layer on an AVX-512
# machine (32 vector registers): 4 x 4 beat 2 x 4 tiles by 5-20% at 16-64 rows, and a separate 4 x 2
# tile for two leftover rows beat two single rows by 1.4x.


@numba.njit(fastmath=FASTMATH, cache=True, nogil=True, inline="always")
def _dot_4x4(weight: np.ndarray, j: int, x: np.ndarray, r: int, out: np.ndarray) -> None:
    """out[r : r + 4, j : j + 4] = x[r : r + 4] @ weight[j : j + 4].T: 16 accumulators, 8 loads each step."""
    w0, w1, w2, w3 = weight[j], weight[j + 1], weight[j + 2], weight[j + 3]
    x0, x1, x2, x3 = x[r], x[r + 1], x[r + 2], x[r + 3]
    a0 = a1 = a2 = a3 = b0 = b1 = b2 = b3 = np.float32(0.0)
    c0 = c1 = c2 = c3 = d0 = d1 = d2 = d3 = np.float32(0.0)
    for i in range(w0.shape[0]):
        p0, p1, p2, p3 = x0[i], x1[i], x2[i], x3[i]
        u0, u1, u2, u3 = w0[i], w1[i], w2[i], w3[i]
        a0, a1, a2, a3 = a0 + u0 * p0, a1 + u0 * p1, a2 + u0 * p2, a3 + u0 * p3
        b0, b1, b2, b3 = b0 + u1 * p0, b1 + u1 * p1, b2 + u1 * p2, b3 + u1 * p3
        c0, c1, c2, c3 = c0 + u2 * p0, c1 + u2 * p1, c2 + u2 * p2, c3 + u2 * p3
        d0, d1, d2, d3 = d0 + u3 * p0, d1 + u3 * p1, d2 + u3 * p2, d3 + u3 * p3
    out[r, j], out[r, j + 1], out[r, j + 2], out[r, j + 3] = a0, b0, c0, d0
    out[r + 1, j], out[r + 1, j + 1], out[r + 1, j + 2], out[r + 1, j + 3] = a1, b1, c1, d1
    out[r + 2, j], out[r + 2, j + 1], out[r + 2, j + 2], out[r + 2, j + 3] = a2, b2, c2, d2
    out[r + 3, j], out[r + 3, j + 1], out[r + 3, j + 2], out[r + 3, j + 3] = a3, b3, c3, d3


@numba.njit(fastmath=FASTMATH, cache=True, nogil=True, inline="always")
def _dot_4x2(weight: np.ndarray, j: int, x: np.ndarray, r: int, out: np.ndarray) -> None:
    w0, w1, w2, w3 = weight[j], weight[j + 1], weight[j + 2], weight[j + 3]
    x0, x1 = x[r], x[r + 1]
    a0 = a1 = b0 = b1 = c0 = c1 = d0 = d1 = np.float32(0.0)
    for i in range(w0.shape[0]):
        p0, p1 = x0[i], x1[i]
        u0, u1, u2, u3 = w0[i], w1[i], w2[i], w3[i]
        a0, a1, b0, b1 = a0 + u0 * p0, a1 + u0 * p1, b0 + u1 * p0, b1 + u1 * p1
        c0, c1, d0, d1 = c0 + u2 * p0, c1 + u2 * p1, d0 + u3 * p0, d1 + u3 * p1
    out[r, j], out[r, j + 1], out[r, j + 2], out[r, j + 3] = a0, b0, c0, d0
    out[r + 1, j], out[r + 1, j + 1], out[r + 1, j + 2], out[r + 1, j + 3] = a1, b1, c1, d1


@numba.njit(fastmath=FASTMATH, cache=True, nogil=True, inline="always")
def _dot_4x1(weight: np.ndarray, j: int, x: np.ndarray, r: int, out: np.ndarray) -> None:
    w0, w1, w2, w3 = weight[j], weight[j + 1], weight[j + 2], weight[j + 3]
    x0 = x[r]
    a = b = c = d = np.float32(0.0)
    for i in range(w0.shape[0]):
        p = x0[i]
        a, b, c, d = a + w0[i] * p, b + w1[i] * p, c + w2[i] * p, d + w3[i] * p
    out[r, j], out[r, j + 1], out[r, j + 2], out[r, j + 3] = a, b, c, d


@numba.njit(fastmath=FASTMATH, cache=True, nogil=True, inline="always")
def _dot_1x4(weight: np.ndarray, j: int, x: np.ndarray, r: int, out: np.ndarray) -> None:
    w0 = weight[j]
    x0, x1, x2, x3 = x[r], x[r + 1], x[r + 2], x[r + 3]
    a0 = a1 = a2 = a3 = np.float32(0.0)
    for i in range(w0.shape[0]):
        u = w0[i]
        a0, a1, a2, a3 = a0 + u * x0[i], a1 + u * x1[i], a2 + u * x2[i], a3 + u * x3[i]
    out[r, j], out[r + 1, j], out[r + 2, j], out[r + 3, j] = a0, a1, a2, a3


@numba.njit(fastmath=FASTMATH, cache=True, nogil=True, inline="always")
def _dot_1x1(weight: np.ndarray, j: int, x: np.ndarray, r: int, out: np.ndarray) -> None:
    w0, x0 = weight[j], x[r]
    acc = np.float32(0.0)
    for i in range(w0.shape[0]):
        acc += w0[i] * x0[i]
    out[r, j] = acc


@numba.njit(fastmath=FASTMATH, cache=True, nogil=True)
def linear_rows(weight: np.ndarray, x: np.ndarray, out: np.ndarray) -> None:
    """out (M, n_out) = x (M, n_in) @ weight.T, weight (n_out, n_in) row-major, no bias.

    Four weight rows (read from memory once, then from L1) against four rows of x at a time. The
    remaining rows: three (after a first block) as one more block of four ending at the last row (it
    recomputes a row to the same value), else a pair and/or a single row. The last n_out % 4 weight
    rows (in the heads) go one at a time.
    """
    n_out = weight.shape[0]
    rows = x.shape[0]
    rest = rows % 4
    quads = rows - rest
    overlap = rest == 3 and rows > 4
    pair = rest >= 2 and not overlap
    single = rest % 2 == 1 and not overlap
    for j in range(0, n_out - 3, 4):
        for r in range(0, quads, 4):
            _dot_4x4(weight, j, x, r, out)
        if overlap:
            _dot_4x4(weight, j, x, rows - 4, out)
        if pair:
            _dot_4x2(weight, j, x, quads, out)
        if single:
            _dot_4x1(weight, j, x, rows - 1, out)
    for j in range(n_out - n_out % 4, n_out):
        for r in range(0, quads, 4):
            _dot_1x4(weight, j, x, r, out)
        for r in range(quads, rows):
            _dot_1x1(weight, j, x, r, out)


@numba.njit(fastmath=FASTMATH, cache=True, nogil=True)
def _rows_norm(layers: SquareLayers, layer: int, y: np.ndarray, residual: np.ndarray, mode: int) -> None:
    """Layer ``layer``'s bias + LayerNorm (+ residual) (+ ReLU) in place on the rows y."""
    rows_kernel_serial(
        y, layers.bias[layer], layers.norm_gain[layer], layers.norm_shift[layer], residual, mode
    )


@numba.njit(fastmath=FASTMATH, cache=True, nogil=True)
def _rows_blocks(
    layers: SquareLayers, first_layer: int, n_blocks: int, x: np.ndarray, tmp: np.ndarray, tmp2: np.ndarray
) -> None:
    """MLPResidualBlocks in place on the rows x (M, H) (layers first_layer, first_layer + 1, ...)."""
    for block in range(n_blocks):
        fc1 = first_layer + 2 * block
        linear_rows(layers.weight[fc1], x, tmp)
        _rows_norm(layers, fc1, tmp, x, NORM_RELU)
        linear_rows(layers.weight[fc1 + 1], tmp, tmp2)
        _rows_norm(layers, fc1 + 1, tmp2, x, NORM_RESIDUAL_RELU)
        x[:] = tmp2


@numba.njit(fastmath=FASTMATH, cache=True, nogil=True)
def _scratch_rows(scratch: np.ndarray, rows: int, width: int) -> tuple:
    """Three (rows, width) work arrays and the rest of the flat scratch buffer."""
    size = rows * width
    work = scratch[: 3 * size].reshape((3, rows, width))
    return work[0], work[1], work[2], scratch[3 * size :]


@numba.njit(fastmath=FASTMATH, cache=True, nogil=True)
def _heads_rows(
    net: PackedNetwork, state: np.ndarray, scratch: np.ndarray, out_policy: np.ndarray, out_value: np.ndarray
) -> None:
    """Policy logits (M, A) and value scalars (M,) for the rows of state (M, H)."""
    heads, layout = net.heads, net.layout
    rows, width = state.shape
    x, tmp, tmp2, rest = _scratch_rows(scratch, rows, width)
    x[:] = state
    _rows_blocks(net.layers, layout.policy_first, layout.policy_blocks, x, tmp, tmp2)
    linear_rows(heads.policy_w, x, out_policy)
    for r in range(rows):
        out_policy[r] += heads.policy_b
    x[:] = state
    _rows_blocks(net.layers, layout.value_first, layout.value_blocks, x, tmp, tmp2)
    atoms = heads.value_w.shape[0]
    value_logits = rest[: rows * atoms].reshape((rows, atoms))
    linear_rows(heads.value_w, x, value_logits)
    value_rows(value_logits, heads.value_b, layout.support_size, out_value)


@numba.njit(fastmath=FASTMATH, cache=True, nogil=True)
def initial_rows(
    network: tuple, scratch: tuple, rep: tuple, tcn: tuple, windows: np.ndarray, outputs: tuple
) -> None:
    """``per_row.initial_rows`` with the blocks and heads row-blocked (the TCN stays per row)."""
    out_hidden, out_policy, out_value = outputs
    net, blocked = named_network(network), Scratch(*scratch).blocked
    representation, tcn_work = Representation(*rep), TcnScratch(*tcn)
    layout = net.layout
    rows, width = out_hidden.shape
    x, tmp, _, _ = _scratch_rows(blocked, rows, width)
    for r in range(rows):
        representation_front(representation, layout.tcn_kernel, tcn_work, windows[r], out_hidden[r])
    _rows_blocks(net.layers, layout.representation_first, layout.representation_blocks, out_hidden, x, tmp)
    for r in range(rows):
        representation_norm(representation, out_hidden[r])
    _heads_rows(net, out_hidden, blocked, out_policy, out_value)


@numba.njit(fastmath=FASTMATH, cache=True, nogil=True)
def _project_blocks(
    layers: SquareLayers,
    project: int,
    first_layer: int,
    n_blocks: int,
    hidden: np.ndarray,
    action_rows: np.ndarray,
    actions: np.ndarray,
    outcome_rows: np.ndarray,
    outcomes: np.ndarray,
    blocked: np.ndarray,
) -> tuple:
    """The outcome or dynamics network's trunk: its first Linear over [hidden, one-hot action (, one-hot
    outcome)] as the hidden projection plus gathered rows, then its residual blocks. Returns the rows
    (M, H) and the rest of the scratch."""
    rows, width = hidden.shape
    x, tmp, tmp2, rest = _scratch_rows(blocked, rows, width)
    linear_rows(layers.weight[project], hidden, x)
    add_rows(x, action_rows, actions, outcome_rows, outcomes)
    _rows_blocks(layers, first_layer, n_blocks, x, tmp, tmp2)
    return x, rest


@numba.njit(fastmath=FASTMATH, cache=True, nogil=True)
def outcome_rows(
    network: tuple, scratch: tuple, hidden: np.ndarray, actions: np.ndarray, probs: np.ndarray
) -> None:
    """``per_row.outcome_rows`` row-blocked."""
    net, blocked = named_network(network), Scratch(*scratch).blocked
    heads, layout = net.heads, net.layout
    no_outcomes = heads.dynamics_outcome_rows[:0]  # the outcome network reads no outcome
    x, rest = _project_blocks(
        net.layers,
        layout.outcome_project,
        layout.outcome_first,
        layout.outcome_blocks,
        hidden,
        heads.outcome_action_rows,
        actions,
        no_outcomes,
        actions[:0],
        blocked,
    )
    rows, n_outcomes = probs.shape
    logits = rest[: rows * n_outcomes].reshape((rows, n_outcomes))
    linear_rows(heads.outcome_w, x, logits)
    softmax_rows(logits, heads.outcome_b, probs)


@numba.njit(fastmath=FASTMATH, cache=True, nogil=True)
def recurrent_rows(network: tuple, scratch: tuple, inputs: tuple, outputs: tuple) -> None:
    """``per_row.recurrent_rows`` row-blocked."""
    hidden, actions, outcomes = inputs
    out_hidden, out_reward, out_policy, out_value = outputs
    net, blocked = named_network(network), Scratch(*scratch).blocked
    heads, layout = net.heads, net.layout
    x, rest = _project_blocks(
        net.layers,
        layout.dynamics_project,
        layout.dynamics_first,
        layout.dynamics_blocks,
        hidden,
        heads.dynamics_action_rows,
        actions,
        heads.dynamics_outcome_rows,
        outcomes,
        blocked,
    )
    rows = hidden.shape[0]
    reward = rest[:rows].reshape((rows, 1))
    linear_rows(heads.reward_w, x, reward)
    for r in range(rows):
        out_reward[r] = reward[r, 0] + heads.reward_b[0]
    linear_rows(net.layers.weight[layout.next_hidden], x, out_hidden)
    _rows_norm(net.layers, layout.next_hidden, out_hidden, out_hidden, NORM)
    _heads_rows(net, out_hidden, blocked, out_policy, out_value)
