"""Every backend by name, and ``make_model_functions``: what the services and the trainer call."""

from __future__ import annotations

from shared.model.inference.numba_backend import NumbaFunctions
from shared.model.inference.onnx_runtime import OnnxFunctions
from shared.model.inference.protocol import ModelFunctions
from shared.model.inference.reference import TorchFunctions
from shared.model.inference.torch_fast import torch_fast_functions, torchscript_functions
from shared.model.networks import MuZeroNetwork

BACKENDS = ("auto", "torch", "torch_fast", "torchscript", "onnx", "numba", "numba_fp16", "numba_int8")
# The measured winner per row count (docs/INFERENCE.md): the numba paths up to LARGE_BATCH_ROWS - 1 rows,
# torch_fast from there. Every path matches the reference within tolerance, so decisions agree.
AUTO_BACKEND = "auto"


def make_model_functions(
    model: MuZeroNetwork, backend: str = AUTO_BACKEND, threads: int | None = None
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
