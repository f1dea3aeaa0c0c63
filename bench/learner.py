"""Learner speed: updates per second at batch 64 with K = 5 unroll steps (full-size model).

A replay of synthetic self-play trajectories (random actions, real market steps) feeds the
learner; each update samples a batch, builds windows, runs the unrolled loss, backward and AdamW.
Target: at least 15 updates per second. Prints one JSON line at the end.
"""

from __future__ import annotations

import json
import os
import platform
import time

import numpy as np
import torch

from shared.dataset import build_dataset
from shared.env import MarketData
from shared.model.networks import MuZeroNetwork
from shared.replay import ReplayBuffer, Trajectory
from shared.synth import generate_synthetic_market
from shared.training.batch import make_batch
from shared.training.config import TrainingConfig
from shared.training.learner import Learner


def random_replay(market: MarketData, starts: np.ndarray, outcome: np.ndarray, count: int) -> ReplayBuffer:
    rng = np.random.default_rng(0)
    buffer = ReplayBuffer(capacity=count, min_size=1)
    for start in rng.choice(starts, size=count, replace=False):
        bars = np.arange(start, start + 360)
        policy = rng.dirichlet(np.ones(4), size=360).astype(np.float32)
        buffer.add(
            Trajectory(
                bars=bars,
                position=np.zeros((360, 6), np.float32),
                actions=rng.integers(0, 4, 360).astype(np.int8),
                rewards=rng.normal(0, 1, 360).astype(np.float32),
                policies=policy,
                root_values=rng.normal(0, 2, 360).astype(np.float32),
                outcomes=outcome[bars].astype(np.int8),
                has_trade=True,
            )
        )
    return buffer


def main(updates: int = 60, threads: int = 2) -> dict[str, object]:
    torch.set_num_threads(threads)
    torch.manual_seed(0)
    synth = generate_synthetic_market("SYNTHJPY", 100_000, seed=0)
    ds = build_dataset(synth.bars)
    market = MarketData("SYNTHJPY", synth.bars.ts, synth.bars.close, ds.features)
    cfg = TrainingConfig()
    replay = random_replay(market, ds.starts_of("train"), ds.outcome, 200)
    learner = Learner(MuZeroNetwork(), cfg)
    for _ in range(5):  # warm-up
        learner.step(make_batch(replay, market, cfg.batch_size, cfg.unroll_steps, cfg.td_steps, cfg.discount))
    batch_seconds = 0.0
    began = time.perf_counter()
    for _ in range(updates):
        t = time.perf_counter()
        batch = make_batch(replay, market, cfg.batch_size, cfg.unroll_steps, cfg.td_steps, cfg.discount)
        batch_seconds += time.perf_counter() - t
        learner.step(batch)
    seconds = time.perf_counter() - began
    return {
        "bench": "learner",
        "batch_size": cfg.batch_size,
        "unroll_steps": cfg.unroll_steps,
        "threads": threads,
        "updates": updates,
        "updates_per_s": round(updates / seconds, 2),
        "batch_building_share": round(batch_seconds / seconds, 3),
        "machine": f"{platform.machine()} {os.cpu_count()} cpus, python {platform.python_version()}",
    }


if __name__ == "__main__":
    print(json.dumps(main()))
