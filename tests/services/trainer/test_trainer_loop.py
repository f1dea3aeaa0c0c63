"""The training loop on a small synthetic market: it learns, checkpoints, retains and resumes."""

from __future__ import annotations

import json
import socket
import urllib.request
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from services.cli import app
from services.trainer.settings import TrainerSettings
from services.trainer.state import read_history
from services.trainer.worker import run_training
from shared.model.checkpoint import load_checkpoint
from shared.model.checkpoint_root import list_checkpoints, read_pointer, resolve_checkpoint
from shared.model.config import ModelConfig
from shared.training.config import TrainingConfig
from tests.helpers import small_trainer_settings

SMALL = ModelConfig(hidden=32, tcn_channels=8, support_size=20)
FAST = TrainingConfig(replay_min_size=4, collect_simulations=4, validation_simulations=4, batch_size=16)


def settings(db: Path, out: Path, episodes: int) -> TrainerSettings:
    return small_trainer_settings(db, out, episodes, validate_every=4)


def test_trains_checkpoints_and_resumes(db: Path, tmp_path: Path) -> None:
    out = tmp_path / "ckpt"
    first = run_training(settings(db, out, episodes=8), FAST, SMALL)
    assert first["episodes"] == 8 and first["updates"] == 6  # replay ready after the first round
    versions = [m.version for m in list_checkpoints(out)]
    assert len(versions) == 2 and read_pointer(out, "latest") == versions[-1]
    assert read_pointer(out, "best") in versions
    latest = load_checkpoint(resolve_checkpoint(out))
    assert latest.manifest.training_step == 6 and "validation_expectancy_pips" in latest.manifest.metrics
    weights_before = {k: v.clone() for k, v in latest.model.state_dict().items()}

    second = run_training(settings(db, out, episodes=8), FAST, SMALL)
    assert second["episodes"] == 16 and second["updates"] == 12
    manifests = list_checkpoints(out)
    # Last two plus best are kept; older ones are removed.
    assert len(manifests) <= 3 and manifests[-1].training_step == 12
    resumed = load_checkpoint(resolve_checkpoint(out))
    changed = any(not torch.equal(weights_before[k], v) for k, v in resumed.model.state_dict().items())
    assert changed  # learning went on from the resumed weights

    # The same evaluation as the baselines, through the CLI, on the checkpoint root (its best).
    result = CliRunner().invoke(
        app,
        [
            "evaluate",
            "--db",
            str(db),
            "--instrument",
            "SYNTHJPY",
            "--checkpoint",
            str(out),
            "--split",
            "test",
        ],
    )
    assert result.exit_code == 0, result.output
    report = json.loads(result.output.strip().splitlines()[-1])
    assert report["policy"] == "muzero" and report["checkpoint"] == read_pointer(out, "best")
    assert report["decisions"] == report["sessions"] * 360

    # The training report: curves from the history, the validation equity of the best checkpoint.
    result = CliRunner().invoke(app, ["report", str(out)])
    assert result.exit_code == 0, result.output
    pngs = [Path(line) for line in result.output.split()]
    assert {p.name for p in pngs} == {"training.png", "validation_equity.png"}
    assert all(p.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and p.stat().st_size > 10_000 for p in pngs)


def test_refuses_a_missing_budget(db: Path, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="--minutes or --episodes"):
        run_training(TrainerSettings(db=db, instrument="SYNTHJPY", out=tmp_path / "x"), FAST, SMALL)


def test_two_workers_overlap_selfplay_with_learning_and_resume(db: Path, tmp_path: Path) -> None:
    """A self-play process feeds the learner, plays with the weights it publishes, keeps the
    single-process ratio of updates per episode, and a restart resumes from the checkpoint."""
    out = tmp_path / "w2"
    two = settings(db, out, episodes=12).model_copy(update={"workers": 2, "publish_every": 2})
    first = run_training(two, FAST, SMALL)
    assert first["episodes"] == 12 and first["updates"] == 9  # 3 updates per round of 4, as one process
    rounds = [r for r in read_history(out) if r["kind"] == "round"]
    assert [r["episodes"] for r in rounds] == [4, 8, 12]
    # Weights reached self-play: later rounds were played by weights the learner had published.
    assert rounds[0]["selfplay_weights_step"] == 0
    assert max(r["selfplay_weights_step"] for r in rounds) > 0
    assert all(r["selfplay_weights_step"] <= r["updates"] for r in rounds)
    assert load_checkpoint(resolve_checkpoint(out)).manifest.training_step == 9

    second = run_training(two.model_copy(update={"episodes": 4}), FAST, SMALL)
    assert second["episodes"] == 16 and second["updates"] == 12


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _scrape(port: int) -> str:
    return urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10).read().decode()


def test_prometheus_metrics_are_served(db: Path, tmp_path: Path) -> None:
    port = _free_port()
    run_training(
        settings(db, tmp_path / "m", episodes=8).model_copy(update={"metrics_port": port}), FAST, SMALL
    )
    body = _scrape(port)
    assert "smz_trainer_episodes_total 8.0" in body
    assert "smz_trainer_updates_total 6.0" in body
    for series in (
        'smz_trainer_loss{component="outcome"}',
        "smz_trainer_weighted_loss",
        'smz_trainer_selfplay_action_ratio{action="HOLD"}',
        "smz_trainer_validation_expectancy_pips",
        'smz_trainer_validation_action_ratio{action="HOLD"}',
        "smz_trainer_validation_entry_margin",
        "smz_trainer_replay_trade_ratio",
        "smz_trainer_selfplay_bar_steps_per_second",
        "smz_trainer_updates_per_second",
    ):
        assert series in body, series
    assert 'component="total"' not in body  # the parts only: the weighted sum is its own gauge

    # A resumed run's counters go on from the checkpoint's counts instead of restarting at 0.
    resumed_port = _free_port()
    resumed = run_training(
        settings(db, tmp_path / "m", episodes=4).model_copy(update={"metrics_port": resumed_port}),
        FAST,
        SMALL,
    )
    assert resumed["episodes"] == 12
    body = _scrape(resumed_port)
    assert "smz_trainer_episodes_total 12.0" in body
    assert f"smz_trainer_updates_total {float(resumed['updates'])}" in body
    assert float(resumed["updates"]) > 6
