"""Fast inference for the search: the same three entry points over numpy arrays, several backends.

The batched MCTS calls the model only through ``ModelFunctions`` (numpy in, numpy out). Backends:

- ``torch``: the reference, ``MuZeroNetwork`` as written (one-hot concatenation), eval + inference mode.
- ``torch_fast``: torch eager on rewritten modules: the one-hot columns of each first Linear become a
  gather of weight rows (bias folded in), policy and value first layers run as one (H, 2H) matmul,
  the value scalar is computed in the graph.
- ``torchscript``: ``torch_fast`` traced, frozen and ``optimize_for_inference``.
- ``onnx``: ``torch_fast`` exported to ONNX (legacy exporter, opset 17) and run by ONNX Runtime.
- ``numba``: hand-fused numpy + numba: weights pre-packed contiguous float32; up to
  ``SMALL_BATCH_ROWS`` (1) rows a single numba kernel runs the whole network per row (one dispatch per
  call, ``initial`` included: TCN, pooling, blocks, heads; preallocated scratch, no numpy BLAS); above
  it, below ``BLOCKED_BATCH_ROWS`` (64) rows (``BLOCKED_INITIAL_ROWS`` for ``initial``), row-blocked
  numba kernels, still one dispatch per call: layer by layer over all rows, each group of four weight
  rows read once and multiplied with four rows at a time (``initial`` keeps its TCN per row); above
  that torch's MKL GEMM on zero-copy views into preallocated buffers and numba row kernels for
  bias + LayerNorm + residual + ReLU.
- ``numba_fp16``: lower precision, a separate backend: the per-row kernels (up to 2 rows) read the
  square layers and the value head as float16 (2x less weight traffic at batch 1), widened to float32
  by F16C and accumulated in float32; more rows as ``numba`` (fp32).
- ``numba_int8``: lower precision, a separate backend: the per-row kernel (up to 2 rows) with int8
  weights and one float scale per output row (4x less weight traffic at batch 1); more rows as
  ``numba`` (fp32).

Every fp32 backend matches the reference within 1e-4 (tests/shared/model/test_inference.py).
``make_model_functions(model, "auto")`` is the measured winner per regime (docs/INFERENCE.md and the
comments on the row-count constants): the numba per-row kernels at 1 row, the row-blocked kernels from
2 to 63 rows (``initial``: to ``LARGE_BATCH_ROWS - 1``), numba's GEMM path from 64 to
``LARGE_BATCH_ROWS - 1`` rows, ``torch_fast`` above.

Threads are explicit: ``threads`` sets ``torch.set_num_threads`` (torch backends), ORT's
``intra_op_num_threads`` (onnx), and torch + numba threads (numba backends). ``None`` means all cores.
"""

from __future__ import annotations

import copy
import io
import os
from typing import Protocol

import numba
import numpy as np
import torch
from llvmlite import ir
from numba import types
from numba.extending import intrinsic
from torch import nn
from torch.nn import functional as F

from shared.model.networks import MLPResidualBlock, MuZeroNetwork
from shared.model.support import EPSILON, logits_to_scalar

BACKENDS = ("auto", "torch", "torch_fast", "torchscript", "onnx", "numba", "numba_fp16", "numba_int8")
# Row-count routing, measured on one thread (us per call, ranges over repeated runs on a 2-core AMD EPYC
# with AVX-512 while another process kept both cores busy, so only the ratios are solid).
#
# Up to this many rows the per-row fused numba kernels (fp32): at 1 row they beat the row-blocked kernels
# (recurrent 99-100 against 118-122, outcome_probs 27-28 against 31, initial 123-124 against 141-144),
# at 2 rows they lose (recurrent 196-203 against 133-147, outcome_probs 49-51 against 32-34, initial
# 238-254 against 187-199).
SMALL_BATCH_ROWS = 1
# numba_fp16 and numba_int8 keep their lower-precision per-row kernels up to 2 rows (the row-blocked
# kernels read fp32 weights only).
LOW_PRECISION_SMALL_BATCH_ROWS = 2
# "auto" hands calls of this many rows and more to torch_fast; below, numba's own paths are faster
# (measured whole searches, 25 simulations: 911 against 576 decisions/s at 32 rows on one thread,
# 1,342 against 1,049 at 64 rows on two; equal at 256; torch_fast ahead at 1,024 on two threads).
LARGE_BATCH_ROWS = 256
# outcome_probs and recurrent: above SMALL_BATCH_ROWS and below this many rows the row-blocked kernels
# (one numba dispatch per call), from here to LARGE_BATCH_ROWS - 1 numba's GEMM path (row-blocked
# against GEMM): recurrent 176-218 against 483-729 at 4 rows, 498-508 against 942-988 at 12, 1,296-1,773
# against 1,665-2,219 at 32, even at 64 (3,041-3,406 against 3,108-3,166) and 128; outcome_probs 42-47
# against 104-125 at 4, 107 against 163-184 at 12, 273-307 against 332-369 at 32, even at 64 and 128.
# Whole serving searches (25 simulations) with the row-blocked kernels: 1.9-3.2x the decisions/s at
# 4-8 rows, 1.45-1.9x at 12-16, 1.15-1.4x at 24-48; even at 64-96, where MKL GEMM on an idle core
# (~100 GFLOP/s against ~70 for the 4 x 4 tiles) should pull ahead.
BLOCKED_BATCH_ROWS = 64
# initial: the row-blocked kernel (TCN per row, then row-blocked residual blocks and heads) below this
# many rows, which reaches the torch_fast hand-over: 297-299 against 607-1,094 at 4 rows, 854-989 against
# 1,185-1,316 at 12, 2,285-2,550 against 3,531-4,223 at 32, 8,778-8,800 against 12,823-13,187 at 128.
BLOCKED_INITIAL_ROWS = LARGE_BATCH_ROWS


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


