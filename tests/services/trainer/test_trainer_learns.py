"""Learning is real: a CI-sized training run on the synthetic market earns a positive expectancy
and beats the random baseline by a wide margin.

The run is short (a smaller network, under three minutes on two cores) and seeded, uses the recipe
that ``smz train`` uses by default (docs/TRAINING.md: the equity reward, no policy loss, exploration
of entries with greedy position management), and the result is measured on the test split, which
training never sees, with the same evaluation as the baselines, the entry gate applied.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from services.jobs.evaluate import run_evaluate
from services.jobs.features import run_features
from services.jobs.synth import run_synth
from services.trainer.settings import TrainerSettings
from services.trainer.worker import run_training
from shared.model.checkpoint import read_manifest
from shared.model.checkpoint_root import resolve_checkpoint
from shared.model.config import ModelConfig
from shared.training.config import TrainingConfig

CI_MODEL = ModelConfig(hidden=64, tcn_channels=16)
CI_EPISODES = 768
# The `smz up` demo trains this same run (services/jobs/up.py). Measured 2026-12-04 on a 120,000-bar
# market with 16 validation sessions and no entry gate: 153 s of training, test split +19.50 pips over
# 50 trades (random -4.01, oracle +28.83). With the gate, 16 sessions were too few to show that edge
# (interval [-4.8, +31.5]), hence 200,000 bars and 64 sessions now.
CI_TRAINING = TrainingConfig(temperature_decay_episodes=CI_EPISODES)


def _ray_or_skip() -> str:
    pytest.importorskip("ray", reason="Ray is not installed (the ray extra: pip install -e '.[ray]')")
    return "local"


# Through Ray the run is not reproducible: the actor plays each round with the weights of whenever
# its call began (a round behind the learner, or more), and its seed takes the actor's process. Of the
# two runs made so far one passed (+25.76 pips over 116 trades) and the clean-clone CI run of c20bbec
# failed the test split's interval (+10.95 over 83 trades, interval from -1.63; validation +17.44,
# interval from +4.17): a coin flip is no CI test, so it runs only when asked (docs/SCALING.md).
RAY_LEARNING = pytest.mark.skipif(
    os.environ.get("SMZ_TEST_RAY_LEARNING") != "1",
    reason="opt-in (SMZ_TEST_RAY_LEARNING=1): the Ray run is not reproducible; it passed 1 of 2 runs",
)


@pytest.mark.slow
@pytest.mark.parametrize("pool", ["one process", pytest.param("ray", marks=RAY_LEARNING)])
def test_ci_sized_run_earns_and_beats_random(tmp_path: Path, pool: str) -> None:
    """``one process``: self-play and learning alternate; ``ray``: the same run with self-play in one
    Ray actor (a local Ray started by the run) beside the learner, as ``smz train --ray local``."""
    db = tmp_path / "synth.duckdb"
    run_synth(db, "SYNTHJPY", 200_000, seed=0)
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
        # Enough sessions for the entry gate to tell an edge from noise: on 16, an agent making +13
        # pips a trade over 19 trades had an interval of [-4.8, +31.5], and its gate closed.
        validation_sessions=64,
        threads=2,
        metrics_port=0,
        seed=0,
    )
    if pool == "ray":
        settings = settings.model_copy(update={"ray": _ray_or_skip(), "actors": 1})
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
    # The manifest says how it was trained, and validation showed an edge, so the entry gate is open.
    manifest = read_manifest(resolve_checkpoint(out, "best"))
    assert manifest.reward == "equity" and manifest.training["policy_weight"] == 0.0
    assert manifest.training["updates_per_round"] == 400 and manifest.training["instrument"] == "SYNTHJPY"
    assert agent["entry_gate"]["allow_entries"] is True and agent["reward"] == "equity"
    assert agent["health"] == "healthy" and agent["expectancy_ci95"][0] > 0, agent
    assert agent["trades"] >= 20, agent
    assert agent["expectancy_pips"] > MIN_EXPECTANCY_PIPS, agent
    assert agent["expectancy_pips"] > random["expectancy_pips"] + MARGIN_PIPS, (agent, random)


MIN_EXPECTANCY_PIPS = 4.0  # after the 4-pip spread: a real edge, not just losing less than random
MARGIN_PIPS = 8.0
