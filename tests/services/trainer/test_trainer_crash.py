"""SIGKILL during a checkpoint write: the restart resumes from the last complete checkpoint."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from services.jobs.features import run_features
from services.jobs.synth import run_synth
from shared.model.checkpoint import TMP_PREFIX, verify_checkpoint
from shared.model.checkpoint_root import list_checkpoints

TRAIN = """
import sys
import time
from pathlib import Path
import shared.model.checkpoint
from services.trainer.settings import TrainerSettings
from services.trainer.worker import run_training
from shared.model.config import ModelConfig
from shared.training.config import TrainingConfig

settings = TrainerSettings(
    db=Path(sys.argv[1]), instrument="SYNTHJPY", out=Path(sys.argv[2]), episodes=int(sys.argv[3]),
    sessions_per_round=4, updates_per_round=3, validate_every=4, validation_sessions=2,
    min_validation_trades=0, threads=1, metrics_port=0,
)
config = TrainingConfig(replay_min_size=4, collect_simulations=2, validation_simulations=2, batch_size=8)
stall_from = int(sys.argv[4]) if len(sys.argv) > 4 else None
if stall_from is not None:  # the test seam: saves from this step on stall after their weights
    shared.model.checkpoint.before_manifest = lambda step: time.sleep(60) if step >= stall_from else None
print(run_training(settings, config, ModelConfig(hidden=32, tcn_channels=8, support_size=20)))
"""


@pytest.mark.slow
def test_sigkill_mid_checkpoint_then_resume(tmp_path: Path) -> None:
    db = tmp_path / "synth.duckdb"
    run_synth(db, "SYNTHJPY", 12_000, seed=4)
    run_features(db, "SYNTHJPY")
    out = tmp_path / "ckpt"
    # The first save (step 3) completes; the second (step 6) stalls after writing its weights.
    proc = subprocess.Popen([sys.executable, "-c", TRAIN, str(db), str(out), "1000", "6"])
    try:
        deadline = time.monotonic() + 240
        while time.monotonic() < deadline:
            steps = [m.training_step for m in list_checkpoints(out)] if out.exists() else []
            stalled = out.exists() and any(p.name.startswith(TMP_PREFIX) for p in out.iterdir())
            if steps == [3] and stalled:
                break
            assert proc.poll() is None, "the trainer exited before the stalled save"
            time.sleep(0.2)
        else:
            pytest.fail("never saw the second checkpoint being written")
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == -signal.SIGKILL
    # Only the complete checkpoint is visible, and it verifies; the half-written one is hidden.
    manifests = list_checkpoints(out)
    assert [m.training_step for m in manifests] == [3]
    verify_checkpoint(out / manifests[0].version)
    assert (out / "latest").read_text().strip() == manifests[0].version

    resumed = subprocess.run(
        [sys.executable, "-c", TRAIN, str(db), str(out), "4"], capture_output=True, text=True, timeout=300
    )
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert "resumed from" in resumed.stdout
    steps = [m.training_step for m in list_checkpoints(out)]
    assert steps[-1] == 6 and "'episodes': 8" in resumed.stdout
    for manifest in list_checkpoints(out):
        verify_checkpoint(out / manifest.version)
