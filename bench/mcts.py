"""Stochastic MCTS speed with random weights: batch-1 latency and batched decisions per second.

Batch 1 (one instrument, serving): p50/p99 of whole searches at 25 and 10 simulations.
Batched (self-play, many instruments): decisions per second at several batch sizes; the headline is
the best batch size. Thread settings are part of the result. Prints one JSON line at the end.

    .venv/bin/python bench/mcts.py [--backend auto] [--quick]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time

import numpy as np
import torch

from shared.model.config import ModelConfig
from shared.model.inference import make_model_functions
from shared.model.networks import MuZeroNetwork
from shared.search import SearchConfig, search


def random_windows(batch: int, seed: int) -> np.ndarray:
    """Windows with market columns in their ranges and a mix of flat, long and short roots."""
    rng = np.random.default_rng(seed)
    windows = rng.random((batch, 32, 15), dtype=np.float32)
    windows[:, :, 4:9] = 2 * windows[:, :, 4:9] - 1
    side = rng.choice(np.array([-1.0, 0.0, 1.0], np.float32), size=batch, p=[0.25, 0.5, 0.25])
    windows[:, :, 9] = side[:, None]
    windows[:, :, 10:] *= (side != 0)[:, None, None]
    return windows


def latency(model_fns: object, simulations: int, repeats: int) -> dict[str, float]:
    config = SearchConfig(num_simulations=simulations)
    windows = random_windows(repeats, seed=1)
    rng = np.random.default_rng(0)
    search(model_fns, windows[:1], config, rng)  # type: ignore[arg-type]
    times = []
    for i in range(repeats):
        began = time.perf_counter()
        search(model_fns, windows[i : i + 1], config, rng)  # type: ignore[arg-type]
        times.append(time.perf_counter() - began)
    ms = np.array(times) * 1e3
    return {"p50": float(np.percentile(ms, 50)), "p99": float(np.percentile(ms, 99))}


def throughput(model_fns: object, simulations: int, batch: int, repeats: int) -> float:
    config = SearchConfig(num_simulations=simulations)
    windows = random_windows(batch, seed=2)
    rng = np.random.default_rng(0)
    search(model_fns, windows, config, rng)  # type: ignore[arg-type]
    best = min(_timed(model_fns, windows, config, rng) for _ in range(repeats))
    return batch / best


def _timed(model_fns: object, windows: np.ndarray, config: SearchConfig, rng: np.random.Generator) -> float:
    began = time.perf_counter()
    search(model_fns, windows, config, rng)  # type: ignore[arg-type]
    return time.perf_counter() - began


def main() -> dict[str, object]:
    parser = argparse.ArgumentParser()
    parser.add_argument("--backend", default="auto")
    parser.add_argument("--quick", action="store_true", help="fewer repeats (a smoke run)")
    args = parser.parse_args()
    torch.manual_seed(0)
    model = MuZeroNetwork(ModelConfig()).eval()
    repeats = 30 if args.quick else 300
    batch_repeats = 1 if args.quick else 3
    report: dict[str, object] = {"bench": "mcts", "backend": args.backend}

    # Batch 1: one thread, as a serving replica per core would run.
    single = make_model_functions(model, backend=args.backend, threads=1)
    for sims in (25, 10):
        lat = latency(single, sims, repeats)
        report[f"b1_p50_ms_s{sims}"] = round(lat["p50"], 3)
        report[f"b1_p99_ms_s{sims}"] = round(lat["p99"], 3)

    # The lower-precision serving path (fp16 weights, 99.7% decision agreement on real windows,
    # bench/search_agreement.py): batch 1 only, where weight traffic is the bottleneck.
    half = make_model_functions(model, backend="numba_fp16", threads=1)
    lat = latency(half, 25, repeats)
    report["b1_p50_ms_s25_fp16"] = round(lat["p50"], 3)
    report["b1_p99_ms_s25_fp16"] = round(lat["p99"], 3)

    # Batched: both cores.
    batched = make_model_functions(model, backend=args.backend, threads=2)
    for sims in (25, 10):
        per_batch = {b: throughput(batched, sims, b, batch_repeats) for b in (64, 256, 1024, 2048)}
        best = max(per_batch, key=per_batch.__getitem__)
        report[f"decisions_per_s_s{sims}"] = round(per_batch[best])
        report[f"best_batch_s{sims}"] = best
        report[f"by_batch_s{sims}"] = {str(b): round(v) for b, v in per_batch.items()}
    report["threads"] = {"batch_1": 1, "batched": 2}
    report["machine"] = f"{platform.machine()} {os.cpu_count()} cpus, python {platform.python_version()}"
    return report


if __name__ == "__main__":
    print(json.dumps(main()))
