"""Shared numba building blocks: the fastmath flags, LayerNorm rows, gathers, softmax, the value scalar,
mat-vecs (fp32, int8, fp16), and naming the packed network's plain tuples again.

Every kernel is nogil: the inference service's search thread then leaves the GIL to its HTTP event
loop, which parses and answers requests on the other core while a search runs.
"""

from __future__ import annotations

import numba
import numpy as np
from llvmlite import ir
from numba import types
from numba.extending import intrinsic

from shared.model.inference.packing import Heads, Layout, PackedNetwork, SquareLayers
from shared.model.support import EPSILON

# No nnan/ninf/afn: only reassociation (to vectorise the dot products) and FMA contraction.
FASTMATH = {"nsz", "arcp", "contract", "reassoc"}
LAYER_NORM_EPS = 1e-5

# Row-kernel modes.
NORM = 0  # y = LN(y + b)
NORM_RELU = 1  # y = relu(LN(y + b))
NORM_RESIDUAL_RELU = 2  # y = relu(residual + LN(y + b))


@numba.njit(fastmath=FASTMATH, cache=True, nogil=True, inline="always")
def named_network(network: tuple) -> PackedNetwork:
    """The plain tuple of ``as_plain(PackedNetwork)`` named again (free: no copy, compile time only)."""
    layers, heads, layout = network
    return PackedNetwork(SquareLayers(*layers), Heads(*heads), Layout(*layout))


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
        inv = 1.0 / np.sqrt(var / width + LAYER_NORM_EPS)
        for j in range(width):
            v = np.float32((y[r, j] - mean) * inv) * gain[j] + shift[j]
            if mode == NORM_RESIDUAL_RELU:
                v += residual[r, j]
            if mode != NORM and v < 0.0:
                v = np.float32(0.0)
            y[r, j] = v


rows_kernel_serial = numba.njit(fastmath=FASTMATH, cache=True, nogil=True)(_rows_kernel)
rows_kernel_parallel = numba.njit(fastmath=FASTMATH, cache=True, nogil=True, parallel=True)(_rows_kernel)


@numba.njit(fastmath=FASTMATH, cache=True, nogil=True)
def add_rows(
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


@numba.njit(fastmath=FASTMATH, cache=True, nogil=True)
def softmax_rows(logits: np.ndarray, bias: np.ndarray, out: np.ndarray) -> None:
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


@numba.njit(fastmath=FASTMATH, cache=True, nogil=True)
def inverse_transform(y: float) -> float:
    a = abs(y)
    root = (np.sqrt(1.0 + 4.0 * EPSILON * (a + 1.0 + EPSILON)) - 1.0) / (2.0 * EPSILON)
    return np.sign(y) * (root * root - 1.0)


@numba.njit(fastmath=FASTMATH, cache=True, nogil=True)
def value_rows(logits: np.ndarray, bias: np.ndarray, support_size: int, out: np.ndarray) -> None:
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
        out[r] = inverse_transform(weighted / total)


@intrinsic
def half_to_float(typingctx, bits):  # numba intrinsic signature
    """IEEE half (as its uint16 bits) -> float32: LLVM ``fpext half``, which F16C vectorises (vcvtph2ps).

    numba's CPU target does not type float16 arrays, so fp16 weights are stored as their bit patterns.
    """
    if bits != types.uint16:
        return None

    def codegen(context, builder, signature, args):  # numba intrinsic signature
        return builder.fpext(builder.bitcast(args[0], ir.HalfType()), ir.FloatType())

    return types.float32(types.uint16), codegen


@numba.njit(fastmath=FASTMATH, cache=True, nogil=True, inline="always")
def matvec(weight: np.ndarray, x: np.ndarray, out: np.ndarray) -> None:
    """out = weight @ x, weight (n_out, n_in) row-major: each row is one contiguous dot product."""
    for j in range(weight.shape[0]):
        acc = np.float32(0.0)
        for i in range(weight.shape[1]):
            acc += weight[j, i] * x[i]
        out[j] = acc


@numba.njit(fastmath=FASTMATH, cache=True, nogil=True, inline="always")
def matvec_by4(weight: np.ndarray, x: np.ndarray, out: np.ndarray) -> None:
    """``matvec`` four output rows per pass: each x load feeds four accumulators (for small L1-resident
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


@numba.njit(fastmath=FASTMATH, cache=True, nogil=True, inline="always")
def matvec_int8(weight: np.ndarray, scale: np.ndarray, x: np.ndarray, out: np.ndarray) -> None:
    for j in range(weight.shape[0]):
        acc = np.float32(0.0)
        for i in range(weight.shape[1]):
            acc += np.float32(weight[j, i]) * x[i]
        out[j] = acc * scale[j]


@numba.njit(fastmath=FASTMATH, cache=True, nogil=True, inline="always")
def matvec_fp16(weight: np.ndarray, x: np.ndarray, out: np.ndarray) -> None:
    """weight: uint16 bit patterns of float16 values; converted to float32, accumulated in float32."""
    for j in range(weight.shape[0]):
        acc = np.float32(0.0)
        for i in range(weight.shape[1]):
            acc += half_to_float(weight[j, i]) * x[i]
        out[j] = acc
