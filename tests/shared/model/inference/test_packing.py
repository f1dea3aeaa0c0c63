"""The packed weights are named: the layout points at the right layers of the stack."""

from __future__ import annotations

import numpy as np
import torch

from shared.model.inference import NumbaFunctions
from shared.model.inference.packing import (
    ALIGNMENT,
    PackedNetwork,
    Representation,
    SquareLayers,
    as_plain,
    pack_network,
    pack_representation,
)
from shared.model.inference.protocol import eval_copy
from shared.model.networks import MuZeroNetwork


def _weight(linear: torch.nn.Linear) -> np.ndarray:
    return linear.weight.detach().numpy()


def test_layout_names_each_networks_layers(model: MuZeroNetwork) -> None:
    snapshot = eval_copy(model)
    network = pack_network(snapshot)
    layers, layout, cfg = network.layers, network.layout, model.cfg
    blocks = (
        cfg.representation_blocks
        + cfg.outcome_blocks
        + cfg.dynamics_blocks
        + cfg.policy_blocks
        + cfg.value_blocks
    )
    assert layers.weight.shape == (2 * blocks + 3, cfg.hidden, cfg.hidden)
    firsts = {
        layout.representation_first: snapshot.representation.blocks[0].fc1,
        layout.outcome_first: snapshot.outcome.blocks[0].fc1,
        layout.dynamics_first: snapshot.dynamics.blocks[0].fc1,
        layout.next_hidden: snapshot.dynamics.next_hidden,
        layout.policy_first + 1: snapshot.policy.blocks[0].fc2,
        layout.value_first + 2 * cfg.value_blocks - 1: snapshot.value.blocks[-1].fc2,
    }
    for index, linear in firsts.items():
        np.testing.assert_array_equal(layers.weight[index], _weight(linear))
    np.testing.assert_array_equal(
        layers.weight[layout.outcome_project], _weight(snapshot.outcome.project)[:, : cfg.hidden]
    )
    np.testing.assert_array_equal(layers.norm_gain[layout.outcome_project], np.ones(cfg.hidden))
    # Without a lower-precision backend the int8 and fp16 copies are empty (the kernels then read fp32).
    assert layers.weight_int8.shape[0] == 0 and layers.weight_fp16.shape[0] == 0
    int8 = pack_network(snapshot, int8=True, fp16=True).layers
    assert int8.weight_int8.shape == layers.weight.shape and int8.weight_fp16.shape == layers.weight.shape


def test_the_kernels_get_plain_tuples(model: MuZeroNetwork) -> None:
    """numba types plain tuples in C from a cached fingerprint, named tuples in Python on every call."""
    snapshot = eval_copy(model)
    packed = (pack_network(snapshot), pack_representation(snapshot))
    plain = as_plain(packed)

    def named_tuples(value: object) -> int:
        if isinstance(value, tuple):
            return int(hasattr(value, "_fields")) + sum(named_tuples(item) for item in value)
        return 0

    assert named_tuples(packed) > 0 and named_tuples(plain) == 0
    network = PackedNetwork(*plain[0])
    assert SquareLayers(*network.layers).weight is packed[0].layers.weight
    assert Representation(*plain[1]).conv_w[0] is packed[1].conv_w[0]


def test_packed_arrays_start_on_a_cache_line(model: MuZeroNetwork) -> None:
    snapshot = eval_copy(model)
    functions = NumbaFunctions(model, 1)
    packed = (pack_network(snapshot, int8=True, fp16=True), pack_representation(snapshot), functions.network)

    def arrays(value: object) -> list[np.ndarray]:
        if isinstance(value, np.ndarray):
            return [value]
        return [a for item in value for a in arrays(item)] if isinstance(value, tuple) else []

    found = [a for a in arrays(packed) if a.size > 0]  # an empty copy is never read
    assert len(found) > 40
    for array in found:
        assert array.ctypes.data % ALIGNMENT == 0 and array.flags.c_contiguous
