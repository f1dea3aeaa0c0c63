"""The live stack's process environments come from the services' own settings classes."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from services.broker_gateway.settings import GatewaySettings
from services.inference.settings import InferenceSettings
from services.jobs.stack import LiveStack, StackConfig, settings_env
from services.settings import SharedSettings


def test_settings_env_names_each_value_by_the_settings_prefix(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SMZ_GATEWAY_BROKER", "oanda")  # the shell's settings do not take part
    env = settings_env(GatewaySettings, port=8100, ledger_db=Path("/x/ledger.duckdb"), docs=False)
    assert env == {
        "SMZ_GATEWAY_PORT": "8100",
        "SMZ_GATEWAY_LEDGER_DB": "/x/ledger.duckdb",
        "SMZ_GATEWAY_DOCS": "false",
    }
    assert settings_env(InferenceSettings, metric_instruments=["EURSEK"]) == {
        "SMZ_INFERENCE_METRIC_INSTRUMENTS": '["EURSEK"]'
    }


def test_a_renamed_or_bad_setting_fails_loudly() -> None:
    with pytest.raises(ValidationError, match="ledger_path"):
        settings_env(GatewaySettings, ledger_path="x")  # no such field
    with pytest.raises(ValidationError, match="port"):
        settings_env(GatewaySettings, port=0)


def test_every_process_environment_is_what_its_service_reads(tmp_path: Path) -> None:
    config = StackConfig(
        db=tmp_path / "m.duckdb", instrument="GBPJPY", checkpoint_dir=tmp_path, run_dir=tmp_path
    )
    stack = LiveStack(config)
    for service, cls in ((stack.gateway, GatewaySettings), (stack.inference, InferenceSettings)):
        # The service's own SMZ_<SERVICE>_* and the shared block's SMZ_* (services/settings.py).
        ours = {k for k in service.env if k.startswith("SMZ_")}
        assert ours and ours <= set(cls.variables()), service.name
    assert stack.feature_builder.env["SMZ_FEATURE_BUILDER_INSTRUMENT"] == "GBPJPY"


def test_the_stack_builds_each_services_settings_from_one_shared_block(tmp_path: Path) -> None:
    shared = SharedSettings(account="run-1", gateway_token="run-token", windows_stream="smz:run-1:windows")
    config = StackConfig(
        db=tmp_path / "m.duckdb",
        instrument="GBPJPY",
        checkpoint_dir=tmp_path,
        run_dir=tmp_path,
        shared=shared,
        gateway_port=8100,
        consumer="inference-run-1",
    )
    inference, gateway = config.inference_settings(), config.gateway_settings()
    assert inference.shared == gateway.shared == config.feature_builder_settings().shared
    assert inference.shared.gateway_url == config.gateway_url == "http://127.0.0.1:8100"
    assert (inference.consumer, inference.shared.account, config.token) == (
        "inference-run-1",
        "run-1",
        "run-token",
    )
    env = LiveStack(config).inference.env
    assert (env["SMZ_ACCOUNT"], env["SMZ_GATEWAY_TOKEN"], env["SMZ_GATEWAY_URL"]) == (
        "run-1",
        "run-token",
        "http://127.0.0.1:8100",
    )
    assert "SMZ_REDIS_URL" not in env  # not set: the service's default, as the stack's
