"""Log lines as text or JSON (``SMZ_LOG_FORMAT``): one parseable object per record with time, level,
logger and message (and the traceback when there is one), secrets still masked, and a real service
process writing nothing but JSON lines, uvicorn's own included."""

from __future__ import annotations

import io
import json
import logging
import os
import signal
import subprocess
import sys
import uuid
import warnings
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from pydantic import ValidationError

from services.broker_gateway.settings import GatewaySettings
from services.logging_setup import HANDLER_NAME, configure_logging, shared_log_format
from services.secrets import mask_secrets_in_logs
from tests.helpers import free_port
from tests.services.inference.helpers import wait_until

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def restore_logging() -> Iterator[None]:
    root = logging.getLogger()
    level, handlers = root.level, list(root.handlers)
    try:
        yield
    finally:
        for handler in [h for h in root.handlers if h not in handlers]:
            root.removeHandler(handler)
        root.setLevel(level)
        logging.captureWarnings(False)


def records(stream: io.StringIO) -> list[dict[str, object]]:
    lines = stream.getvalue().splitlines()
    return [json.loads(line) for line in lines]


@pytest.mark.usefixtures("restore_logging")
def test_json_lines_carry_time_level_logger_message_and_the_traceback() -> None:
    out = io.StringIO()
    configure_logging("info", "json", stream=out)
    log = logging.getLogger("services.test.json")
    before = datetime.now(UTC)
    log.debug("not at info")
    log.info("filled %d of %s", 3, "GBPJPY")
    log.warning("two\nlines", extra={"account": "paper", "path": Path("/tmp/x")})
    try:
        1 / 0  # noqa: B018
    except ZeroDivisionError:
        log.exception("the order failed")
    info, warning, error = records(out)  # one line per record: the debug one is not logged
    assert info == {
        "time": info["time"],
        "level": "INFO",
        "logger": "services.test.json",
        "message": "filled 3 of GBPJPY",
    }
    stamp = datetime.fromisoformat(str(info["time"]))
    assert stamp.utcoffset() == timedelta(0) and before - timedelta(seconds=1) <= stamp <= datetime.now(UTC)
    assert warning["level"] == "WARNING" and warning["message"] == "two\nlines"
    assert warning["account"] == "paper" and warning["path"] == "/tmp/x"  # extra=, as text if need be
    assert "exc_info" not in info and "exc_info" not in warning
    assert error["level"] == "ERROR" and error["message"] == "the order failed"
    assert str(error["exc_info"]).startswith("Traceback") and "ZeroDivisionError" in str(error["exc_info"])


@pytest.mark.usefixtures("restore_logging")
def test_private_fields_a_library_adds_to_every_record_stay_out(monkeypatch: pytest.MonkeyPatch) -> None:
    """Ray, once imported (the trainer's --ray), installs a record factory that stamps every record
    with ``_ray_timestamp_ns``: a library's private field, not one of ours."""
    factory = logging.getLogRecordFactory()

    def stamping(*args: Any, **kwargs: Any) -> logging.LogRecord:
        record = factory(*args, **kwargs)
        record._library_timestamp_ns = 1  # type: ignore[attr-defined]
        return record

    monkeypatch.setattr(logging, "_logRecordFactory", stamping)
    out = io.StringIO()
    configure_logging("info", "json", stream=out)
    logging.getLogger("services.test.private").info("filled", extra={"account": "paper"})
    (line,) = records(out)
    assert set(line) == {"time", "level", "logger", "message", "account"}


@pytest.mark.usefixtures("restore_logging")
def test_text_lines_as_before() -> None:
    out = io.StringIO()
    configure_logging("warning", "text", stream=out)
    logging.getLogger("services.test.text").info("not at warning")
    logging.getLogger("services.test.text").warning("spread %.1f", 4.0)
    (line,) = out.getvalue().splitlines()
    assert line.endswith(" WARNING services.test.text: spread 4.0")
    datetime.strptime(line[:23], "%Y-%m-%d %H:%M:%S,%f")  # asctime first


@pytest.mark.usefixtures("restore_logging")
def test_secrets_are_masked_and_warnings_logged_in_json() -> None:
    out = io.StringIO()
    configure_logging("info", "json", stream=out)
    mask_secrets_in_logs("s3cret-token")
    logging.getLogger("services.test.mask").info("token %s sent", "s3cret-token")
    with warnings.catch_warnings():
        warnings.simplefilter("always")
        warnings.warn("an old option", DeprecationWarning, stacklevel=1)
    masked, warned = records(out)
    assert "s3cret-token" not in out.getvalue() and masked["message"] == "token *** sent"
    assert warned["logger"] == "py.warnings" and "DeprecationWarning: an old option" in str(warned["message"])


