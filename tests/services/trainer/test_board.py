"""A small training run writes TensorBoard events beside history.jsonl; read back, they hold the
history's scalars at step = episodes, and a resumed run goes on from its checkpoint's step."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from services.trainer.board import record_scalars
from services.trainer.state import read_history
from services.trainer.worker import run_training
from shared.model.checkpoint_root import list_checkpoints, write_pointer
from shared.model.config import ModelConfig
from shared.training.config import TrainingConfig
from tests.helpers import small_trainer_settings

SMALL = ModelConfig(hidden=32, tcn_channels=8, support_size=20)
FAST = TrainingConfig(replay_min_size=4, collect_simulations=4, validation_simulations=4, batch_size=16)

# Every tag of a round, written out.
ROUND_TAGS = {
    *(f"loss/{part}" for part in ("total", "policy", "value", "reward", "outcome")),
    *(f"selfplay/{name}" for name in ("temperature", "trades", "expectancy_pips", "weights_step")),
    *(f"selfplay/action_share/{action}" for action in ("HOLD", "BUY", "SELL", "CLOSE")),
    "replay/trajectories",
    "replay/trade_share",
    "speed/selfplay_bar_steps_per_second",
    "speed/updates_per_second",
    "progress/updates",
}


def expected_scalars(history: list[dict]) -> dict[str, dict[int, float]]:
    """``{tag: {episodes: value}}`` of the history's records; a later record at the same step wins."""
    out: dict[str, dict[int, float]] = {}
    for record in history:
        for tag, value in record_scalars(record).items():
            out.setdefault(tag, {})[record["episodes"]] = value
    return out


def read_events(root: Path) -> dict[str, list[tuple[int, float]]]:
    events = EventAccumulator(str(root / "tensorboard"), size_guidance={"scalars": 0})  # 0: keep all
    events.Reload()
    return {tag: [(e.step, e.value) for e in events.Scalars(tag)] for tag in events.Tags()["scalars"]}


def assert_events_match(root: Path) -> dict[str, list[tuple[int, float]]]:
    """The events hold each history scalar once, at its record's episode count, with its value."""
    events = read_events(root)
    history = read_history(root)
    expected = expected_scalars(history)
    assert set(events) == set(expected)
    for tag, points in events.items():
        assert [step for step, _ in points] == sorted(expected[tag]), tag  # each step once, in order
        for step, value in points:
            assert value == pytest.approx(expected[tag][step], rel=1e-6, nan_ok=True), (tag, step)
    # A few by hand, against the history's own fields.
    last_round = next(r for r in reversed(history) if r["kind"] == "round")
    last_validation = next(r for r in reversed(history) if r["kind"] == "validation")
    step = last_round["episodes"]
    assert dict(events["loss/total"])[step] == pytest.approx(last_round["loss_total"], rel=1e-6)
    assert dict(events["selfplay/temperature"])[step] == pytest.approx(last_round["temperature"])
    assert dict(events["selfplay/action_share/BUY"])[step] == pytest.approx(last_round["action_shares"][1])
    assert dict(events["replay/trajectories"])[step] == last_round["replay_trajectories"]
    assert dict(events["validation/pips_per_session"])[last_validation["episodes"]] == pytest.approx(
        last_validation["validation_pips_per_session"], rel=1e-6
    )
    return events


def test_events_mirror_history_and_resume_from_the_checkpoint(db: Path, tmp_path: Path) -> None:
    out = tmp_path / "run"
    settings = small_trainer_settings(db, out, episodes=8, validate_every=4)
    run_training(settings, FAST, SMALL)
    events = assert_events_match(out)
    validation = {name for name in events if name.startswith("validation/")}
    assert set(events) == ROUND_TAGS | validation
    assert {"validation/expectancy_pips", "validation/entry_margin", "validation/share_hold"} <= validation
    assert [step for step, _ in events["loss/total"]] == [4, 8]
    assert [step for step, _ in events["validation/pips_per_session"]] == [4, 8]
    assert [value for _, value in events["progress/updates"]] == [3, 6]

    # A crash after the round at 8 episodes, before its checkpoint was complete: the restart resumes
    # from the one at 4 and plays 8 again (with 2 updates a round, so its curves differ).
    first, second = list_checkpoints(out)
    shutil.rmtree(out / second.version)
    write_pointer(out, "latest", first.version)
    resumed = settings.model_copy(update={"updates_per_round": 2})
    assert run_training(resumed, FAST, SMALL)["episodes"] == 12
    assert len(list((out / "tensorboard").glob("events.out.tfevents.*"))) == 2
    events = assert_events_match(out)  # the crashed run's 8 is gone, the resumed run's is there
    assert [step for step, _ in events["loss/total"]] == [4, 8, 12]
    assert [value for _, value in events["progress/updates"]] == [3, 5, 7]
    assert [step for step, _ in events["validation/pips_per_session"]] == [4, 8, 12]


def test_a_history_field_without_a_tag_warns_and_is_left_out() -> None:
    record = {"kind": "round", "episodes": 4, "updates": 3, "temperature": 1.0, "new_field": 2.0}
    with pytest.warns(UserWarning, match="'new_field' has no TensorBoard tag"):
        scalars = record_scalars(record)
    assert scalars == {"progress/updates": 3.0, "selfplay/temperature": 1.0}
