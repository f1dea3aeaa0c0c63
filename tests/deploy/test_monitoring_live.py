"""The monitoring on a real stack: the live services (services.jobs.stack.LiveStack, as `smz up` and the
end-to-end test start them) replay ~400 bars of the bundled sample with a random-weight full-size
checkpoint, while a real Prometheus scrapes them every second with deploy/prometheus/prometheus.yml
(targets swapped for the local ports) and evaluates deploy/prometheus/alerts.yml. Then every Grafana
panel query and every alert expression runs through the Prometheus HTTP API without error, the
live-trading panels all return data, every rule evaluates cleanly, and the trade table's and the
annotations' queries (Infinity) return the replay's trades from the stack's gateway.

No trainer runs here (it needs minutes of CPU before its first loss): the trainer's endpoint is the
real ``TrainerMetrics`` class on its own port, fed with values shaped like a training run's, so the
training board's queries meet the real metric names and labels.
"""

from __future__ import annotations

import subprocess
import threading
import time
from datetime import datetime
from pathlib import Path
from typing import IO, Any

import httpx
import numpy as np
import pytest
import redis
import torch
import yaml
from prometheus_client import start_http_server

from services.jobs.features import run_features
from services.jobs.ingest import run_ingest
from services.jobs.stack import LiveStack, StackConfig, redis_answers
from services.jobs.up import SAMPLE, SAMPLE_INSTRUMENT
from services.trainer.metrics import TrainerMetrics
from shared.metrics import trade_metrics, validation_metrics
from shared.model.checkpoint import save_checkpoint
from shared.model.checkpoint_root import write_pointer
from shared.model.networks import MuZeroNetwork
from shared.sessions import tile_sessions, valid_session_starts
from shared.store import Store
from shared.training.learner import LossParts
from shared.wire import position_key
from tests.deploy.helpers import (
    ALERTS,
    DASHBOARDS,
    LIVE_DASHBOARD,
    PROMETHEUS_CONFIG,
    alert_rules,
    check_infinity_rows,
    concrete,
    infinity_queries,
    load_dashboard,
    prometheus_panels,
    promtool_check_metrics,
    run_infinity_query,
    stop_process,
    tool,
    variable_queries,
)
from tests.helpers import free_port, iso, isolated_stack_config

REDIS_URL = "redis://127.0.0.1:6379/0"
BARS = 400


def _replay_range(db: Path) -> tuple[str, str]:
    """The first BARS bars from the sample's first tiled session start."""
    with Store(db, read_only=True) as store:
        ts = store.load_dataset(SAMPLE_INSTRUMENT).bars.ts
    first = int(tile_sessions(valid_session_starts(ts))[0])
    return iso(int(ts[first])), iso(int(ts[first + BARS - 1]) + 60)


def _prometheus_config(tmp_path: Path, ports: dict[str, int]) -> Path:
    """deploy/prometheus/prometheus.yml with every 1 s and the local ports instead of the compose names."""
    config = yaml.safe_load(PROMETHEUS_CONFIG.read_text())
    config["global"].update(scrape_interval="1s", scrape_timeout="1s", evaluation_interval="1s")
    config["rule_files"] = [str(ALERTS)]
    config.pop("alerting")  # no Alertmanager here (test_alertmanager.py runs one)
    jobs = {job["job_name"]: job for job in config["scrape_configs"]}
    assert set(jobs) == set(ports), "every job of prometheus.yml gets a local target"
    for name, port in ports.items():
        jobs[name]["static_configs"] = [{"targets": [f"127.0.0.1:{port}"]}]
    path = tmp_path / "prometheus.yml"
    path.write_text(yaml.safe_dump(config))
    return path


class FakeTraining:
    """The real TrainerMetrics endpoint, moving like a training run (losses, rounds, validations)."""

    def __init__(self, port: int) -> None:
        self.metrics = TrainerMetrics()
        rng = np.random.default_rng(0)
        trades = trade_metrics(
            rng.normal(1.5, 10.0, 40),
            20,
            np.array([900, 20, 20, 40]),
            trade_sessions=np.repeat(np.arange(20), 2),
            trade_sides=rng.choice([-1, 1], 40),
            flat_action_counts=np.array([300, 20, 20, 0]),
        )
        self.validation = validation_metrics(trades)
        self.server, _ = start_http_server(port, addr="127.0.0.1", registry=self.metrics.registry)
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        m, step = self.metrics, 0
        while not self.stop.is_set():
            step += 1
            m.record_losses([LossParts(4.0 / step, 1.0, 1.0, 0.5, 1.5, 2.0)])
            m.episodes.inc(64)
            m.updates.inc(40)
            m.bar_steps.inc(64 * 360)
            m.updates_per_s.set(12.0)
            m.bar_steps_per_s.set(2300.0)
            m.buffer_size.set(min(64 * step, 10_000))
            m.buffer_trade_share.set(0.35)
            m.temperature.set(10.0)
            m.record_actions([0.7, 0.1, 0.1, 0.1])
            # The keys of services.trainer.worker.validate() (shared.metrics.validation_metrics),
            # as _Trainer records them.
            m.record_validation(self.validation)
            self.stop.wait(0.5)

    def close(self) -> None:
        self.stop.set()
        self.thread.join(5)
        self.server.shutdown()
        self.server.server_close()


