"""Training batches: sampled replay positions unrolled K steps along what really happened."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from shared.env import MarketData
from shared.replay import ReplayBuffer, n_step_values
from shared.schema import N_FEATURES, N_MARKET, WINDOW


@dataclass(frozen=True)
class TrainingBatch:
    windows: np.ndarray  # (B, 32, 15) float32 at the sampled step t
    actions: np.ndarray  # (B, K) int64 a_{t+k}
    outcomes: np.ndarray  # (B, K) int64 real market outcome at t+k
    target_policy: np.ndarray  # (B, K+1, 4) float32 root visit distributions
    target_value: np.ndarray  # (B, K+1) float32 n-step returns
    target_reward: np.ndarray  # (B, K) float32 rewards received
    mask: np.ndarray  # (B, K+1) float32: 1 where t+k lies inside the trajectory


def window_at(market: MarketData, bar: int, position: np.ndarray) -> np.ndarray:
    """The (32, 15) window of a stored step: market rows from the feature matrix, position columns."""
    window = market.windows[bar - (WINDOW - 1)].reshape(WINDOW, N_FEATURES).copy()
    window[:, N_MARKET:] = position
    return window


def make_batch(
    replay: ReplayBuffer,
    market: MarketData,
    batch_size: int,
    unroll: int,
    td_steps: int,
    discount: float,
    event_share: float = 0.0,
) -> TrainingBatch:
    traj_index, step = replay.sample_positions(batch_size, event_share, unroll)
    windows = np.empty((batch_size, WINDOW, N_FEATURES), np.float32)
    actions = np.zeros((batch_size, unroll), np.int64)
    outcomes = np.zeros((batch_size, unroll), np.int64)
    policy = np.full((batch_size, unroll + 1, 4), 0.25, np.float32)
    value = np.zeros((batch_size, unroll + 1), np.float32)
    reward = np.zeros((batch_size, unroll), np.float32)
    mask = np.zeros((batch_size, unroll + 1), np.float32)
    for i, (j, t) in enumerate(zip(traj_index, step, strict=True)):
        traj = replay.trajectories[int(j)]
        length = len(traj)
        windows[i] = window_at(market, int(traj.bars[t]), traj.position[t])
        z = n_step_values(traj.rewards, traj.root_values, td_steps, discount)
        stop = min(t + unroll + 1, length)
        inside = stop - t
        mask[i, :inside] = 1.0
        policy[i, :inside] = traj.policies[t:stop]
        value[i, :inside] = z[t:stop]
        take = min(unroll, length - t)
        actions[i, :take] = traj.actions[t : t + take]
        outcomes[i, :take] = traj.outcomes[t : t + take]
        reward[i, :take] = traj.rewards[t : t + take]
    return TrainingBatch(windows, actions, outcomes, policy, value, reward, mask)
