"""The network's weights packed for the numba kernels: contiguous float32 arrays in named tuples.

Every square (H, H) Linear of the networks sits in one stack (``SquareLayers``), in this order:
representation blocks, outcome projection, outcome blocks, dynamics projection, dynamics blocks, the
next-hidden layer, policy blocks, value blocks; ``Layout`` says where each network starts. The first
Linear of the outcome and dynamics networks reads [hidden, one-hot action (, one-hot outcome)]: its
one-hot columns become row tables (``Heads``) that the kernels add by index.

The kernels take these as plain tuples (``as_plain``) and name them again inside: numba types a named
tuple argument in Python on every call (about 5 µs for all of these), a plain one from a fingerprint
cached in C.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import numpy as np
import torch
from torch import nn

from shared.model.config import ModelConfig
from shared.model.inference.torch_fast import split_project
from shared.model.networks import MuZeroNetwork

# Bytes: a cache line (one AVX-512 vector). numpy's allocator gives 16-byte alignment, and a vector load
# from a 16-byte-aligned row straddles two lines: cache-line-aligned weights and scratch took 5-7% off
# one-row recurrent and outcome_probs calls (docs/INFERENCE.md).
ALIGNMENT = 64
EMPTY_INT8 = np.zeros((0, 1, 1), np.int8)
EMPTY_SCALE = np.zeros((0, 1), np.float32)
EMPTY_HALF = np.zeros((0, 1, 1), np.uint16)


class SquareLayers(NamedTuple):
    """Every square Linear, stacked (L, H, H) row-major (out, in), with the LayerNorm after it."""

    weight: np.ndarray  # (L, H, H) float32
    weight_int8: np.ndarray  # numba_int8: (L, H, H), weight ~= weight_int8 * int8_scale; else empty
    int8_scale: np.ndarray  # (L, H): one scale per output row; else empty
    weight_fp16: np.ndarray  # numba_fp16: (L, H, H) uint16 bit patterns of float16 values; else empty
    bias: np.ndarray  # (L, H)
    norm_gain: np.ndarray  # (L, H); ones where no LayerNorm follows
    norm_shift: np.ndarray  # (L, H); zeros where no LayerNorm follows


class Layout(NamedTuple):
    """Where each network's layers start in ``SquareLayers``, its block count, and two sizes."""

    representation_first: int
    representation_blocks: int
    outcome_project: int
    outcome_first: int
    outcome_blocks: int
    dynamics_project: int
    dynamics_first: int
    dynamics_blocks: int
    next_hidden: int
    policy_first: int
    policy_blocks: int
    value_first: int
    value_blocks: int
    support_size: int
    tcn_kernel: int


class Heads(NamedTuple):
    """The projections' one-hot row tables and the output layers (weight (out, H), bias (out,))."""

    outcome_action_rows: np.ndarray  # (A, H); the outcome projection's bias folded in
    dynamics_action_rows: np.ndarray  # (A, H); the dynamics projection's bias folded in
    dynamics_outcome_rows: np.ndarray  # (O, H)
    outcome_w: np.ndarray
    outcome_b: np.ndarray
    reward_w: np.ndarray
    reward_b: np.ndarray
    policy_w: np.ndarray
    policy_b: np.ndarray
    value_w: np.ndarray
    value_b: np.ndarray
    value_w_fp16: np.ndarray  # numba_fp16: value_w as float16 bits; else empty


class Representation(NamedTuple):
    """The TCN, attention pooling, projection and final LayerNorm of the representation network."""

    conv_w: tuple[np.ndarray, ...]  # per conv (C_out, P): im2col rows, zero-padded to P (see conv_matrix)
    conv_b: tuple[np.ndarray, ...]
    dilations: np.ndarray  # int64, per conv
    attention_w: np.ndarray  # (C,)
    attention_b: np.ndarray  # (1,)
    project_w: np.ndarray  # (H, C + F), zero-padded to a multiple of 16 columns
    project_b: np.ndarray
    norm_gain: np.ndarray
    norm_shift: np.ndarray
    norm_eps: np.ndarray  # (1,)


class PackedNetwork(NamedTuple):
    """What every kernel reads; ``initial`` also reads the ``Representation``."""

    layers: SquareLayers
    heads: Heads
    layout: Layout


class Scratch(NamedTuple):
    """The kernels' work arrays, allocated once (no allocation inside a call)."""

    vectors: np.ndarray  # (4, H): x, tmp, tmp2, state
    value_logits: np.ndarray  # (1, atoms)
    outcome_logits: np.ndarray  # (1, O)
    scalar: np.ndarray  # (1,): the reward
    blocked: np.ndarray  # the row-blocked kernels' flat scratch, rows * blocked_row_width(cfg)


class TcnScratch(NamedTuple):
    """The representation's work arrays (``initial`` only)."""

    tcn: np.ndarray  # (2, T, C): TCN activations
    features: np.ndarray  # [pooled, current row, zero padding], as wide as project_w
    scores: np.ndarray  # (T,): attention scores
    column: np.ndarray  # the im2col row of one step


