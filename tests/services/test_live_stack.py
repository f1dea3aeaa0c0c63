"""End to end: real Redis, and the feature builder, inference and broker gateway as real processes.

Replaying three sessions (1,080 real GBPJPY 2017 bars) must give one decision per bar and a gateway
trade ledger equal to ``smz evaluate`` of the same checkpoint on the same bars, while the inference
worker is killed mid-stream and restarted, and a broken checkpoint is dropped into its directory.
"""

from __future__ import annotations

import shutil
import time
from datetime import UTC, datetime
from pathlib import Path

import duckdb
import httpx
import numpy as np
import pytest
import redis
import torch

from services.jobs.evaluate import run_evaluate
from services.jobs.features import run_features
from services.jobs.ingest import run_ingest
from services.jobs.stack import LiveStack, ServiceProcess, StackConfig, redis_answers
from shared.env import TRADE_LOG_FIELDS
from shared.model.checkpoint import save_checkpoint, write_pointer
from shared.model.networks import MuZeroNetwork
from shared.sessions import SESSION_BARS, tile_sessions
from shared.store import Store
from tests.helpers import iso, isolated_stack_config

REPO = Path(__file__).resolve().parents[2]
GBPJPY_2017 = REPO.parent / "shared" / "data" / "fx" / "GBPJPY" / "HISTDATA_COM_ASCII_GBPJPY_M1_2017.zip"
REDIS_URL = "redis://127.0.0.1:6379/0"
SESSIONS = 3


def _contiguous_sessions(db: Path, instrument: str, count: int) -> tuple[int, int]:
    """First bar and end (exclusive) time of ``count`` back-to-back tiled test sessions."""
    with Store(db, read_only=True) as store:
        ds = store.load_dataset(instrument)
    tiled = tile_sessions(ds.starts_of("test"))
    for k in range(len(tiled) - count + 1):
        if all(tiled[k + i] == tiled[k] + i * SESSION_BARS for i in range(count)):
            first = int(tiled[k])
            last = first + count * SESSION_BARS - 1
            return int(ds.bars.ts[first]), int(ds.bars.ts[last]) + 60
    raise AssertionError(f"no {count} back-to-back sessions in the test split")


def _as_of(config: StackConfig) -> int:
    positions = httpx.get(
        f"{config.gateway_url}/v1/positions",
        params={"account": config.account},
        headers={"Authorization": f"Bearer {config.token}"},
        timeout=5,
    ).json()
    return max((int(p["as_of_bar_ts"] or 0) for p in positions), default=0)


def _wait(condition, what: str, timeout: float, stack: LiveStack) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        for service in (stack.gateway, stack.inference):
            assert service.alive(), f"{service.name} died:\n{service.tail()}"
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}")


