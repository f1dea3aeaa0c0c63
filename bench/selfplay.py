"""Self-play speed: bar-steps per second with the 10-simulation collecting search (random weights).

Sessions of the synthetic market stepped in lockstep, each step a batched search with root noise and
temperature, as the trainer collects. Target: at least 2,000 bar-steps per second. One JSON line.

``--ray``: the trainer's whole rounds instead (services/trainer/actor.py), episodes per second of one
Ray actor (a local Ray of one CPU, the market in its object store, weights and rounds crossing it)
against the same actor in this process (``--workers 1``), one thread each, rounds interleaved so
both see the same machine. Target: Ray at least 90% of in-process.
"""

from __future__ import annotations

import argparse
import json
import os
import pickle
import platform
import time

import numpy as np
import torch

from services.trainer.actor import SelfPlayActor, SelfPlayData
from shared.dataset import build_dataset
from shared.env import EnvConfig, MarketData
from shared.model.inference import make_model_functions
from shared.model.networks import MuZeroNetwork
from shared.search import SearchConfig
from shared.synth import generate_synthetic_market
from shared.training.config import TrainingConfig
from shared.training.selfplay import play_round


def main() -> dict[str, object]:
    parser = argparse.ArgumentParser()
    parser.add_argument("--ray", action="store_true", help="one Ray actor against the in-process path")
    parser.add_argument("--rounds", type=int, default=3, help="--ray: timed rounds of each")
    parser.add_argument("--round-sessions", type=int, default=64, help="--ray: sessions a round")
    parser.add_argument("--sessions", type=int, nargs="+", default=[256, 512])
    parser.add_argument(
        "--steps", type=int, default=60, help="bars per session (a 360-bar session is longer)"
    )
    args = parser.parse_args()
    torch.manual_seed(0)
    synth = generate_synthetic_market("SYNTHJPY", 200_000, seed=0)
    ds = build_dataset(synth.bars)
    market = MarketData("SYNTHJPY", synth.bars.ts, synth.bars.close, ds.features)
    if args.ray:
        data = SelfPlayData(market, ds.outcome, ds.starts_of("train"))
        return ray_against_in_process(data, args.rounds, args.round_sessions)
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


def ray_against_in_process(data: SelfPlayData, rounds: int, sessions: int) -> dict[str, object]:
    """Episodes per second of whole rounds: one Ray actor and the in-process actor, alternately."""
    import ray

    from services.trainer.ray_pool import LOCAL_OBJECT_STORE_BYTES, RayActor, data_arrays
    from services.trainer.settings import TrainerSettings

    settings = TrainerSettings(
        db="unused", instrument="SYNTHJPY", out="unused", sessions_per_round=sessions, metrics_port=0
    )
    config, model = TrainingConfig(), MuZeroNetwork().eval()
    weights = (0, {k: v.numpy().copy() for k, v in model.state_dict().items()})
    local = SelfPlayActor(settings, config, data, model, np.random.default_rng(0), threads=1)
    ray.init(num_cpus=1, object_store_memory=LOCAL_OBJECT_STORE_BYTES, include_dashboard=False)
    try:
        remote = ray.remote(num_cpus=1)(RayActor).remote(
            0, settings, config, model.cfg, ray.put(data_arrays(data)), 0
        )
        weights_ref = ray.put(weights)
        ray.get(remote.play.remote(weights_ref, 0))  # warm-up: imports, JIT, first weights
        local.play(0)
        round_bytes = len(pickle.dumps(local.play(0), protocol=5))  # what an actor sends back
        seconds: dict[str, list[float]] = {"in_process": [], "ray": []}
        for _ in range(rounds):
            began = time.perf_counter()
            ray.get(remote.play.remote(weights_ref, 0))
            seconds["ray"].append(time.perf_counter() - began)
            began = time.perf_counter()
            local.play(0)
            seconds["in_process"].append(time.perf_counter() - began)
    finally:
        ray.shutdown()
    rate = {k: round(sessions * len(v) / sum(v), 3) for k, v in seconds.items()}
    return {
        "bench": "selfplay_ray",
        "sessions_per_round": sessions,
        "session_bars": config.env_config().session_bars,
        "simulations": config.collect_simulations,
        "rounds": rounds,
        "episodes_per_s": rate,
        "ray_share": round(rate["ray"] / rate["in_process"], 3),
        "weights_bytes": sum(a.nbytes for a in weights[1].values()),  # one broadcast
        "round_bytes": round_bytes,
        "machine": f"{platform.machine()} {os.cpu_count()} cpus, python {platform.python_version()}",
    }


if __name__ == "__main__":
    print(json.dumps(main()))
