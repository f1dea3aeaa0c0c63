"""The six networks: shapes, probability sums, the value transform and two-hot targets."""

from __future__ import annotations

import pytest
import torch

from shared.model.config import ModelConfig
from shared.model.networks import MuZeroNetwork, parameter_count, parameter_counts_by_network
from shared.model.support import (
    inverse_transform,
    logits_to_scalar,
    scalar_to_target,
    transform,
    two_hot,
)


@pytest.fixture(scope="module")
def net() -> MuZeroNetwork:
    torch.manual_seed(0)
    return MuZeroNetwork().eval()


def test_default_size_and_exact_parameter_count(net: MuZeroNetwork) -> None:
    counts = parameter_counts_by_network(net)
    assert sum(counts.values()) == parameter_count(net) == 2_446_738
    assert 2_300_000 <= parameter_count(net) <= 2_500_000


@torch.inference_mode()
def test_entry_point_shapes_and_probabilities(net: MuZeroNetwork) -> None:
    windows = torch.rand(7, 32, 15)
    initial = net.initial_inference(windows)
    assert initial.hidden.shape == (7, 256)
    assert initial.policy_logits.shape == (7, 4)
    assert initial.value_logits.shape == (7, 601)
    actions = torch.tensor([0, 1, 2, 3, 0, 1, 2])
    outcomes = torch.tensor([0, 1, 2, 0, 1, 2, 0])
    probs = net.outcome_probabilities(initial.hidden, actions)
    assert probs.shape == (7, 3)
    torch.testing.assert_close(probs.sum(-1), torch.ones(7))
    assert (probs >= 0).all()
    step = net.recurrent_inference(initial.hidden, actions, outcomes)
    assert step.hidden.shape == (7, 256) and step.reward.shape == (7,)
    assert step.policy_logits.shape == (7, 4) and step.value_logits.shape == (7, 601)
    torch.testing.assert_close(torch.softmax(step.policy_logits, -1).sum(-1), torch.ones(7))
    # The next hidden state ends in a LayerNorm: zero mean, unit variance per row.
    torch.testing.assert_close(step.hidden.mean(-1), torch.zeros(7), atol=1e-5, rtol=0)
    assert net.afterstate_of(initial.hidden, actions).shape == (7, 256)


@torch.inference_mode()
def test_representation_is_causal_in_time(net: MuZeroNetwork) -> None:
    # Changing an older row changes the pooled summary, but the TCN never looks ahead: the
    # convolution output at step t depends on rows <= t only.
    x = torch.rand(2, 15, 32)
    conv = net.representation.convs[0]
    base = conv(x)
    changed = x.clone()
    changed[:, :, 20:] += 1.0
    assert torch.equal(conv(changed)[:, :, :20], base[:, :, :20])


@torch.inference_mode()
def test_actions_and_outcomes_matter(net: MuZeroNetwork) -> None:
    hidden = net.initial_inference(torch.rand(1, 32, 15)).hidden.repeat(3, 1)
    a = net.recurrent_inference(hidden, torch.tensor([0, 1, 1]), torch.tensor([0, 0, 2]))
    assert not torch.equal(a.hidden[0], a.hidden[1]) and not torch.equal(a.hidden[1], a.hidden[2])


def test_value_transform_round_trip() -> None:
    x = torch.cat([torch.linspace(-1000, 1000, 20001, dtype=torch.float64), torch.tensor([0.0, 1e-6, -3.0])])
    torch.testing.assert_close(inverse_transform(transform(x)), x, atol=1e-8, rtol=1e-10)
    assert float(transform(torch.tensor(0.0))) == 0.0
    assert float(transform(torch.tensor(3.0))) == pytest.approx(1.0 + 0.003)


def test_two_hot_round_trip_and_mass() -> None:
    support = 300
    y = torch.tensor([-300.0, -2.25, 0.0, 0.5, 7.75, 299.9, 300.0, 450.0], dtype=torch.float64)
    target = two_hot(y, support)
    torch.testing.assert_close(target.sum(-1), torch.ones(len(y), dtype=torch.float64))
    atoms = torch.arange(-support, support + 1, dtype=torch.float64)
    torch.testing.assert_close((target * atoms).sum(-1), y.clamp(-support, support))
    assert (target > 0).sum(-1).max() <= 2


def test_scalar_target_and_logits_round_trip() -> None:
    values = torch.tensor([-40.0, -3.0, -0.05, 0.0, 1.0, 2.4, 30.0], dtype=torch.float64)
    target = scalar_to_target(values, 300)
    # Log-probabilities of the two-hot target are logits whose expectation is the same value.
    logits = torch.log(target.clamp_min(1e-30))
    torch.testing.assert_close(logits_to_scalar(logits, 300), values, atol=1e-6, rtol=1e-6)


def test_sizes_come_from_one_config() -> None:
    small = MuZeroNetwork(ModelConfig(hidden=32, tcn_channels=8, support_size=10))
    out = small.initial_inference(torch.rand(2, 32, 15))
    assert out.hidden.shape == (2, 32) and out.value_logits.shape == (2, 21)
