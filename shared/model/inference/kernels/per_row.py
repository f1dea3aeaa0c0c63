"""The per-row fused kernels (batch 1): one numba dispatch runs a whole network, row after row.

Each row is a chain of mat-vecs (``matvec``) over weights resident in L3; a call allocates nothing (the
scratch comes from ``Scratch``). The square layers are read from their int8 or fp16 copy when that
copy has rows (``numba_int8``, ``numba_fp16``), else from the fp32 stack.

The entry kernels (``initial_rows``, ``outcome_rows``, ``recurrent_rows``) take the packed network and
the scratch as plain tuples and name them first (why: ``shared.model.inference.packing``); ``initial``
also takes the representation's weights and scratch.
"""

from __future__ import annotations

import numba
import numpy as np

from shared.model.inference.kernels.primitives import (
    FASTMATH,
    NORM,
    NORM_RELU,
    NORM_RESIDUAL_RELU,
    matvec,
    matvec_by4,
    matvec_fp16,
    matvec_int8,
    named_network,
    rows_kernel_serial,
    softmax_rows,
    value_rows,
)
from shared.model.inference.packing import PackedNetwork, Representation, Scratch, SquareLayers, TcnScratch


@numba.njit(fastmath=FASTMATH, cache=True, nogil=True)
def _square(layers: SquareLayers, layer: int, x: np.ndarray, out: np.ndarray) -> None:
    """One square Linear without bias, from the int8, fp16 or fp32 weights (the first with rows)."""
    if layers.weight_int8.shape[0] > 0:
        matvec_int8(layers.weight_int8[layer], layers.int8_scale[layer], x, out)
    elif layers.weight_fp16.shape[0] > 0:
        matvec_fp16(layers.weight_fp16[layer], x, out)
    else:
        matvec(layers.weight[layer], x, out)


@numba.njit(fastmath=FASTMATH, cache=True, nogil=True)
def _dense(weight: np.ndarray, weight_half: np.ndarray, x: np.ndarray, out: np.ndarray) -> None:
    """out = weight @ x from the fp16 copy when it has rows, else from the fp32 weights."""
    if weight_half.shape[0] > 0:
        matvec_fp16(weight_half, x, out)
    else:
        matvec(weight, x, out)


@numba.njit(fastmath=FASTMATH, cache=True, nogil=True)
def _vector_norm(
    y: np.ndarray, bias: np.ndarray, gain: np.ndarray, shift: np.ndarray, residual: np.ndarray, mode: int
) -> None:
    """Bias + LayerNorm (+ residual) (+ ReLU) in place on the vector y."""
    rows_kernel_serial(y.reshape(1, -1), bias, gain, shift, residual.reshape(1, -1), mode)


@numba.njit(fastmath=FASTMATH, cache=True, nogil=True)
def _vector_blocks(
    layers: SquareLayers, first_layer: int, n_blocks: int, x: np.ndarray, tmp: np.ndarray, tmp2: np.ndarray
) -> None:
    """MLPResidualBlocks in place on the vector x (layers first_layer, first_layer + 1, ...)."""
    bias, gain, shift = layers.bias, layers.norm_gain, layers.norm_shift
    for block in range(n_blocks):
        fc1 = first_layer + 2 * block
        fc2 = fc1 + 1
        _square(layers, fc1, x, tmp)
        _vector_norm(tmp, bias[fc1], gain[fc1], shift[fc1], x, NORM_RELU)
        _square(layers, fc2, tmp, tmp2)
        _vector_norm(tmp2, bias[fc2], gain[fc2], shift[fc2], x, NORM_RESIDUAL_RELU)
        x[:] = tmp2


