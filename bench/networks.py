"""Benchmark the inference backends of ``shared.model.inference`` on random weights.

Per backend and thread count (each in its own subprocess, so thread pools never mix):
- latency p50/p99 per call at M=1 of ``outcome_probs``, ``recurrent`` and ``initial``;
- rows/s of one simulation step (``outcome_probs`` + ``recurrent``) at M = 64, 256, 1024, 2048,
  and the implied decisions/s = M / (initial + sims x step) at 25 and 10 simulations (no tree work).
Best of several repeats (the machine's speed varies run to run); the spread is printed too.
Then a cProfile of the winner at M=1024, and a final JSON line with the key figures.

    .venv/bin/python -m bench.networks                      # everything (~3-5 minutes)
    .venv/bin/python -m bench.networks --backends numba onnx --threads 2
"""

from __future__ import annotations

import argparse
import cProfile
import io
import json
import pstats
import subprocess
import sys
import time
import warnings
from collections.abc import Callable

import numpy as np

DEFAULT_BACKENDS = ("auto", "torch", "torch_fast", "torchscript", "onnx", "numba", "numba_fp16", "numba_int8")
BATCHES = (64, 256, 1024, 2048)


def _build(backend: str, threads: int):
    import torch

    from shared.model.inference import make_model_functions
    from shared.model.networks import MuZeroNetwork

    torch.manual_seed(0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return make_model_functions(MuZeroNetwork(), backend, threads), MuZeroNetwork().cfg


def _inputs(cfg, rows: int, seed: int = 0) -> tuple[np.ndarray, ...]:
    rng = np.random.default_rng(seed)
    windows = rng.standard_normal((rows, cfg.window, cfg.n_features)).astype(np.float32)
    hidden = rng.standard_normal((rows, cfg.hidden)).astype(np.float32)
    actions = rng.integers(0, cfg.n_actions, rows)
    outcomes = rng.integers(0, cfg.n_outcomes, rows)
    return windows, hidden, actions, outcomes


def _latencies(call: Callable[[], object], calls: int, repeats: int) -> dict[str, float]:
    """Per-call latency in microseconds: p50/p99 of the best repeat, and the p50 spread."""
    for _ in range(20):
        call()
    p50s, p99s = [], []
    for _ in range(repeats):
        times = np.empty(calls)
        for i in range(calls):
            start = time.perf_counter_ns()
            call()
            times[i] = time.perf_counter_ns() - start
        p50s.append(np.percentile(times, 50) / 1e3)
        p99s.append(np.percentile(times, 99) / 1e3)
    best = int(np.argmin(p50s))
    return {"p50_us": p50s[best], "p99_us": p99s[best], "p50_worst_us": max(p50s)}


def _seconds_per_call(call: Callable[[], object], repeats: int, budget: float = 0.25) -> tuple[float, float]:
    """Best and worst mean seconds per call over ``repeats`` timed loops of about ``budget`` seconds."""
    call()
    start = time.perf_counter()
    call()
    once = time.perf_counter() - start
    n = max(1, int(budget / max(once, 1e-6)))
    means = []
    for _ in range(repeats):
        start = time.perf_counter()
        for _ in range(n):
            call()
        means.append((time.perf_counter() - start) / n)
    return min(means), max(means)


def run_one(backend: str, threads: int, repeats: int) -> dict:
    functions, cfg = _build(backend, threads)
    windows, hidden, actions, outcomes = _inputs(cfg, 1)
    result: dict = {"backend": backend, "threads": threads, "m1": {}, "batches": {}}
    result["m1"]["outcome_probs"] = _latencies(lambda: functions.outcome_probs(hidden, actions), 300, repeats)
    result["m1"]["recurrent"] = _latencies(
        lambda: functions.recurrent(hidden, actions, outcomes), 300, repeats
    )
    result["m1"]["initial"] = _latencies(lambda: functions.initial(windows), 100, repeats)
    for rows in BATCHES:
        windows, hidden, actions, outcomes = _inputs(cfg, rows)

        def step(h: np.ndarray = hidden, a: np.ndarray = actions, o: np.ndarray = outcomes) -> None:
            functions.outcome_probs(h, a)
            functions.recurrent(h, a, o)

        step_best, step_worst = _seconds_per_call(step, repeats)
        initial_best, _ = _seconds_per_call(lambda w=windows: functions.initial(w), max(2, repeats // 2))
        result["batches"][rows] = {
            "step_rows_per_s": rows / step_best,
            "step_rows_per_s_worst": rows / step_worst,
            "initial_rows_per_s": rows / initial_best,
            "decisions_per_s_25": rows / (initial_best + 25 * step_best),
            "decisions_per_s_10": rows / (initial_best + 10 * step_best),
        }
    return result


def profile(backend: str, threads: int, rows: int) -> str:
    functions, cfg = _build(backend, threads)
    _, hidden, actions, outcomes = _inputs(cfg, rows)
    for _ in range(3):
        functions.outcome_probs(hidden, actions)
        functions.recurrent(hidden, actions, outcomes)
    profiler = cProfile.Profile()
    profiler.enable()
    for _ in range(20):
        functions.outcome_probs(hidden, actions)
        functions.recurrent(hidden, actions, outcomes)
    profiler.disable()
    out = io.StringIO()
    pstats.Stats(profiler, stream=out).sort_stats("tottime").print_stats(10)
    return out.getvalue()


def _child(args: argparse.Namespace) -> None:
    print(json.dumps(run_one(args.child_backend, args.child_threads, args.repeats)))


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--backends", nargs="+", default=list(DEFAULT_BACKENDS))
    parser.add_argument("--threads", nargs="+", type=int, default=[1, 2])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--child-backend", help=argparse.SUPPRESS)
    parser.add_argument("--child-threads", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--profile-only", action="store_true", help="only the cProfile of the winner")
    args = parser.parse_args()
    if args.child_backend:
        _child(args)
        return

    results = []
    if not args.profile_only:
        for backend in args.backends:
            for threads in args.threads:
                command = [sys.executable, "-m", "bench.networks", "--child-backend", backend]
                command += ["--child-threads", str(threads), "--repeats", str(args.repeats)]
                output = subprocess.run(command, check=True, capture_output=True, text=True).stdout
                result = json.loads(output.strip().splitlines()[-1])
                results.append(result)
                m1 = result["m1"]
                batches = " ".join(
                    f"M={rows}:{b['step_rows_per_s']:>8.0f}" for rows, b in result["batches"].items()
                )
                print(
                    f"{backend:12s} t={threads} M=1 outcome p50 {m1['outcome_probs']['p50_us']:7.1f}us "
                    f"p99 {m1['outcome_probs']['p99_us']:7.1f} "
                    f"| recurrent p50 {m1['recurrent']['p50_us']:7.1f} p99 {m1['recurrent']['p99_us']:7.1f} "
                    f"| initial p50 {m1['initial']['p50_us']:7.1f} "
                    f"| step rows/s {batches}",
                    flush=True,
                )

    winner = "numba"
    print(f"\ncProfile of {winner} (2 threads), outcome_probs + recurrent at M=1024, 20 steps:")
    print(profile(winner, 2, 1024))

    key: dict = {}
    for result in results:
        name = f"{result['backend']}/t{result['threads']}"
        m1 = result["m1"]
        key[name] = {
            "m1_outcome_p50_us": round(m1["outcome_probs"]["p50_us"], 1),
            "m1_recurrent_p50_us": round(m1["recurrent"]["p50_us"], 1),
            "m1_pair_p99_us": round(m1["outcome_probs"]["p99_us"] + m1["recurrent"]["p99_us"], 1),
            "m1_initial_p50_us": round(m1["initial"]["p50_us"], 1),
            **{
                f"step_rows_per_s_m{rows}": round(b["step_rows_per_s"])
                for rows, b in result["batches"].items()
            },
            "decisions_per_s_25_m1024": round(result["batches"]["1024"]["decisions_per_s_25"]),
            "decisions_per_s_10_m1024": round(result["batches"]["1024"]["decisions_per_s_10"]),
        }
    print(json.dumps(key))


if __name__ == "__main__":
    main()
