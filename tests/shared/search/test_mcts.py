"""The batched stochastic MCTS: known answers, chance visit shares, legality, batching, determinism."""

from __future__ import annotations

from typing import ClassVar

import numpy as np
import pytest
import torch

from shared.model.config import ModelConfig
from shared.model.networks import MuZeroNetwork
from shared.model.support import logits_to_scalar
from shared.reward import Action
from shared.search import SearchConfig, search
from shared.trading.rules import is_legal

UP, NEUTRAL, DOWN = 0, 1, 2


class KnownAnswerModel:
    """Hand-built model functions. hidden[0] holds the depth. At the root, BUY pays +10 on UP (p=0.3),
    0 on NEUTRAL (0.1) and -1 on DOWN (0.6): expectation +2.4. SELL pays -1 on UP, 0, +2 on DOWN:
    expectation +0.9, but +2 under the most likely outcome (DOWN) alone, where BUY pays -1.
    HOLD pays 0. Everything deeper pays 0 and is worth 0."""

    probs = np.array([0.3, 0.1, 0.6], np.float32)
    root_rewards: ClassVar[dict[int, tuple[float, float, float]]] = {
        Action.BUY: (10.0, 0.0, -1.0),
        Action.SELL: (-1.0, 0.0, 2.0),
    }

    def __init__(self) -> None:
        self.outcome_calls = 0
        self.recurrent_calls = 0

    def initial(self, windows: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        m = len(windows)
        return np.zeros((m, 4), np.float32), np.zeros((m, 4), np.float32), np.zeros(m, np.float32)

    def outcome_probs(self, hidden: np.ndarray, actions: np.ndarray) -> np.ndarray:
        self.outcome_calls += 1
        return np.tile(self.probs, (len(hidden), 1))

    def recurrent(self, hidden, actions, outcomes):  # type: ignore[no-untyped-def]
        self.recurrent_calls += 1
        m = len(hidden)
        nxt = hidden.copy()
        nxt[:, 0] += 1
        reward = np.zeros(m, np.float32)
        for i in range(m):
            if hidden[i, 0] == 0 and int(actions[i]) in self.root_rewards:
                reward[i] = self.root_rewards[int(actions[i])][int(outcomes[i])]
        return nxt, reward, np.zeros((m, 4), np.float32), np.zeros(m, np.float32)


class TorchModel:
    """Model functions straight from the torch networks (the reference path)."""

    def __init__(self, net: MuZeroNetwork) -> None:
        self.net = net.eval()
        self.support = net.cfg.support_size

    @torch.inference_mode()
    def initial(self, windows):  # type: ignore[no-untyped-def]
        out = self.net.initial_inference(torch.from_numpy(windows))
        value = logits_to_scalar(out.value_logits, self.support)
        return out.hidden.numpy(), out.policy_logits.numpy(), value.numpy()

    @torch.inference_mode()
    def outcome_probs(self, hidden, actions):  # type: ignore[no-untyped-def]
        return self.net.outcome_probabilities(torch.from_numpy(hidden), torch.from_numpy(actions)).numpy()

    @torch.inference_mode()
    def recurrent(self, hidden, actions, outcomes):  # type: ignore[no-untyped-def]
        out = self.net.recurrent_inference(
            torch.from_numpy(hidden), torch.from_numpy(actions), torch.from_numpy(outcomes)
        )
        value = logits_to_scalar(out.value_logits, self.support)
        return out.hidden.numpy(), out.reward.numpy(), out.policy_logits.numpy(), value.numpy()


def flat_windows(batch: int, side: int = 0, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    windows = rng.random((batch, 32, 15), dtype=np.float32)
    windows[:, :, 9:] = 0.0
    windows[:, :, 9] = side
    return windows


@pytest.fixture(scope="module")
def torch_model() -> TorchModel:
    torch.manual_seed(0)
    return TorchModel(MuZeroNetwork(ModelConfig(hidden=64)))


def test_search_picks_the_expectation_optimal_action() -> None:
    model = KnownAnswerModel()
    out = search(model, flat_windows(1), SearchConfig(num_simulations=60))
    visits = out.visit_counts[0]
    q = out.tree.chance_value_sum[0, 0] / np.maximum(out.tree.chance_visits[0, 0], 1)
    assert out.action[0] == Action.BUY, (visits, q)
    assert visits[Action.BUY] > visits[Action.SELL] > 0
    # Q of BUY is its expectation over the chance outcomes, not the most likely outcome's -1.
    assert q[Action.BUY] == pytest.approx(2.4, abs=0.35)
    assert visits[Action.CLOSE] == 0  # illegal when flat
    np.testing.assert_allclose(out.outcome_probs[0], KnownAnswerModel.probs)


@pytest.mark.parametrize("simulations", [30, 300])
def test_chance_visit_shares_approach_the_outcome_probabilities(simulations: int) -> None:
    out = search(KnownAnswerModel(), flat_windows(1), SearchConfig(num_simulations=simulations))
    tree = out.tree
    shares = tree.outcome_visits[0, 0, Action.BUY] / tree.chance_visits[0, 0, Action.BUY]
    # The deficit rule keeps every outcome within one visit of its share.
    assert np.abs(shares - KnownAnswerModel.probs).max() <= 1.0 / tree.chance_visits[0, 0, Action.BUY] + 1e-9


def test_visits_sum_to_the_number_of_simulations(torch_model: TorchModel) -> None:
    for sims in (1, 10, 25):
        out = search(torch_model, flat_windows(5), SearchConfig(num_simulations=sims))
        assert out.visit_counts.sum(axis=1).tolist() == [sims] * 5
        np.testing.assert_allclose(out.visit_policy.sum(axis=1), 1.0, rtol=1e-6)
        assert (out.tree.node_count <= sims + 1).all()


@pytest.mark.parametrize("side", [-1, 0, 1])
def test_never_selects_an_illegal_action(torch_model: TorchModel, side: int) -> None:
    out = search(torch_model, flat_windows(16, side=side, seed=side + 5), SearchConfig(num_simulations=25))
    tree = out.tree
    for b in range(16):
        assert is_legal(side, int(out.action[b]))
        for n in range(int(tree.node_count[b])):
            node_side = int(tree.node_side[b, n])
            for a in range(4):
                if not is_legal(node_side, a):
                    assert tree.chance_visits[b, n, a] == 0 and tree.node_prior[b, n, a] == 0.0
    # The side follows the actions along each path.
    for b in range(16):
        for n in range(1, int(tree.node_count[b])):
            parent, a = tree.node_parent[b, n], tree.node_parent_action[b, n]
            parent_side = int(tree.node_side[b, parent])
            expected = {1: 1 if parent_side == 0 else parent_side, 2: -1 if parent_side == 0 else parent_side}
            want = expected.get(int(a), 0 if a == 3 else parent_side)
            assert tree.node_side[b, n] == want


def test_depth_limit_is_respected(torch_model: TorchModel) -> None:
    out = search(torch_model, flat_windows(4), SearchConfig(num_simulations=40, depth_limit=2))
    assert out.tree.node_depth.max() <= 2


def test_batched_equals_one_root_at_a_time(torch_model: TorchModel) -> None:
    windows = np.concatenate([flat_windows(4, 0, 1), flat_windows(4, 1, 2)])
    config = SearchConfig(num_simulations=25)
    batched = search(torch_model, windows, config)
    for b in range(len(windows)):
        alone = search(torch_model, windows[b : b + 1], config)
        assert alone.action[0] == batched.action[b]
        assert alone.visit_counts[0].tolist() == batched.visit_counts[b].tolist()
        # Float32 GEMMs of different batch sizes round differently: values agree to ~1e-6 relative.
        assert alone.root_value[0] == pytest.approx(batched.root_value[b], rel=1e-5)


def test_deterministic_for_a_seed_with_noise_and_temperature(torch_model: TorchModel) -> None:
    config = SearchConfig(num_simulations=10, add_noise=True, temperature=1.0)
    windows = flat_windows(32)
    a = search(torch_model, windows, config, np.random.default_rng(3))
    b = search(torch_model, windows, config, np.random.default_rng(3))
    c = search(torch_model, windows, config, np.random.default_rng(4))
    assert np.array_equal(a.action, b.action) and np.array_equal(a.visit_counts, b.visit_counts)
    assert not np.array_equal(a.visit_counts, c.visit_counts)


def test_noise_only_when_asked(torch_model: TorchModel) -> None:
    windows = flat_windows(8)
    plain = search(torch_model, windows, SearchConfig(num_simulations=10), np.random.default_rng(1))
    again = search(torch_model, windows, SearchConfig(num_simulations=10), np.random.default_rng(2))
    assert np.array_equal(plain.tree.node_prior[:, 0], again.tree.node_prior[:, 0])
    noisy = search(
        torch_model, windows, SearchConfig(num_simulations=10, add_noise=True), np.random.default_rng(1)
    )
    assert not np.allclose(noisy.tree.node_prior[:, 0], plain.tree.node_prior[:, 0])
    assert (noisy.tree.node_prior[:, 0, Action.CLOSE] == 0).all()  # noise stays on legal actions


def test_bad_side_column_is_refused(torch_model: TorchModel) -> None:
    windows = flat_windows(1)
    windows[0, -1, 9] = 0.5
    with pytest.raises(ValueError, match="position_side"):
        search(torch_model, windows, SearchConfig(num_simulations=2))


def test_explore_in_position_zero_explores_flat_roots_only(torch_model: TorchModel) -> None:
    # Half flat roots, half long: noise and temperature sampling reach only the flat ones.
    windows = np.concatenate([flat_windows(16, side=0, seed=1), flat_windows(16, side=1, seed=2)])
    windows[16:, :, 10] = 0.1  # an open position's P&L column, so the long rows are valid states
    plain = search(torch_model, windows, SearchConfig(num_simulations=10))
    greedy = search(torch_model, windows, SearchConfig(num_simulations=10), np.random.default_rng(0))
    flat_only = SearchConfig(num_simulations=10, add_noise=True, temperature=5.0, explore_in_position=0.0)
    chosen = [search(torch_model, windows, flat_only, np.random.default_rng(seed)) for seed in range(12)]
    for out in chosen:
        # Long roots: the prior and the search are the noise-free ones, and the choice is greedy.
        assert np.array_equal(out.tree.node_prior[16:, 0], plain.tree.node_prior[16:, 0])
        assert np.array_equal(out.visit_counts[16:], greedy.visit_counts[16:])
        assert np.array_equal(out.action[16:], greedy.action[16:])
        assert not np.allclose(out.tree.node_prior[:16, 0], plain.tree.node_prior[:16, 0])
    # Flat roots still sample: at temperature 5 over 12 seeds their actions differ from the greedy ones.
    flat_actions = np.stack([out.action[:16] for out in chosen])
    assert (flat_actions != greedy.action[:16]).any()


def test_explore_in_position_share(torch_model: TorchModel) -> None:
    windows = flat_windows(400, side=-1, seed=3)
    windows[:, :, 10] = -0.1
    plain = search(torch_model, windows, SearchConfig(num_simulations=4))
    config = SearchConfig(num_simulations=4, add_noise=True, temperature=1.0, explore_in_position=0.25)
    out = search(torch_model, windows, config, np.random.default_rng(5))
    noised = ~np.isclose(out.tree.node_prior[:, 0], plain.tree.node_prior[:, 0]).all(axis=1)
    assert 0.18 < noised.mean() < 0.32  # about a quarter of the in-position roots explore
