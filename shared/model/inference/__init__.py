"""Fast inference for the search: the same three calls over numpy arrays (``ModelFunctions``), several
backends; ``make_model_functions(model, "auto")`` is what the services use.

- ``protocol``: ``ModelFunctions`` and the row helpers every backend shares;
- ``reference``: ``torch``, ``MuZeroNetwork`` as written (one-hot concatenation);
- ``torch_fast``: torch eager on rewritten modules (gathers for the one-hot columns), and ``torchscript``;
- ``numba_backend``: ``numba`` (+ ``numba_fp16``, ``numba_int8``): weights packed once (``packing``),
  then by row count (``routing``) the per-row or row-blocked numba kernels (``kernels``) or torch GEMMs
  (``gemm``); ``auto`` is ``numba`` handing large batches to ``torch_fast``;
- ``onnx_runtime``: ``onnx``, the fast modules exported and run by ONNX Runtime (optional extra ``onnx``);
- ``backends``: every backend by name, ``make_model_functions``.

Every fp32 backend matches the reference within 1e-4 (tests/shared/model/inference/). What each
backend is for, and the measurements behind ``auto``'s routing: docs/INFERENCE.md.

Threads are explicit: ``threads`` sets ``torch.set_num_threads`` (torch backends), ORT's
``intra_op_num_threads`` (onnx), and torch + numba threads (numba backends). ``None`` means all cores.
"""

from shared.model.inference.backends import AUTO_BACKEND, BACKENDS, make_model_functions
from shared.model.inference.numba_backend import NumbaFunctions
from shared.model.inference.onnx_runtime import OnnxFunctions, export_onnx
from shared.model.inference.protocol import ModelFunctions
from shared.model.inference.reference import TorchFunctions
from shared.model.inference.routing import (
    BLOCKED_BATCH_ROWS,
    BLOCKED_INITIAL_ROWS,
    LARGE_BATCH_ROWS,
    LOW_PRECISION_SMALL_BATCH_ROWS,
    SMALL_BATCH_ROWS,
)
from shared.model.inference.torch_fast import (
    FastInitial,
    FastOutcome,
    FastRecurrent,
    torch_fast_functions,
    torchscript_functions,
)

__all__ = [
    "AUTO_BACKEND",
    "BACKENDS",
    "BLOCKED_BATCH_ROWS",
    "BLOCKED_INITIAL_ROWS",
    "LARGE_BATCH_ROWS",
    "LOW_PRECISION_SMALL_BATCH_ROWS",
    "SMALL_BATCH_ROWS",
    "FastInitial",
    "FastOutcome",
    "FastRecurrent",
    "ModelFunctions",
    "NumbaFunctions",
    "OnnxFunctions",
    "TorchFunctions",
    "export_onnx",
    "make_model_functions",
    "torch_fast_functions",
    "torchscript_functions",
]
