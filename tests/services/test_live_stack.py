"""End to end: real Redis, and the feature builder, inference and broker gateway as real processes.

Replaying three sessions (1,080 real GBPJPY 2017 bars) must give one decision per bar and a gateway
trade ledger equal to ``smz evaluate`` of the same checkpoint on the same bars, while the inference
worker is killed mid-stream and restarted, and a broken checkpoint is dropped into its directory.

For each reward, a checkpoint trained with it (on a synthetic market) is served: the gateway's
per-decision rewards equal the backtest environment's, bar for bar.
"""

from __future__ import annotations

import shutil
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

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
from services.jobs.synth import run_synth
from services.trainer.worker import run_training
from shared.env import TRADE_LOG_FIELDS, EnvConfig, MarketData, TradeLog, TradingEnv
from shared.model.checkpoint import CheckpointManifest, LoadedCheckpoint, load_checkpoint, save_checkpoint
from shared.model.checkpoint_root import resolve_checkpoint, write_pointer
from shared.model.config import ModelConfig
from shared.model.networks import MuZeroNetwork
from shared.reward import REWARDS
from shared.sessions import SESSION_BARS, SPLITS, tile_sessions
from shared.store import Store
from shared.training.config import TrainingConfig
from shared.wire import idempotency_key
from tests.helpers import iso, isolated_stack_config, ledger_decisions, live_trades, small_trainer_settings

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
        params={"account": config.shared.account},
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


def _assert_orders_need_the_token(config: StackConfig) -> None:
    """The gateway refuses an order without its token, or with a wrong one."""
    order = {"idempotency_key": "x", "account": config.shared.account, "instrument": "GBPJPY", "bar_ts": 60,
             "close": 150.0, "action": 1, "session_id": "s", "step": 0}  # fmt: skip
    assert httpx.post(f"{config.gateway_url}/v1/orders", json=order).status_code == 401
    wrong = {"Authorization": "Bearer nope"}
    assert httpx.post(f"{config.gateway_url}/v1/orders", json=order, headers=wrong).status_code == 401


def _restart_inference(stack: LiveStack) -> None:
    stack.inference = ServiceProcess(
        "inference", stack.inference.argv, stack.inference.env, stack.inference.log_path,
        stack.inference.ready_url,
    )  # fmt: skip
    stack.inference.start()
    stack.inference.wait_ready(120)


def _broken_copy(good: Path, broken: Path) -> Path:
    """A copy of checkpoint ``good`` whose weights' last 100 bytes are zeroed."""
    shutil.copytree(good, broken)
    weights = broken / "weights.safetensors"
    data = bytearray(weights.read_bytes())
    data[-100:] = bytes(100)
    weights.write_bytes(bytes(data))
    return broken


def _fresh_checkpoint_as_latest(root: Path) -> Path:
    """A freshly initialised full-size network (it trades often, which exercises the ledger), saved
    under ``root`` as latest."""
    torch.manual_seed(11)
    good = save_checkpoint(root, MuZeroNetwork().eval(), training_step=1)
    write_pointer(root, "latest", good.name)
    return good


def _assert_trades_are_the_backtest(
    db: Path, checkpoint: Path, start_ts: int, end_ts: int, trades: list[dict[str, Any]]
) -> None:
    """The live trades are exactly ``smz evaluate``'s of the same checkpoint on the same sessions."""
    report, result = run_evaluate(
        db,
        "GBPJPY",
        "all",
        "muzero",
        checkpoint=checkpoint,
        start=datetime.fromtimestamp(start_ts, UTC),
        end=datetime.fromtimestamp(end_ts, UTC),
    )
    assert report["sessions"] == SESSIONS
    expected = result.trades.rows()
    assert len(expected) >= 10, "the checkpoint should trade for this test to mean something"
    live = [{k: t[k] for k in TRADE_LOG_FIELDS} for t in trades]
    assert live == expected
    assert np.isclose(sum(t["pnl_pips"] for t in live), report["expectancy_pips"] * report["trades"])


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
    root = tmp_path / "checkpoints"
    good = _fresh_checkpoint_as_latest(root)

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
        _assert_orders_need_the_token(config)

        # Kill the inference worker mid-stream (SIGKILL: no goodbye), then start it again.
        _wait(lambda: _as_of(config) >= start_ts + 300 * 60, "300 bars", 300, stack)
        stack.inference.kill()
        killed_at = _as_of(config)
        _restart_inference(stack)

        # A broken checkpoint becomes latest: it is refused and the good one keeps serving.
        write_pointer(root, "latest", _broken_copy(good, root / "step-000000002").name)
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
        trades = live_trades(config)
    finally:
        stack.stop()
        client.delete(config.shared.windows_stream, config.shared.positions_stream)

    # One decision per bar, each bar once: nothing lost across the kill, nothing ordered twice.
    count, distinct, first, last = ledger_decisions(config)
    assert count == distinct == SESSIONS * SESSION_BARS
    assert (first, last) == (start_ts, end_ts - 60)

    _assert_trades_are_the_backtest(db, good, start_ts, end_ts, trades)


