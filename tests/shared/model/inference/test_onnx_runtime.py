"""The onnx backend lives behind the optional extra ``onnx``: without it, the error names the extra."""

from __future__ import annotations

import sys

import pytest

from shared.model.inference import OnnxFunctions, export_onnx
from shared.model.inference.onnx_runtime import ONNX_EXTRA
from shared.model.networks import MuZeroNetwork


@pytest.mark.parametrize("missing", ["onnx", "onnxruntime"])
def test_a_missing_package_names_the_extra(
    model: MuZeroNetwork, monkeypatch: pytest.MonkeyPatch, missing: str
) -> None:
    monkeypatch.setitem(sys.modules, missing, None)  # None in sys.modules: importing it raises ImportError
    with pytest.raises(ImportError, match=rf"{missing}.*extra '{ONNX_EXTRA}'"):
        OnnxFunctions(model)
    if missing == "onnx":
        with pytest.raises(ImportError, match=rf"extra '{ONNX_EXTRA}'"):
            export_onnx(model)
