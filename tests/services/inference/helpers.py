"""Helpers of the inference service's tests: tiny checkpoints, valid windows, a server in a thread,
and a stand-in broker gateway that records orders with idempotency."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated

import numpy as np
import torch
import uvicorn
from fastapi import FastAPI, Header, HTTPException

from shared.model.checkpoint import save_checkpoint
from shared.model.checkpoint_root import write_pointer
from shared.model.config import ModelConfig
from shared.model.networks import MuZeroNetwork
from shared.reward import Action
from shared.schema import FEATURE_RANGES, N_FEATURES, N_MARKET, WINDOW
from shared.wire import OrderRequest, OrderResult
from tests.helpers import free_port

TINY = ModelConfig(hidden=32, tcn_channels=8, support_size=10)
TOKEN = "test-token"


def tiny_model(seed: int) -> MuZeroNetwork:
    torch.manual_seed(seed)
    return MuZeroNetwork(TINY).eval()


def save_version(
    root: Path,
    version: str,
    seed: int,
    *,
    point: bool = True,
    step: int = 1,
    training: dict[str, object] | None = None,
) -> Path:
    """Save a tiny model as ``<root>/<version>`` and (by default) move ``latest`` to it."""
    path = save_checkpoint(root, tiny_model(seed), version=version, training_step=step, training=training)
    if point:
        write_pointer(root, "latest", version)
    return path


def make_window(rng: np.random.Generator, side: int = 0) -> np.ndarray:
    """A valid (32, 15) window: random market features within their ranges and a consistent
    flat/long/short position."""
    window = np.zeros((WINDOW, N_FEATURES), np.float32)
    low, high = np.array(FEATURE_RANGES[:N_MARKET]).T
    window[:, :N_MARKET] = rng.uniform(low, high, size=(WINDOW, N_MARKET))
    if side:
        window[:, N_MARKET:] = [side, rng.uniform(-0.5, 0.5), 0.1, -0.05, -0.1, 0.2]
    return window


def wait_until(predicate: Callable[[], object], timeout: float = 10.0, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.01)


@contextmanager
def serving(app: FastAPI, port: int | None = None) -> Iterator[str]:
    """Run ``app`` (lifespan included) with uvicorn in a thread; yields its base URL."""
    port = port or free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        wait_until(lambda: server.started or not thread.is_alive(), 20, "the server to start")
        assert server.started, "the server did not start"
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(20)


@dataclass
class FakeGateway:
    """Answers ``POST /v1/orders`` like the broker gateway: bearer token (401), idempotency by key (a
    repeat replays the first result with ``duplicate``), bars of one (account, instrument) strictly
    increasing (409). ``down``: answer 503 to everything; ``failing``: 500 to these instruments."""

    down: bool = False
    failing: set[str] = field(default_factory=set)  # instruments whose orders get a 500
    orders: dict[str, OrderRequest] = field(default_factory=dict)  # key -> first order, in arrival order
    attempts: list[OrderRequest] = field(default_factory=list)  # every authorised order received
    duplicates: int = 0
    results: dict[str, OrderResult] = field(default_factory=dict)
    last_bar: dict[tuple[str, str], int] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def app(self) -> FastAPI:
        app = FastAPI()

        @app.post("/v1/orders", response_model=OrderResult)
        def post_order(order: OrderRequest, authorization: Annotated[str, Header()] = "") -> OrderResult:
            if self.down:
                raise HTTPException(503, "broker unavailable")
            if authorization != f"Bearer {TOKEN}":
                raise HTTPException(401, "invalid bearer token")
            with self.lock:
                self.attempts.append(order)
                if order.instrument in self.failing:
                    raise HTTPException(500, "ledger write failed")
                if order.idempotency_key in self.results:
                    self.duplicates += 1
                    return self.results[order.idempotency_key].model_copy(update={"duplicate": True})
                key = (order.account, order.instrument)
                if order.bar_ts <= self.last_bar.get(key, -1):
                    raise HTTPException(409, f"out of order: bar {order.bar_ts}")
                self.last_bar[key] = order.bar_ts
                moved = order.action != Action.HOLD or order.kind == "session_break"
                result = OrderResult(
                    idempotency_key=order.idempotency_key,
                    status="filled" if moved else "held",
                    action=order.action,
                    valid=True,
                )
                self.orders[order.idempotency_key] = order
                self.results[order.idempotency_key] = result
                return result

        return app
