"""Chaos replay: 1,080 real bars (three sessions of the bundled GBPJPY sample) through the whole live
stack while a schedule kills (SIGKILL) the broker gateway, the inference service, the feature builder
and Redis (append-only file on) once each and starts them again.

At the end every bar has exactly one decision and at most one order, nothing was ordered twice, the
ledger's trades equal ``smz evaluate`` of the same checkpoint on the same bars, and no log line of
the run holds the Redis password or either gateway token."""

from __future__ import annotations

import shutil
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import duckdb
import httpx
import pytest
import torch

from services.jobs.evaluate import run_evaluate
from services.jobs.features import run_features
from services.jobs.ingest import run_ingest
from services.jobs.stack import LiveStack, ServiceProcess, StackConfig, redis_answers
from shared.env import TRADE_LOG_FIELDS
from shared.model.checkpoint import save_checkpoint
from shared.model.checkpoint_root import write_pointer
from shared.model.networks import MuZeroNetwork
from shared.sessions import SESSION_BARS, SPLITS, tile_sessions
from shared.store import Store
from tests.helpers import free_port, iso, isolated_stack_config, ledger_decisions, live_trades

REPO = Path(__file__).resolve().parents[2]
SAMPLE = REPO / "data" / "sample" / "HISTDATA_COM_ASCII_GBPJPY_M1_2017-01-sample.zip"
SESSIONS = 3
REDIS_PASSWORD = "chaos-redis-password-0f3a9c41d2b7"
TOKEN = "chaos-gateway-token-9e8d7c6b5a4f3e2d1c0b"
ADMIN_TOKEN = "chaos-admin-token-5a4f3e2d1c0b9a8f7e6d"


def _back_to_back_sessions(db: Path, instrument: str, count: int) -> tuple[int, int]:
    """First bar and end (exclusive) of ``count`` back-to-back tiled sessions of any split."""
    with Store(db, read_only=True) as store:
        ds = store.load_dataset(instrument)
    for split in SPLITS:
        tiled = tile_sessions(ds.starts_of(split))
        for k in range(len(tiled) - count + 1):
            if all(tiled[k + i] == tiled[k] + i * SESSION_BARS for i in range(count)):
                first, last = int(tiled[k]), int(tiled[k]) + count * SESSION_BARS - 1
                return int(ds.bars.ts[first]), int(ds.bars.ts[last]) + 60
    raise AssertionError(f"no {count} back-to-back sessions in the sample")


def _restarted(service: ServiceProcess) -> ServiceProcess:
    """SIGKILL ``service`` and start the same command again (logs appended)."""
    service.kill()
    again = ServiceProcess(service.name, service.argv, service.env, service.log_path, service.ready_url)
    again.start()
    return again


class Chaos:
    """The stack under test with the bars the gateway has decided so far."""

    def __init__(self, stack: LiveStack, config: StackConfig) -> None:
        self.stack, self.config = stack, config

    def as_of(self) -> int:
        try:
            positions = httpx.get(
                f"{self.config.gateway_url}/v1/positions",
                params={"account": self.config.shared.account},
                headers={"Authorization": f"Bearer {TOKEN}"},
                timeout=5,
            ).json()
        except httpx.HTTPError:
            return 0
        return max((int(p["as_of_bar_ts"] or 0) for p in positions), default=0)

    def wait(self, condition: Callable[[], bool], what: str, timeout: float = 300) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if condition():
                return
            time.sleep(0.2)
        logs = {
            s.name: s.tail(15) for s in (self.stack.gateway, self.stack.inference, self.stack.feature_builder)
        }
        raise AssertionError(f"timed out waiting for {what}; logs:\n{logs}")


def _redis(port: int, data_dir: Path, log: Path) -> ServiceProcess:
    data_dir.mkdir(parents=True, exist_ok=True)
    argv = [
        shutil.which("redis-server") or "redis-server", "--port", str(port), "--bind", "127.0.0.1",
        "--requirepass", REDIS_PASSWORD, "--appendonly", "yes", "--appendfsync", "always",
        "--save", "", "--dir", str(data_dir),
    ]  # fmt: skip
    return ServiceProcess("redis", argv, {}, log)


def _sample_db_and_checkpoint(tmp_path: Path) -> tuple[Path, Path, Path]:
    """The real sample, ingested and featurised; a checkpoint root whose latest is a freshly initialised
    network (it trades often, which exercises the ledger); that checkpoint."""
    db = tmp_path / "fx.duckdb"
    run_ingest([SAMPLE], instrument="GBPJPY", db=db)
    run_features(db, "GBPJPY")
    torch.manual_seed(11)
    root = tmp_path / "checkpoints"
    checkpoint = save_checkpoint(root, MuZeroNetwork().eval(), training_step=1)
    write_pointer(root, "latest", checkpoint.name)
    return db, root, checkpoint