# A tiny training run per reward (seconds on two cores): what matters is that the checkpoint was
# trained with that reward and says so in its manifest, not that it learned anything.
TINY_MODEL = ModelConfig(hidden=32, tcn_channels=8, support_size=20)
TINY_TRAINING = {
    "replay_min_size": 4,
    "collect_simulations": 4,
    "validation_simulations": 4,
    "batch_size": 16,
}
REWARD_SESSIONS = 2


def _busiest_sessions(db: Path, instrument: str, trades: TradeLog, count: int) -> tuple[int, int]:
    """First bar and end (exclusive) time of the ``count`` back-to-back backtest sessions (of one
    split) holding the most trades and bars in a position."""
    with Store(db, read_only=True) as store:
        ds = store.load_dataset(instrument)
    ts = ds.bars.ts
    best: tuple[int, int, int] | None = None
    for split in SPLITS:
        tiled = tile_sessions(ds.starts_of(split))
        for k in range(len(tiled) - count + 1):
            if all(tiled[k + i] == tiled[k] + i * SESSION_BARS for i in range(count)):
                start, end = int(ts[tiled[k]]), int(ts[tiled[k] + count * SESSION_BARS - 1]) + 60
                inside = (trades.entry_ts >= start) & (trades.entry_ts < end)
                score = int(inside.sum() + trades.bars_held[inside].sum())
                if best is None or score > best[0]:
                    best = (score, start, end)
    assert best is not None and best[0] > 0, "the checkpoint never trades in the backtest"
    return best[1], best[2]


def _train(db: Path, out: Path, reward: str) -> Path:
    settings = small_trainer_settings(db, out, episodes=8, validate_every=8)
    run_training(settings, TrainingConfig(reward=reward, **TINY_TRAINING), TINY_MODEL)
    return resolve_checkpoint(out)


def _serve_with_entries_open(trained: LoadedCheckpoint, root: Path, reward: str) -> Path:
    """``trained`` saved under ``root`` as latest, its entry gate open."""
    manifest = trained.manifest
    served = save_checkpoint(
        root,
        trained.model,
        version=f"trained-{reward}",
        training_step=manifest.training_step,
        training=manifest.training,
        serving={"entry_gate": {"margin": 0.0, "allow_entries": True}},
    )
    write_pointer(root, "latest", served.name)
    return served


def _decision_orders(config: StackConfig) -> list[tuple[Any, ...]]:
    """(bar time, step, action) of every decision order of the stack's account, by bar time."""
    with duckdb.connect(str(config.ledger_db), read_only=True) as con:
        return con.execute(
            "SELECT epoch(bar_ts), step, action FROM orders WHERE account = ? AND kind = 'decision' "
            "ORDER BY bar_ts",
            [config.shared.account],
        ).fetchall()


def _replay_in_env(
    db: Path, manifest: CheckpointManifest, start_ts: int, taken: list[int]
) -> tuple[TradingEnv, dict[int, float]]:
    """The environment, with the checkpoint's reward, stepping ``taken`` over the back-to-back sessions
    from ``start_ts``; every decision's reward by bar time."""
    with Store(db, read_only=True) as store:
        ds = store.load_dataset("SYNTHJPY")
    market = MarketData("SYNTHJPY", ds.bars.ts, ds.bars.close, ds.features)
    first = int(np.searchsorted(market.ts, start_ts))
    starts = first + SESSION_BARS * np.arange(REWARD_SESSIONS)
    env_config = EnvConfig(
        reward=manifest.reward, pips_per_reward=float(manifest.training.get("pips_per_reward", 10.0))
    )
    env = TradingEnv(market, env_config)
    env.reset(starts)
    actions = np.array(taken).reshape(REWARD_SESSIONS, SESSION_BARS)
    expected: dict[int, float] = {}
    for step in range(SESSION_BARS):
        result = env.step(actions[:, step])
        for row, bar in enumerate(starts + step):
            expected[int(market.ts[bar])] = float(result.reward[row])
    return env, expected


