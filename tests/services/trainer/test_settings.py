"""Where the trainer's settings come from: option (and --set) > SMZ_TRAINER_* variable > config file >
default."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from services.cli import app
from services.trainer.settings import TrainerSettings, training_from
from shared.model.config import ModelConfig
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
    for name in ("SMZ_TRAINER_WORKERS", "SMZ_TRAINER_SEED", "SMZ_TRAINER_VALIDATE_EVERY", "SMZ_CONFIG"):
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


def test_smz_train_takes_flag_over_variable_over_file_and_routes_set(
    config_file: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """What `smz train` would run with (run_training stubbed): the [trainer] table's workers, seed and
    validate_every, SMZ_TRAINER_SEED over the file, --workers over both, --set over the file's
    validate_every and [training] td_steps; a model size goes to a fresh run's network."""
    import services.trainer.worker as worker

    runs: list[tuple[TrainerSettings, TrainingConfig, ModelConfig | None]] = []
    monkeypatch.setattr(worker, "run_training", lambda *run: runs.append(run) or {"ok": True})
    monkeypatch.setenv("SMZ_TRAINER_SEED", "9")
    argv = ["train", "--db", "m.duckdb", "--instrument", "SYNTHJPY", "--out", "runs/x", "--episodes", "1"]
    assignments = ["--set", "validate_every=128", "--set", "td-steps=25", "--set", "hidden=64"]
    done = CliRunner().invoke(app, [*argv, "--workers", "2", "--config", str(config_file), *assignments])
    assert done.exit_code == 0, done.output
    settings, training, model = runs[-1]
    assert (settings.workers, settings.seed, settings.validate_every) == (2, 9, 128)
    assert settings.sessions_per_round == 64  # the default
    assert (training.td_steps, training.batch_size, training.reward) == (25, 64, RECIPES["seed"]["reward"])
    assert model == ModelConfig(hidden=64)
    # The file from SMZ_CONFIG when --config is not given; --reward is a training option.
    monkeypatch.setenv("SMZ_CONFIG", str(config_file))
    done = CliRunner().invoke(app, [*argv, "--reward", "equity"])
    assert done.exit_code == 0, done.output
    settings, training, model = runs[-1]
    assert (settings.workers, settings.seed, training.td_steps, training.reward) == (3, 9, 12, "equity")
    assert model is None
    refused = CliRunner().invoke(app, [*argv, "--set", "hiden=64"])
    assert refused.exit_code == 2 and "unknown setting(s) hiden" in refused.output
    assert "--set" in refused.output and "hidden" in refused.output


def test_smz_train_help_shows_the_choices() -> None:
    shown = CliRunner().invoke(app, ["train", "--help"], env={"COLUMNS": "200"}).output
    assert "equity|seed" in shown and "equity|amddp1" in shown and "--set" in shown


def test_smz_train_ray_options(monkeypatch: pytest.MonkeyPatch) -> None:
    """--ray ADDRESS and --actors reach the settings; --ray with --workers is refused; without the ray
    extra, --ray says how to install it."""
    import services.trainer.ray_pool as ray_pool
    import services.trainer.worker as worker

    runs: list[TrainerSettings] = []
    monkeypatch.setattr(worker, "run_training", lambda settings, *rest: runs.append(settings) or {})
    argv = ["train", "--db", "m.duckdb", "--instrument", "SYNTHJPY", "--out", "runs/x", "--episodes", "1"]
    done = CliRunner().invoke(app, [*argv, "--ray", "10.0.0.5:6379", "--actors", "12"])
    assert done.exit_code == 0, done.output
    assert (runs[-1].ray, runs[-1].actors, runs[-1].workers) == ("10.0.0.5:6379", 12, 1)
    monkeypatch.setenv("SMZ_TRAINER_RAY", "auto")
    assert CliRunner().invoke(app, argv).exit_code == 0 and runs[-1].ray == "auto"
    refused = CliRunner().invoke(app, [*argv, "--workers", "2"])
    assert refused.exit_code == 2 and "not both" in refused.output
    monkeypatch.setattr(ray_pool, "ray", None)
    with pytest.raises(LookupError, match=r"pip install -e '\.\[ray\]'"):
        ray_pool.require_ray()