def to_float32(x: torch.Tensor) -> np.ndarray:
    return np.ascontiguousarray(x.detach().numpy(), dtype=np.float32)


def half_bits(x: np.ndarray) -> np.ndarray:
    """float32 -> the uint16 bit patterns of its nearest float16 values (what ``half_to_float`` reads)."""
    return np.ascontiguousarray(x.astype(np.float16).view(np.uint16))


def aligned_empty(shape: int | tuple[int, ...], dtype: type = np.float32) -> np.ndarray:
    """An uninitialised C-contiguous array whose data starts on an ``ALIGNMENT`` boundary."""
    count, itemsize = int(np.prod(shape)), np.dtype(dtype).itemsize
    buffer = np.empty(count * itemsize + ALIGNMENT, np.uint8)
    start = -buffer.ctypes.data % ALIGNMENT
    return buffer[start : start + count * itemsize].view(dtype).reshape(shape)


def aligned_arrays(value: Any) -> Any:
    """Every array in ``value`` (nested tuples and named tuples) copied to ``ALIGNMENT``."""
    if isinstance(value, np.ndarray):
        out = aligned_empty(value.shape, value.dtype.type)
        out[...] = value
        return out
    if isinstance(value, tuple):
        items = [aligned_arrays(item) for item in value]
        return type(value)(*items) if hasattr(value, "_fields") else tuple(items)
    return value


def as_plain(value: Any) -> Any:
    """Named tuples (nested) -> plain tuples, as the kernels take them."""
    if isinstance(value, tuple):
        return tuple(as_plain(item) for item in value)
    return value


def pack_network(snapshot: MuZeroNetwork, int8: bool = False, fp16: bool = False) -> PackedNetwork:
    """The weights of ``snapshot`` (an eval copy); ``int8`` / ``fp16`` add the lower-precision copies."""
    square_layers, layout = _square_layers(snapshot)
    layers, heads = _stack(square_layers, int8, fp16), _heads(snapshot, fp16)
    return aligned_arrays(PackedNetwork(layers=layers, heads=heads, layout=layout))


def _square_layers(snapshot: MuZeroNetwork) -> tuple[list[tuple[nn.Linear, nn.LayerNorm | None]], Layout]:
    """Every square (H, H) Linear in stack order, with the LayerNorm that follows it (if any)."""
    cfg = snapshot.cfg
    layers: list[tuple[nn.Linear, nn.LayerNorm | None]] = []

    def add_blocks(blocks: nn.Sequential) -> int:
        first = len(layers)
        for block in blocks:
            layers.extend([(block.fc1, block.norm1), (block.fc2, block.norm2)])
        return first

    def add_square(weight: torch.Tensor, bias: torch.Tensor, norm: nn.LayerNorm | None) -> int:
        layer = nn.Linear(cfg.hidden, cfg.hidden)
        layer.weight.data, layer.bias.data = weight, bias
        layers.append((layer, norm))
        return len(layers) - 1

    outcome_w, _ = split_project(snapshot.outcome.project, cfg.hidden, (cfg.n_actions,))
    dynamics_w, *_ = split_project(snapshot.dynamics.project, cfg.hidden, (cfg.n_actions, cfg.n_outcomes))
    zero_bias = torch.zeros(cfg.hidden)  # the projections' biases live in their action rows
    dynamics = snapshot.dynamics
    layout = Layout(
        representation_first=add_blocks(snapshot.representation.blocks),
        representation_blocks=cfg.representation_blocks,
        outcome_project=add_square(outcome_w, zero_bias, None),
        outcome_first=add_blocks(snapshot.outcome.blocks),
        outcome_blocks=cfg.outcome_blocks,
        dynamics_project=add_square(dynamics_w, zero_bias, None),
        dynamics_first=add_blocks(dynamics.blocks),
        dynamics_blocks=cfg.dynamics_blocks,
        next_hidden=add_square(dynamics.next_hidden.weight, dynamics.next_hidden.bias, dynamics.next_norm),
        policy_first=add_blocks(snapshot.policy.blocks),
        policy_blocks=cfg.policy_blocks,
        value_first=add_blocks(snapshot.value.blocks),
        value_blocks=cfg.value_blocks,
        support_size=cfg.support_size,
        tcn_kernel=cfg.tcn_kernel,
    )
    return layers, layout


