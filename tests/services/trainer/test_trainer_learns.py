"""Learning is real: a CI-sized training run on the synthetic market beats the random baseline.

The run is short (a smaller network, a few minutes on two cores) and seeded, and the result is
measured on the test split, which training never sees, with the same evaluation as the baselines.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from services.jobs.evaluate import run_evaluate
from services.jobs.features import run_features
from services.jobs.synth import run_synth
from services.trainer.settings import TrainerSettings
from services.trainer.worker import run_training
from shared.model.config import ModelConfig
from shared.training.config import TrainingConfig

CI_MODEL = ModelConfig(hidden=64, tcn_channels=16)
CI_TRAINING = TrainingConfig(initial_temperature=1.0)


@pytest.mark.slow
def test_ci_sized_run_beats_random(tmp_path: Path) -> None:
    db = tmp_path / "synth.duckdb"
    run_synth(db, "SYNTHJPY", 120_000, seed=0)
    run_features(db, "SYNTHJPY")
    out = tmp_path / "ckpt"
    settings = TrainerSettings(
        db=db,
        instrument="SYNTHJPY",
        out=out,
        episodes=CI_EPISODES,
        sessions_per_round=128,
        updates_per_round=400,
        validate_every=CI_EPISODES,  # one validation, at the end
        validation_sessions=16,
        threads=2,
        metrics_port=0,
        seed=0,
    )
    began = time.monotonic()
    run_training(settings, CI_TRAINING, CI_MODEL)
    trained = time.monotonic() - began
    agent, _ = run_evaluate(db, "SYNTHJPY", "test", "muzero", checkpoint=out)
    random, _ = run_evaluate(db, "SYNTHJPY", "test", "random")
    print(
        f"trained {CI_EPISODES} episodes in {trained:.0f} s; test split: agent "
        f"{agent['expectancy_pips']:+.2f} pips over {agent['trades']} trades, random "
        f"{random['expectancy_pips']:+.2f} over {random['trades']}"
    )
    assert agent["trades"] >= 20, agent
    assert agent["expectancy_pips"] > random["expectancy_pips"] + MARGIN_PIPS, (agent, random)


CI_EPISODES = 768
MARGIN_PIPS = 2.0
