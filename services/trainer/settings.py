"""Trainer settings, from four places in this order of precedence: ``smz train`` options given on the
command line, environment variables (prefix ``SMZ_TRAINER_``), the ``[trainer]`` table of a TOML
config file (``smz train --config FILE``), the defaults below."""

from __future__ import annotations

import tomllib
from contextvars import ContextVar
from pathlib import Path
from typing import Any

from pydantic import Field, ValidationError
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

from shared.training.config import TrainingConfig

# The config file of the settings being built (``TrainerSettings.load``); None: no file.
_CONFIG_FILE: ContextVar[Path | None] = ContextVar("trainer_config_file", default=None)


class TrainerSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="SMZ_TRAINER_", frozen=True)

    db: Path
    instrument: str
    out: Path  # checkpoint directory (the shared volume in deployment)
    minutes: float | None = Field(None, gt=0)
    episodes: int | None = Field(None, gt=0)
    workers: int = Field(1, ge=1)
    sessions_per_round: int = Field(64, ge=1)  # self-play sessions stepped together
    updates_per_round: int = Field(128, ge=0)  # learner updates after each round
    publish_every: int = Field(50, ge=1)  # learner updates between weight refreshes of self-play
    validate_every: int = Field(512, ge=1)  # episodes between validations
    validation_sessions: int = Field(64, ge=1)  # at most this many tiled validation sessions
    min_validation_trades: int = Field(10, ge=0)  # fewer trades cannot make a checkpoint "best"
    threads: int = Field(2, ge=1)
    seed: int = 0
    metrics_port: int = Field(9101, ge=0, le=65535)  # Prometheus endpoint; 0 turns it off
    metrics_host: str = "127.0.0.1"  # 0.0.0.0 in containers, so Prometheus can scrape it

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        sources: list[PydanticBaseSettingsSource] = [init_settings, env_settings]
        config_file = _CONFIG_FILE.get()
        if config_file is not None:
            table = ("trainer",)
            sources.append(TomlConfigSettingsSource(settings_cls, config_file, toml_table_header=table))
        return tuple(sources)

    @classmethod
    def load(cls, config_file: Path | None = None, **given: Any) -> TrainerSettings:
        """The settings: ``given`` (options the user gave; None values are not given) over the
        environment over ``config_file``'s ``[trainer]`` table over the defaults."""
        if config_file is not None and not config_file.is_file():
            raise ValueError(f"config file {config_file} does not exist")
        token = _CONFIG_FILE.set(config_file)
        try:
            return cls(**{k: v for k, v in given.items() if v is not None})
        finally:
            _CONFIG_FILE.reset(token)


def training_from(
    config_file: Path | None = None,
    recipe: str | None = None,
    options: dict[str, Any] | None = None,
    assignments: list[str] | None = None,
) -> TrainingConfig:
    """The training configuration: a recipe's defaults (``recipe``, else the file's ``[training]
    recipe``, else ``equity``), then the file's other ``[training]`` keys, then ``options``, then the
    ``KEY=VALUE`` ``assignments`` (``--set``). Unknown keys and bad values raise ValueError."""
    table: dict[str, Any] = {}
    if config_file is not None:
        try:
            table = dict(tomllib.loads(config_file.read_text()).get("training", {}))
        except (OSError, tomllib.TOMLDecodeError) as exc:
            raise ValueError(f"cannot read the config file {config_file}: {exc}") from exc
    name = recipe or table.pop("recipe", None) or "equity"
    table.pop("recipe", None)
    values = {**table, **(options or {})}
    fields = TrainingConfig.model_fields
    for assignment in assignments or []:
        key, sep, value = assignment.partition("=")
        key = key.strip().replace("-", "_")
        if not sep or not key:
            raise ValueError(f"--set takes KEY=VALUE, got {assignment!r}")
        values[key] = value.strip()
    unknown = sorted(set(values) - set(fields))
    if unknown:
        raise ValueError(
            f"unknown training setting(s) {', '.join(unknown)}; the settings are: {', '.join(sorted(fields))}"
        )
    try:
        return TrainingConfig.recipe(name, **values)
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors())
        raise ValueError(f"invalid training setting: {problems}") from None
