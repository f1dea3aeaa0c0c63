"""One random full-size model and its torch reference, shared by the inference tests."""

from __future__ import annotations

import pytest
import torch

from shared.model.inference import TorchFunctions
from shared.model.networks import MuZeroNetwork


@pytest.fixture(scope="module")
def model() -> MuZeroNetwork:
    torch.manual_seed(0)
    return MuZeroNetwork()


@pytest.fixture(scope="module")
def reference(model: MuZeroNetwork) -> TorchFunctions:
    return TorchFunctions(model)
