"""Which path runs a call, by its row count: the one routing table of ``numba`` and ``auto``.

The thresholds are measured winners; the measurements are in docs/INFERENCE.md ("Row-count routing").
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import IntEnum

# Up to this many rows, the per-row fused kernels (fp32).
SMALL_BATCH_ROWS = 1
# numba_fp16 and numba_int8 keep their lower-precision per-row kernels up to this many rows (the
# row-blocked kernels read fp32 weights only).
LOW_PRECISION_SMALL_BATCH_ROWS = 2
# "auto" hands calls of this many rows and more to torch_fast.
LARGE_BATCH_ROWS = 256
# outcome_probs and recurrent: the row-blocked kernels below this many rows, then numba's GEMM path.
BLOCKED_BATCH_ROWS = 64
# initial: the row-blocked kernels below this many rows (up to the torch_fast hand-over).
BLOCKED_INITIAL_ROWS = LARGE_BATCH_ROWS


class Path(IntEnum):
    """The ways a numba backend runs a call, from the fewest rows to the most."""

    PER_ROW = 0  # one numba dispatch, the whole network row by row
    ROW_BLOCKED = 1  # one numba dispatch, layer by layer over all rows, four rows at a time
    GEMM = 2  # torch MKL GEMM per layer, numba row kernels for bias + LayerNorm (+ residual) (+ ReLU)
    LARGE_BATCH = 3  # another backend altogether ("auto": torch_fast)


@dataclass(frozen=True, slots=True)
class RowRouting:
    """The row counts where one path hands over to the next."""

    per_row_rows: int = SMALL_BATCH_ROWS  # up to this many rows: per-row kernels
    blocked_rows: int = BLOCKED_BATCH_ROWS  # outcome_probs, recurrent: row-blocked below this many
    blocked_initial_rows: int = BLOCKED_INITIAL_ROWS  # initial: row-blocked below this many
    large_batch_rows: int | None = None  # from this many rows the large-batch backend (None: none)

    def path(self, rows: int, initial: bool = False) -> Path:
        if self.large_batch_rows is not None and rows >= self.large_batch_rows:
            return Path.LARGE_BATCH
        if rows <= self.per_row_rows:
            return Path.PER_ROW
        if rows < (self.blocked_initial_rows if initial else self.blocked_rows):
            return Path.ROW_BLOCKED
        return Path.GEMM
