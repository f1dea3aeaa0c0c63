"""The service as users run it: settings from SMZ_FEATURE_BUILDER_* and ``smz serve feature-builder``."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
import redis

from services.feature_builder.main import build_source, main
from services.feature_builder.settings import FeatureBuilderSettings
from shared.bars import Bars
from shared.wire import POSITIONS_STREAM, WINDOWS_STREAM
from tests.helpers import REPO, free_port, iso
from tests.services.feature_builder.conftest import REDIS_URL, Gateway, Names, stream_messages

START = 1000


def test_settings_come_from_the_environment(monkeypatch: pytest.MonkeyPatch, sample_db: Path) -> None:
    for key in list(os.environ):
        if key.startswith("SMZ_FEATURE_BUILDER_"):
            monkeypatch.delenv(key)
    monkeypatch.setenv("SMZ_FEATURE_BUILDER_INSTRUMENT", "GBPJPY")
    monkeypatch.setenv("SMZ_FEATURE_BUILDER_DB", str(sample_db))
    monkeypatch.setenv("SMZ_FEATURE_BUILDER_START", "2017-01-03T08:00:00Z")
    monkeypatch.setenv("SMZ_FEATURE_BUILDER_END", "2017-01-03T10:00")  # no zone: UTC
    monkeypatch.setenv("SMZ_FEATURE_BUILDER_PACE_MS", "0.0")
    monkeypatch.setenv("SMZ_FEATURE_BUILDER_REALTIME", "false")
    settings = FeatureBuilderSettings()  # type: ignore[call-arg]
    shared = settings.shared
    assert settings.source == "duckdb" and shared.account == "paper" and shared.spread_pips == 4.0
    assert (shared.windows_stream, shared.positions_stream) == (WINDOWS_STREAM, POSITIONS_STREAM)
    assert settings.start_ts == 1_483_430_400 and settings.end_ts == 1_483_430_400 + 7200
    assert (settings.metrics_port, settings.metrics_host, settings.position_wait_seconds) == (
        9102,
        "127.0.0.1",
        30,
    )
    assert shared.redis_url == "redis://127.0.0.1:6379/0" and settings.poll_seconds == 5
    assert len(build_source(settings)) == 120

    monkeypatch.setenv("SMZ_FEATURE_BUILDER_SOURCE", "oanda")
    with pytest.raises(ValueError, match="OANDA_TOKEN"):
        build_source(FeatureBuilderSettings())  # type: ignore[call-arg]
    monkeypatch.setenv("SMZ_FEATURE_BUILDER_END", "2017-01-03T07:00:00Z")
    with pytest.raises(SystemExit) as exited:  # end before start
        main()
    assert exited.value.code == 2


def serve(names: Names, sample_zip: Path, start: int, end: int, **extra: str) -> subprocess.Popen[bytes]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SMZ_")}
    env.update(
        {
            "SMZ_FEATURE_BUILDER_SOURCE": "file",
            "SMZ_FEATURE_BUILDER_FILE": str(sample_zip),
            "SMZ_FEATURE_BUILDER_INSTRUMENT": "GBPJPY",
            "SMZ_FEATURE_BUILDER_START": iso(start),
            "SMZ_FEATURE_BUILDER_END": iso(end),
            "SMZ_FEATURE_BUILDER_REDIS_URL": REDIS_URL,
            "SMZ_FEATURE_BUILDER_WINDOWS_STREAM": names.windows_stream,
            "SMZ_FEATURE_BUILDER_POSITIONS_STREAM": names.positions_stream,
            "SMZ_FEATURE_BUILDER_ACCOUNT": names.account,
            "SMZ_FEATURE_BUILDER_METRICS_PORT": "0",
            **extra,
        }
    )
    argv = [sys.executable, "-m", "services.cli", "serve", "feature-builder"]
    return subprocess.Popen(argv, env=env, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)


def sigterm_and_wait(proc: subprocess.Popen[bytes]) -> bytes:
    """SIGTERM the service, assert it exits 0, return its output."""
    try:
        proc.send_signal(signal.SIGTERM)
        output, _ = proc.communicate(timeout=10)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, output.decode()
    return output


def test_smz_serve_replays_to_the_end_and_exits_0(
    sample_zip: Path, gbpjpy_sample: Bars, redis_client: redis.Redis, names: Names
) -> None:
    ts = gbpjpy_sample.ts
    with Gateway(redis_client, names) as gateway:
        proc = serve(names, sample_zip, int(ts[START]), int(ts[START + 50]))
        output, _ = proc.communicate(timeout=30)
        assert proc.returncode == 0, output.decode()
        assert len(gateway.actions) == 50  # it waited for the last window's position
    assert len(stream_messages(redis_client, names.windows_stream)) == 50
    assert b"warmed up on 450 history bars" in output


def test_smz_serve_exposes_metrics_and_stops_on_sigterm(
    sample_zip: Path, gbpjpy_sample: Bars, redis_client: redis.Redis, names: Names
) -> None:
    ts = gbpjpy_sample.ts
    port = free_port()
    with Gateway(redis_client, names):
        proc = serve(
            names,
            sample_zip,
            int(ts[START]),
            int(ts[START + 400]),
            SMZ_FEATURE_BUILDER_PACE_MS="50",
            SMZ_FEATURE_BUILDER_METRICS_PORT=str(port),
        )
        try:
            deadline = time.monotonic() + 20
            while redis_client.xlen(names.windows_stream) < 3 and time.monotonic() < deadline:
                assert proc.poll() is None, proc.stdout.read().decode() if proc.stdout else ""
                time.sleep(0.05)
            metrics = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=5).text
        except BaseException:
            proc.kill()
            raise
        output = sigterm_and_wait(proc)
    assert 3 <= len(stream_messages(redis_client, names.windows_stream)) < 400
    for name in (
        'smz_feature_builder_bars_total{instrument="GBPJPY"}',
        'smz_feature_builder_windows_published_total{instrument="GBPJPY"}',
        'smz_feature_builder_last_bar_timestamp_seconds{instrument="GBPJPY"}',
        'smz_feature_builder_bar_lag_seconds{instrument="GBPJPY"}',
        "smz_feature_builder_position_wait_seconds_bucket",
        "smz_feature_builder_position_timeouts_total 0.0",
    ):
        assert name in metrics
    assert b"received SIGTERM" in output


def test_after_replay_idle_keeps_serving_metrics_until_sigterm(
    sample_zip: Path, gbpjpy_sample: Bars, redis_client: redis.Redis, names: Names
) -> None:
    ts = gbpjpy_sample.ts
    port = free_port()
    url = f"http://127.0.0.1:{port}/metrics"
    finished = 'smz_feature_builder_replay_finished{instrument="GBPJPY"} 1.0'
    with Gateway(redis_client, names) as gateway:
        proc = serve(
            names,
            sample_zip,
            int(ts[START]),
            int(ts[START + 20]),
            SMZ_FEATURE_BUILDER_METRICS_PORT=str(port),
            SMZ_FEATURE_BUILDER_AFTER_REPLAY="idle",
        )
        try:
            deadline = time.monotonic() + 30
            metrics = ""
            while finished not in metrics:
                assert time.monotonic() < deadline, metrics
                assert proc.poll() is None, proc.stdout.read().decode() if proc.stdout else ""
                with contextlib.suppress(httpx.HTTPError):
                    metrics = httpx.get(url, timeout=5).text
                time.sleep(0.1)
            assert len(gateway.actions) == 20
            time.sleep(0.5)
            assert proc.poll() is None  # still up after the replay
            assert (
                'smz_feature_builder_windows_published_total{instrument="GBPJPY"} 20.0' in httpx.get(url).text
            )
        except BaseException:
            proc.kill()
            raise
        output = sigterm_and_wait(proc)
    assert b"serving metrics until stopped" in output
