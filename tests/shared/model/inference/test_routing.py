"""One routing table by row count serves initial, outcome_probs and recurrent."""

from __future__ import annotations

import numpy as np
import pytest

from shared.model.inference import (
    BLOCKED_BATCH_ROWS,
    BLOCKED_INITIAL_ROWS,
    LARGE_BATCH_ROWS,
    LOW_PRECISION_SMALL_BATCH_ROWS,
    SMALL_BATCH_ROWS,
    ModelFunctions,
    NumbaFunctions,
)
from shared.model.inference.routing import Path, RowRouting
from shared.model.networks import MuZeroNetwork


def test_row_count_routing(model: MuZeroNetwork) -> None:
    """The default thresholds are ordered: per-row, then row-blocked, then GEMM, then the large backend."""
    assert 1 <= SMALL_BATCH_ROWS < BLOCKED_BATCH_ROWS <= LARGE_BATCH_ROWS
    assert NumbaFunctions(model, 1).small_batch_rows == SMALL_BATCH_ROWS
    for low_precision in ({"fp16_small_batch": True}, {"int8_small_batch": True}):
        functions = NumbaFunctions(model, 1, **low_precision)
        assert functions.small_batch_rows == LOW_PRECISION_SMALL_BATCH_ROWS


@pytest.mark.parametrize(
    ("rows", "initial", "expected"),
    [
        (1, False, Path.PER_ROW),
        (1, True, Path.PER_ROW),
        (2, False, Path.ROW_BLOCKED),
        (BLOCKED_BATCH_ROWS - 1, False, Path.ROW_BLOCKED),
        (BLOCKED_BATCH_ROWS, False, Path.GEMM),
        (BLOCKED_BATCH_ROWS, True, Path.ROW_BLOCKED),
        (LARGE_BATCH_ROWS - 1, False, Path.GEMM),
        (BLOCKED_INITIAL_ROWS - 1, True, Path.ROW_BLOCKED),
        (LARGE_BATCH_ROWS, False, Path.LARGE_BATCH),
        (LARGE_BATCH_ROWS, True, Path.LARGE_BATCH),
    ],
)
def test_auto_routing_table(rows: int, initial: bool, expected: Path) -> None:
    """``auto``'s table: per-row at 1 row, row-blocked to 63 (initial: 255), GEMM, then torch_fast."""
    assert RowRouting(large_batch_rows=LARGE_BATCH_ROWS).path(rows, initial=initial) == expected


def test_without_a_large_batch_backend_the_gemm_path_takes_every_large_call() -> None:
    routing = RowRouting()
    assert routing.path(10_000) == Path.GEMM
    assert routing.path(10_000, initial=True) == Path.GEMM


class _Counting:
    """A large-batch backend that records the calls it gets."""

    def __init__(self, inner: ModelFunctions) -> None:
        self.inner, self.calls = inner, []

    def initial(self, windows: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        self.calls.append(("initial", len(windows)))
        return self.inner.initial(windows)

    def outcome_probs(self, hidden: np.ndarray, actions: np.ndarray) -> np.ndarray:
        self.calls.append(("outcome_probs", len(hidden)))
        return self.inner.outcome_probs(hidden, actions)

    def recurrent(
        self, hidden: np.ndarray, actions: np.ndarray, outcomes: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        self.calls.append(("recurrent", len(hidden)))
        return self.inner.recurrent(hidden, actions, outcomes)


def test_every_call_follows_the_table(model: MuZeroNetwork) -> None:
    """All three calls hand the rows at and above large_batch_rows to the large-batch backend, no fewer."""
    large = _Counting(NumbaFunctions(model, 1))
    functions = NumbaFunctions(model, 1, large_batch=large, large_batch_rows=8)
    cfg = model.cfg
    for rows in (7, 8):
        windows = np.zeros((rows, cfg.window, cfg.n_features), np.float32)
        hidden = functions.initial(windows)[0]
        actions = np.zeros(rows, np.int64)
        functions.outcome_probs(hidden, actions)
        functions.recurrent(hidden, actions, actions)
    assert large.calls == [("initial", 8), ("outcome_probs", 8), ("recurrent", 8)]
