"""Replay of self-play trajectories (CONTRACT section 8), stored compactly.

A step is stored as a bar index into the instrument's feature matrix plus the position state at
that bar, never as a full (32, 15) window: the learner rebuilds windows on the fly. The buffer holds
up to ``capacity`` trajectories; when fewer than ``trade_quota`` of them contain a trade, a random
trajectory without a trade is evicted, otherwise the oldest.
"""

from __future__ import annotations

import io
from dataclasses import dataclass, field

import numpy as np

from shared.schema import N_POSITION


@dataclass(frozen=True)
class Trajectory:
    """One self-play session, step by step (T steps)."""

    bars: np.ndarray  # (T,) int64 bar index of each step
    position: np.ndarray  # (T, 6) float32 position features seen at each step
    actions: np.ndarray  # (T,) int8 action taken
    rewards: np.ndarray  # (T,) float32 reward received (clipped)
    policies: np.ndarray  # (T, 4) float32 root visit distribution
    root_values: np.ndarray  # (T,) float32 search value at the root
    outcomes: np.ndarray  # (T,) int8 real market outcome at the step's bar
    has_trade: bool

    def __post_init__(self) -> None:
        t = len(self.bars)
        shapes = {
            "position": (t, N_POSITION),
            "actions": (t,),
            "rewards": (t,),
            "policies": (t, 4),
            "root_values": (t,),
            "outcomes": (t,),
        }
        for name, shape in shapes.items():
            if getattr(self, name).shape != shape:
                raise ValueError(f"trajectory {name} has shape {getattr(self, name).shape}, want {shape}")

    def __len__(self) -> int:
        return len(self.bars)


_FIELDS = ("bars", "position", "actions", "rewards", "policies", "root_values", "outcomes")


@dataclass
class ReplayBuffer:
    capacity: int = 10_000
    trade_quota: float = 0.30
    min_size: int = 100  # learning starts once this many trajectories are stored
    seed: int = 0
    trajectories: list[Trajectory] = field(default_factory=list)
    added: int = 0  # trajectories ever added (for counters and resume)

    def __post_init__(self) -> None:
        self.rng = np.random.default_rng(self.seed)
        self._event_cache: tuple[tuple[int, int], tuple[np.ndarray, np.ndarray]] | None = None

    def __len__(self) -> int:
        return len(self.trajectories)

    @property
    def ready(self) -> bool:
        return len(self.trajectories) >= self.min_size

    def trade_share(self) -> float:
        if not self.trajectories:
            return 0.0
        return sum(t.has_trade for t in self.trajectories) / len(self.trajectories)

    def add(self, trajectory: Trajectory) -> None:
        if len(self.trajectories) >= self.capacity:
            self._evict()
        self.trajectories.append(trajectory)
        self.added += 1

    def _evict(self) -> None:
        without_trade = [i for i, t in enumerate(self.trajectories) if not t.has_trade]
        if self.trade_share() < self.trade_quota and without_trade:
            del self.trajectories[int(self.rng.choice(without_trade))]
        else:
            del self.trajectories[0]

    def sample_positions(
        self, batch: int, event_share: float = 0.0, unroll: int = 1
    ) -> tuple[np.ndarray, np.ndarray]:
        """(trajectory index, step index) pairs, uniform over all stored steps.

        With ``event_share`` > 0, that share of the batch starts instead up to ``unroll - 1`` steps
        before a uniformly drawn event (a BUY, SELL or CLOSE taken), so the unroll contains it. A
        session holds a few events among 360 steps: uniform batches almost never show the dynamics
        an entry or an exit, the transitions the search most needs to predict.
        """
        lengths = np.array([len(t) for t in self.trajectories])
        n_events = round(batch * event_share)
        events = self._events() if n_events else None
        if events is None or len(events[0]) == 0:
            n_events = 0
        traj, step = self._uniform(lengths, batch - n_events)
        if n_events:
            assert events is not None
            pick = self.rng.integers(0, len(events[0]), size=n_events)
            back = self.rng.integers(0, unroll, size=n_events)
            traj = np.concatenate([traj, events[0][pick]])
            step = np.concatenate([step, np.maximum(events[1][pick] - back, 0)])
        return traj, step

    def _uniform(self, lengths: np.ndarray, count: int) -> tuple[np.ndarray, np.ndarray]:
        cumulative = np.cumsum(lengths)
        flat = self.rng.integers(0, cumulative[-1], size=count)
        traj = np.searchsorted(cumulative, flat, side="right")
        return traj, flat - (cumulative[traj] - lengths[traj])

    def _events(self) -> tuple[np.ndarray, np.ndarray]:
        """(trajectory index, step) of every non-HOLD action stored, rebuilt when the buffer changed."""
        key = (self.added, len(self.trajectories))
        if self._event_cache is None or self._event_cache[0] != key:
            per = [np.flatnonzero(t.actions) for t in self.trajectories]
            traj = np.repeat(np.arange(len(per)), [len(e) for e in per])
            steps = np.concatenate(per) if per else np.zeros(0, np.int64)
            self._event_cache = (key, (traj, steps))
        return self._event_cache[1]

    # ---- persistence: one .npz with the trajectories concatenated
    def to_bytes(self) -> bytes:
        lengths = np.array([len(t) for t in self.trajectories], np.int64)
        arrays: dict[str, np.ndarray] = {"lengths": lengths}
        arrays["has_trade"] = np.array([t.has_trade for t in self.trajectories], np.bool_)
        for name in _FIELDS:
            parts = [getattr(t, name) for t in self.trajectories]
            arrays[name] = np.concatenate(parts) if parts else np.zeros(0)
        arrays["meta"] = np.array([self.capacity, self.added, self.min_size], np.int64)
        arrays["trade_quota"] = np.array([self.trade_quota])
        buffer = io.BytesIO()
        np.savez_compressed(buffer, **arrays)
        return buffer.getvalue()

    @classmethod
    def from_bytes(cls, data: bytes, seed: int = 0) -> ReplayBuffer:
        with np.load(io.BytesIO(data)) as arrays:
            capacity, added, min_size = (int(x) for x in arrays["meta"])
            buffer = cls(capacity, float(arrays["trade_quota"][0]), min_size, seed)
            buffer.added = added
            bounds = np.concatenate([[0], np.cumsum(arrays["lengths"])])
            columns = {name: arrays[name] for name in _FIELDS}
            for i, has_trade in enumerate(arrays["has_trade"]):
                lo, hi = bounds[i], bounds[i + 1]
                buffer.trajectories.append(
                    Trajectory(**{name: columns[name][lo:hi] for name in _FIELDS}, has_trade=bool(has_trade))
                )
        return buffer


def n_step_values(rewards: np.ndarray, root_values: np.ndarray, n: int, discount: float) -> np.ndarray:
    """Value targets z_t = sum_{i<n} discount^i r_{t+i} + discount^n v_{t+n}, per CONTRACT section 8.

    The session's end is terminal (the position is closed there), so nothing is bootstrapped past
    the last step: near the end the sum simply stops.
    """
    t_len = len(rewards)
    padded_r = np.concatenate([rewards.astype(np.float64), np.zeros(n)])
    padded_v = np.concatenate([root_values.astype(np.float64), np.zeros(n)])
    powers = discount ** np.arange(n)
    z = np.zeros(t_len)
    for i in range(n):
        z += powers[i] * padded_r[i : i + t_len]
    z += discount**n * padded_v[n : n + t_len]
    return z.astype(np.float32)
