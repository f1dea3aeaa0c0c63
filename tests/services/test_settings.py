"""Where the live services' settings come from (services/settings.py): the shared block from SMZ_<FIELD>
or a service's previous name for it, a TOML config file's [shared] and service tables, and the order
value given > environment > file > default."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from pydantic import ValidationError

from services.broker_gateway.settings import GatewaySettings
from services.feature_builder.settings import FeatureBuilderSettings
from services.inference.main import main as inference_main
from services.inference.settings import InferenceSettings
from services.settings import CONFIG_VARIABLE, DEFAULT_TOKEN, SharedSettings


@pytest.fixture(autouse=True)
def no_smz_variables(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in list(os.environ):
        if name.startswith("SMZ_"):
            monkeypatch.delenv(name)


CONFIG = """
[shared]
account = "from-file"
redis_url = "redis://file:6379/0"
spread_pips = 2.5

[gateway]
port = 8100
price_band = 0.2

[inference]
simulations = 40

[feature_builder]
instrument = "EURUSD"
"""


@pytest.fixture
def config_file(tmp_path: Path) -> Path:
    (tmp_path / "smz.toml").write_text(CONFIG)
    return tmp_path / "smz.toml"


def test_the_shared_block_is_read_from_its_own_names_and_the_previous_ones(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    assert InferenceSettings().shared == SharedSettings()  # the defaults
    monkeypatch.setenv("SMZ_INFERENCE_REDIS_URL", "redis://old:6379/0")  # the name before the block
    monkeypatch.setenv("SMZ_INFERENCE_GATEWAY_TOKEN", "old-token")
    inference = InferenceSettings()
    assert inference.shared.redis_url == "redis://old:6379/0"
    assert inference.shared.gateway_token.get_secret_value() == "old-token"
    # Another service's previous name is not this one's: the gateway keeps its defaults.
    gateway = GatewaySettings()
    assert gateway.shared.redis_url == SharedSettings().redis_url
    assert gateway.shared.gateway_token.get_secret_value() == DEFAULT_TOKEN
    monkeypatch.setenv("SMZ_REDIS_URL", "redis://new:6379/0")  # the shared name wins
    monkeypatch.setenv("SMZ_GATEWAY_TOKEN", "one-token")  # what the gateway requires, inference sends
    for settings in (InferenceSettings(), GatewaySettings()):
        assert settings.shared.redis_url == "redis://new:6379/0"
        assert settings.shared.gateway_token.get_secret_value() == "one-token"
    monkeypatch.setenv("SMZ_SPREAD_PIPS", "-1")  # checked like any setting
    with pytest.raises(ValidationError, match=r"shared\.spread_pips"):
        GatewaySettings()


def test_value_over_environment_over_file_over_default(
    config_file: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    defaults = GatewaySettings.load()
    assert (defaults.port, defaults.shared.account, defaults.price_band) == (8002, "paper", 0.1)
    from_file = GatewaySettings.load(config_file)
    assert (from_file.port, from_file.price_band) == (8100, 0.2)
    assert (from_file.shared.account, from_file.shared.spread_pips) == ("from-file", 2.5)
    assert from_file.shared.positions_stream == SharedSettings().positions_stream  # not in the file
    monkeypatch.setenv("SMZ_GATEWAY_PORT", "8200")
    monkeypatch.setenv("SMZ_ACCOUNT", "from-env")
    from_env = GatewaySettings.load(config_file)
    assert (from_env.port, from_env.price_band) == (8200, 0.2)
    assert (from_env.shared.account, from_env.shared.redis_url) == ("from-env", "redis://file:6379/0")
    given = GatewaySettings.load(config_file, port=8300, shared={"account": "given"})
    assert (given.port, given.shared.account, given.shared.spread_pips) == (8300, "given", 2.5)
    # Each service reads the shared table and its own.
    inference = InferenceSettings.load(config_file)
    assert (inference.simulations, inference.port, inference.shared.account) == (40, 8001, "from-env")
    assert FeatureBuilderSettings.load(config_file).instrument == "EURUSD"


def test_the_config_file_comes_from_smz_config_and_is_checked(
    config_file: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv(CONFIG_VARIABLE, str(config_file))
    assert GatewaySettings.load().port == 8100
    assert GatewaySettings().port == 8002  # the constructor alone reads no file
    with pytest.raises(ValueError, match="does not exist"):
        GatewaySettings.load(tmp_path / "missing.toml")
    typo = tmp_path / "typo.toml"
    typo.write_text('[shared]\nacount = "x"\n')
    with pytest.raises(ValidationError, match=r"shared\.acount"):
        GatewaySettings.load(typo)
    broken = tmp_path / "broken.toml"
    broken.write_text("[shared\n")
    with pytest.raises(ValueError, match="cannot read the config file"):
        GatewaySettings.load(broken)
    # `smz serve inference --config FILE`: a bad file exits 2 and says why.
    with pytest.raises(SystemExit) as exited:
        inference_main(typo)
    assert exited.value.code == 2
    assert "invalid inference settings" in capsys.readouterr().err


def test_from_values_reads_nothing_else_and_environment_gives_it_back(
    config_file: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SMZ_ACCOUNT", "shell")
    monkeypatch.setenv("SMZ_INFERENCE_SIMULATIONS", "3")
    monkeypatch.setenv(CONFIG_VARIABLE, str(config_file))
    values = InferenceSettings.from_values(
        port=8101,
        shared=SharedSettings(account="child", gateway_token="t0ken"),
        metric_instruments=["EURSEK"],
    )
    assert (values.simulations, values.shared.redis_url) == (25, SharedSettings().redis_url)
    env = values.environment()
    assert env == {
        "SMZ_INFERENCE_PORT": "8101",
        "SMZ_INFERENCE_METRIC_INSTRUMENTS": '["EURSEK"]',
        "SMZ_ACCOUNT": "child",
        "SMZ_GATEWAY_TOKEN": "t0ken",
    }
    for name in (CONFIG_VARIABLE, "SMZ_ACCOUNT", "SMZ_INFERENCE_SIMULATIONS"):
        monkeypatch.delenv(name)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    assert InferenceSettings() == values  # what a child process given ``env`` reads
    assert set(env) <= set(InferenceSettings.variables())


def test_every_variable_names_a_field() -> None:
    for cls in (GatewaySettings, InferenceSettings, FeatureBuilderSettings):
        variables = cls.variables()
        for variable, field in variables.items():
            block, _, name = field.rpartition(".")
            assert name in (SharedSettings if block == "shared" else cls).model_fields, variable
        assert {f"shared.{name}" for name in SharedSettings.model_fields} <= set(variables.values())
    assert GatewaySettings.variables()["SMZ_GATEWAY_TOKEN"] == "shared.gateway_token"
    assert InferenceSettings.variables()["SMZ_INFERENCE_ACCOUNT"] == "shared.account"
    assert "SMZ_GATEWAY_ACCOUNT" not in GatewaySettings.variables()  # a name that never existed