def _query(client: httpx.Client, expr: str) -> tuple[str | None, list[Any]]:
    """(error or None, result) of an instant query at now."""
    response = client.get("/api/v1/query", params={"query": expr, "time": time.time()})
    body = response.json()
    if response.status_code != 200 or body.get("status") != "success":
        return f"{response.status_code} {body.get('errorType')}: {body.get('error')}", []
    data = body["data"]
    result = data["result"]
    return None, result if data["resultType"] in ("vector", "matrix") else [result]


def _wait_until(condition, what: str, timeout: float) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}")


def _sample_db_and_checkpoint(tmp_path: Path) -> tuple[Path, Path]:
    """The bundled real sample, ingested and featurised, and a checkpoint root whose latest is a random
    full-size network (it trades often: the P&L panels get data)."""
    db = tmp_path / "sample.duckdb"
    run_ingest([SAMPLE], instrument=SAMPLE_INSTRUMENT, db=db)
    run_features(db, SAMPLE_INSTRUMENT)
    torch.manual_seed(11)
    root = tmp_path / "checkpoints"
    write_pointer(root, "latest", save_checkpoint(root, MuZeroNetwork().eval(), training_step=1).name)
    return db, root


def _service_ports(config: StackConfig, trainer_port: int) -> dict[str, int]:
    """The /metrics port of each Prometheus job of the services."""
    return {
        "inference": config.inference_port,
        "broker-gateway": config.gateway_port,
        "feature-builder": config.feature_builder_metrics_port,
        "trainer": trainer_port,
    }


def _start_prometheus(
    prometheus_bin: str, tmp_path: Path, config: StackConfig, prometheus_port: int, trainer_port: int
) -> tuple[subprocess.Popen[bytes], IO[bytes]]:
    """A real Prometheus scraping the stack, the trainer stand-in and itself; its log file."""
    prometheus_config = _prometheus_config(
        tmp_path, {**_service_ports(config, trainer_port), "prometheus": prometheus_port}
    )
    prometheus_log = (tmp_path / "prometheus.log").open("wb")
    prometheus = subprocess.Popen(
        [
            prometheus_bin,
            f"--config.file={prometheus_config}",
            f"--storage.tsdb.path={tmp_path / 'tsdb'}",
            f"--web.listen-address=127.0.0.1:{prometheus_port}",
            "--log.level=warn",
        ],
        stdout=prometheus_log,
        stderr=subprocess.STDOUT,
    )
    return prometheus, prometheus_log


def _prometheus_ready(prometheus: subprocess.Popen[bytes], api: httpx.Client, tmp_path: Path) -> bool:
    assert prometheus.poll() is None, (tmp_path / "prometheus.log").read_text()
    try:
        return api.get("/-/ready").status_code == 200
    except httpx.HTTPError:
        return False


def _run_every_query(api: httpx.Client, account: str) -> tuple[list[str], list[str], int]:
    """Run every dashboard variable, panel and alert query: (failures, live panels without data, count).
    A variable must offer the stack's instrument or ``account``."""
    failures: list[str] = []
    empty: list[str] = []
    queries = 0
    expected = {"instrument": SAMPLE_INSTRUMENT, "account": account}
    for path in DASHBOARDS:
        board = load_dashboard(path)
        for metric, label in variable_queries(board):
            values = api.get(f"/api/v1/label/{label}/values", params={"match[]": metric}).json()
            if expected[label] not in values.get("data", []):
                failures.append(f"{path.name} variable {label}: {values}")
        for panel in prometheus_panels(board):
            for target in panel["targets"]:
                expr = concrete(target["expr"])
                error, result = _query(api, expr)
                queries += 1
                where = f"{path.name} / {panel['title']} / {target['refId']}: {expr}"
                if error:
                    failures.append(f"{where}: {error}")
                elif not result and path == LIVE_DASHBOARD:
                    empty.append(where)
    for rule in alert_rules():
        error, _ = _query(api, rule["expr"])
        queries += 1
        if error:
            failures.append(f"alert {rule['alert']}: {error}")
    return failures, empty, queries


