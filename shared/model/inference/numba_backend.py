"""The ``numba`` backends (``numba``, ``numba_fp16``, ``numba_int8``, and ``auto`` with a large-batch
backend): the weights packed once, three paths by row count, chosen by ``RowRouting``.

- per-row fused kernels (``kernels.per_row``): one numba dispatch per call, the whole network row by row;
- row-blocked kernels (``kernels.row_blocked``): one dispatch per call, layer by layer over all rows;
- the GEMM path (``gemm``): torch MKL GEMMs and numba row kernels;
- and, from ``large_batch_rows`` on, another backend altogether (``auto``: ``torch_fast``).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import NamedTuple

import numba
import numpy as np
import torch

from shared.model.config import ModelConfig
from shared.model.inference.gemm import GemmPath
from shared.model.inference.kernels import per_row, row_blocked
from shared.model.inference.kernels.primitives import rows_kernel_parallel, rows_kernel_serial
from shared.model.inference.packing import (
    Representation,
    aligned_empty,
    as_plain,
    blocked_row_width,
    new_scratch,
    new_tcn_scratch,
    pack_network,
    pack_representation,
)
from shared.model.inference.protocol import ModelFunctions, eval_copy, float_rows, index_rows
from shared.model.inference.routing import (
    BLOCKED_BATCH_ROWS,
    BLOCKED_INITIAL_ROWS,
    LARGE_BATCH_ROWS,
    LOW_PRECISION_SMALL_BATCH_ROWS,
    SMALL_BATCH_ROWS,
    Path,
    RowRouting,
)
from shared.model.networks import MuZeroNetwork


class KernelFamily(NamedTuple):
    """The three entry kernels of one kind, over plain tuples and arrays; outputs preallocated by the caller:
    initial (network, scratch, representation, tcn scratch, windows, outputs), outcome (network, scratch,
    hidden, actions, probs), recurrent (network, scratch, (hidden, actions, outcomes), outputs)."""

    initial: Callable[..., None]
    outcome: Callable[..., None]
    recurrent: Callable[..., None]


PER_ROW_KERNELS = KernelFamily(per_row.initial_rows, per_row.outcome_rows, per_row.recurrent_rows)
ROW_BLOCKED_KERNELS = KernelFamily(
    row_blocked.initial_rows, row_blocked.outcome_rows, row_blocked.recurrent_rows
)


class Workspace:
    """The kernels' ``Scratch``, shared by both families; its row-blocked part grows with the largest
    call so far (the per-row kernels do not read it)."""

    def __init__(self, cfg: ModelConfig) -> None:
        self._row_width = blocked_row_width(cfg)
        self._scratch = new_scratch(cfg)
        self._plain = as_plain(self._scratch)

    def for_rows(self, rows: int) -> tuple:
        """The scratch as the kernels take it, with row-blocked room for ``rows`` rows."""
        need = rows * self._row_width
        if self._scratch.blocked.size < need:
            self._scratch = self._scratch._replace(blocked=aligned_empty(need))
            self._plain = as_plain(self._scratch)
        return self._plain


class KernelPath:
    """numpy in and out around one kernel family: fresh outputs, one numba dispatch per call."""

    def __init__(
        self,
        cfg: ModelConfig,
        kernels: KernelFamily,
        network: tuple,
        representation: Representation,
        workspace: Workspace,
    ) -> None:
        self.cfg, self.kernels, self.network = cfg, kernels, network
        self._representation = as_plain(representation)
        self._tcn_scratch = as_plain(new_tcn_scratch(cfg, representation))
        self._scratch = workspace.for_rows

    def initial(self, windows: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        windows = float_rows(windows)
        rows = windows.shape[0]
        outputs = (
            np.empty((rows, self.cfg.hidden), np.float32),
            np.empty((rows, self.cfg.n_actions), np.float32),
            np.empty(rows, np.float32),
        )
        scratch = self._scratch(rows)
        self.kernels.initial(self.network, scratch, self._representation, self._tcn_scratch, windows, outputs)
        return outputs

    def outcome_probs(self, hidden: np.ndarray, actions: np.ndarray) -> np.ndarray:
        hidden, actions = float_rows(hidden), index_rows(actions)
        rows = hidden.shape[0]
        probs = np.empty((rows, self.cfg.n_outcomes), np.float32)
        self.kernels.outcome(self.network, self._scratch(rows), hidden, actions, probs)
        return probs

    def recurrent(
        self, hidden: np.ndarray, actions: np.ndarray, outcomes: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        hidden, actions, outcomes = float_rows(hidden), index_rows(actions), index_rows(outcomes)
        rows, width = hidden.shape
        outputs = (
            np.empty((rows, width), np.float32),
            np.empty(rows, np.float32),
            np.empty((rows, self.cfg.n_actions), np.float32),
            np.empty(rows, np.float32),
        )
        self.kernels.recurrent(self.network, self._scratch(rows), (hidden, actions, outcomes), outputs)
        return outputs


def use_threads(threads: int | None) -> int:
    """Set numba's and torch's thread counts (``None``: all cores); returns the count."""
    threads = threads or os.cpu_count() or 1
    numba.set_num_threads(min(threads, numba.config.NUMBA_NUM_THREADS))
    # After numba: its OpenMP layer starts its pool with every core and so resets the OpenMP
    # thread count that torch's kernels use (measured: a second busy thread at threads=1).
    torch.set_num_threads(threads)
    return threads


class NumbaFunctions:
    """Hand-fused numpy + numba; see the module docstring. Not thread-safe (reuses work buffers).

    ``int8_small_batch`` / ``fp16_small_batch``: the per-row kernels read lower-precision copies of the
    square layers (and, fp16, of the value head); the other paths stay fp32.
    """

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
        snapshot = eval_copy(model)
        self.cfg = snapshot.cfg
        if small_batch_rows is None:
            low_precision = int8_small_batch or fp16_small_batch
            small_batch_rows = LOW_PRECISION_SMALL_BATCH_ROWS if low_precision else SMALL_BATCH_ROWS
        self.small_batch_rows = small_batch_rows
        self.routing = RowRouting(
            per_row_rows=small_batch_rows,
            blocked_rows=blocked_batch_rows,
            blocked_initial_rows=blocked_initial_rows,
            large_batch_rows=None if large_batch is None else max(large_batch_rows, small_batch_rows + 1),
        )
        threads = use_threads(threads)
        self.network = pack_network(snapshot, int8=int8_small_batch, fp16=fp16_small_batch)
        self.representation = pack_representation(snapshot)
        kernel_args = (as_plain(self.network), self.representation, Workspace(self.cfg))
        rows_kernel = rows_kernel_parallel if threads > 1 else rows_kernel_serial
        self._paths: dict[Path, ModelFunctions] = {
            Path.PER_ROW: KernelPath(self.cfg, PER_ROW_KERNELS, *kernel_args),
            Path.ROW_BLOCKED: KernelPath(self.cfg, ROW_BLOCKED_KERNELS, *kernel_args),
            Path.GEMM: GemmPath(snapshot, self.network, self.representation, rows_kernel),
        }
        if large_batch is not None:
            self._paths[Path.LARGE_BATCH] = large_batch

    def initial(self, windows: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        return self._paths[self.routing.path(len(windows), initial=True)].initial(windows)

    def outcome_probs(self, hidden: np.ndarray, actions: np.ndarray) -> np.ndarray:
        return self._paths[self.routing.path(len(hidden))].outcome_probs(hidden, actions)

    def recurrent(
        self, hidden: np.ndarray, actions: np.ndarray, outcomes: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        return self._paths[self.routing.path(len(hidden))].recurrent(hidden, actions, outcomes)
