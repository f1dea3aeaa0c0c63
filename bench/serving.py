"""Serving speed through the real processes: ``POST /v1/decisions`` latency at concurrency 1,
throughput at concurrency 32, and bar-to-order latency through the whole live stack.

The stack (Redis, broker gateway, inference, feature builder) runs as in ``smz up``, on a full-size
checkpoint (random weights unless ``--checkpoint`` is given; speed does not depend on the weights).
Bar-to-order latency of a bar = the time its position message entered Redis (the gateway has then
applied the order and committed the ledger) minus the time its window entered Redis, both read from
the Redis stream entry ids (millisecond clock of the Redis server).

Targets: p99 at concurrency 1 <= 15 ms; >= 300 decisions/s at concurrency 32; bar-to-order p99 <= 50 ms.
Prints one JSON line (keys decide_p50_ms_c1, decide_p99_ms_c1, decisions_per_s_c32,
bar_to_order_p50_ms, bar_to_order_p99_ms). ``--from-bars``: the decisions at concurrency 1 and 32 are
asked of the last 151 bars (flat) instead of a window, as an outside client asks them.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import shutil
import socket
import subprocess
import tempfile
import threading
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path

import httpx
import numpy as np
import redis
import torch

from services.inference.client import bar_rows
from services.inference.settings import InferenceSettings
from services.jobs.features import run_features
from services.jobs.ingest import run_ingest
from services.jobs.stack import LiveStack, StackConfig
from services.jobs.up import SAMPLE, SAMPLE_INSTRUMENT
from services.settings import SharedSettings
from shared.env import MarketData, TradingEnv
from shared.model.checkpoint import save_checkpoint
from shared.model.checkpoint_root import write_pointer
from shared.model.networks import MuZeroNetwork
from shared.sessions import SESSION_BARS, tile_sessions, valid_session_starts
from shared.store import Store
from shared.wire import PositionMessage, WindowMessage


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _windows(db: Path, count: int) -> list[list[list[float]]]:
    """Real windows of the sample (flat position), as a client would send them."""
    with Store(db, read_only=True) as store:
        ds = store.load_dataset(SAMPLE_INSTRUMENT)
    env = TradingEnv(MarketData(SAMPLE_INSTRUMENT, ds.bars.ts, ds.bars.close, ds.features))
    starts = tile_sessions(valid_session_starts(ds.bars.ts))
    obs = env.reset(np.asarray(starts[: max(1, count // SESSION_BARS + 1)]))
    out: list[list[list[float]]] = []
    while len(out) < count:
        out.extend(o.tolist() for o in obs)
        obs = env.step(np.zeros(env.n, dtype=np.int64)).observation
    return out[:count]


def _percentile_ms(samples: list[float], q: float) -> float:
    return round(float(np.percentile(np.asarray(samples) * 1000.0, q)), 2)


def _bodies(windows: list[list[list[float]]]) -> list[bytes]:
    """Request bodies encoded once, so the clients spend the shared cores on HTTP, not on JSON."""
    return [json.dumps({"instrument": SAMPLE_INSTRUMENT, "window": w}).encode() for w in windows]


def _bar_bodies(db: Path, count: int) -> list[bytes]:
    """Bodies of decisions from bars (flat): the bars up to each bar of the first sessions, of which the
    client helper sends the 151 a decision needs."""
    with Store(db, read_only=True) as store:
        bars = store.load_dataset(SAMPLE_INSTRUMENT).bars
    out: list[bytes] = []
    for start in tile_sessions(valid_session_starts(bars.ts)):
        for i in range(int(start), int(start) + SESSION_BARS):
            body = {"instrument": SAMPLE_INSTRUMENT, "bars": bar_rows(bars.slice(0, i + 1))}
            out.append(json.dumps(body).encode())
            if len(out) == count:
                return out
    return out


JSON_HEADERS = {"Content-Type": "application/json"}


def bench_c1(url: str, bodies: list[bytes], requests: int) -> list[float]:
    latencies = []
    with httpx.Client(base_url=url, timeout=30) as client:
        for i in range(requests):
            body = bodies[i % len(bodies)]
            t0 = time.perf_counter()
            response = client.post("/v1/decisions", content=body, headers=JSON_HEADERS)
            latencies.append(time.perf_counter() - t0)
            response.raise_for_status()
    return latencies


def bench_concurrent(url: str, bodies: list[bytes], concurrency: int, seconds: float) -> tuple[float, int]:
    done = [0] * concurrency
    stop_at = time.perf_counter() + seconds
    errors: list[BaseException] = []

    def client_loop(k: int) -> None:
        try:
            with httpx.Client(base_url=url, timeout=30) as client:
                i = k
                while time.perf_counter() < stop_at:
                    body = bodies[i % len(bodies)]
                    client.post("/v1/decisions", content=body, headers=JSON_HEADERS).raise_for_status()
                    done[k] += 1
                    i += concurrency
        except BaseException as exc:  # reported below
            errors.append(exc)

    threads = [threading.Thread(target=client_loop, args=(k,)) for k in range(concurrency)]
    t0 = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    elapsed = time.perf_counter() - t0
    if errors:
        raise errors[0]
    return sum(done) / elapsed, sum(done)


def bench_concurrent_wrk(
    url: str, bodies: list[bytes], concurrency: int, seconds: float, workdir: Path
) -> tuple[float, int]:
    """The same load from wrk (C, one epoll thread): the Python clients above spend a good part of
    the two shared cores themselves, which this measures the server without."""
    # Long brackets of level 2: a JSON body holds "]]" but never "]==]".
    script = workdir / "decisions.lua"
    literals = ",\n".join(f"[==[{b.decode()}]==]" for b in bodies[:64])
    script.write_text(
        f"local bodies = {{\n{literals}\n}}\nlocal i = 0\n"
        "request = function()\n  i = i % #bodies + 1\n"
        '  return wrk.format("POST", "/v1/decisions", {["Content-Type"] = "application/json"}, bodies[i])\n'
        "end\n"
    )
    argv = ["wrk", "-t1", f"-c{concurrency}", f"-d{seconds:g}s", "-s", str(script), url]
    out = subprocess.run(argv, check=True, capture_output=True, text=True).stdout
    if "Non-2xx" in out or "Socket errors" in out:
        raise RuntimeError(f"wrk saw failed requests:\n{out}")
    total = int(re.search(r"(\d+) requests in", out).group(1))  # type: ignore[union-attr]
    rate = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]
    return rate, total


def bar_to_order(client: redis.Redis, config: StackConfig) -> list[float]:
    """Seconds from each window's entry to its position's entry, by bar timestamp."""
    published: dict[int, int] = {}
    for entry_id, fields in client.xrange(config.shared.windows_stream):
        msg = WindowMessage.model_validate_json(fields[b"data"])
        if msg.kind == "window":
            published[msg.bar_ts] = int(entry_id.split(b"-")[0])
    delays = []
    for entry_id, fields in client.xrange(config.shared.positions_stream):
        msg = PositionMessage.model_validate_json(fields[b"data"])
        if msg.account == config.shared.account and msg.as_of_bar_ts in published:
            delays.append((int(entry_id.split(b"-")[0]) - published[msg.as_of_bar_ts]) / 1000.0)
    return delays


def _arguments() -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    parser.add_argument("--checkpoint", type=Path, help="checkpoint root (default: random weights)")
    parser.add_argument("--requests", type=int, default=500, help="sequential requests at concurrency 1")
    parser.add_argument("--seconds", type=float, default=15.0, help="duration at concurrency 32")
    parser.add_argument("--bars", type=int, default=1080, help="bars replayed for bar-to-order")
    parser.add_argument("--threads", type=int, default=1, help="search threads of the inference service")
    parser.add_argument("--from-bars", action="store_true", help="decisions of 151 bars instead of windows")
    parser.add_argument(
        "--c32-client",
        choices=("auto", "wrk", "python"),
        default="auto",
        help="load at concurrency 32: wrk (apt-get install wrk), 32 Python threads, or wrk if found",
    )
    args = parser.parse_args()
    if args.c32_client == "auto":
        args.c32_client = "wrk" if shutil.which("wrk") else "python"
    return args


def _stack_config(args: argparse.Namespace, tmp: Path) -> StackConfig:
    """The sample's data and a checkpoint in ``tmp``; a stack on free ports, streams of its own."""
    db = tmp / "sample.duckdb"
    run_ingest([SAMPLE], instrument=SAMPLE_INSTRUMENT, db=db)
    run_features(db, SAMPLE_INSTRUMENT)
    root = args.checkpoint
    if root is None:
        torch.manual_seed(0)
        root = tmp / "checkpoints"
        write_pointer(root, "latest", save_checkpoint(root, MuZeroNetwork().eval(), training_step=1).name)
    with Store(db, read_only=True) as store:
        ts = store.load_dataset(SAMPLE_INSTRUMENT).bars.ts
    first = int(tile_sessions(valid_session_starts(ts))[0])
    run_id = uuid.uuid4().hex[:8]
    return StackConfig(
        db=db,
        instrument=SAMPLE_INSTRUMENT,
        checkpoint_dir=root,
        run_dir=tmp / "live",
        shared=SharedSettings(
            account=f"bench-{run_id}",
            windows_stream=f"smz:bench:{run_id}:windows",
            positions_stream=f"smz:bench:{run_id}:positions",
        ),
        inference_port=_free_port(),
        gateway_port=_free_port(),
        feature_builder_metrics_port=_free_port(),
        start=datetime.fromtimestamp(int(ts[first]), UTC).isoformat(),
        end=datetime.fromtimestamp(int(ts[first + args.bars - 1]) + 60, UTC).isoformat(),
        inference_threads=args.threads,
    )