def _run_infinity_queries(config: StackConfig, start: str, end: str) -> int:
    """Every Infinity query of the dashboards (the trade table, the entry/exit annotations) against the
    stack's gateway, over the replayed bars' time range (a replay's trades carry its bars' times), for
    All and for the stack's own instrument and account: each returns trades, holding its columns."""
    window = [int(datetime.fromisoformat(t).timestamp()) for t in (start, end)]
    token = config.shared.gateway_token.get_secret_value()
    own = {"instrument": [SAMPLE_INSTRUMENT], "account": [config.shared.account]}
    queries = 0
    with httpx.Client(base_url=f"http://127.0.0.1:{config.gateway_port}", timeout=10) as gateway:
        for path in DASHBOARDS:
            for where, query in infinity_queries(load_dashboard(path)):
                for selection in ({"instrument": None, "account": None}, own):
                    rows = run_infinity_query(gateway, token, query, selection, *window)
                    assert rows, f"{path.name} {where}: no trades"
                    check_infinity_rows(where, query, rows, *window)
                    queries += 1
    return queries


def _assert_every_rule_evaluated_ok(api: httpx.Client) -> None:
    # Prometheus itself evaluated every rule without an error.
    _wait_until(
        lambda: all(
            r.get("lastEvaluation", "").startswith("20")
            for g in api.get("/api/v1/rules").json()["data"]["groups"]
            for r in g["rules"]
        ),
        "every rule evaluated",
        10,
    )
    groups = api.get("/api/v1/rules").json()["data"]["groups"]
    rules = [r for g in groups for r in g["rules"]]
    assert len(rules) == len(alert_rules())
    bad = [f"{r['name']}: {r.get('lastError')}" for r in rules if r["health"] != "ok"]
    assert not bad, "\n".join(bad)


@pytest.mark.slow
def test_every_panel_and_alert_query_runs_on_a_live_stack(tmp_path: Path) -> None:
    prometheus_bin = tool("prometheus")
    if not redis_answers(REDIS_URL):
        pytest.skip(f"no Redis at {REDIS_URL}")
    began = time.monotonic()
    db, root = _sample_db_and_checkpoint(tmp_path)
    start, end = _replay_range(db)

    config = isolated_stack_config(
        tmp_path,
        db,
        SAMPLE_INSTRUMENT,
        root,
        "monitoring",
        start=start,
        end=end,
        # Idle after the replay, as in the containers: its series stay scrapeable.
        extra_env={
            "SMZ_FEATURE_BUILDER_POSITION_WAIT_SECONDS": "60",
            "SMZ_FEATURE_BUILDER_AFTER_REPLAY": "idle",
        },
    )
    prometheus_port, trainer_port = free_port(), free_port()
    prometheus, prometheus_log = _start_prometheus(
        prometheus_bin, tmp_path, config, prometheus_port, trainer_port
    )
    training = FakeTraining(trainer_port)
    stack = LiveStack(config)
    api = httpx.Client(base_url=f"http://127.0.0.1:{prometheus_port}", timeout=10)
    try:
        _wait_until(lambda: _prometheus_ready(prometheus, api, tmp_path), "Prometheus", 30)
        stack.start_services()
        builder_metrics = f"http://127.0.0.1:{config.feature_builder_metrics_port}/metrics"

        def replay_finished() -> bool:
            assert stack.feature_builder.alive(), stack.feature_builder.tail()
            try:
                text = httpx.get(builder_metrics, timeout=5).text
            except httpx.HTTPError:
                return False
            return f'smz_feature_builder_replay_finished{{instrument="{SAMPLE_INSTRUMENT}"}} 1.0' in text

        _wait_until(replay_finished, "the end of the replay", 240)
        replayed = time.monotonic() - began

        # Every target up, and a few more scrapes after the last bar so the final values are in.
        def all_up() -> bool:
            targets = api.get("/api/v1/targets").json()["data"]["activeTargets"]
            return len(targets) == 5 and all(t["health"] == "up" for t in targets)

        _wait_until(all_up, "every target up", 15)
        time.sleep(3)

        failures, empty, queries = _run_every_query(api, config.shared.account)
        assert not failures, "\n".join(failures)
        assert not empty, "live-trading panels without data:\n" + "\n".join(empty)
        queries += _run_infinity_queries(config, start, end)

        _assert_every_rule_evaluated_ok(api)
        # The training board met the trainer's series (fed by FakeTraining).
        for expr in ("smz_trainer_validation_expectancy_pips", "smz_trainer_loss"):
            assert _query(api, expr)[1], expr
        # Each service's real /metrics, as Prometheus scraped it, passes `promtool check metrics`.
        for job, port in _service_ports(config, trainer_port).items():
            problems = promtool_check_metrics(httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=5).text)
            assert not problems, f"{job}: {problems}"
        print(f"\n{queries} queries; replayed in {replayed:.0f} s, all in {time.monotonic() - began:.0f} s")
    finally:
        api.close()
        stack.stop()
        training.close()
        stop_process(prometheus, prometheus_log)
        redis.Redis.from_url(REDIS_URL).delete(
            config.shared.windows_stream,
            config.shared.positions_stream,
            position_key(config.shared.account, SAMPLE_INSTRUMENT),
        )