@pytest.mark.slow
@pytest.mark.parametrize("reward", REWARDS)
def test_live_rewards_equal_the_backtest_rewards_bar_for_bar(tmp_path: Path, reward: str) -> None:
    """A checkpoint trained with ``reward`` is served by the real stack: the gateway computes that
    reward, and every decision's reward in its ledger equals the environment's for the same actions
    on the same bars, exactly; the actions are the backtest's (the same trades as ``smz evaluate``)."""
    if not redis_answers(REDIS_URL):
        pytest.skip(f"no Redis at {REDIS_URL}")
    db = tmp_path / "synth.duckdb"
    run_synth(db, "SYNTHJPY", 12_000, seed=4)
    run_features(db, "SYNTHJPY")
    trained = load_checkpoint(_train(db, tmp_path / "trained", reward))
    manifest = trained.manifest
    assert manifest.reward == reward
    # Served with its entries open: the tiny run's validation finds no edge and closes its entry gate,
    # and an agent that never trades would leave the rewards of open positions untested.
    root = tmp_path / "checkpoints"
    served = _serve_with_entries_open(trained, root, reward)
    # The backtest: ``smz evaluate`` of the served checkpoint; the stack replays the back-to-back
    # sessions in which it trades the most.
    _, backtest = run_evaluate(db, "SYNTHJPY", "all", "muzero", checkpoint=served)
    start_ts, end_ts = _busiest_sessions(db, "SYNTHJPY", backtest.trades, REWARD_SESSIONS)

    config = isolated_stack_config(
        tmp_path,
        db,
        "SYNTHJPY",
        root,
        f"rewards-{reward}",
        start=iso(start_ts),
        end=iso(end_ts),
        extra_env={"SMZ_FEATURE_BUILDER_POSITION_WAIT_SECONDS": "120"},
    )
    client = redis.Redis.from_url(REDIS_URL)
    stack = LiveStack(config)
    auth = {"Authorization": f"Bearer {config.token}"}
    try:
        stack.start_services()
        model = httpx.get(f"{config.inference_url}/v1/model").json()
        assert (model["version"], model["reward"]) == (served.name, reward)
        _wait(lambda: _as_of(config) == end_ts - 60, "the last bar's order", 600, stack)
        assert stack.feature_builder.wait(timeout=150) == 0
        rewards = httpx.get(
            f"{config.gateway_url}/v1/rewards",
            params={"account": config.shared.account, "limit": 100_000},
            headers=auth,
        ).json()
        trades = live_trades(config)
    finally:
        stack.stop()
        client.delete(config.shared.windows_stream, config.shared.positions_stream)

    orders = _decision_orders(config)
    assert [int(o[1]) for o in orders] == list(range(SESSION_BARS)) * REWARD_SESSIONS

    # The backtest's environment, with the checkpoint's reward, steps the actions the stack took.
    env, expected = _replay_in_env(db, manifest, start_ts, [int(o[2]) for o in orders])
    live = {r["bar_ts"]: r["reward"] for r in rewards}
    assert {r["reward_kind"] for r in rewards} == {reward}
    assert live == expected  # every decision, bar for bar, exactly
    # An equity reward of a position left open was settled by the next bar's order.
    later = [
        r
        for r in rewards
        if r["settled_by"] != idempotency_key(config.shared.account, "SYNTHJPY", r["bar_ts"])
    ]
    assert (len(later) >= 10) == (reward == "equity") and (not later) == (reward == "amddp1")
    assert [int(o[0]) for o in orders] == sorted(expected)

    # The actions are the backtest's own: ``smz evaluate`` of the served checkpoint made these trades.
    expected_trades = [t for t in backtest.trades.rows() if start_ts <= t["entry_ts"] < end_ts]
    assert [{k: t[k] for k in TRADE_LOG_FIELDS} for t in trades] == expected_trades
    assert env.trade_log().chronological().rows() == expected_trades
    held = sum(t["bars_held"] for t in trades)
    assert len(trades) >= 3 and held >= 10, "the agent should hold positions for this test to mean much"