def main() -> dict[str, object]:
    args = _arguments()
    tmp = Path(tempfile.mkdtemp(prefix="smz-bench-serving-"))
    config = _stack_config(args, tmp)
    db = config.db
    bodies = _bar_bodies(db, 512) if args.from_bars else _bodies(_windows(db, 512))
    client = redis.Redis.from_url(config.shared.redis_url)
    stack = LiveStack(config)
    try:
        stack.ensure_redis()
        stack.gateway.start()
        stack.inference.start()
        stack.gateway.wait_ready()
        stack.inference.wait_ready()
        bench_c1(config.inference_url, bodies, 50)  # warm-up: numba and torch first calls
        c1 = bench_c1(config.inference_url, bodies, args.requests)
        if args.c32_client == "wrk":
            rate, total = bench_concurrent_wrk(config.inference_url, bodies, 32, args.seconds, tmp)
        else:
            rate, total = bench_concurrent(config.inference_url, bodies, 32, args.seconds)
        # Then the whole stack, as fast as the bar-by-bar loop goes.
        stack.feature_builder.start()
        code = stack.feature_builder.wait(timeout=1800)
        if code != 0:
            raise RuntimeError(f"feature builder exited with {code}:\n{stack.feature_builder.tail()}")
        time.sleep(1.0)
        delays = bar_to_order(client, config)
    finally:
        stack.stop()
        client.delete(config.shared.windows_stream, config.shared.positions_stream)
    result: dict[str, object] = {
        "bench": "serving",
        "machine": f"{platform.machine()} {os.cpu_count()} cpus",
        "inference_threads": args.threads,
        "request": "bars" if args.from_bars else "window",
        "search_workers": InferenceSettings.model_fields["search_workers"].default,
        "decide_p50_ms_c1": _percentile_ms(c1, 50),
        "decide_p99_ms_c1": _percentile_ms(c1, 99),
        "decisions_per_s_c32": round(rate, 1),
        "c32_client": args.c32_client,
        "decisions_c32": total,
        "bars": len(delays),
        "bar_to_order_p50_ms": _percentile_ms(delays, 50),
        "bar_to_order_p99_ms": _percentile_ms(delays, 99),
        "targets": {"decide_p99_ms_c1": 15, "decisions_per_s_c32": 300, "bar_to_order_p99_ms": 50},
    }
    print(json.dumps(result))
    return result


if __name__ == "__main__":
    main()
