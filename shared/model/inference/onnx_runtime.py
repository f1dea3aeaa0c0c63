"""The ``onnx`` backend: the ``torch_fast`` modules exported to ONNX and run by ONNX Runtime.

Serving never uses it (``auto`` is faster at every batch size, docs/INFERENCE.md); it is kept for
``export_onnx``, the network in a portable format that other runtimes load without this code. onnx and
onnxruntime come with the optional extra ``onnx`` (``pip install -e '.[onnx]'``; ``.[dev]`` includes it).
"""

from __future__ import annotations

import importlib
import io
import os
from types import ModuleType

import numpy as np
import torch

from shared.model.inference.protocol import float_rows, index_rows
from shared.model.inference.torch_fast import example_inputs, fast_modules
from shared.model.networks import MuZeroNetwork

ONNX_EXTRA = "onnx"


def _optional(module: str) -> ModuleType:
    """Import one of the ``onnx`` extra's packages, or say which extra to install."""
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise ImportError(
            f"the onnx backend needs {module}, from the optional extra {ONNX_EXTRA!r}: "
            f"pip install -e '.[{ONNX_EXTRA}]'"
        ) from exc


def export_onnx(model: MuZeroNetwork) -> dict[str, bytes]:
    """The three fast modules as ONNX models (legacy TorchScript exporter: needs no onnxscript)."""
    _optional("onnx")  # torch's exporter imports it; fail here with the extra's name instead
    names = {
        "initial": (["windows"], ["hidden", "policy_logits", "value"]),
        "outcome": (["hidden", "actions"], ["probs"]),
        "recurrent": (["hidden", "actions", "outcomes"], ["next_hidden", "reward", "policy_logits", "value"]),
    }
    exported = {}
    for (name, (inputs, outputs)), module, example in zip(
        names.items(), fast_modules(model), example_inputs(model), strict=True
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
        ort = _optional("onnxruntime")
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
        hidden, policy, value = self.sessions["initial"].run(None, {"windows": float_rows(windows)})
        return hidden, policy, value

    def outcome_probs(self, hidden: np.ndarray, actions: np.ndarray) -> np.ndarray:
        feeds = {"hidden": float_rows(hidden), "actions": index_rows(actions)}
        return self.sessions["outcome"].run(None, feeds)[0]

    def recurrent(
        self, hidden: np.ndarray, actions: np.ndarray, outcomes: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        feeds = {
            "hidden": float_rows(hidden),
            "actions": index_rows(actions),
            "outcomes": index_rows(outcomes),
        }
        next_hidden, reward, policy, value = self.sessions["recurrent"].run(None, feeds)
        return next_hidden, reward, policy, value
