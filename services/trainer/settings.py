"""Trainer settings, from four places in this order of precedence: ``smz train`` options (and ``--set``)
given on the command line, environment variables (prefix ``SMZ_TRAINER_``), the ``[trainer]`` table of
a TOML config file (``smz train --config FILE``), the defaults below (services/settings.py)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import Field, ValidationError, model_validator
from pydantic_settings import SettingsConfigDict

from services.settings import (
    LOCALHOST,
    TRAINER_METRICS_PORT,
    ServiceSettings,
    read_config_table,
    validation_problems,
)
from shared.model.config import ModelConfig
from shared.training.config import TrainingConfig


class TrainerSettings(ServiceSettings):
    model_config = SettingsConfigDict(env_prefix="SMZ_TRAINER_", frozen=True)
    service = "trainer"

    db: Path
    instrument: str
    out: Path  # checkpoint directory (the shared volume in deployment)
    minutes: float | None = Field(None, gt=0)
    episodes: int | None = Field(None, gt=0)
    workers: int = Field(1, ge=1)
    # Self-play on Ray (services/trainer/ray_pool.py): the cluster's address, "auto" (the one the
    # environment names) or "local" (a Ray started for this run); None: no Ray.
    ray: str | None = None
    actors: int = Field(2, ge=1)  # Ray self-play actors, one CPU each
    max_restarts: int = Field(3, ge=-1)  # times Ray restarts a failed actor; -1: without limit
    sessions_per_round: int = Field(64, ge=1)  # self-play sessions stepped together
    updates_per_round: int = Field(128, ge=0)  # learner updates after each round
    publish_every: int = Field(50, ge=1)  # learner updates between weight refreshes of self-play
    validate_every: int = Field(512, ge=1)  # episodes between validations
    validation_sessions: int = Field(64, ge=1)  # at most this many tiled validation sessions
    min_validation_trades: int = Field(10, ge=0)  # fewer trades cannot make a checkpoint "best"
    threads: int = Field(2, ge=1)
    seed: int = 0
    metrics_port: int = Field(TRAINER_METRICS_PORT, ge=0, le=65535)  # Prometheus endpoint; 0 turns it off
    metrics_host: str = LOCALHOST  # 0.0.0.0 in containers, so Prometheus can scrape it

    @model_validator(mode="after")
    def _one_pool(self) -> TrainerSettings:
        if self.ray is not None and self.workers > 1:
            raise ValueError("give --workers (processes on this host) or --ray (Ray actors), not both")
        return self


def parse_assignments(assignments: list[str]) -> dict[str, str]:
    """``KEY=VALUE`` pairs (``--set``) as a dict; ``-`` in a key reads as ``_``."""
    values: dict[str, str] = {}
    for assignment in assignments:
        key, sep, value = assignment.partition("=")
        key = key.strip().replace("-", "_")
        if not sep or not key:
            raise ValueError(f"--set takes KEY=VALUE, got {assignment!r}")
        values[key] = value.strip()
    return values


def training_from(
    config_file: Path | None = None,
    recipe: str | None = None,
    options: dict[str, Any] | None = None,
    assignments: list[str] | None = None,
) -> TrainingConfig:
    """The training configuration: a recipe's defaults (``recipe``, else the file's ``[training]
    recipe``, else ``equity``), then the file's other ``[training]`` keys, then ``options``, then the
    ``KEY=VALUE`` ``assignments`` (``--set``). Unknown keys and bad values raise ValueError."""
    table = read_config_table(config_file, "training") if config_file is not None else {}
    name = recipe or table.pop("recipe", None) or "equity"
    table.pop("recipe", None)
    values = {**table, **(options or {}), **parse_assignments(assignments or [])}
    fields = TrainingConfig.model_fields
    unknown = sorted(set(values) - set(fields))
    if unknown:
        raise ValueError(
            f"unknown training setting(s) {', '.join(unknown)}; the settings are: {', '.join(sorted(fields))}"
        )
    try:
        return TrainingConfig.recipe(name, **values)
    except ValidationError as exc:
        raise ValueError(f"invalid training setting: {validation_problems(exc)}") from None


# The sizes of a fresh run's networks that --set and a [model] table may choose; the others follow from
# the data and the rules (window, features, actions, outcomes).
MODEL_KEYS = frozenset(ModelConfig.model_fields) - {"window", "n_features", "n_actions", "n_outcomes"}
TRAINER_KEYS = frozenset(TrainerSettings.model_fields)
TRAINING_KEYS = frozenset(TrainingConfig.model_fields)


@dataclass(frozen=True)
class TrainingRun:
    """What ``smz train`` runs with."""

    settings: TrainerSettings
    training: TrainingConfig
    model: ModelConfig | None  # a fresh run's networks; None: the defaults (or the resumed run's)


def training_run_from(
    config_file: Path | None,
    options: dict[str, Any],
    recipe: str | None = None,
    assignments: list[str] | None = None,
) -> TrainingRun:
    """The trainer settings, training configuration and model sizes of ``smz train``. ``options`` (the
    command line's; None is not given) are trainer settings or training ones (``reward``); each ``--set
    KEY=VALUE`` goes to whichever of the three has the field and wins over the options."""
    assigned = parse_assignments(assignments or [])
    unknown = sorted(set(assigned) - TRAINER_KEYS - TRAINING_KEYS - MODEL_KEYS)
    if unknown:
        raise ValueError(
            f"unknown setting(s) {', '.join(unknown)}; --set takes a field of the trainer settings "
            f"({', '.join(sorted(TRAINER_KEYS))}), the training configuration "
            f"({', '.join(sorted(TRAINING_KEYS))}) or the model ({', '.join(sorted(MODEL_KEYS))})"
        )
    given = {k: v for k, v in options.items() if v is not None} | assigned
    settings = TrainerSettings.load(config_file, **_part(given, TRAINER_KEYS))
    training = training_from(config_file, recipe, options=_part(given, TRAINING_KEYS))
    sizes = read_config_table(config_file, "model") if config_file is not None else {}
    sizes |= _part(given, MODEL_KEYS)
    if set(sizes) - MODEL_KEYS:
        raise ValueError(f"unknown model setting(s) {', '.join(sorted(set(sizes) - MODEL_KEYS))}")
    try:
        model = ModelConfig(**sizes) if sizes else None
    except ValidationError as exc:
        raise ValueError(f"invalid model setting: {validation_problems(exc)}") from None
    return TrainingRun(settings, training, model)


def _part(values: dict[str, Any], keys: frozenset[str]) -> dict[str, Any]:
    return {k: v for k, v in values.items() if k in keys}
