"""Where the trainer's settings come from: option > SMZ_TRAINER_* variable > config file > default."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from services.cli import app
from services.trainer.settings import TrainerSettings, training_from
from shared.training.config import RECIPES, TrainingConfig

REQUIRED = {"db": Path("market.duckdb"), "instrument": "SYNTHJPY", "out": Path("runs/x")}


@pytest.fixture
def config_file(tmp_path: Path) -> Path:
    path = tmp_path / "train.toml"
    path.write_text(
        "[trainer]\nworkers = 3\nseed = 7\nvalidate_every = 256\n\n"
        '[training]\nrecipe = "seed"\ntd_steps = 12\nbatch_size = 64\n'
    )
    return path


@pytest.fixture(autouse=True)
def no_trainer_variables(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("SMZ_TRAINER_WORKERS", "SMZ_TRAINER_SEED", "SMZ_TRAINER_VALIDATE_EVERY"):
        monkeypatch.delenv(name, raising=False)


def test_option_over_variable_over_file_over_default(
    config_file: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert TrainerSettings.load(None, **REQUIRED).workers == 1  # the default
    from_file = TrainerSettings.load(config_file, **REQUIRED)
    assert (from_file.workers, from_file.seed, from_file.validate_every) == (3, 7, 256)
    monkeypatch.setenv("SMZ_TRAINER_WORKERS", "2")
    assert TrainerSettings.load(config_file, **REQUIRED).workers == 2  # the variable over the file
    assert TrainerSettings.load(None, **REQUIRED, workers=None).workers == 2  # an option not given
    assert TrainerSettings.load(config_file, **REQUIRED, workers=4).workers == 4  # the option over all
    with pytest.raises(ValueError, match="does not exist"):
        TrainerSettings.load(config_file.with_name("missing.toml"), **REQUIRED)


def test_smz_train_reads_a_variable_when_no_option_is_given(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The CLI used to pass its own defaults, so SMZ_TRAINER_WORKERS never counted."""
    argv = [
        "train",
        "--db",
        str(tmp_path / "none.duckdb"),
        "--instrument",
        "SYNTHJPY",
        "--out",
        str(tmp_path),
    ]
    monkeypatch.setenv("SMZ_TRAINER_WORKERS", "0")  # invalid: read, so refused
    refused = CliRunner().invoke(app, argv)
    assert refused.exit_code == 2 and "workers" in refused.output
    given = CliRunner().invoke(app, [*argv, "--workers", "1"])  # the option wins: now the budget is missing
    assert given.exit_code == 2 and "give --minutes or --episodes" in given.output


def test_training_configuration_recipe_file_options_and_set(config_file: Path) -> None:
    assert training_from() == TrainingConfig()  # the equity recipe
    from_file = training_from(config_file)
    assert from_file.reward == RECIPES["seed"]["reward"] and from_file.td_steps == 12
    assert from_file.batch_size == 64
    assert training_from(config_file, recipe="equity").reward == "equity"  # the option's recipe
    assert training_from(config_file, options={"td_steps": 20}).td_steps == 20
    chosen = training_from(
        config_file, options={"td_steps": 20}, assignments=["td_steps=25", "event-share=0.25"]
    )
    assert (chosen.td_steps, chosen.event_share) == (25, 0.25)
    with pytest.raises(ValueError, match=r"unknown training setting.*tdsteps"):
        training_from(assignments=["tdsteps=3"])
    with pytest.raises(ValueError, match="takes KEY=VALUE"):
        training_from(assignments=["td_steps"])
    with pytest.raises(ValueError, match="invalid training setting: batch_size"):
        training_from(assignments=["batch_size=many"])
    with pytest.raises(ValueError, match="unknown training recipe 'sharp'"):
        training_from(recipe="sharp")
