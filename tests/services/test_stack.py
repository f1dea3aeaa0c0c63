"""The live stack's process environments come from the services' own settings classes."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from services.broker_gateway.settings import GatewaySettings
from services.inference.settings import InferenceSettings
from services.jobs.stack import LiveStack, StackConfig, settings_env


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
        prefix = str(cls.model_config["env_prefix"])
        ours = {k.removeprefix(prefix).lower(): v for k, v in service.env.items() if k.startswith(prefix)}
        assert ours and set(ours) <= set(cls.model_fields), service.name
    assert stack.feature_builder.env["SMZ_FEATURE_BUILDER_INSTRUMENT"] == "GBPJPY"
