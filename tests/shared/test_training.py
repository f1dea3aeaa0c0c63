"""Learning pieces: batches follow the real trajectory, the loss falls, self-play fills replay."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from shared.dataset import build_dataset
from shared.env import MarketData
from shared.model.config import ModelConfig
from shared.model.inference import TorchFunctions
from shared.model.networks import MuZeroNetwork
from shared.replay import ReplayBuffer, n_step_values
from shared.search import SearchConfig
from shared.synth import generate_synthetic_market
from shared.training.batch import make_batch, window_at
from shared.training.config import TrainingConfig
from shared.training.learner import Learner, muzero_loss, scale_gradient, zero_output_heads
from shared.training.selfplay import play_round

SMALL = ModelConfig(hidden=32, tcn_channels=8, support_size=20)


@pytest.fixture(scope="module")
def world() -> tuple[MarketData, np.ndarray, np.ndarray]:
    synth = generate_synthetic_market("SYNTHJPY", 6_000, seed=3)
    ds = build_dataset(synth.bars)
    market = MarketData("SYNTHJPY", synth.bars.ts, synth.bars.close, ds.features)
    return market, ds.outcome, ds.starts_of("train")


@pytest.fixture(scope="module")
def replay(world: tuple[MarketData, np.ndarray, np.ndarray]) -> ReplayBuffer:
    market, outcome, starts = world
    torch.manual_seed(0)
    model = TorchFunctions(MuZeroNetwork(SMALL))
    rng = np.random.default_rng(0)
    played = play_round(
        model, market, outcome, starts[:: len(starts) // 6][:6], SearchConfig.collecting(5.0), rng
    )
    buffer = ReplayBuffer(capacity=100, min_size=1)
    for trajectory in played.trajectories:
        buffer.add(trajectory)
    assert played.bar_steps == 6 * 360 and played.action_counts.sum() == 6 * 360
    return buffer


def test_self_play_trajectories_match_the_market(
    world: tuple[MarketData, np.ndarray, np.ndarray], replay: ReplayBuffer
) -> None:
    _, outcome, _ = world
    for traj in replay.trajectories:
        assert len(traj) == 360 and np.array_equal(np.diff(traj.bars), np.ones(359))
        assert np.array_equal(traj.outcomes, outcome[traj.bars])
        np.testing.assert_allclose(traj.policies.sum(1), 1.0, rtol=1e-5)
        # A BUY or SELL at step k shows as a position from step k+1 on.
        opened = np.flatnonzero(np.isin(traj.actions[:-1], (1, 2)) & (traj.position[:-1, 0] == 0))
        assert (traj.position[opened + 1, 0] != 0).all()
    assert any(t.has_trade for t in replay.trajectories)


def test_batches_unroll_along_the_stored_steps(
    world: tuple[MarketData, np.ndarray, np.ndarray], replay: ReplayBuffer
) -> None:
    market, _, _ = world
    batch = make_batch(replay, market, batch_size=32, unroll=5, td_steps=10, discount=0.997)
    assert batch.windows.shape == (32, 32, 15) and batch.actions.shape == (32, 5)
    replay.rng = np.random.default_rng(0)  # the same draw again, to check each row by hand
    traj_index, step = replay.sample_positions(32)
    replay.rng = np.random.default_rng(0)
    batch = make_batch(replay, market, batch_size=32, unroll=5, td_steps=10, discount=0.997)
    for i, (j, t) in enumerate(zip(traj_index, step, strict=True)):
        traj = replay.trajectories[j]
        np.testing.assert_array_equal(
            batch.windows[i], window_at(market, int(traj.bars[t]), traj.position[t])
        )
        inside = min(6, 360 - t)
        assert batch.mask[i].tolist() == [1.0] * inside + [0.0] * (6 - inside)
        z = n_step_values(traj.rewards, traj.root_values, 10, 0.997)
        np.testing.assert_allclose(batch.target_value[i, :inside], z[t : t + inside])
        take = min(5, 360 - t)
        assert batch.actions[i, :take].tolist() == traj.actions[t : t + take].tolist()


def test_the_loss_falls_on_a_fixed_batch(
    world: tuple[MarketData, np.ndarray, np.ndarray], replay: ReplayBuffer
) -> None:
    market, _, _ = world
    torch.manual_seed(1)
    learner = Learner(MuZeroNetwork(SMALL), TrainingConfig.recipe("seed", learning_rate=0.003))
    batch = make_batch(replay, market, batch_size=64, unroll=5, td_steps=10, discount=0.997)
    first = learner.step(batch)
    for _ in range(60):
        last = learner.step(batch)
    assert last.total < 0.5 * first.total
    assert last.reward < first.reward and last.value < first.value and last.policy < first.policy
    assert learner.updates == 61


def stepwise_loss(model: MuZeroNetwork, batch, cfg: TrainingConfig) -> torch.Tensor:  # type: ignore[no-untyped-def]
    """CONTRACT section 8 written plainly: every network called step by step along the unroll."""
    from torch.nn import functional as F

    from shared.model.support import scalar_to_target

    def soft_ce(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return -(target * F.log_softmax(logits, -1)).sum(-1)

    actions, outcomes = torch.from_numpy(batch.actions), torch.from_numpy(batch.outcomes)
    policy_t, mask = torch.from_numpy(batch.target_policy), torch.from_numpy(batch.mask)
    value_t = scalar_to_target(torch.from_numpy(batch.target_value), model.cfg.support_size)
    reward_t = torch.from_numpy(batch.target_reward)
    k_steps = actions.shape[1]
    out = model.initial_inference(torch.from_numpy(batch.windows))
    hidden = out.hidden
    policy = soft_ce(out.policy_logits, policy_t[:, 0]) * mask[:, 0]
    value = soft_ce(out.value_logits, value_t[:, 0]) * mask[:, 0]
    reward = torch.zeros_like(policy)
    outcome = torch.zeros_like(policy)
    for k in range(k_steps):
        outcome = (
            outcome
            + F.cross_entropy(model.outcome_logits(hidden, actions[:, k]), outcomes[:, k], reduction="none")
            * mask[:, k]
            / k_steps
        )
        step = model.recurrent_inference(hidden, actions[:, k], outcomes[:, k])
        reward = reward + (step.reward - reward_t[:, k]) ** 2 * mask[:, k] / k_steps
        policy = policy + soft_ce(step.policy_logits, policy_t[:, k + 1]) * mask[:, k + 1] / k_steps
        value = value + soft_ce(step.value_logits, value_t[:, k + 1]) * mask[:, k + 1] / k_steps
        hidden = scale_gradient(step.hidden, 0.5)
    return (
        cfg.policy_weight * policy.mean()
        + cfg.value_weight * value.mean()
        + cfg.reward_weight * reward.mean()
        + cfg.outcome_weight * outcome.mean()
    )


def test_batched_loss_equals_the_stepwise_loss(
    world: tuple[MarketData, np.ndarray, np.ndarray], replay: ReplayBuffer
) -> None:
    market, _, _ = world
    torch.manual_seed(2)
    model = MuZeroNetwork(SMALL).eval()  # no dropout: both runs see the same network
    batch = make_batch(replay, market, batch_size=32, unroll=5, td_steps=10, discount=0.997)
    batch.mask[:3, 3:] = 0.0  # as at a trajectory's end
    cfg = TrainingConfig.recipe("seed")  # every loss weighted, the policy's too
    fast, _ = muzero_loss(model, batch, cfg)
    fast_grads = torch.autograd.grad(fast, list(model.parameters()), allow_unused=True)
    slow = stepwise_loss(model, batch, cfg)
    slow_grads = torch.autograd.grad(slow, list(model.parameters()), allow_unused=True)
    torch.testing.assert_close(fast, slow, rtol=1e-5, atol=1e-6)
    for a, b in zip(fast_grads, slow_grads, strict=True):
        if a is None or b is None:
            assert a is None and b is None
        else:
            torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-6)


def test_scale_gradient_keeps_values_and_scales_gradients() -> None:
    x = torch.tensor([1.0, -2.0], requires_grad=True)
    y = scale_gradient(x, 0.5)
    assert torch.equal(y, x)
    y.sum().backward()
    assert x.grad is not None and x.grad.tolist() == [0.5, 0.5]


@torch.inference_mode()
def test_zeroed_heads_start_neutral() -> None:
    torch.manual_seed(0)
    model = MuZeroNetwork(SMALL).eval()
    raw = model.initial_inference(torch.rand(4, 32, 15))
    from shared.model.support import logits_to_scalar

    # the problem: a fresh network starts with arbitrary value estimates
    assert logits_to_scalar(raw.value_logits, SMALL.support_size).abs().max() > 0.1
    zero_output_heads(model)
    out = model.initial_inference(torch.rand(4, 32, 15))
    assert logits_to_scalar(out.value_logits, SMALL.support_size).abs().max() < 1e-4
    torch.testing.assert_close(torch.softmax(out.policy_logits, -1), torch.full((4, 4), 0.25))
    step = model.recurrent_inference(out.hidden, torch.tensor([1, 0, 2, 3]), torch.tensor([0, 1, 2, 0]))
    assert step.reward.abs().max() == 0.0
    torch.testing.assert_close(
        model.outcome_probabilities(out.hidden, torch.zeros(4)), torch.full((4, 3), 1 / 3)
    )


def test_temperature_schedule() -> None:
    cfg = TrainingConfig.recipe("seed")
    assert cfg.temperature(0) == 10.0 and cfg.temperature(25_000) == 5.5 and cfg.temperature(10**6) == 1.0
    default = TrainingConfig()
    assert default.temperature(0) == 1.0 and default.temperature(1500) == 0.625
    assert default.temperature(10**6) == 0.25


def test_recipes_set_defaults_and_given_options_win() -> None:
    # The default recipe is every default: the one that learns.
    assert TrainingConfig.recipe("equity") == TrainingConfig()
    default = TrainingConfig.recipe("equity", td_steps=12)
    assert (default.reward, default.policy_weight, default.explore_in_position) == ("equity", 0.0, 0.03)
    assert default.td_steps == 12
    seed = TrainingConfig.recipe("seed")
    assert (seed.reward, seed.policy_weight, seed.td_steps) == ("amddp1", 0.25, 10)
    assert seed.explore_in_position == 1.0
    assert TrainingConfig.recipe("seed", reward="pips").reward == "equity"  # an older name still reads
    assert TrainingConfig.recipe("pips") == TrainingConfig()  # and so do the recipes' older names
    search = default.collect_search(episodes=3000)
    assert (search.explore_in_position, search.temperature, search.num_simulations) == (0.03, 0.25, 10)
    with pytest.raises(ValueError, match="unknown training recipe 'fast'; choose from equity, seed"):
        TrainingConfig.recipe("fast")