@pytest.mark.slow
def test_live_stack_trades_exactly_like_the_backtest(tmp_path: Path) -> None:
    if not GBPJPY_2017.exists():
        pytest.skip(f"{GBPJPY_2017} is not beside the repo")
    if not redis_answers(REDIS_URL):
        pytest.skip(f"no Redis at {REDIS_URL}")
    db = tmp_path / "fx.duckdb"
    run_ingest([GBPJPY_2017], instrument="GBPJPY", db=db)
    run_features(db, "GBPJPY")
    start_ts, end_ts = _contiguous_sessions(db, "GBPJPY", SESSIONS)

    # A freshly initialised full-size network trades often, which exercises the ledger.
    torch.manual_seed(11)
    root = tmp_path / "checkpoints"
    good = save_checkpoint(root, MuZeroNetwork().eval(), training_step=1)
    write_pointer(root, "latest", good.name)

    config = isolated_stack_config(
        tmp_path,
        db,
        "GBPJPY",
        root,
        "e2e",
        consumer="inference-e2e",
        start=iso(start_ts),
        end=iso(end_ts),
        extra_env={
            "SMZ_INFERENCE_RELOAD_SECONDS": "0.5",
            "SMZ_INFERENCE_CLAIM_IDLE_MS": "2000",
            "SMZ_FEATURE_BUILDER_POSITION_WAIT_SECONDS": "120",
        },
    )
    client = redis.Redis.from_url(REDIS_URL)
    stack = LiveStack(config)
    try:
        stack.start_services()
        # The gateway refuses an order without its token, or with a wrong one.
        order = {"idempotency_key": "x", "account": config.account, "instrument": "GBPJPY", "bar_ts": 60,
                 "close": 150.0, "action": 1, "session_id": "s", "step": 0}  # fmt: skip
        assert httpx.post(f"{config.gateway_url}/v1/orders", json=order).status_code == 401
        wrong = {"Authorization": "Bearer nope"}
        assert httpx.post(f"{config.gateway_url}/v1/orders", json=order, headers=wrong).status_code == 401

        # Kill the inference worker mid-stream (SIGKILL: no goodbye), then start it again.
        _wait(lambda: _as_of(config) >= start_ts + 300 * 60, "300 bars", 300, stack)
        stack.inference.kill()
        killed_at = _as_of(config)
        stack.inference = ServiceProcess(
            "inference", stack.inference.argv, stack.inference.env, stack.inference.log_path,
            stack.inference.ready_url,
        )  # fmt: skip
        stack.inference.start()
        stack.inference.wait_ready(120)

        # A broken checkpoint becomes latest: it is refused and the good one keeps serving.
        broken = root / "step-000000002"
        shutil.copytree(good, broken)
        weights = broken / "weights.safetensors"
        data = bytearray(weights.read_bytes())
        data[-100:] = bytes(100)
        weights.write_bytes(bytes(data))
        write_pointer(root, "latest", broken.name)
        _wait(
            lambda: (
                "smz_inference_model_load_failures_total 1.0"
                in httpx.get(f"{config.inference_url}/metrics").text
            ),
            "the broken checkpoint's refusal",
            30,
            stack,
        )
        model = httpx.get(f"{config.inference_url}/v1/model").json()
        assert model["version"] == good.name
        assert httpx.get(f"{config.inference_url}/readyz").status_code == 200

        last_bar = end_ts - 60
        _wait(lambda: _as_of(config) == last_bar, "the last bar's order", 600, stack)
        assert killed_at < last_bar
        assert stack.feature_builder.wait(timeout=150) == 0
        trades = httpx.get(
            f"{config.gateway_url}/v1/trades",
            params={"account": config.account, "limit": 100_000},
            headers={"Authorization": f"Bearer {config.token}"},
        ).json()
    finally:
        stack.stop()
        client.delete(config.windows_stream, config.positions_stream)

    # One decision per bar, each bar once: nothing lost across the kill, nothing ordered twice.
    with duckdb.connect(str(config.ledger_db), read_only=True) as con:
        count, distinct, first, last = con.execute(
            "SELECT count(*), count(DISTINCT bar_ts), epoch(min(bar_ts)), epoch(max(bar_ts)) "
            "FROM orders WHERE account = ? AND kind = 'decision'",
            [config.account],
        ).fetchone()
    assert count == distinct == SESSIONS * SESSION_BARS
    assert (first, last) == (start_ts, end_ts - 60)

    report, result = run_evaluate(
        db,
        "GBPJPY",
        "all",
        "muzero",
        checkpoint=good,
        start=datetime.fromtimestamp(start_ts, UTC),
        end=datetime.fromtimestamp(end_ts, UTC),
    )
    assert report["sessions"] == SESSIONS
    expected = result.trades.rows()
    assert len(expected) >= 10, "the checkpoint should trade for this test to mean something"
    live = [{k: t[k] for k in TRADE_LOG_FIELDS} for t in trades]
    assert live == expected
    assert np.isclose(sum(t["pnl_pips"] for t in live), report["expectancy_pips"] * report["trades"])
