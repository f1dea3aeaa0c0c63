"""Overload: 300 clients posting ``/v1/decisions`` one after another for 20 s against a real
inference process, with the bounded decision queue (``SMZ_INFERENCE_MAX_PENDING``) and with it
effectively off, side by side. A shed client waits the Retry-After second, as a well-behaved one does.

Without a bound every request waits its turn behind all the others (the fault pass measured 300
concurrent requests, all accepted, median 3 s); with it, what is beyond the bound is refused with 503
and Retry-After before its body is parsed, and the accepted ones wait behind at most the bound.
Prints one JSON line per setting, then a final JSON line with both (keys accepted, decisions_per_s,
shed, other, accepted_p50_ms, accepted_p99_ms, shed_p50_ms).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import tempfile
import time
from pathlib import Path

import httpx
import numpy as np
import torch

from services.jobs.stack import ServiceProcess, smz_argv
from shared.model.checkpoint import save_checkpoint
from shared.model.checkpoint_root import write_pointer
from shared.model.networks import MuZeroNetwork
from shared.schema import FEATURE_RANGES, N_FEATURES, N_MARKET, WINDOW


def _window(rng: np.random.Generator) -> list[list[float]]:
    window = np.zeros((WINDOW, N_FEATURES))
    low, high = np.array(FEATURE_RANGES[:N_MARKET]).T
    window[:, :N_MARKET] = rng.uniform(low, high, size=(WINDOW, N_MARKET))
    return window.tolist()


async def _load(url: str, clients: int, seconds: float) -> dict[str, object]:
    """``clients`` concurrent clients for ``seconds``, each posting one decision after another and
    waiting Retry-After seconds after a 503, as a well-behaved client does."""
    rng = np.random.default_rng(0)
    bodies = [json.dumps({"instrument": "GBPJPY", "window": _window(rng)}).encode() for _ in range(16)]
    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
    ok: list[float] = []
    shed: list[float] = []
    other = 0
    errors: dict[str, int] = {}  # transport errors by type
    async with httpx.AsyncClient(base_url=url, timeout=120, limits=limits) as client:
        stop_at = time.perf_counter() + seconds

        async def one_client(k: int) -> None:
            nonlocal other
            i = k
            while time.perf_counter() < stop_at:
                t0 = time.perf_counter()
                r = await client.post(
                    "/v1/decisions",
                    content=bodies[i % len(bodies)],
                    headers={"Content-Type": "application/json"},
                )
                elapsed = time.perf_counter() - t0
                i += clients
                if r.status_code == 200:
                    ok.append(elapsed)
                elif r.status_code == 503 and "Retry-After" in r.headers:
                    shed.append(elapsed)
                    await asyncio.sleep(float(r.headers["Retry-After"]))
                else:
                    other += 1

        started = time.perf_counter()
        await asyncio.gather(*(one_client(k) for k in range(clients)))
        elapsed = time.perf_counter() - started

    def ms(values: list[float], q: float) -> float | None:
        return round(float(np.percentile(values, q)) * 1000, 1) if values else None

    return {
        "accepted": len(ok),
        "decisions_per_s": round(len(ok) / elapsed, 1),
        "shed": len(shed),
        "other": other,
        "transport_errors": errors,
        "accepted_p50_ms": ms(ok, 50),
        "accepted_p99_ms": ms(ok, 99),
        "shed_p50_ms": ms(shed, 50),
    }


def _serve(root: Path, port: int, max_pending: int, log: Path) -> ServiceProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SMZ_")}
    env |= {
        "SMZ_INFERENCE_CHECKPOINT_DIR": str(root),
        "SMZ_INFERENCE_PORT": str(port),
        "SMZ_INFERENCE_STREAM_ENABLED": "false",
        "SMZ_INFERENCE_MAX_PENDING": str(max_pending),
        "SMZ_INFERENCE_LOG_LEVEL": "warning",
    }
    url = f"http://127.0.0.1:{port}"
    return ServiceProcess("inference", smz_argv("serve", "inference"), env, log, f"{url}/readyz")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--concurrency", type=int, default=300)
    parser.add_argument("--max-pending", type=int, default=64)
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--port", type=int, default=8011)
    args = parser.parse_args()
    torch.manual_seed(0)
    out: dict[str, object] = {
        "bench": "overload",
        "machine": f"{platform.machine()}, {os.cpu_count()} cpus",
        "concurrency": args.concurrency,
    }
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "checkpoints"
        write_pointer(root, "latest", save_checkpoint(root, MuZeroNetwork().eval(), training_step=1).name)
        for label, bound in (("bounded", args.max_pending), ("unbounded", 1_000_000)):
            service = _serve(root, args.port, bound, Path(tmp) / f"{label}.log")
            service.start()
            try:
                service.wait_ready(120)
                url = f"http://127.0.0.1:{args.port}"
                asyncio.run(_load(url, 8, 2.0))  # warm up: compiled kernels, connections
                result = {"max_pending": bound, **asyncio.run(_load(url, args.concurrency, args.seconds))}
            finally:
                service.stop()
            print(json.dumps({"setting": label, **result}))
            out[label] = result
    print(json.dumps(out))


if __name__ == "__main__":
    main()
