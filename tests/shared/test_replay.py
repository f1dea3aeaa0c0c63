"""Replay: trade-quota eviction, uniform step sampling, persistence, n-step value targets."""

from __future__ import annotations

import numpy as np
import pytest

from shared.replay import ReplayBuffer, Trajectory, n_step_values


def trajectory(length: int, has_trade: bool, tag: int = 0) -> Trajectory:
    return Trajectory(
        bars=np.arange(length, dtype=np.int64) + tag * 1000,
        position=np.zeros((length, 6), np.float32),
        actions=np.zeros(length, np.int8),
        rewards=np.full(length, float(tag), np.float32),
        policies=np.full((length, 4), 0.25, np.float32),
        root_values=np.zeros(length, np.float32),
        outcomes=np.ones(length, np.int8),
        has_trade=has_trade,
    )


def test_evicts_the_oldest_while_trades_meet_the_quota() -> None:
    buffer = ReplayBuffer(capacity=4, trade_quota=0.3)
    for tag in range(6):
        buffer.add(trajectory(5, has_trade=True, tag=tag))
    assert [int(t.rewards[0]) for t in buffer.trajectories] == [2, 3, 4, 5]
    assert buffer.added == 6


def test_evicts_a_trade_free_trajectory_when_trades_are_scarce() -> None:
    buffer = ReplayBuffer(capacity=4, trade_quota=0.3, seed=1)
    buffer.add(trajectory(5, has_trade=True, tag=0))  # the oldest, and the only one with a trade
    for tag in range(1, 4):
        buffer.add(trajectory(5, has_trade=False, tag=tag))
    assert buffer.trade_share() == 0.25  # below 30%
    buffer.add(trajectory(5, has_trade=False, tag=9))
    tags = [int(t.rewards[0]) for t in buffer.trajectories]
    assert 0 in tags and len(tags) == 4  # the trade survives; a trade-free one went


def test_sampling_is_uniform_over_steps() -> None:
    buffer = ReplayBuffer(capacity=10, seed=2)
    buffer.add(trajectory(10, True, 0))
    buffer.add(trajectory(30, True, 1))
    traj, step = buffer.sample_positions(40_000)
    assert ((step >= 0) & (step < np.where(traj == 0, 10, 30))).all()
    assert (traj == 1).mean() == pytest.approx(0.75, abs=0.01)


def test_persistence_round_trip() -> None:
    buffer = ReplayBuffer(capacity=7, trade_quota=0.4, min_size=3)
    for tag in range(5):
        buffer.add(trajectory(4 + tag, has_trade=tag % 2 == 0, tag=tag))
    restored = ReplayBuffer.from_bytes(buffer.to_bytes())
    assert (restored.capacity, restored.trade_quota, restored.min_size, restored.added) == (7, 0.4, 3, 5)
    assert len(restored) == 5 and restored.ready
    for a, b in zip(buffer.trajectories, restored.trajectories, strict=True):
        assert a.has_trade == b.has_trade
        for name in ("bars", "position", "actions", "rewards", "policies", "root_values", "outcomes"):
            assert np.array_equal(getattr(a, name), getattr(b, name))


def test_n_step_values_by_hand() -> None:
    rewards = np.array([1.0, 0.0, 2.0, -1.0], np.float32)
    values = np.array([10.0, 20.0, 30.0, 40.0], np.float32)
    z = n_step_values(rewards, values, n=2, discount=0.5)
    assert z.tolist() == pytest.approx([1 + 0 + 0.25 * 30, 0 + 1 + 0.25 * 40, 2 - 0.5, -1.0])


def test_bad_shapes_are_refused() -> None:
    with pytest.raises(ValueError, match="policies"):
        Trajectory(
            bars=np.arange(3),
            position=np.zeros((3, 6), np.float32),
            actions=np.zeros(3, np.int8),
            rewards=np.zeros(3, np.float32),
            policies=np.zeros((3, 3), np.float32),
            root_values=np.zeros(3, np.float32),
            outcomes=np.zeros(3, np.int8),
            has_trade=False,
        )


def test_event_share_starts_unrolls_just_before_entries_and_exits() -> None:
    buffer = ReplayBuffer(capacity=10, min_size=1, seed=1)
    actions = np.zeros(360, np.int8)
    actions[[100, 140]] = (1, 3)  # one entry and its exit in 360 steps
    for _ in range(3):
        buffer.add(
            Trajectory(
                bars=np.arange(360),
                position=np.zeros((360, 6), np.float32),
                actions=actions,
                rewards=np.zeros(360, np.float32),
                policies=np.full((360, 4), 0.25, np.float32),
                root_values=np.zeros(360, np.float32),
                outcomes=np.ones(360, np.int8),
                has_trade=True,
            )
        )
    traj, step = buffer.sample_positions(4000, event_share=0.5, unroll=5)
    assert len(traj) == len(step) == 4000 and set(traj.tolist()) == {0, 1, 2}
    near = ((step >= 96) & (step <= 100)) | ((step >= 136) & (step <= 140))
    # Half the batch holds an event in its 5-step unroll; uniform steps add about 10 / 360 more.
    assert 0.5 <= near.mean() <= 0.56
    _, uniform = buffer.sample_positions(4000)
    assert (((uniform >= 96) & (uniform <= 100)) | ((uniform >= 136) & (uniform <= 140))).mean() < 0.05
