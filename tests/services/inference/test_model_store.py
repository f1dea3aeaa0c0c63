"""The model store: what it loads, what it refuses, and that the old model keeps serving."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from services.inference.metrics import InferenceMetrics
from services.inference.model_store import ModelStore, NoModelError
from services.inference.settings import InferenceSettings
from shared.model.checkpoint import MANIFEST_FILE, WEIGHTS_FILE
from shared.model.checkpoint_root import write_pointer
from tests.services.inference.helpers import save_version


def store_for(root: Path, **settings: object) -> tuple[ModelStore, InferenceMetrics]:
    metrics = InferenceMetrics()
    return ModelStore(
        InferenceSettings(checkpoint_dir=root, stream_enabled=False, **settings), metrics
    ), metrics


def failures(metrics: InferenceMetrics) -> float:
    return metrics.registry.get_sample_value("smz_inference_model_load_failures_total") or 0.0


def test_loads_the_latest_pointer_and_follows_it(root: Path) -> None:
    store, metrics = store_for(root)
    with pytest.raises(NoModelError):
        store.require()
    assert store.poll() and store.require().version == "v1"
    assert metrics.registry.get_sample_value("smz_inference_model_info", {"version": "v1"}) == 1
    assert not store.poll()  # unchanged pointer: nothing to do
    save_version(root, "v2", seed=2, step=2)
    assert store.poll() and store.require().version == "v2"
    assert metrics.registry.get_sample_value("smz_inference_model_info", {"version": "v1"}) is None
    assert metrics.registry.get_sample_value("smz_inference_model_info", {"version": "v2"}) == 1
    assert store.require().config.hidden == 32
    assert failures(metrics) == 0
    # The model's age counts from when the trainer wrote it, not from when this process loaded it.
    created = metrics.registry.get_sample_value("smz_inference_model_created_timestamp_seconds")
    loaded = metrics.registry.get_sample_value("smz_inference_model_loaded_timestamp_seconds")
    assert created == store.require().manifest.created_at.timestamp()
    assert loaded == store.require().loaded_at and created <= loaded


def _corrupt(path: Path) -> None:
    data = bytearray((path / WEIGHTS_FILE).read_bytes())
    data[len(data) // 2] ^= 0xFF  # same size: only the sha256 catches it
    (path / WEIGHTS_FILE).write_bytes(bytes(data))


def _truncate(path: Path) -> None:
    weights = path / WEIGHTS_FILE
    weights.write_bytes(weights.read_bytes()[:1000])


def _foreign_schema(path: Path) -> None:
    manifest = json.loads((path / MANIFEST_FILE).read_text())
    manifest["schema_hash"] = "0123456789abcdef"
    (path / MANIFEST_FILE).write_text(json.dumps(manifest))


def _missing_weights(path: Path) -> None:
    (path / WEIGHTS_FILE).unlink()


def _unknown_reward(path: Path) -> None:
    manifest = json.loads((path / MANIFEST_FILE).read_text())
    manifest["training"] = {"reward": "sharpe"}
    (path / MANIFEST_FILE).write_text(json.dumps(manifest))


@pytest.mark.parametrize(
    ("breakage", "reason"),
    [
        (_corrupt, "sha256"),
        (_truncate, "truncated"),
        (_foreign_schema, "feature schema"),
        (_missing_weights, "missing"),
        (_unknown_reward, "unknown reward 'sharpe'"),
    ],
)
def test_a_broken_checkpoint_is_refused_and_the_old_one_keeps_serving(
    root: Path, breakage: object, reason: str
) -> None:
    store, metrics = store_for(root)
    assert store.poll()
    broken = save_version(root, "v2", seed=2, point=False)
    breakage(broken)  # type: ignore[operator]
    write_pointer(root, "latest", "v2")
    assert not store.poll()
    assert store.require().version == "v1"
    assert failures(metrics) == 1
    assert store.last_error is not None and reason in store.last_error and "v2" in store.last_error
    assert not store.poll() and failures(metrics) == 1  # not retried at once, nor counted twice
    save_version(root, "v3", seed=3, step=3)
    assert store.poll() and store.require().version == "v3"
    assert store.last_error is None


def test_the_served_model_names_the_reward_it_was_trained_with(root: Path) -> None:
    store, _ = store_for(root)
    assert store.poll()
    v1 = store.require()  # its manifest predates the training section: the seed's reward
    assert (v1.reward, v1.pips_per_reward) == ("amddp1", 10.0)
    save_version(root, "v2", seed=2, step=2, training={"reward": "pips", "pips_per_reward": 5.0})
    assert store.poll()
    v2 = store.require()  # an earlier release's name of the equity reward
    assert (v2.reward, v2.pips_per_reward) == ("equity", 5.0)
    described = v2.describe()
    assert (described["reward"], described["pips_per_reward"]) == ("equity", 5.0)
    assert described["training"] == {"reward": "pips", "pips_per_reward": 5.0}


def test_a_pointer_to_a_missing_directory_is_refused(root: Path) -> None:
    store, metrics = store_for(root)
    assert store.poll()
    (root / "latest").write_text("gone\n")
    assert not store.poll()
    assert store.require().version == "v1" and failures(metrics) == 1


def test_a_pinned_version_ignores_the_pointer(root: Path) -> None:
    save_version(root, "v2", seed=2, step=2)  # latest -> v2
    store, metrics = store_for(root, model_version="v1")
    assert store.poll() and store.require().version == "v1"
    save_version(root, "v3", seed=3, step=3)
    assert not store.poll() and store.require().version == "v1"
    assert failures(metrics) == 0


def test_a_pinned_version_not_written_yet_is_awaited_without_counting_a_failure(root: Path) -> None:
    store, metrics = store_for(root, model_version="v9")
    assert not store.poll() and not store.poll()
    assert store.current() is None and failures(metrics) == 0
    assert store.last_error is not None and "v9" in store.last_error
    save_version(root, "v9", seed=9, point=False)
    assert store.poll() and store.require().version == "v9"


def test_follow_best(root: Path) -> None:
    store, _ = store_for(root, follow="best")
    assert not store.poll() and store.current() is None  # no best pointer yet
    write_pointer(root, "best", "v1")
    save_version(root, "v2", seed=2, step=2)  # latest moves, best stays
    assert store.poll() and store.require().version == "v1"


def test_a_refused_checkpoint_is_retried_until_it_verifies(root: Path) -> None:
    """A copy that wrote the manifest before the weights: refused while the weights are missing or
    partial, loaded once they are complete, with the manifest never touched again."""
    store, metrics = store_for(root, reload_seconds=0.05)
    assert store.poll()
    complete = save_version(root, "v2", seed=2, step=2, point=False)
    weights = (complete / WEIGHTS_FILE).read_bytes()
    (complete / WEIGHTS_FILE).write_bytes(weights[: len(weights) // 2])  # the copy is half-way
    write_pointer(root, "latest", "v2")
    assert not store.poll() and store.require().version == "v1" and failures(metrics) == 1
    (complete / WEIGHTS_FILE).write_bytes(weights)  # the copy completes: a file changed, tried at once
    assert store.poll() and store.require().version == "v2"
    assert store.last_error is None and failures(metrics) == 1


def test_an_unchanged_refused_checkpoint_is_retried_with_a_backoff(root: Path) -> None:
    store, metrics = store_for(root, reload_seconds=0.05)
    assert store.poll()
    broken = save_version(root, "v2", seed=2, step=2, point=False)
    manifest = json.loads((broken / MANIFEST_FILE).read_text())
    (broken / MANIFEST_FILE).write_text(json.dumps({**manifest, "schema_hash": "0" * 16}))
    write_pointer(root, "latest", "v2")
    assert not store.poll() and failures(metrics) == 1
    time.sleep(0.06)
    assert not store.poll() and failures(metrics) == 1  # tried again, still refused, counted once
    assert store._retry_wait == pytest.approx(0.1)  # the next try waits twice as long
    assert store.last_error is not None and "v2" in store.last_error