def _stack(
    square_layers: list[tuple[nn.Linear, nn.LayerNorm | None]], int8: bool, fp16: bool
) -> SquareLayers:
    hidden = square_layers[0][0].out_features
    ones, zeros = torch.ones(hidden), torch.zeros(hidden)
    weight = np.stack([to_float32(linear.weight) for linear, _ in square_layers])
    weight_int8, int8_scale = EMPTY_INT8, EMPTY_SCALE
    if int8:
        # Symmetric per-output-row int8: w ~= q * scale; the scale multiplies the dot product once.
        int8_scale = np.maximum(np.abs(weight).max(axis=2) / 127.0, 1e-12).astype(np.float32)
        weight_int8 = np.clip(np.rint(weight / int8_scale[:, :, None]), -127, 127).astype(np.int8)
    return SquareLayers(
        weight=weight,
        weight_int8=weight_int8,
        int8_scale=int8_scale,
        weight_fp16=half_bits(weight) if fp16 else EMPTY_HALF,
        bias=np.stack([to_float32(linear.bias) for linear, _ in square_layers]),
        norm_gain=np.stack(
            [to_float32(norm.weight if norm is not None else ones) for _, norm in square_layers]
        ),
        norm_shift=np.stack(
            [to_float32(norm.bias if norm is not None else zeros) for _, norm in square_layers]
        ),
    )


def _heads(snapshot: MuZeroNetwork, fp16: bool) -> Heads:
    cfg = snapshot.cfg
    _, outcome_action_rows = split_project(snapshot.outcome.project, cfg.hidden, (cfg.n_actions,))
    _, dynamics_action_rows, dynamics_outcome_rows = split_project(
        snapshot.dynamics.project, cfg.hidden, (cfg.n_actions, cfg.n_outcomes)
    )
    value_w = to_float32(snapshot.value.head.weight)
    return Heads(
        outcome_action_rows=to_float32(outcome_action_rows),
        dynamics_action_rows=to_float32(dynamics_action_rows),
        dynamics_outcome_rows=to_float32(dynamics_outcome_rows),
        outcome_w=to_float32(snapshot.outcome.head.weight),
        outcome_b=to_float32(snapshot.outcome.head.bias),
        reward_w=to_float32(snapshot.dynamics.reward.weight),
        reward_b=to_float32(snapshot.dynamics.reward.bias),
        policy_w=to_float32(snapshot.policy.head.weight),
        policy_b=to_float32(snapshot.policy.head.bias),
        value_w=value_w,
        value_b=to_float32(snapshot.value.head.bias),
        value_w_fp16=half_bits(value_w) if fp16 else np.zeros((0, cfg.hidden), np.uint16),
    )


def conv_matrix(conv: nn.Conv1d) -> np.ndarray:
    """Conv1d weight (C_out, C_in, K) -> (C_out, K * C_in) rows over [x(t - (K-1)d), ..., x(t)],
    zero-padded to a multiple of 8 columns (whole AVX2 vectors)."""
    weight = to_float32(conv.weight).transpose(0, 2, 1).reshape(conv.out_channels, -1)
    return np.ascontiguousarray(np.pad(weight, ((0, 0), (0, -weight.shape[1] % 8))))


def pack_representation(snapshot: MuZeroNetwork) -> Representation:
    rep = snapshot.representation
    project_w = to_float32(rep.project.weight)  # (H, C + F)
    padded = -(-project_w.shape[1] // 16) * 16
    return aligned_arrays(
        Representation(
            conv_w=tuple(conv_matrix(c.conv) for c in rep.convs),
            conv_b=tuple(to_float32(c.conv.bias) for c in rep.convs),
            dilations=np.array([c.conv.dilation[0] for c in rep.convs], np.int64),
            attention_w=to_float32(rep.attention.weight).reshape(-1),
            attention_b=to_float32(rep.attention.bias).reshape(1),
            project_w=np.ascontiguousarray(np.pad(project_w, ((0, 0), (0, padded - project_w.shape[1])))),
            project_b=to_float32(rep.project.bias),
            norm_gain=to_float32(rep.norm.weight),
            norm_shift=to_float32(rep.norm.bias),
            norm_eps=np.array([rep.norm.eps], np.float32),
        )
    )


def blocked_row_width(cfg: ModelConfig) -> int:
    """Floats of row-blocked scratch per row: three (rows, H) arrays and the widest head's logits."""
    return 3 * cfg.hidden + max(cfg.n_atoms, cfg.n_outcomes, 1)


def new_scratch(cfg: ModelConfig) -> Scratch:
    """The kernels' work arrays; ``blocked`` starts empty (it grows with the rows)."""
    return aligned_arrays(
        Scratch(
            vectors=np.zeros((4, cfg.hidden), np.float32),
            value_logits=np.zeros((1, cfg.n_atoms), np.float32),
            outcome_logits=np.zeros((1, cfg.n_outcomes), np.float32),
            scalar=np.zeros(1, np.float32),
            blocked=np.zeros(0, np.float32),
        )
    )


def new_tcn_scratch(cfg: ModelConfig, representation: Representation) -> TcnScratch:
    return aligned_arrays(
        TcnScratch(
            tcn=np.zeros((2, cfg.window, cfg.tcn_channels), np.float32),
            features=np.zeros(representation.project_w.shape[1], np.float32),
            scores=np.zeros(cfg.window, np.float32),
            column=np.zeros(max(m.shape[1] for m in representation.conv_w), np.float32),
        )
    )