@pytest.mark.usefixtures("restore_logging")
def test_configuring_again_replaces_the_handler() -> None:
    first, second = io.StringIO(), io.StringIO()
    configure_logging("info", "text", stream=first)
    configure_logging("info", "json", stream=second)
    assert [h.get_name() for h in logging.getLogger().handlers].count(HANDLER_NAME) == 1
    logging.getLogger("services.test.again").info("once")
    assert first.getvalue() == "" and records(second)[0]["message"] == "once"


@pytest.mark.usefixtures("restore_logging")
def test_without_a_stream_it_writes_to_the_stderr_of_the_moment(monkeypatch: pytest.MonkeyPatch) -> None:
    configure_logging("info", "json")
    for _ in range(2):  # a fresh stderr each time, as a CLI runner swaps it in and closes it after
        err = io.StringIO()
        monkeypatch.setattr(sys, "stderr", err)
        logging.getLogger("services.test.stderr").info("to stderr")
        assert records(err)[0]["message"] == "to stderr"
        err.close()


def test_a_bad_format_is_refused() -> None:
    with pytest.raises(ValueError, match="log format must be text or json, got 'xml'"):
        configure_logging("info", "xml")  # type: ignore[arg-type]


def test_the_shared_block_reads_smz_log_format(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("SMZ_LOG_FORMAT", raising=False)
    assert GatewaySettings.load().shared.log_format == "text"
    monkeypatch.setenv("SMZ_LOG_FORMAT", "json")
    assert GatewaySettings.load().shared.log_format == "json"
    assert GatewaySettings.from_values(shared={"log_format": "json"}).environment() == {
        "SMZ_LOG_FORMAT": "json"
    }
    monkeypatch.setenv("SMZ_LOG_FORMAT", "xml")
    with pytest.raises(ValidationError, match="log_format"):
        GatewaySettings.load()


def test_the_trainer_reads_it_in_the_same_order(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv("SMZ_LOG_FORMAT", raising=False)
    config = tmp_path / "smz.toml"
    config.write_text('[shared]\nlog_format = "json"\n')
    assert shared_log_format(None) == "text"
    assert shared_log_format(config) == "json"
    monkeypatch.setenv("smz_log_format", "text")  # case-insensitive, as the settings classes read it
    assert shared_log_format(config) == "text"
    monkeypatch.setenv("smz_log_format", "xml")
    with pytest.raises(ValueError, match=r"invalid shared settings \(SMZ_LOG_FORMAT\): log_format: "):
        shared_log_format(None)


def ready(url: str) -> bool:
    try:
        return httpx.get(f"{url}/readyz", timeout=1).status_code == 200
    except httpx.HTTPError:
        return False


def test_a_service_process_writes_only_json_lines(tmp_path: Path) -> None:
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("SMZ_")}
    env.update(
        SMZ_LOG_FORMAT="json",
        SMZ_GATEWAY_PORT=str(port),
        SMZ_GATEWAY_TOKEN="log-format-token",
        SMZ_GATEWAY_LEDGER_DB=str(tmp_path / "ledger.duckdb"),
        SMZ_POSITIONS_STREAM=f"test-logging-setup:{uuid.uuid4().hex}",
    )
    argv = [sys.executable, "-m", "services.cli", "serve", "broker-gateway"]
    proc = subprocess.Popen(
        argv, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    try:
        wait_until(lambda: ready(f"http://127.0.0.1:{port}") or proc.poll() is not None, 60, "the gateway")
        proc.send_signal(signal.SIGTERM)
        output, _ = proc.communicate(timeout=30)
    finally:
        proc.kill()  # a no-op once it has exited
        proc.wait()
    parsed = [json.loads(line) for line in output.splitlines()]  # every line, or this raises and names it
    assert all({"time", "level", "logger", "message"} <= set(entry) for entry in parsed)
    said = {(entry["logger"], entry["message"]) for entry in parsed}
    assert any(logger == "services.broker_gateway" and "broker gateway on http" in m for logger, m in said)
    assert ("uvicorn.error", "Application startup complete.") in said
    assert ("uvicorn.error", "Application shutdown complete.") in said