@numba.njit(fastmath=FASTMATH, cache=True, nogil=True)
def _heads_row(
    net: PackedNetwork, work: Scratch, state: np.ndarray, out_policy: np.ndarray, out_value: np.ndarray
) -> None:
    """Policy logits into out_policy (A,) and the value scalar into out_value (1,) for one state."""
    heads, layout = net.heads, net.layout
    x, tmp, tmp2 = work.vectors[0], work.vectors[1], work.vectors[2]
    x[:] = state
    _vector_blocks(net.layers, layout.policy_first, layout.policy_blocks, x, tmp, tmp2)
    matvec(heads.policy_w, x, out_policy)
    out_policy += heads.policy_b
    x[:] = state
    _vector_blocks(net.layers, layout.value_first, layout.value_blocks, x, tmp, tmp2)
    _dense(heads.value_w, heads.value_w_fp16, x, work.value_logits[0])
    value_rows(work.value_logits, heads.value_b, layout.support_size, out_value)


@numba.njit(fastmath=FASTMATH, cache=True, nogil=True)
def _causal_conv(
    x: np.ndarray,
    weight: np.ndarray,
    bias: np.ndarray,
    kernel: int,
    dilation: int,
    column: np.ndarray,
    out: np.ndarray,
) -> None:
    """out (T, C_out) = causal dilated conv of x (T, C_in), left zero padding, one mat-vec per step.

    weight (C_out, P): columns [x(t - (K-1)d), ..., x(t)] (K * C_in), zero-padded to P for whole
    vectors; ``column`` (>= P) is the im2col row of one step.
    """
    steps, c_in = x.shape
    width = weight.shape[1]
    column[kernel * c_in : width] = 0.0
    for t in range(steps):
        for k in range(kernel):
            src = t - (kernel - 1 - k) * dilation
            if src < 0:
                column[k * c_in : (k + 1) * c_in] = 0.0
            else:
                column[k * c_in : (k + 1) * c_in] = x[src]
        row = out[t]
        matvec_by4(weight, column[:width], row)
        row += bias


@numba.njit(fastmath=FASTMATH, cache=True, nogil=True)
def _tcn(rep: Representation, kernel: int, work: TcnScratch, window: np.ndarray) -> np.ndarray:
    """The causal TCN of one window (T, F): the residual stack of ReLU convs, into work.tcn[0]."""
    steps = window.shape[0]
    x, y = work.tcn[0], work.tcn[1]
    channels = x.shape[1]
    _causal_conv(window, rep.conv_w[0], rep.conv_b[0], kernel, rep.dilations[0], work.column, x)
    for t in range(steps):
        for c in range(channels):
            x[t, c] = max(x[t, c], np.float32(0.0))
    for i in range(1, len(rep.conv_w)):
        _causal_conv(x, rep.conv_w[i], rep.conv_b[i], kernel, rep.dilations[i], work.column, y)
        for t in range(steps):
            for c in range(channels):
                x[t, c] += max(y[t, c], np.float32(0.0))
    return x


@numba.njit(fastmath=FASTMATH, cache=True, nogil=True)
def representation_front(
    rep: Representation, tcn_kernel: int, work: TcnScratch, window: np.ndarray, state: np.ndarray
) -> None:
    """TCN, attention pooling and projection (bias included) of one window into state (H,)."""
    features, scores = work.features, work.scores
    x = _tcn(rep, tcn_kernel, work, window)
    steps, channels = x.shape
    n_features = window.shape[1]
    # Attention pooling over the steps: softmax of one score per step, weighted sum of the rows.
    top = -np.inf
    for t in range(steps):
        acc = np.float32(0.0)
        for c in range(channels):
            acc += x[t, c] * rep.attention_w[c]
        scores[t] = acc + rep.attention_b[0]
        top = max(top, scores[t])
    total = 0.0
    for t in range(steps):
        e = np.exp(np.float64(scores[t]) - top)
        scores[t] = e
        total += e
    features[:channels] = 0.0
    for t in range(steps):
        p = np.float32(scores[t] / total)
        for c in range(channels):
            features[c] += p * x[t, c]
    # [pooled, current row, zero padding] -> hidden; the padding columns of project_w are zero.
    features[channels : channels + n_features] = window[steps - 1]
    matvec(rep.project_w, features, state)
    state += rep.project_b