def _assert_no_credential_in_any_log(log_dir: Path) -> None:
    """No credential in any log line of the run."""
    logs = {p.name: p.read_text(errors="replace") for p in log_dir.glob("*.log")}
    assert {"broker-gateway.log", "inference.log", "feature-builder.log"} <= logs.keys()
    for name, text in logs.items():
        for secret in (REDIS_PASSWORD, TOKEN, ADMIN_TOKEN):
            assert secret not in text, f"{name} holds a credential"
    assert "***@127.0.0.1" in logs["broker-gateway.log"]  # the URL is logged, without its password


@pytest.mark.slow
def test_every_bar_decided_once_through_sigkills_of_every_process(tmp_path: Path) -> None:
    if shutil.which("redis-server") is None:
        pytest.skip("redis-server is not installed")
    db, root, checkpoint = _sample_db_and_checkpoint(tmp_path)
    start_ts, end_ts = _back_to_back_sessions(db, "GBPJPY", SESSIONS)

    port = free_port()
    redis_url = f"redis://:{REDIS_PASSWORD}@127.0.0.1:{port}/0"
    redis_server = _redis(port, tmp_path / "redis", tmp_path / "live" / "logs" / "redis.log")
    redis_server.start()
    config = isolated_stack_config(
        tmp_path, db, "GBPJPY", root, "chaos",
        redis_url=redis_url, gateway_token=TOKEN, start=iso(start_ts), end=iso(end_ts),
        extra_env={
            "SMZ_GATEWAY_ADMIN_TOKEN": ADMIN_TOKEN,
            "SMZ_INFERENCE_CLAIM_IDLE_MS": "2000",
            "SMZ_INFERENCE_RETRY_MAX_SECONDS": "0.5",
            "SMZ_FEATURE_BUILDER_POSITION_WAIT_SECONDS": "5",
        },
    )  # fmt: skip
    stack = LiveStack(config)
    chaos = Chaos(stack, config)
    killed: list[tuple[str, int]] = []
    try:
        chaos.wait(lambda: redis_answers(redis_url), "redis-server", 20)
        stack.start_services()
        schedule = (("broker-gateway", 150), ("inference", 400), ("feature-builder", 650), ("redis", 900))
        for name, bars in schedule:
            chaos.wait(lambda bars=bars: chaos.as_of() >= start_ts + bars * 60, f"{bars} bars")
            killed.append((name, chaos.as_of()))
            if name == "broker-gateway":
                stack.gateway = _restarted(stack.gateway)
                stack.gateway.wait_ready(120)
            elif name == "inference":
                stack.inference = _restarted(stack.inference)
                stack.inference.wait_ready(120)
            elif name == "feature-builder":
                stack.feature_builder = _restarted(stack.feature_builder)
            else:
                redis_server = _restarted(redis_server)
                chaos.wait(lambda: redis_answers(redis_url), "redis-server back", 20)
        chaos.wait(lambda: chaos.as_of() == end_ts - 60, "the last bar's order", 600)
        assert stack.feature_builder.wait(timeout=120) == 0
        trades = live_trades(config)
    finally:
        stack.stop()
        redis_server.stop()
    assert [name for name, _ in killed] == ["broker-gateway", "inference", "feature-builder", "redis"]
    assert all(start_ts < at < end_ts - 60 for _, at in killed), killed

    # Every bar: exactly one decision; each order once (the ledger's key is the bar's).
    count, distinct, first, last = ledger_decisions(config)
    with duckdb.connect(str(config.ledger_db), read_only=True) as con:
        fills, distinct_fills = con.execute(
            "SELECT count(*), count(DISTINCT client_order_id) FROM fills WHERE account = ?",
            [config.shared.account],
        ).fetchone()
    assert count == distinct == SESSIONS * SESSION_BARS
    assert (first, last) == (start_ts, end_ts - 60)
    assert fills == distinct_fills  # no broker order twice

    report, result = run_evaluate(
        db, "GBPJPY", "all", "muzero", checkpoint=checkpoint,
        start=datetime.fromtimestamp(start_ts, UTC), end=datetime.fromtimestamp(end_ts, UTC),
    )  # fmt: skip
    expected = result.trades.rows()
    assert report["sessions"] == SESSIONS and len(expected) >= 10
    assert [{k: t[k] for k in TRADE_LOG_FIELDS} for t in trades] == expected

    killed_at = {name: (at - start_ts) // 60 for name, at in killed}
    print({"bars": count, "killed_at_bar": killed_at, "trades": len(trades), "broker_orders": fills})

    _assert_no_credential_in_any_log(config.run_dir / "logs")


def test_the_stack_helper_kills_with_sigkill(tmp_path: Path) -> None:
    sleeper = ServiceProcess("sleep", ["sleep", "30"], {}, tmp_path / "sleep.log")
    sleeper.start()
    again = _restarted(sleeper)
    assert sleeper.proc is not None and sleeper.proc.returncode == -9
    assert again.alive()
    again.kill()
