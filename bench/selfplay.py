"""Self-play speed: bar-steps per second with the 10-simulation collecting search (random weights).

Sessions of the synthetic market stepped in lockstep, each step a batched search with root noise and
temperature, as the trainer collects. Target: at least 2,000 bar-steps per second. One JSON line.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time

import numpy as np
import torch

from shared.dataset import build_dataset
from shared.env import EnvConfig, MarketData
from shared.model.inference import make_model_functions
from shared.model.networks import MuZeroNetwork
from shared.search import SearchConfig
from shared.synth import generate_synthetic_market
from shared.training.selfplay import play_round


def main() -> dict[str, object]:
    parser = argparse.ArgumentParser()
    parser.add_argument("--sessions", type=int, nargs="+", default=[256, 512])
    parser.add_argument(
        "--steps", type=int, default=60, help="bars per session (a 360-bar session is longer)"
    )
    args = parser.parse_args()
    torch.manual_seed(0)
    synth = generate_synthetic_market("SYNTHJPY", 200_000, seed=0)
    ds = build_dataset(synth.bars)
    market = MarketData("SYNTHJPY", synth.bars.ts, synth.bars.close, ds.features)
    model = make_model_functions(MuZeroNetwork().eval(), "auto", threads=2)
    config = SearchConfig(num_simulations=10, add_noise=True, temperature=5.0)
    rng = np.random.default_rng(0)
    by_sessions = {}
    for sessions in args.sessions:
        starts = rng.choice(ds.starts_of("train"), size=sessions, replace=False)
        env_config = EnvConfig(session_bars=args.steps)
        play_round(model, market, ds.outcome, starts[:8], config, rng, EnvConfig(session_bars=2))  # warm-up
        began = time.perf_counter()
        played = play_round(model, market, ds.outcome, starts, config, rng, env_config)
        by_sessions[str(sessions)] = round(played.bar_steps / (time.perf_counter() - began))
    best = max(by_sessions.values())
    return {
        "bench": "selfplay",
        "simulations": 10,
        "threads": 2,
        "bar_steps_per_s": best,
        "by_sessions": by_sessions,
        "machine": f"{platform.machine()} {os.cpu_count()} cpus, python {platform.python_version()}",
    }


if __name__ == "__main__":
    print(json.dumps(main()))