@numba.njit(fastmath=FASTMATH, cache=True, nogil=True)
def representation_norm(rep: Representation, state: np.ndarray) -> None:
    """The representation's final LayerNorm, in place on one state (H,)."""
    mean = state.mean()
    variance = ((state - mean) ** 2).mean()
    inv = np.float32(1.0) / np.sqrt(variance + rep.norm_eps[0])
    for c in range(state.shape[0]):
        state[c] = (state[c] - mean) * inv * rep.norm_gain[c] + rep.norm_shift[c]


@numba.njit(fastmath=FASTMATH, cache=True, nogil=True)
def initial_rows(
    network: tuple, scratch: tuple, rep: tuple, tcn: tuple, windows: np.ndarray, outputs: tuple
) -> None:
    """Representation (TCN, attention pooling, projection, blocks, LayerNorm) + policy/value heads,
    per row, into outputs (hidden (M, H), policy logits (M, A), value (M,))."""
    out_hidden, out_policy, out_value = outputs
    net, work = named_network(network), Scratch(*scratch)
    representation, tcn_work = Representation(*rep), TcnScratch(*tcn)
    layout = net.layout
    state = work.vectors[3]
    for r in range(windows.shape[0]):
        representation_front(representation, layout.tcn_kernel, tcn_work, windows[r], state)
        _vector_blocks(
            net.layers,
            layout.representation_first,
            layout.representation_blocks,
            state,
            work.vectors[0],
            work.vectors[1],
        )
        representation_norm(representation, state)
        out_hidden[r] = state
        _heads_row(net, work, state, out_policy[r], out_value[r : r + 1])


@numba.njit(fastmath=FASTMATH, cache=True, nogil=True)
def outcome_rows(
    network: tuple, scratch: tuple, hidden: np.ndarray, actions: np.ndarray, probs: np.ndarray
) -> None:
    """Outcome network (projection, blocks, softmax head), per row: hidden (M, H), actions (M,) -> probs."""
    net, work = named_network(network), Scratch(*scratch)
    heads, layout = net.heads, net.layout
    x, tmp, tmp2 = work.vectors[0], work.vectors[1], work.vectors[2]
    for r in range(hidden.shape[0]):
        _square(net.layers, layout.outcome_project, hidden[r], x)
        x += heads.outcome_action_rows[actions[r]]
        _vector_blocks(net.layers, layout.outcome_first, layout.outcome_blocks, x, tmp, tmp2)
        matvec(heads.outcome_w, x, work.outcome_logits[0])
        softmax_rows(work.outcome_logits, heads.outcome_b, probs[r : r + 1])


@numba.njit(fastmath=FASTMATH, cache=True, nogil=True)
def recurrent_rows(network: tuple, scratch: tuple, inputs: tuple, outputs: tuple) -> None:
    """Dynamics (projection, blocks, reward, next hidden) + policy/value heads, per row: inputs (hidden
    (M, H), actions (M,), outcomes (M,)) -> outputs (next hidden, reward (M,), policy logits, value (M,))."""
    hidden, actions, outcomes = inputs
    out_hidden, out_reward, out_policy, out_value = outputs
    net, work = named_network(network), Scratch(*scratch)
    layers, heads, layout = net.layers, net.heads, net.layout
    x, tmp, tmp2, state = work.vectors[0], work.vectors[1], work.vectors[2], work.vectors[3]
    last = layout.next_hidden
    for r in range(hidden.shape[0]):
        _square(layers, layout.dynamics_project, hidden[r], x)
        x += heads.dynamics_action_rows[actions[r]]
        x += heads.dynamics_outcome_rows[outcomes[r]]
        _vector_blocks(layers, layout.dynamics_first, layout.dynamics_blocks, x, tmp, tmp2)
        matvec(heads.reward_w, x, work.scalar)
        out_reward[r] = work.scalar[0] + heads.reward_b[0]
        _square(layers, last, x, state)
        _vector_norm(state, layers.bias[last], layers.norm_gain[last], layers.norm_shift[last], x, NORM)
        out_hidden[r] = state
        _heads_row(net, work, state, out_policy[r], out_value[r : r + 1])