def _float_rows(x: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(x, dtype=np.float32)


def _index_rows(x: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(x, dtype=np.int64)


def _eval_copy(model: MuZeroNetwork) -> MuZeroNetwork:
    """A frozen snapshot: later training steps on ``model`` do not leak into a running search."""
    snapshot = copy.deepcopy(model).eval()
    for parameter in snapshot.parameters():
        parameter.requires_grad_(False)
    return snapshot


# --------------------------------------------------------------------------------------------------
# torch: the reference


class TorchFunctions:
    """The reference: ``MuZeroNetwork`` exactly as written, eval mode, ``torch.inference_mode``."""

    def __init__(self, model: MuZeroNetwork, threads: int | None = None) -> None:
        self.model = _eval_copy(model)
        self.support_size = self.model.cfg.support_size
        if threads is not None:
            torch.set_num_threads(threads)

    def initial(self, windows: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        with torch.inference_mode():
            out = self.model.initial_inference(torch.from_numpy(_float_rows(windows)))
            value = logits_to_scalar(out.value_logits, self.support_size)
            return out.hidden.numpy(), out.policy_logits.numpy(), value.numpy()

    def outcome_probs(self, hidden: np.ndarray, actions: np.ndarray) -> np.ndarray:
        with torch.inference_mode():
            probs = self.model.outcome_probabilities(
                torch.from_numpy(_float_rows(hidden)), torch.from_numpy(_index_rows(actions))
            )
            return probs.numpy()

    def recurrent(
        self, hidden: np.ndarray, actions: np.ndarray, outcomes: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        with torch.inference_mode():
            out = self.model.recurrent_inference(
                torch.from_numpy(_float_rows(hidden)),
                torch.from_numpy(_index_rows(actions)),
                torch.from_numpy(_index_rows(outcomes)),
            )
            value = logits_to_scalar(out.value_logits, self.support_size)
            return out.hidden.numpy(), out.reward.numpy(), out.policy_logits.numpy(), value.numpy()


# --------------------------------------------------------------------------------------------------
# torch_fast: rewritten modules (also what torchscript traces and onnx exports)


def _split_project(project: nn.Linear, hidden: int, sizes: tuple[int, ...]) -> tuple[torch.Tensor, ...]:
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
        w_hidden, action_rows = _split_project(model.outcome.project, cfg.hidden, (cfg.n_actions,))
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
        w_hidden, action_rows, outcome_rows = _split_project(
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


class _TorchModulesFunctions:
    """numpy in/out around three torch callables (eager fast modules or their TorchScript)."""

    def __init__(self, initial: nn.Module, outcome: nn.Module, recurrent: nn.Module) -> None:
        self._initial, self._outcome, self._recurrent = initial, outcome, recurrent

    def initial(self, windows: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        with torch.inference_mode():
            hidden, policy, value = self._initial(torch.from_numpy(_float_rows(windows)))
            return hidden.numpy(), policy.numpy(), value.numpy()

    def outcome_probs(self, hidden: np.ndarray, actions: np.ndarray) -> np.ndarray:
        with torch.inference_mode():
            return self._outcome(
                torch.from_numpy(_float_rows(hidden)), torch.from_numpy(_index_rows(actions))
            ).numpy()

    def recurrent(
        self, hidden: np.ndarray, actions: np.ndarray, outcomes: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        with torch.inference_mode():
            out = self._recurrent(
                torch.from_numpy(_float_rows(hidden)),
                torch.from_numpy(_index_rows(actions)),
                torch.from_numpy(_index_rows(outcomes)),
            )
            return tuple(t.numpy() for t in out)  # type: ignore[return-value]


def _fast_modules(model: MuZeroNetwork) -> tuple[FastInitial, FastOutcome, FastRecurrent]:
    snapshot = _eval_copy(model)
    modules = FastInitial(snapshot).eval(), FastOutcome(snapshot).eval(), FastRecurrent(snapshot).eval()
    for module in modules:
        for parameter in module.parameters():
            parameter.requires_grad_(False)
    return modules


def _example_inputs(model: MuZeroNetwork, rows: int = 8) -> tuple[tuple[torch.Tensor, ...], ...]:
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
    return _TorchModulesFunctions(*_fast_modules(model))


def torchscript_functions(model: MuZeroNetwork, threads: int | None = None) -> ModelFunctions:
    """trace -> freeze -> optimize_for_inference of the fast modules (no compiler needed)."""
    if threads is not None:
        torch.set_num_threads(threads)
    scripted = []
    with torch.inference_mode(False), torch.no_grad():
        for module, example in zip(_fast_modules(model), _example_inputs(model), strict=True):
            traced = torch.jit.trace(module, example, check_trace=False)
            scripted.append(torch.jit.optimize_for_inference(torch.jit.freeze(traced)))
    return _TorchModulesFunctions(*scripted)


# --------------------------------------------------------------------------------------------------
# onnx: the fast modules exported and run by ONNX Runtime


def export_onnx(model: MuZeroNetwork) -> dict[str, bytes]:
    """The three fast modules as ONNX models (legacy TorchScript exporter: needs no onnxscript)."""
    names = {
        "initial": (["windows"], ["hidden", "policy_logits", "value"]),
        "outcome": (["hidden", "actions"], ["probs"]),
        "recurrent": (["hidden", "actions", "outcomes"], ["next_hidden", "reward", "policy_logits", "value"]),
    }
    exported = {}
    for (name, (inputs, outputs)), module, example in zip(
        names.items(), _fast_modules(model), _example_inputs(model), strict=True
    ):
        buffer = io.BytesIO()
        torch.onnx.export(
            module,
            example,
            buffer,
            dynamo=False,
            opset_version=17,
            input_names=inputs,
            output_names=outputs,
            dynamic_axes={n: {0: "rows"} for n in inputs + outputs},
        )
        exported[name] = buffer.getvalue()
    return exported


class OnnxFunctions:
    """ONNX Runtime, CPU provider, sequential execution, ``threads`` intra-op threads, all graph opts."""

    def __init__(self, model: MuZeroNetwork, threads: int | None = None, spin: bool = True) -> None:
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        options.intra_op_num_threads = threads or os.cpu_count() or 1
        options.inter_op_num_threads = 1
        # Spinning keeps the intra-op pool hot between the search's back-to-back calls.
        options.add_session_config_entry("session.intra_op.allow_spinning", "1" if spin else "0")
        self.sessions = {
            name: ort.InferenceSession(data, options, providers=["CPUExecutionProvider"])
            for name, data in export_onnx(model).items()
        }

    def initial(self, windows: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        hidden, policy, value = self.sessions["initial"].run(None, {"windows": _float_rows(windows)})
        return hidden, policy, value

    def outcome_probs(self, hidden: np.ndarray, actions: np.ndarray) -> np.ndarray:
        feeds = {"hidden": _float_rows(hidden), "actions": _index_rows(actions)}
        return self.sessions["outcome"].run(None, feeds)[0]

    def recurrent(
        self, hidden: np.ndarray, actions: np.ndarray, outcomes: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        feeds = {
            "hidden": _float_rows(hidden),
            "actions": _index_rows(actions),
            "outcomes": _index_rows(outcomes),
        }
        next_hidden, reward, policy, value = self.sessions["recurrent"].run(None, feeds)
        return next_hidden, reward, policy, value


# --------------------------------------------------------------------------------------------------
# numba: hand-fused numpy + numba

# No nnan/ninf/afn: only reassociation (to vectorise the dot products) and FMA contraction.
_FASTMATH = {"nsz", "arcp", "contract", "reassoc"}
# Every kernel is nogil: the inference service's search thread then leaves the GIL to its HTTP event
# loop, which parses and answers requests on the other core while a search runs.
_LAYER_NORM_EPS = 1e-5

# Row-kernel modes.
_NORM = 0  # y = LN(y + b)
_NORM_RELU = 1  # y = relu(LN(y + b))
_NORM_RESIDUAL_RELU = 2  # y = relu(residual + LN(y + b))


def _rows_kernel(
    y: np.ndarray, bias: np.ndarray, gain: np.ndarray, shift: np.ndarray, residual: np.ndarray, mode: int
) -> None:
    """Bias + LayerNorm (+ residual) (+ ReLU) in place over every row of y: one pass over the data."""
    rows, width = y.shape
    for r in numba.prange(rows):
        mean = 0.0
        for j in range(width):
            v = y[r, j] + bias[j]
            y[r, j] = v
            mean += v
        mean /= width
        var = 0.0
        for j in range(width):
            d = y[r, j] - mean
            var += d * d
        inv = 1.0 / np.sqrt(var / width + _LAYER_NORM_EPS)
        for j in range(width):
            v = np.float32((y[r, j] - mean) * inv) * gain[j] + shift[j]
            if mode == _NORM_RESIDUAL_RELU:
                v += residual[r, j]
            if mode != _NORM and v < 0.0:
                v = np.float32(0.0)
            y[r, j] = v


_rows_kernel_serial = numba.njit(fastmath=_FASTMATH, cache=True, nogil=True)(_rows_kernel)
_rows_kernel_parallel = numba.njit(fastmath=_FASTMATH, cache=True, nogil=True, parallel=True)(_rows_kernel)


@numba.njit(fastmath=_FASTMATH, cache=True, nogil=True)
def _add_rows(
    y: np.ndarray, first_table: np.ndarray, first: np.ndarray, second_table: np.ndarray, second: np.ndarray
) -> None:
    """y += first_table[first] (+ second_table[second] when that table has rows): the one-hot gather."""
    use_second = second_table.shape[0] > 0
    for r in range(y.shape[0]):
        a = first[r]
        for j in range(y.shape[1]):
            y[r, j] += first_table[a, j]
        if use_second:
            o = second[r]
            for j in range(y.shape[1]):
                y[r, j] += second_table[o, j]


@numba.njit(fastmath=_FASTMATH, cache=True, nogil=True)
def _softmax_rows(logits: np.ndarray, bias: np.ndarray, out: np.ndarray) -> None:
    for r in range(logits.shape[0]):
        top = -np.inf
        for j in range(logits.shape[1]):
            top = max(top, logits[r, j] + bias[j])
        total = 0.0
        for j in range(logits.shape[1]):
            e = np.exp(np.float64(logits[r, j] + bias[j]) - top)
            out[r, j] = e
            total += e
        for j in range(logits.shape[1]):
            out[r, j] = out[r, j] / total


@numba.njit(fastmath=_FASTMATH, cache=True, nogil=True)
def _inverse_transform(y: float) -> float:
    a = abs(y)
    root = (np.sqrt(1.0 + 4.0 * EPSILON * (a + 1.0 + EPSILON)) - 1.0) / (2.0 * EPSILON)
    return np.sign(y) * (root * root - 1.0)


@numba.njit(fastmath=_FASTMATH, cache=True, nogil=True)
def _value_rows(logits: np.ndarray, bias: np.ndarray, support_size: int, out: np.ndarray) -> None:
    """Softmax expectation over the atoms -support..support, then the inverse value transform."""
    for r in range(logits.shape[0]):
        top = -np.inf
        for j in range(logits.shape[1]):
            top = max(top, logits[r, j] + bias[j])
        total = 0.0
        weighted = 0.0
        for j in range(logits.shape[1]):
            e = np.exp(np.float64(logits[r, j] + bias[j]) - top)
            total += e
            weighted += e * (j - support_size)
        out[r] = _inverse_transform(weighted / total)


# ---- the per-row fused kernels (batch 1): one dispatch runs a whole network
#
# Weight stacks arrive as tuples; a low-precision copy is used when it has rows (int8 first, then
# fp16), else the fp32 one. Every scratch vector is preallocated by ``NumbaFunctions`` and passed in.


@intrinsic
def _half_to_float(typingctx, bits):  # numba intrinsic signature
    """IEEE half (as its uint16 bits) -> float32: LLVM ``fpext half``, which F16C vectorises (vcvtph2ps).

    numba's CPU target does not type float16 arrays, so fp16 weights are stored as their bit patterns.
    """
    if bits != types.uint16:
        return None

    def codegen(context, builder, signature, args):  # numba intrinsic signature
        return builder.fpext(builder.bitcast(args[0], ir.HalfType()), ir.FloatType())

    return types.float32(types.uint16), codegen


@numba.njit(fastmath=_FASTMATH, cache=True, nogil=True, inline="always")
def _matvec(weight: np.ndarray, x: np.ndarray, out: np.ndarray) -> None:
    """out = weight @ x, weight (n_out, n_in) row-major: each row is one contiguous dot product."""
    for j in range(weight.shape[0]):
        acc = np.float32(0.0)
        for i in range(weight.shape[1]):
            acc += weight[j, i] * x[i]
        out[j] = acc


@numba.njit(fastmath=_FASTMATH, cache=True, nogil=True, inline="always")
def _matvec_by4(weight: np.ndarray, x: np.ndarray, out: np.ndarray) -> None:
    """``_matvec`` four output rows per pass: each x load feeds four accumulators (for small L1-resident
    weights, where loads and per-row reductions, not bandwidth, set the pace; ~1.4x on the TCN)."""
    n_out, n_in = weight.shape
    quads = n_out - n_out % 4
    for j in range(0, quads, 4):
        w0, w1, w2, w3 = weight[j], weight[j + 1], weight[j + 2], weight[j + 3]
        a0 = a1 = a2 = a3 = np.float32(0.0)
        for i in range(n_in):
            v = x[i]
            a0 += w0[i] * v
            a1 += w1[i] * v
            a2 += w2[i] * v
            a3 += w3[i] * v
        out[j], out[j + 1], out[j + 2], out[j + 3] = a0, a1, a2, a3
    for j in range(quads, n_out):
        acc = np.float32(0.0)
        for i in range(n_in):
            acc += weight[j, i] * x[i]
        out[j] = acc


@numba.njit(fastmath=_FASTMATH, cache=True, nogil=True, inline="always")
def _matvec_int8(weight: np.ndarray, scale: np.ndarray, x: np.ndarray, out: np.ndarray) -> None:
    for j in range(weight.shape[0]):
        acc = np.float32(0.0)
        for i in range(weight.shape[1]):
            acc += np.float32(weight[j, i]) * x[i]
        out[j] = acc * scale[j]


@numba.njit(fastmath=_FASTMATH, cache=True, nogil=True, inline="always")
def _matvec_fp16(weight: np.ndarray, x: np.ndarray, out: np.ndarray) -> None:
    """weight: uint16 bit patterns of float16 values; converted to float32, accumulated in float32."""
    for j in range(weight.shape[0]):
        acc = np.float32(0.0)
        for i in range(weight.shape[1]):
            acc += _half_to_float(weight[j, i]) * x[i]
        out[j] = acc


@numba.njit(fastmath=_FASTMATH, cache=True, nogil=True)
def _square(packed: tuple, layer: int, x: np.ndarray, out: np.ndarray) -> None:
    """One square Linear without bias, from the int8, fp16 or fp32 weights (the first with rows)."""
    square_w, square_q, square_scale, square_h = packed[0], packed[1], packed[2], packed[3]
    if square_q.shape[0] > 0:
        _matvec_int8(square_q[layer], square_scale[layer], x, out)
    elif square_h.shape[0] > 0:
        _matvec_fp16(square_h[layer], x, out)
    else:
        _matvec(square_w[layer], x, out)


@numba.njit(fastmath=_FASTMATH, cache=True, nogil=True)
def _dense(weight: np.ndarray, weight_half: np.ndarray, x: np.ndarray, out: np.ndarray) -> None:
    """out = weight @ x from the fp16 copy when it has rows, else from the fp32 weights."""
    if weight_half.shape[0] > 0:
        _matvec_fp16(weight_half, x, out)
    else:
        _matvec(weight, x, out)


@numba.njit(fastmath=_FASTMATH, cache=True, nogil=True)
def _vector_norm(
    y: np.ndarray, bias: np.ndarray, gain: np.ndarray, shift: np.ndarray, residual: np.ndarray, mode: int
) -> None:
    _rows_kernel_serial(y.reshape(1, -1), bias, gain, shift, residual.reshape(1, -1), mode)


@numba.njit(fastmath=_FASTMATH, cache=True, nogil=True)
def _vector_blocks(
    packed: tuple, first_layer: int, n_blocks: int, x: np.ndarray, tmp: np.ndarray, tmp2: np.ndarray
) -> None:
    """MLPResidualBlocks in place on the vector x (layers first_layer, first_layer + 1, ...)."""
    square_b, norm_g, norm_b = packed[4], packed[5], packed[6]
    for block in range(n_blocks):
        fc1 = first_layer + 2 * block
        _square(packed, fc1, x, tmp)
        _vector_norm(tmp, square_b[fc1], norm_g[fc1], norm_b[fc1], x, _NORM_RELU)
        _square(packed, fc1 + 1, tmp, tmp2)
        _vector_norm(tmp2, square_b[fc1 + 1], norm_g[fc1 + 1], norm_b[fc1 + 1], x, _NORM_RESIDUAL_RELU)
        x[:] = tmp2


@numba.njit(fastmath=_FASTMATH, cache=True, nogil=True)
def _heads_row(
    packed: tuple,
    heads: tuple,
    layout: tuple,
    state: np.ndarray,
    vectors: np.ndarray,
    value_logits: np.ndarray,
    out_policy: np.ndarray,
    out_value: np.ndarray,
) -> None:
    """Policy logits into out_policy (A,) and the value scalar into out_value (1,) for one state."""
    policy_head_w, policy_head_b, value_head_w, value_head_b, value_head_h = heads[7:12]
    policy_first, policy_blocks, value_first, value_blocks, support_size = layout[7:12]
    x, tmp, tmp2 = vectors[0], vectors[1], vectors[2]
    x[:] = state
    _vector_blocks(packed, policy_first, policy_blocks, x, tmp, tmp2)
    _matvec(policy_head_w, x, out_policy)
    out_policy += policy_head_b
    x[:] = state
    _vector_blocks(packed, value_first, value_blocks, x, tmp, tmp2)
    _dense(value_head_w, value_head_h, x, value_logits[0])
    _value_rows(value_logits, value_head_b, support_size, out_value)


@numba.njit(fastmath=_FASTMATH, cache=True, nogil=True)
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
        _matvec_by4(weight, column[:width], row)
        row += bias


@numba.njit(fastmath=_FASTMATH, cache=True, nogil=True)
def _representation_front(
    rep: tuple, layout: tuple, work: tuple, window: np.ndarray, state: np.ndarray
) -> None:
    """TCN, attention pooling and projection (bias included) of one window into state (H,)."""
    conv_w, conv_b, dilations, attention_w, attention_b, project_w, project_b = rep[:7]
    tcn, features, scores = work[0], work[2], work[3]
    column, kernel = work[7], layout[14]
    steps, n_features = window.shape[0], window.shape[1]
    x, y = tcn[0], tcn[1]
    channels = x.shape[1]
    _causal_conv(window, conv_w[0], conv_b[0], kernel, dilations[0], column, x)
    for t in range(steps):
        for c in range(channels):
            x[t, c] = max(x[t, c], np.float32(0.0))
    for i in range(1, len(conv_w)):
        _causal_conv(x, conv_w[i], conv_b[i], kernel, dilations[i], column, y)
        for t in range(steps):
            for c in range(channels):
                x[t, c] += max(y[t, c], np.float32(0.0))
    # Attention pooling over the steps: softmax of one score per step, weighted sum of the rows.
    top = -np.inf
    for t in range(steps):
        acc = np.float32(0.0)
        for c in range(channels):
            acc += x[t, c] * attention_w[c]
        scores[t] = acc + attention_b[0]
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
    _matvec(project_w, features, state)
    state += project_b


@numba.njit(fastmath=_FASTMATH, cache=True, nogil=True)
def _representation_norm(rep: tuple, state: np.ndarray) -> None:
    """The representation's final LayerNorm, in place on one state (H,)."""
    norm_g, norm_b, norm_eps = rep[7], rep[8], rep[9][0]
    mean = state.mean()
    variance = ((state - mean) ** 2).mean()
    inv = np.float32(1.0) / np.sqrt(variance + norm_eps)
    for c in range(state.shape[0]):
        state[c] = (state[c] - mean) * inv * norm_g[c] + norm_b[c]


@numba.njit(fastmath=_FASTMATH, cache=True, nogil=True)
def _initial_rows_fused(
    packed: tuple,
    heads: tuple,
    layout: tuple,
    rep: tuple,
    work: tuple,
    windows: np.ndarray,
    out_hidden: np.ndarray,
    out_policy: np.ndarray,
    out_value: np.ndarray,
) -> None:
    """Representation (TCN, attention pooling, projection, blocks, LayerNorm) + policy/value heads,
    per row."""
    vectors, value_logits = work[1], work[4]
    rep_first, rep_blocks = layout[12], layout[13]
    state = vectors[3]
    for r in range(windows.shape[0]):
        _representation_front(rep, layout, work, windows[r], state)
        _vector_blocks(packed, rep_first, rep_blocks, state, vectors[0], vectors[1])
        _representation_norm(rep, state)
        out_hidden[r] = state
        _heads_row(packed, heads, layout, state, vectors, value_logits, out_policy[r], out_value[r : r + 1])


@numba.njit(fastmath=_FASTMATH, cache=True, nogil=True)
def _outcome_rows_fused(
    packed: tuple,
    heads: tuple,
    layout: tuple,
    work: tuple,
    hidden: np.ndarray,
    actions: np.ndarray,
    probs: np.ndarray,
) -> None:
    outcome_action_rows, outcome_head_w, outcome_head_b = heads[0], heads[3], heads[4]
    outcome_project, outcome_first, outcome_blocks = layout[0], layout[1], layout[2]
    vectors, logits = work[1], work[5]
    x, tmp, tmp2 = vectors[0], vectors[1], vectors[2]
    for r in range(hidden.shape[0]):
        _square(packed, outcome_project, hidden[r], x)
        x += outcome_action_rows[actions[r]]
        _vector_blocks(packed, outcome_first, outcome_blocks, x, tmp, tmp2)
        _matvec(outcome_head_w, x, logits[0])
        _softmax_rows(logits, outcome_head_b, probs[r : r + 1])


@numba.njit(fastmath=_FASTMATH, cache=True, nogil=True)
def _recurrent_rows_fused(
    packed: tuple,
    heads: tuple,
    layout: tuple,
    work: tuple,
    hidden: np.ndarray,
    actions: np.ndarray,
    outcomes: np.ndarray,
    out_hidden: np.ndarray,
    out_reward: np.ndarray,
    out_policy: np.ndarray,
    out_value: np.ndarray,
) -> None:
    square_b, norm_g, norm_b = packed[4], packed[5], packed[6]
    dynamics_action_rows, dynamics_outcome_rows, reward_w, reward_b = heads[1], heads[2], heads[5], heads[6]
    dynamics_project, dynamics_first, dynamics_blocks, next_hidden_layer = layout[3:7]
    vectors, value_logits, scalar = work[1], work[4], work[6]
    x, tmp, tmp2, state = vectors[0], vectors[1], vectors[2], vectors[3]
    for r in range(hidden.shape[0]):
        _square(packed, dynamics_project, hidden[r], x)
        x += dynamics_action_rows[actions[r]]
        x += dynamics_outcome_rows[outcomes[r]]
        _vector_blocks(packed, dynamics_first, dynamics_blocks, x, tmp, tmp2)
        _matvec(reward_w, x, scalar)
        out_reward[r] = scalar[0] + reward_b[0]
        _square(packed, next_hidden_layer, x, state)
        _vector_norm(
            state, square_b[next_hidden_layer], norm_g[next_hidden_layer], norm_b[next_hidden_layer], x, _NORM
        )
        out_hidden[r] = state
        _heads_row(packed, heads, layout, state, vectors, value_logits, out_policy[r], out_value[r : r + 1])


# ---- the row-blocked kernels (a few to a few tens of rows): one dispatch runs a whole network
#
# Layer by layer over all rows, like the GEMM path, but each layer is ``_linear_rows``: every four
# weight rows, read once from memory into L1, feed a 4 x 4 tile of dot products (16 accumulators, each
# x and weight load used four times); no Python and no BLAS call per layer. Measured per 256 x 256 layer
# on this AVX-512 machine (32 vector registers), 4 x 4 beat 2 x 4 tiles by 5-20% at 16-64 rows and a
# separate 4 x 2 tile for two leftover rows beat two single rows by 1.4x.
# fp32 weights only (the vector-ordered stack of the per-row kernels); scratch comes from the caller.


@numba.njit(fastmath=_FASTMATH, cache=True, nogil=True, inline="always")
def _dot_4x4(weight: np.ndarray, j: int, x: np.ndarray, r: int, out: np.ndarray) -> None:
    """out[r : r + 4, j : j + 4] = x[r : r + 4] @ weight[j : j + 4].T: 16 accumulators, 8 loads each step."""
    w0, w1, w2, w3 = weight[j], weight[j + 1], weight[j + 2], weight[j + 3]
    x0, x1, x2, x3 = x[r], x[r + 1], x[r + 2], x[r + 3]
    a0 = a1 = a2 = a3 = b0 = b1 = b2 = b3 = np.float32(0.0)
    c0 = c1 = c2 = c3 = d0 = d1 = d2 = d3 = np.float32(0.0)
    for i in range(w0.shape[0]):
        p0, p1, p2, p3 = x0[i], x1[i], x2[i], x3[i]
        u = w0[i]
        a0 += u * p0
        a1 += u * p1
        a2 += u * p2
        a3 += u * p3
        u = w1[i]
        b0 += u * p0
        b1 += u * p1
        b2 += u * p2
        b3 += u * p3
        u = w2[i]
        c0 += u * p0
        c1 += u * p1
        c2 += u * p2
        c3 += u * p3
        u = w3[i]
        d0 += u * p0
        d1 += u * p1
        d2 += u * p2
        d3 += u * p3
    out[r, j], out[r, j + 1], out[r, j + 2], out[r, j + 3] = a0, b0, c0, d0
    out[r + 1, j], out[r + 1, j + 1], out[r + 1, j + 2], out[r + 1, j + 3] = a1, b1, c1, d1
    out[r + 2, j], out[r + 2, j + 1], out[r + 2, j + 2], out[r + 2, j + 3] = a2, b2, c2, d2
    out[r + 3, j], out[r + 3, j + 1], out[r + 3, j + 2], out[r + 3, j + 3] = a3, b3, c3, d3


@numba.njit(fastmath=_FASTMATH, cache=True, nogil=True, inline="always")
def _dot_4x2(weight: np.ndarray, j: int, x: np.ndarray, r: int, out: np.ndarray) -> None:
    w0, w1, w2, w3 = weight[j], weight[j + 1], weight[j + 2], weight[j + 3]
    x0, x1 = x[r], x[r + 1]
    a0 = a1 = b0 = b1 = c0 = c1 = d0 = d1 = np.float32(0.0)
    for i in range(w0.shape[0]):
        p0, p1 = x0[i], x1[i]
        u = w0[i]
        a0 += u * p0
        a1 += u * p1
        u = w1[i]
        b0 += u * p0
        b1 += u * p1
        u = w2[i]
        c0 += u * p0
        c1 += u * p1
        u = w3[i]
        d0 += u * p0
        d1 += u * p1
    out[r, j], out[r, j + 1], out[r, j + 2], out[r, j + 3] = a0, b0, c0, d0
    out[r + 1, j], out[r + 1, j + 1], out[r + 1, j + 2], out[r + 1, j + 3] = a1, b1, c1, d1


@numba.njit(fastmath=_FASTMATH, cache=True, nogil=True, inline="always")
def _dot_4x1(weight: np.ndarray, j: int, x: np.ndarray, r: int, out: np.ndarray) -> None:
    w0, w1, w2, w3 = weight[j], weight[j + 1], weight[j + 2], weight[j + 3]
    x0 = x[r]
    a = b = c = d = np.float32(0.0)
    for i in range(w0.shape[0]):
        p = x0[i]
        a += w0[i] * p
        b += w1[i] * p
        c += w2[i] * p
        d += w3[i] * p
    out[r, j], out[r, j + 1], out[r, j + 2], out[r, j + 3] = a, b, c, d


@numba.njit(fastmath=_FASTMATH, cache=True, nogil=True, inline="always")
def _dot_1x4(weight: np.ndarray, j: int, x: np.ndarray, r: int, out: np.ndarray) -> None:
    w0 = weight[j]
    x0, x1, x2, x3 = x[r], x[r + 1], x[r + 2], x[r + 3]
    a0 = a1 = a2 = a3 = np.float32(0.0)
    for i in range(w0.shape[0]):
        u = w0[i]
        a0 += u * x0[i]
        a1 += u * x1[i]
        a2 += u * x2[i]
        a3 += u * x3[i]
    out[r, j], out[r + 1, j], out[r + 2, j], out[r + 3, j] = a0, a1, a2, a3


@numba.njit(fastmath=_FASTMATH, cache=True, nogil=True, inline="always")
def _dot_1x1(weight: np.ndarray, j: int, x: np.ndarray, r: int, out: np.ndarray) -> None:
    w0, x0 = weight[j], x[r]
    acc = np.float32(0.0)
    for i in range(w0.shape[0]):
        acc += w0[i] * x0[i]
    out[r, j] = acc


@numba.njit(fastmath=_FASTMATH, cache=True, nogil=True)
def _linear_rows(weight: np.ndarray, x: np.ndarray, out: np.ndarray) -> None:
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


@numba.njit(fastmath=_FASTMATH, cache=True, nogil=True)
def _rows_norm(packed: tuple, layer: int, y: np.ndarray, residual: np.ndarray, mode: int) -> None:
    _rows_kernel_serial(y, packed[4][layer], packed[5][layer], packed[6][layer], residual, mode)


@numba.njit(fastmath=_FASTMATH, cache=True, nogil=True)
def _rows_blocks(
    packed: tuple, first_layer: int, n_blocks: int, x: np.ndarray, tmp: np.ndarray, tmp2: np.ndarray
) -> None:
    """MLPResidualBlocks in place on the rows x (M, H) (layers first_layer, first_layer + 1, ...)."""
    square_w = packed[0]
    for block in range(n_blocks):
        fc1 = first_layer + 2 * block
        _linear_rows(square_w[fc1], x, tmp)
        _rows_norm(packed, fc1, tmp, x, _NORM_RELU)
        _linear_rows(square_w[fc1 + 1], tmp, tmp2)
        _rows_norm(packed, fc1 + 1, tmp2, x, _NORM_RESIDUAL_RELU)
        x[:] = tmp2


@numba.njit(fastmath=_FASTMATH, cache=True, nogil=True)
def _scratch_rows(scratch: np.ndarray, rows: int, width: int) -> tuple:
    """Three (rows, width) work arrays and the rest of the flat scratch buffer."""
    size = rows * width
    work = scratch[: 3 * size].reshape((3, rows, width))
    return work[0], work[1], work[2], scratch[3 * size :]


@numba.njit(fastmath=_FASTMATH, cache=True, nogil=True)
def _heads_rows(
    packed: tuple,
    heads: tuple,
    layout: tuple,
    state: np.ndarray,
    scratch: np.ndarray,
    out_policy: np.ndarray,
    out_value: np.ndarray,
) -> None:
    """Policy logits (M, A) and value scalars (M,) for the rows of state (M, H)."""
    policy_head_w, policy_head_b, value_head_w, value_head_b = heads[7:11]
    policy_first, policy_blocks, value_first, value_blocks, support_size = layout[7:12]
    rows, width = state.shape
    x, tmp, tmp2, rest = _scratch_rows(scratch, rows, width)
    x[:] = state
    _rows_blocks(packed, policy_first, policy_blocks, x, tmp, tmp2)
    _linear_rows(policy_head_w, x, out_policy)
    for r in range(rows):
        out_policy[r] += policy_head_b
    x[:] = state
    _rows_blocks(packed, value_first, value_blocks, x, tmp, tmp2)
    value_logits = rest[: rows * value_head_w.shape[0]].reshape((rows, value_head_w.shape[0]))
    _linear_rows(value_head_w, x, value_logits)
    _value_rows(value_logits, value_head_b, support_size, out_value)


@numba.njit(fastmath=_FASTMATH, cache=True, nogil=True)
def _initial_rows_blocked(
    packed: tuple,
    heads: tuple,
    layout: tuple,
    rep: tuple,
    work: tuple,
    scratch: np.ndarray,
    windows: np.ndarray,
    out_hidden: np.ndarray,
    out_policy: np.ndarray,
    out_value: np.ndarray,
) -> None:
    """``_initial_rows_fused`` with the blocks and heads row-blocked (the TCN stays per row)."""
    rows, width = out_hidden.shape
    x, tmp, _, _ = _scratch_rows(scratch, rows, width)
    for r in range(rows):
        _representation_front(rep, layout, work, windows[r], out_hidden[r])
    _rows_blocks(packed, layout[12], layout[13], out_hidden, x, tmp)
    for r in range(rows):
        _representation_norm(rep, out_hidden[r])
    _heads_rows(packed, heads, layout, out_hidden, scratch, out_policy, out_value)


@numba.njit(fastmath=_FASTMATH, cache=True, nogil=True)
def _outcome_rows_blocked(
    packed: tuple,
    heads: tuple,
    layout: tuple,
    scratch: np.ndarray,
    hidden: np.ndarray,
    actions: np.ndarray,
    probs: np.ndarray,
) -> None:
    """``_outcome_rows_fused`` row-blocked."""
    outcome_action_rows, outcome_head_w, outcome_head_b = heads[0], heads[3], heads[4]
    outcome_project, outcome_first, outcome_blocks = layout[0], layout[1], layout[2]
    rows, width = hidden.shape
    x, tmp, tmp2, rest = _scratch_rows(scratch, rows, width)
    _linear_rows(packed[0][outcome_project], hidden, x)
    for r in range(rows):
        x[r] += outcome_action_rows[actions[r]]
    _rows_blocks(packed, outcome_first, outcome_blocks, x, tmp, tmp2)
    logits = rest[: rows * outcome_head_w.shape[0]].reshape((rows, outcome_head_w.shape[0]))
    _linear_rows(outcome_head_w, x, logits)
    _softmax_rows(logits, outcome_head_b, probs)


@numba.njit(fastmath=_FASTMATH, cache=True, nogil=True)
def _recurrent_rows_blocked(
    packed: tuple,
    heads: tuple,
    layout: tuple,
    scratch: np.ndarray,
    hidden: np.ndarray,
    actions: np.ndarray,
    outcomes: np.ndarray,
    out_hidden: np.ndarray,
    out_reward: np.ndarray,
    out_policy: np.ndarray,
    out_value: np.ndarray,
) -> None:
    """``_recurrent_rows_fused`` row-blocked."""
    dynamics_action_rows, dynamics_outcome_rows, reward_w, reward_b = heads[1], heads[2], heads[5], heads[6]
    dynamics_project, dynamics_first, dynamics_blocks, next_hidden_layer = layout[3:7]
    rows, width = hidden.shape
    x, tmp, tmp2, rest = _scratch_rows(scratch, rows, width)
    _linear_rows(packed[0][dynamics_project], hidden, x)
    for r in range(rows):
        x[r] += dynamics_action_rows[actions[r]]
        x[r] += dynamics_outcome_rows[outcomes[r]]
    _rows_blocks(packed, dynamics_first, dynamics_blocks, x, tmp, tmp2)
    reward = rest[:rows].reshape((rows, 1))
    _linear_rows(reward_w, x, reward)
    for r in range(rows):
        out_reward[r] = reward[r, 0] + reward_b[0]
    _linear_rows(packed[0][next_hidden_layer], x, out_hidden)
    _rows_norm(packed, next_hidden_layer, out_hidden, out_hidden, _NORM)
    _heads_rows(packed, heads, layout, out_hidden, scratch, out_policy, out_value)


def _mm(a: np.ndarray, b: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
    """a @ b through torch's MKL GEMM on zero-copy views.

    Not np.matmul: numpy's OpenBLAS pool spins after each call and starves numba's parallel row
    kernels (measured 7.6 ms instead of 1.1 ms per 1024-row layer at 2 threads); torch's GEMM and
    numba's OpenMP layer share one OpenMP runtime and do not fight.
    """
    if out is None:
        out = np.empty((a.shape[0], b.shape[1]), np.float32)
    torch.mm(torch.from_numpy(a), torch.from_numpy(b), out=torch.from_numpy(out))
    return out


def _t(x: torch.Tensor) -> np.ndarray:
    return np.ascontiguousarray(x.detach().numpy(), dtype=np.float32)


def _conv_matrix(conv: nn.Conv1d) -> np.ndarray:
    """Conv1d weight (C_out, C_in, K) -> (C_out, K * C_in) rows over [x(t - (K-1)d), ..., x(t)],
    zero-padded to a multiple of 8 columns (whole AVX2 vectors)."""
    weight = _t(conv.weight).transpose(0, 2, 1).reshape(conv.out_channels, -1)
    return np.ascontiguousarray(np.pad(weight, ((0, 0), (0, -weight.shape[1] % 8))))


def _half_bits(x: np.ndarray) -> np.ndarray:
    """float32 -> the uint16 bit patterns of its nearest float16 values (what ``_half_to_float`` reads)."""
    return np.ascontiguousarray(x.astype(np.float16).view(np.uint16))


class NumbaFunctions:
    """Hand-fused numpy + numba; see the module docstring. Not thread-safe (reuses work buffers)."""

    def __init__(
        self,
        model: MuZeroNetwork,
        threads: int | None = None,
        small_batch_rows: int | None = None,
        blocked_batch_rows: int = BLOCKED_BATCH_ROWS,
        blocked_initial_rows: int = BLOCKED_INITIAL_ROWS,
        int8_small_batch: bool = False,
        fp16_small_batch: bool = False,
        large_batch: ModelFunctions | None = None,
        large_batch_rows: int = LARGE_BATCH_ROWS,
    ) -> None:
        snapshot = _eval_copy(model)
        cfg = snapshot.cfg
        self.cfg = cfg
        if small_batch_rows is None:
            low_precision = int8_small_batch or fp16_small_batch
            small_batch_rows = LOW_PRECISION_SMALL_BATCH_ROWS if low_precision else SMALL_BATCH_ROWS
        self.small_batch_rows = small_batch_rows
        # Above small_batch_rows and below these many rows the row-blocked kernels, then the GEMM path.
        self.blocked_batch_rows = blocked_batch_rows
        self.blocked_initial_rows = blocked_initial_rows
        # From large_batch_rows rows on, hand every call to this backend instead (the "auto" hybrid).
        self.large_batch = large_batch
        self.large_batch_rows = max(large_batch_rows, small_batch_rows + 1)
        threads = threads or os.cpu_count() or 1
        numba.set_num_threads(min(threads, numba.config.NUMBA_NUM_THREADS))
        # After numba: its OpenMP layer starts its pool with every core and so resets the OpenMP
        # thread count that torch's kernels use (measured: a second busy thread at threads=1).
        torch.set_num_threads(threads)
        self._rows_kernel = _rows_kernel_parallel if threads > 1 else _rows_kernel_serial

        # Every square (H, H) Linear, in this order, with the LayerNorm that follows it (if any).
        square_layers: list[tuple[nn.Linear, nn.LayerNorm | None]] = []

        def add_blocks(blocks: nn.Sequential) -> int:
            first = len(square_layers)
            for block in blocks:
                square_layers.extend([(block.fc1, block.norm1), (block.fc2, block.norm2)])
            return first

        def add_square(weight: torch.Tensor, bias: torch.Tensor, norm: nn.LayerNorm | None) -> int:
            layer = nn.Linear(cfg.hidden, cfg.hidden)
            layer.weight.data, layer.bias.data = weight, bias
            square_layers.append((layer, norm))
            return len(square_layers) - 1

        out_w, out_action_rows = _split_project(snapshot.outcome.project, cfg.hidden, (cfg.n_actions,))
        dyn_w, dyn_action_rows, dyn_outcome_rows = _split_project(
            snapshot.dynamics.project, cfg.hidden, (cfg.n_actions, cfg.n_outcomes)
        )
        zero_bias = torch.zeros(cfg.hidden)
        self.rep_first = add_blocks(snapshot.representation.blocks)
        self.outcome_project = add_square(out_w, zero_bias, None)  # bias lives in the action rows
        self.outcome_first = add_blocks(snapshot.outcome.blocks)
        self.dynamics_project = add_square(dyn_w, zero_bias, None)
        self.dynamics_first = add_blocks(snapshot.dynamics.blocks)
        self.next_hidden_layer = add_square(
            snapshot.dynamics.next_hidden.weight,
            snapshot.dynamics.next_hidden.bias,
            snapshot.dynamics.next_norm,
        )
        # Policy block 0 fc1 right before value block 0 fc1: one contiguous (2H, H) matmul for both.
        policy, value = snapshot.policy.blocks, snapshot.value.blocks
        self.policy_first = len(square_layers)
        square_layers.extend([(policy[0].fc1, policy[0].norm1), (value[0].fc1, value[0].norm1)])
        square_layers.extend([(policy[0].fc2, policy[0].norm2), (value[0].fc2, value[0].norm2)])
        self.policy_rest = add_blocks(nn.Sequential(*list(policy)[1:]))
        self.value_rest = add_blocks(nn.Sequential(*list(value)[1:]))

        ones, zeros = torch.ones(cfg.hidden), torch.zeros(cfg.hidden)
        self.square_w = np.stack([_t(linear.weight) for linear, _ in square_layers])
        self.square_b = np.stack([_t(linear.bias) for linear, _ in square_layers])
        self.norm_g = np.stack([_t(norm.weight if norm is not None else ones) for _, norm in square_layers])
        self.norm_b = np.stack([_t(norm.bias if norm is not None else zeros) for _, norm in square_layers])
        if int8_small_batch:
            # Symmetric per-output-row int8: w ~= q * scale; the scale multiplies the dot product once.
            scale = np.abs(self.square_w).max(axis=2) / 127.0
            scale = np.maximum(scale, 1e-12).astype(np.float32)
            self.square_q = np.clip(np.rint(self.square_w / scale[:, :, None]), -127, 127).astype(np.int8)
            self.square_scale = scale
        else:
            self.square_q = np.zeros((0, 1, 1), np.int8)
            self.square_scale = np.zeros((0, 1), np.float32)
        # fp16 small-batch weights as their uint16 bit patterns (numba's CPU target has no float16 type).
        self.square_h = _half_bits(self.square_w) if fp16_small_batch else np.zeros((0, 1, 1), np.uint16)

        self.outcome_action_rows = _t(out_action_rows)
        self.dynamics_action_rows = _t(dyn_action_rows)
        self.dynamics_outcome_rows = _t(dyn_outcome_rows)
        self.outcome_head_w, self.outcome_head_b = (
            _t(snapshot.outcome.head.weight),
            _t(snapshot.outcome.head.bias),
        )
        self.reward_w, self.reward_b = _t(snapshot.dynamics.reward.weight), _t(snapshot.dynamics.reward.bias)
        self.policy_head_w, self.policy_head_b = (
            _t(snapshot.policy.head.weight),
            _t(snapshot.policy.head.bias),
        )
        self.value_head_w, self.value_head_b = _t(snapshot.value.head.weight), _t(snapshot.value.head.bias)
        # Pre-transposed copies for the GEMM path: x (M, in) @ w_t (in, out) with both contiguous.
        self.square_wt = np.ascontiguousarray(self.square_w.transpose(0, 2, 1))
        self.policy_value_fc1_t = np.ascontiguousarray(
            self.square_w[self.policy_first : self.policy_first + 2].reshape(2 * cfg.hidden, cfg.hidden).T
        )
        self.policy_value_fc1_b = self.square_b[self.policy_first : self.policy_first + 2].reshape(-1)
        self.outcome_head_wt = np.ascontiguousarray(self.outcome_head_w.T)
        self.reward_wt = np.ascontiguousarray(self.reward_w.T)
        self.policy_head_wt = np.ascontiguousarray(self.policy_head_w.T)
        self.value_head_wt = np.ascontiguousarray(self.value_head_w.T)

        rep = snapshot.representation
        self.rep_norm_g, self.rep_norm_b = _t(rep.norm.weight), _t(rep.norm.bias)
        self.rep_norm_eps = float(rep.norm.eps)
        self.rep_convs = [
            (
                # im2col weight: [x(t - (K-1)d), ..., x(t)] (K * C_in) -> C_out
                np.ascontiguousarray(_t(c.conv.weight).transpose(2, 1, 0).reshape(-1, c.conv.out_channels)),
                _t(c.conv.bias),
                c.conv.dilation[0],
                c.conv.kernel_size[0],
            )
            for c in rep.convs
        ]
        self.rep_attention_w, self.rep_attention_b = (
            _t(rep.attention.weight).reshape(-1),
            float(rep.attention.bias),
        )
        self.rep_project_wt, self.rep_project_b = (
            np.ascontiguousarray(_t(rep.project.weight).T),
            _t(rep.project.bias),
        )

        rep_project_w = _t(rep.project.weight)  # (H, C + F), padded to a multiple of 16 columns
        padded = -(-rep_project_w.shape[1] // 16) * 16
        self._rep = (
            tuple(_conv_matrix(c.conv) for c in rep.convs),
            tuple(_t(c.conv.bias) for c in rep.convs),
            np.array([c.conv.dilation[0] for c in rep.convs], np.int64),
            self.rep_attention_w,
            np.array([self.rep_attention_b], np.float32),
            np.ascontiguousarray(np.pad(rep_project_w, ((0, 0), (0, padded - rep_project_w.shape[1])))),
            self.rep_project_b,
            self.rep_norm_g,
            self.rep_norm_b,
            np.array([self.rep_norm_eps], np.float32),
        )
        self._work = (
            np.zeros((2, cfg.window, cfg.tcn_channels), np.float32),  # TCN activations
            np.zeros((4, cfg.hidden), np.float32),  # x, tmp, tmp2, state
            np.zeros(padded, np.float32),  # [pooled, current row, zero padding]
            np.zeros(cfg.window, np.float32),  # attention scores
            np.zeros((1, cfg.n_atoms), np.float32),  # value logits
            np.zeros((1, cfg.n_outcomes), np.float32),  # outcome logits
            np.zeros(1, np.float32),  # reward
            np.zeros(max(m.shape[1] for m in self._rep[0]), np.float32),  # im2col row of one step
        )
        value_head_h = (
            _half_bits(self.value_head_w) if fp16_small_batch else np.zeros((0, cfg.hidden), np.uint16)
        )
        self._heads = (
            self.outcome_action_rows,
            self.dynamics_action_rows,
            self.dynamics_outcome_rows,
            self.outcome_head_w,
            self.outcome_head_b,
            self.reward_w,
            self.reward_b,
            self.policy_head_w,
            self.policy_head_b,
            self.value_head_w,
            self.value_head_b,
            value_head_h,
        )
        self._vector_layers()
        self._workspace = np.empty((0,), np.float32)
        self._scratch = np.empty((0,), np.float32)
        self._empty_rows = np.zeros((0, cfg.hidden), np.float32)
        self._no_index = np.zeros(0, np.int64)

    def _vector_layers(self) -> None:
        """The per-row kernels walk blocks as adjacent (fc1, fc2) pairs; give them their own stack.

        In ``square_w`` the first policy and value blocks interleave (for the fused GEMM), so the
        vector path gets a re-ordered view: [..., policy b0 fc1, policy b0 fc2, policy rest..., value b0
        fc1, value b0 fc2, value rest...].
        """
        p = self.policy_first
        order = list(range(p))
        policy_layers = [p, p + 2, *range(self.policy_rest, self.value_rest)]
        value_layers = [p + 1, p + 3, *range(self.value_rest, len(self.square_w))]
        order += policy_layers + value_layers
        index = np.array(order)
        packed = [
            self.square_w,
            self.square_q,
            self.square_scale,
            self.square_h,
            self.square_b,
            self.norm_g,
            self.norm_b,
        ]
        self._vector_packed = tuple(np.ascontiguousarray(a[index]) if a.shape[0] > 0 else a for a in packed)
        cfg = self.cfg
        self._vector_layout = (
            self.outcome_project,
            self.outcome_first,
            cfg.outcome_blocks,
            self.dynamics_project,
            self.dynamics_first,
            cfg.dynamics_blocks,
            self.next_hidden_layer,
            p,
            cfg.policy_blocks,
            p + len(policy_layers),
            cfg.value_blocks,
            cfg.support_size,
            self.rep_first,
            cfg.representation_blocks,
            cfg.tcn_kernel,
        )

    # ---- workspace

    def _buffers(self, rows: int, count: int, width: int) -> list[np.ndarray]:
        """``count`` (rows, width) float32 views into one reused allocation (no per-call page faults)."""
        need = rows * width * count
        if self._workspace.size < need:
            self._workspace = np.empty(need, np.float32)
        return [
            self._workspace[i * rows * width : (i + 1) * rows * width].reshape(rows, width)
            for i in range(count)
        ]

    def _blocked_scratch(self, rows: int) -> np.ndarray:
        """The row-blocked kernels' flat scratch: three (rows, H) arrays and the widest head's logits."""
        cfg = self.cfg
        need = rows * (3 * cfg.hidden + max(cfg.n_atoms, cfg.n_outcomes, 1))
        if self._scratch.size < need:
            self._scratch = np.empty(need, np.float32)
        return self._scratch

    # ---- GEMM path

    def _norm(self, y: np.ndarray, layer: int, residual: np.ndarray, mode: int) -> None:
        self._rows_kernel(y, self.square_b[layer], self.norm_g[layer], self.norm_b[layer], residual, mode)

    def _blocks(
        self, x: np.ndarray, first_layer: int, n_blocks: int, tmp: np.ndarray, tmp2: np.ndarray
    ) -> np.ndarray:
        """MLPResidualBlocks on rows x; returns the buffer holding the result (x, tmp2 swap)."""
        for block in range(n_blocks):
            fc1 = first_layer + 2 * block
            _mm(x, self.square_wt[fc1], tmp)
            self._norm(tmp, fc1, x, _NORM_RELU)
            _mm(tmp, self.square_wt[fc1 + 1], tmp2)
            self._norm(tmp2, fc1 + 1, x, _NORM_RESIDUAL_RELU)
            x, tmp2 = tmp2, x
        return x

    def _heads_batch(self, state: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        rows, width = state.shape
        x_policy, x_value, tmp, tmp2 = self._buffers(rows, 6, width)[:4]
        both = self._workspace[4 * rows * width : 6 * rows * width].reshape(rows, 2 * width)
        p = self.policy_first
        _mm(state, self.policy_value_fc1_t, both)
        policy_y, value_y = both[:, :width], both[:, width:]
        self._rows_kernel(policy_y, self.square_b[p], self.norm_g[p], self.norm_b[p], state, _NORM_RELU)
        self._rows_kernel(
            value_y, self.square_b[p + 1], self.norm_g[p + 1], self.norm_b[p + 1], state, _NORM_RELU
        )
        _mm(policy_y, self.square_wt[p + 2], x_policy)
        self._norm(x_policy, p + 2, state, _NORM_RESIDUAL_RELU)
        _mm(value_y, self.square_wt[p + 3], x_value)
        self._norm(x_value, p + 3, state, _NORM_RESIDUAL_RELU)
        x_policy = self._blocks(x_policy, self.policy_rest, self.cfg.policy_blocks - 1, tmp, tmp2)
        policy_logits = _mm(x_policy, self.policy_head_wt) + self.policy_head_b
        x_value = self._blocks(x_value, self.value_rest, self.cfg.value_blocks - 1, tmp, tmp2)
        value_logits = _mm(x_value, self.value_head_wt)
        value = np.empty(rows, np.float32)
        _value_rows(value_logits, self.value_head_b, self.cfg.support_size, value)
        return policy_logits, value

    def _representation(self, windows: np.ndarray) -> np.ndarray:
        """The TCN as im2col GEMMs (torch, never numpy's OpenBLAS: see ``_mm``), then pooling and blocks."""
        rows, steps, _ = windows.shape
        x = windows
        for i, (weight, bias, dilation, kernel) in enumerate(self.rep_convs):
            pad = (kernel - 1) * dilation
            padded = np.zeros((rows, steps + pad, x.shape[2]), np.float32)
            padded[:, pad:] = x
            columns = np.concatenate(
                [padded[:, k * dilation : k * dilation + steps] for k in range(kernel)], axis=2
            )
            y = _mm(columns.reshape(rows * steps, -1), weight).reshape(rows, steps, -1)
            np.maximum(y + bias, 0.0, out=y)
            x = y if i == 0 else x + y
        scores = (x * self.rep_attention_w).sum(axis=2) + self.rep_attention_b  # (M, T)
        scores = np.exp(scores - scores.max(axis=1, keepdims=True))
        scores /= scores.sum(axis=1, keepdims=True)
        pooled = (scores[:, :, None] * x).sum(axis=1)
        features = np.concatenate([pooled, windows[:, -1, :]], axis=1).astype(np.float32)
        state = _mm(features, self.rep_project_wt) + self.rep_project_b
        tmp, tmp2 = self._buffers(rows, 2, self.cfg.hidden)
        hidden = self._blocks(state, self.rep_first, self.cfg.representation_blocks, tmp, tmp2).copy()
        mean = hidden.mean(axis=1, keepdims=True)
        centred = hidden - mean
        variance = (centred * centred).mean(axis=1, keepdims=True)
        return (centred / np.sqrt(variance + self.rep_norm_eps) * self.rep_norm_g + self.rep_norm_b).astype(
            np.float32
        )

    # ---- the interface

    def initial(self, windows: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        if self.large_batch is not None and windows.shape[0] >= self.large_batch_rows:
            return self.large_batch.initial(windows)
        windows = _float_rows(windows)
        rows = windows.shape[0]
        if rows <= self.small_batch_rows:
            hidden = np.empty((rows, self.cfg.hidden), np.float32)
            policy_logits = np.empty((rows, self.cfg.n_actions), np.float32)
            value = np.empty(rows, np.float32)
            _initial_rows_fused(
                self._vector_packed,
                self._heads,
                self._vector_layout,
                self._rep,
                self._work,
                windows,
                hidden,
                policy_logits,
                value,
            )
            return hidden, policy_logits, value
        if rows < self.blocked_initial_rows:
            hidden = np.empty((rows, self.cfg.hidden), np.float32)
            policy_logits = np.empty((rows, self.cfg.n_actions), np.float32)
            value = np.empty(rows, np.float32)
            _initial_rows_blocked(
                self._vector_packed,
                self._heads,
                self._vector_layout,
                self._rep,
                self._work,
                self._blocked_scratch(rows),
                windows,
                hidden,
                policy_logits,
                value,
            )
            return hidden, policy_logits, value
        hidden = self._representation(windows)
        policy_logits, value = self._heads_batch(hidden)
        return hidden, policy_logits, value

    def outcome_probs(self, hidden: np.ndarray, actions: np.ndarray) -> np.ndarray:
        hidden, actions = _float_rows(hidden), _index_rows(actions)
        rows = hidden.shape[0]
        if self.large_batch is not None and rows >= self.large_batch_rows:
            return self.large_batch.outcome_probs(hidden, actions)
        probs = np.empty((rows, self.cfg.n_outcomes), np.float32)
        if rows <= self.small_batch_rows:
            _outcome_rows_fused(
                self._vector_packed, self._heads, self._vector_layout, self._work, hidden, actions, probs
            )
            return probs
        if rows < self.blocked_batch_rows:
            _outcome_rows_blocked(
                self._vector_packed,
                self._heads,
                self._vector_layout,
                self._blocked_scratch(rows),
                hidden,
                actions,
                probs,
            )
            return probs
        x, tmp, tmp2 = self._buffers(rows, 3, self.cfg.hidden)
        _mm(hidden, self.square_wt[self.outcome_project], x)
        _add_rows(x, self.outcome_action_rows, actions, self._empty_rows, self._no_index)
        x = self._blocks(x, self.outcome_first, self.cfg.outcome_blocks, tmp, tmp2)
        _softmax_rows(_mm(x, self.outcome_head_wt), self.outcome_head_b, probs)
        return probs

    def recurrent(
        self, hidden: np.ndarray, actions: np.ndarray, outcomes: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        hidden, actions, outcomes = _float_rows(hidden), _index_rows(actions), _index_rows(outcomes)
        rows, width = hidden.shape
        if self.large_batch is not None and rows >= self.large_batch_rows:
            return self.large_batch.recurrent(hidden, actions, outcomes)
        if rows <= self.small_batch_rows:
            out_hidden = np.empty((rows, width), np.float32)
            out_reward = np.empty(rows, np.float32)
            out_policy = np.empty((rows, self.cfg.n_actions), np.float32)
            out_value = np.empty(rows, np.float32)
            _recurrent_rows_fused(
                self._vector_packed,
                self._heads,
                self._vector_layout,
                self._work,
                hidden,
                actions,
                outcomes,
                out_hidden,
                out_reward,
                out_policy,
                out_value,
            )
            return out_hidden, out_reward, out_policy, out_value
        if rows < self.blocked_batch_rows:
            out_hidden = np.empty((rows, width), np.float32)
            out_reward = np.empty(rows, np.float32)
            out_policy = np.empty((rows, self.cfg.n_actions), np.float32)
            out_value = np.empty(rows, np.float32)
            _recurrent_rows_blocked(
                self._vector_packed,
                self._heads,
                self._vector_layout,
                self._blocked_scratch(rows),
                hidden,
                actions,
                outcomes,
                out_hidden,
                out_reward,
                out_policy,
                out_value,
            )
            return out_hidden, out_reward, out_policy, out_value
        x, tmp, tmp2 = self._buffers(rows, 3, width)
        _mm(hidden, self.square_wt[self.dynamics_project], x)
        _add_rows(x, self.dynamics_action_rows, actions, self.dynamics_outcome_rows, outcomes)
        x = self._blocks(x, self.dynamics_first, self.cfg.dynamics_blocks, tmp, tmp2)
        reward = _mm(x, self.reward_wt).reshape(-1) + self.reward_b[0]
        next_hidden = _mm(x, self.square_wt[self.next_hidden_layer])  # fresh array: it is returned
        self._norm(next_hidden, self.next_hidden_layer, next_hidden, _NORM)
        policy_logits, value = self._heads_batch(next_hidden)
        return next_hidden, reward.astype(np.float32), policy_logits, value


# --------------------------------------------------------------------------------------------------
# factory

# The measured winners (docs/INFERENCE.md, the row-count constants above): at 1 row the numba per-row
# fused kernels (~155 us per outcome_probs + recurrent pair, 2.3x ONNX Runtime, 10x torch eager); from 2
# to BLOCKED_BATCH_ROWS - 1 rows the row-blocked numba kernels (one dispatch per call; initial up to
# LARGE_BATCH_ROWS - 1); then to LARGE_BATCH_ROWS - 1 rows numba's GEMM path (torch MKL GEMMs with fused
# numba LayerNorm rows); from LARGE_BATCH_ROWS on torch eager MKL GEMM (~28k simulation rows/s at M=1024
# on 2 threads).
# "auto" is that hybrid: every path matches the reference within tolerance, so decisions agree.
AUTO_BACKEND = "auto"


def make_model_functions(
    model: MuZeroNetwork, backend: str = "auto", threads: int | None = None
) -> ModelFunctions:
    """A ``ModelFunctions`` for ``model`` (weights snapshotted now). ``threads=None``: all cores."""
    if backend == "auto":
        return NumbaFunctions(model, threads, large_batch=torch_fast_functions(model, threads))
    if backend == "torch":
        return TorchFunctions(model, threads)
    if backend == "torch_fast":
        return torch_fast_functions(model, threads)
    if backend == "torchscript":
        return torchscript_functions(model, threads)
    if backend == "onnx":
        return OnnxFunctions(model, threads)
    if backend == "numba":
        return NumbaFunctions(model, threads)
    if backend == "numba_fp16":
        return NumbaFunctions(model, threads, fp16_small_batch=True)
    if backend == "numba_int8":
        return NumbaFunctions(model, threads, int8_small_batch=True)
    raise ValueError(f"unknown backend {backend!r}; choose from {BACKENDS} or 'auto'")
