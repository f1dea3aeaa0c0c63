"""``smz serve inference`` as a process: bad settings exit 2; it serves, trades the stream, and stops
cleanly on SIGTERM."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import httpx
import numpy as np
import pytest
import redis

from services.inference.main import main
from shared.wire import WindowMessage
from tests.services.inference.conftest import REDIS_URL, Streams
from tests.services.inference.helpers import TOKEN, FakeGateway, free_port, make_window, serving, wait_until

REPO = Path(__file__).resolve().parents[3]
RUN = [sys.executable, "-c", "from services.inference.main import main; main()"]


def test_bad_settings_exit_2(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("SMZ_INFERENCE_MAX_BATCH", "0")
    with pytest.raises(SystemExit) as exit_info:
        main()
    assert exit_info.value.code == 2
    stderr = capsys.readouterr().err
    assert "max_batch" in stderr and "SMZ_INFERENCE_" in stderr


def test_serves_and_stops_cleanly_on_sigterm(root: Path, streams: Streams, redis_client: redis.Redis) -> None:
    gateway = FakeGateway()
    port = free_port()
    with serving(gateway.app()) as gateway_url:
        env = {
            **os.environ,
            "SMZ_INFERENCE_CHECKPOINT_DIR": str(root),
            "SMZ_INFERENCE_PORT": str(port),
            "SMZ_INFERENCE_REDIS_URL": REDIS_URL,
            "SMZ_INFERENCE_WINDOWS_STREAM": streams.windows,
            "SMZ_INFERENCE_DEAD_LETTER_STREAM": streams.dead,
            "SMZ_INFERENCE_GATEWAY_URL": gateway_url,
            "SMZ_INFERENCE_GATEWAY_TOKEN": TOKEN,
            "SMZ_INFERENCE_CLAIM_IDLE_MS": "300",
        }
        process = subprocess.Popen(RUN, env=env, cwd=REPO, stderr=subprocess.PIPE, text=True)
        try:
            url = f"http://127.0.0.1:{port}"

            def ready() -> bool:
                try:
                    return httpx.get(f"{url}/readyz").status_code == 200
                except httpx.HTTPError:
                    return False

            wait_until(ready, 60, "the service to be ready")
            message = WindowMessage(
                instrument="EURUSD",
                bar_ts=1_699_999_980,  # a whole minute
                close=1.1,
                session_id="s",
                step=0,
                window=make_window(np.random.default_rng(0)).tolist(),
            )
            redis_client.xadd(streams.windows, {"data": message.model_dump_json()})
            wait_until(lambda: len(gateway.orders) == 1, 20, "the order")
            process.send_signal(signal.SIGTERM)
            _, stderr = process.communicate(timeout=30)
        finally:
            if process.poll() is None:
                process.kill()
                process.wait()
    # uvicorn re-raises the signal after its graceful shutdown: terminated by SIGTERM, after the log.
    assert process.returncode in (0, -signal.SIGTERM), stderr
    assert "serving v1" in stderr and "stream worker stopped after 1 entries" in stderr
    assert "Traceback" not in stderr
