"""The checkpoint format: round trip, atomic saves, and refusal of every kind of mismatch."""

from __future__ import annotations

import json
import os
import pickle
import struct
from pathlib import Path

import pytest
import torch

from shared.model.checkpoint import (
    MANIFEST_FILE,
    TMP_PREFIX,
    WEIGHTS_FILE,
    CheckpointError,
    CheckpointManifest,
    load_checkpoint,
    read_manifest,
    save_checkpoint,
    verify_checkpoint,
)
from shared.model.checkpoint_root import list_checkpoints, read_pointer, resolve_checkpoint, write_pointer
from shared.model.config import ModelConfig
from shared.model.networks import MuZeroNetwork, parameter_count
from shared.schema import SCHEMA_HASH, SCHEMA_VERSION, SchemaMismatchError

SMALL = ModelConfig(hidden=32, tcn_channels=8, support_size=10)


def _small_model(seed: int = 0, cfg: ModelConfig = SMALL) -> MuZeroNetwork:
    torch.manual_seed(seed)
    return MuZeroNetwork(cfg).eval()


def _rewrite_manifest(checkpoint: Path, **changes: object) -> None:
    manifest_path = checkpoint / MANIFEST_FILE
    raw = json.loads(manifest_path.read_text())
    raw.update(changes)
    manifest_path.write_text(json.dumps(raw))


def _visible_entries(root: Path) -> list[str]:
    return sorted(p.name for p in root.iterdir() if not p.name.startswith("."))


def test_round_trip_is_bit_exact(tmp_path: Path) -> None:
    model = _small_model()
    path = save_checkpoint(tmp_path, model, training_step=12345, metrics={"loss": 0.5, "sharpe": 1.25})
    assert path == tmp_path / "step-000012345"
    assert sorted(p.name for p in path.iterdir()) == [MANIFEST_FILE, WEIGHTS_FILE]

    loaded = load_checkpoint(path)
    assert not loaded.model.training
    assert loaded.model.cfg == SMALL
    manifest = loaded.manifest
    assert manifest.version == "step-000012345"
    assert manifest.training_step == 12345
    assert manifest.metrics == {"loss": 0.5, "sharpe": 1.25}
    assert manifest.schema_hash == SCHEMA_HASH
    assert manifest.schema_version == SCHEMA_VERSION
    assert manifest.parameter_count == parameter_count(model)
    assert manifest.weights_bytes == (path / WEIGHTS_FILE).stat().st_size
    assert (
        manifest.created_at.utcoffset() is not None and manifest.created_at.utcoffset().total_seconds() == 0
    )

    generator = torch.Generator().manual_seed(1)
    window = torch.randn(16, SMALL.window, SMALL.n_features, generator=generator)
    action = torch.randint(0, SMALL.n_actions, (16,), generator=generator)
    outcome = torch.randint(0, SMALL.n_outcomes, (16,), generator=generator)
    with torch.no_grad():
        expected_initial = model.initial_inference(window)
        got_initial = loaded.model.initial_inference(window)
        for expected, got in zip(expected_initial, got_initial, strict=True):
            assert torch.equal(expected, got)
        expected_recurrent = model.recurrent_inference(expected_initial.hidden, action, outcome)
        got_recurrent = loaded.model.recurrent_inference(got_initial.hidden, action, outcome)
        for expected, got in zip(expected_recurrent, got_recurrent, strict=True):
            assert torch.equal(expected, got)
        assert torch.equal(
            model.outcome_logits(expected_initial.hidden, action),
            loaded.model.outcome_logits(got_initial.hidden, action),
        )
    for name, tensor in loaded.model.state_dict().items():
        assert tensor.dtype == torch.float32 and tensor.is_contiguous() and not tensor.is_meta, name
    assert all(p.requires_grad for p in loaded.model.parameters())  # a trainer can keep training it


def test_manifest_json_has_the_documented_fields(tmp_path: Path) -> None:
    path = save_checkpoint(tmp_path, _small_model(), version="run-a.1", training_step=7)
    raw = json.loads((path / MANIFEST_FILE).read_text())
    assert raw["format_version"] == 1
    assert raw["version"] == "run-a.1"
    assert raw["model_config"]["hidden"] == 32
    assert ModelConfig(**raw["model_config"]) == SMALL
    assert raw["metrics"] == {}
    assert raw["weights_file"] == WEIGHTS_FILE
    assert raw["extra"] == {}
    assert raw["created_at"].endswith("Z") or raw["created_at"].endswith("+00:00")
    assert read_manifest(path) == CheckpointManifest.model_validate(raw)


def test_weights_are_safetensors_and_load_without_pickle(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = save_checkpoint(tmp_path, _small_model(), training_step=1)
    data = (path / WEIGHTS_FILE).read_bytes()
    (header_len,) = struct.unpack("<Q", data[:8])
    header = json.loads(data[8 : 8 + header_len])
    assert header["__metadata__"] == {"format": "pt"}
    assert {entry["dtype"] for name, entry in header.items() if name != "__metadata__"} == {"F32"}

    def forbidden(*args: object, **kwargs: object) -> None:
        raise AssertionError("checkpoint loading must not unpickle")

    monkeypatch.setattr(torch, "load", forbidden)
    monkeypatch.setattr(pickle, "loads", forbidden)
    monkeypatch.setattr(pickle, "load", forbidden)
    load_checkpoint(path)


def test_loading_does_not_touch_the_global_rng(tmp_path: Path) -> None:
    path = save_checkpoint(tmp_path, _small_model(), training_step=1)
    state = torch.get_rng_state()
    load_checkpoint(path)
    assert torch.equal(state, torch.get_rng_state())


def test_tampered_weights_are_refused_by_sha256(tmp_path: Path) -> None:
    path = save_checkpoint(tmp_path, _small_model(), training_step=1)
    weights_path = path / WEIGHTS_FILE
    data = bytearray(weights_path.read_bytes())
    data[len(data) // 2] ^= 0x01
    weights_path.write_bytes(bytes(data))
    message = r"weights\.safetensors sha256 [0-9a-f]{64} does not match the manifest"
    with pytest.raises(CheckpointError, match=message) as error:
        load_checkpoint(path)
    assert str(path) in str(error.value)
    with pytest.raises(CheckpointError, match=message):
        verify_checkpoint(path)


def test_truncated_weights_are_refused(tmp_path: Path) -> None:
    path = save_checkpoint(tmp_path, _small_model(), training_step=1)
    weights_path = path / WEIGHTS_FILE
    weights_path.write_bytes(weights_path.read_bytes()[:-100])
    with pytest.raises(CheckpointError, match="truncated"):
        load_checkpoint(path)


def test_missing_weights_are_refused(tmp_path: Path) -> None:
    path = save_checkpoint(tmp_path, _small_model(), training_step=1)
    (path / WEIGHTS_FILE).unlink()
    with pytest.raises(CheckpointError, match="missing"):
        verify_checkpoint(path)


def test_schema_hash_mismatch_is_refused(tmp_path: Path) -> None:
    path = save_checkpoint(tmp_path, _small_model(), training_step=1)
    with pytest.raises(SchemaMismatchError, match="feature schema") as error:
        load_checkpoint(path, expected_schema_hash="0123456789abcdef")
    assert str(path) in str(error.value)
    _rewrite_manifest(path, schema_hash="fedcba9876543210")
    with pytest.raises(SchemaMismatchError, match="fedcba9876543210"):
        verify_checkpoint(path)


def test_weights_of_another_config_are_refused(tmp_path: Path) -> None:
    path = save_checkpoint(tmp_path, _small_model(), training_step=1)
    # The weights (and their sha256) are untouched; only the claimed config changes to the default.
    _rewrite_manifest(path, model_config=ModelConfig().model_dump(mode="json"))
    with pytest.raises(CheckpointError, match="does not fit") as error:
        load_checkpoint(path)
    assert "afterstate.blocks.0.fc1.weight (file F32[32, 32], model F32[256, 256])" in str(error.value)
    assert "shape/dtype mismatches" in str(error.value)


def test_unknown_config_field_is_refused(tmp_path: Path) -> None:
    path = save_checkpoint(tmp_path, _small_model(), training_step=1)
    _rewrite_manifest(path, model_config={**SMALL.model_dump(mode="json"), "heads": 4})
    with pytest.raises(CheckpointError, match="model_config this code cannot build"):
        verify_checkpoint(path)


def test_inconsistent_parameter_count_is_refused(tmp_path: Path) -> None:
    path = save_checkpoint(tmp_path, _small_model(), training_step=1)
    _rewrite_manifest(path, parameter_count=1)
    with pytest.raises(CheckpointError, match="parameter_count"):
        verify_checkpoint(path)


def test_missing_manifest_is_refused(tmp_path: Path) -> None:
    path = save_checkpoint(tmp_path, _small_model(), training_step=1)
    (path / MANIFEST_FILE).unlink()
    with pytest.raises(CheckpointError, match=r"manifest\.json is missing"):
        load_checkpoint(path)
    with pytest.raises(CheckpointError, match="is missing"):
        read_manifest(tmp_path / "nowhere")


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("{not json", "not valid JSON"),
        ("[1, 2]", "not an object"),
        ('{"format_version": 1}', "not a valid checkpoint manifest"),
    ],
)
def test_malformed_manifest_is_refused(tmp_path: Path, content: str, message: str) -> None:
    path = save_checkpoint(tmp_path, _small_model(), training_step=1)
    (path / MANIFEST_FILE).write_text(content)
    with pytest.raises(CheckpointError, match=message):
        load_checkpoint(path)


def test_other_format_version_is_refused(tmp_path: Path) -> None:
    path = save_checkpoint(tmp_path, _small_model(), training_step=1)
    _rewrite_manifest(path, format_version=2)
    with pytest.raises(CheckpointError, match="format_version 2, this code reads format 1"):
        verify_checkpoint(path)


def test_manifest_file_names_cannot_escape_the_checkpoint(tmp_path: Path) -> None:
    path = save_checkpoint(tmp_path, _small_model(), training_step=1)
    _rewrite_manifest(path, weights_file="../../etc/passwd")
    with pytest.raises(CheckpointError, match="not a valid checkpoint manifest"):
        verify_checkpoint(path)
    _rewrite_manifest(path, weights_file=WEIGHTS_FILE, extra={"../x": "0" * 64})
    with pytest.raises(CheckpointError, match="not a valid checkpoint manifest"):
        verify_checkpoint(path)


def test_existing_version_is_not_overwritten(tmp_path: Path) -> None:
    first = save_checkpoint(tmp_path, _small_model(seed=0), training_step=5)
    original = (first / WEIGHTS_FILE).read_bytes()
    with pytest.raises(CheckpointError, match="already exists"):
        save_checkpoint(tmp_path, _small_model(seed=1), training_step=5)
    assert (first / WEIGHTS_FILE).read_bytes() == original
    assert _visible_entries(tmp_path) == ["step-000000005"]
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(TMP_PREFIX)]


def test_a_racing_writer_is_not_clobbered(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    real_rename = os.rename

    def rename_after_a_rival(source: os.PathLike[str], destination: os.PathLike[str]) -> None:
        Path(destination).mkdir()
        (Path(destination) / "rival").write_text("first")
        real_rename(source, destination)

    monkeypatch.setattr(os, "rename", rename_after_a_rival)
    with pytest.raises(CheckpointError, match="appeared while saving"):
        save_checkpoint(tmp_path, _small_model(), training_step=5)
    assert (tmp_path / "step-000000005" / "rival").read_text() == "first"
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(TMP_PREFIX)]


@pytest.mark.parametrize("version", ["", ".hidden", "..", "a/b", "latest", "best", "x" * 129, "sp ace"])
def test_unsafe_versions_are_refused(tmp_path: Path, version: str) -> None:
    with pytest.raises(ValueError, match="version"):
        save_checkpoint(tmp_path, _small_model(), version=version, training_step=1)
    assert not list(tmp_path.iterdir())


def test_bad_arguments_are_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="not finite"):
        save_checkpoint(tmp_path, _small_model(), training_step=1, metrics={"loss": float("nan")})
    with pytest.raises(ValueError, match="training_step"):
        save_checkpoint(tmp_path, _small_model(), training_step=-1)
    with pytest.raises(ValueError, match="reserved"):
        save_checkpoint(tmp_path, _small_model(), training_step=1, extra_files={MANIFEST_FILE: b"{}"})
    with pytest.raises(ValueError, match="not safe"):
        save_checkpoint(tmp_path, _small_model(), training_step=1, extra_files={"../x": b""})
    assert not list(tmp_path.iterdir())


def test_crash_mid_write_leaves_no_visible_checkpoint(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def crash(*args: object) -> None:
        raise OSError("simulated crash before the rename")

    monkeypatch.setattr(os, "rename", crash)
    with pytest.raises(OSError, match="simulated crash"):
        save_checkpoint(tmp_path, _small_model(), training_step=3)
    monkeypatch.undo()
    assert _visible_entries(tmp_path) == []
    assert list_checkpoints(tmp_path) == []

    # A process killed outright leaves its temp dir behind, complete or not: it stays invisible.
    good = save_checkpoint(tmp_path, _small_model(), training_step=1)
    leftover = tmp_path / f"{TMP_PREFIX}step-000000009-deadbeef"
    leftover.mkdir()
    for name in (WEIGHTS_FILE, MANIFEST_FILE):
        (leftover / name).write_bytes((good / name).read_bytes())
    half = tmp_path / f"{TMP_PREFIX}step-000000010-cafef00d"
    half.mkdir()
    (half / WEIGHTS_FILE).write_bytes(b"\x00" * 10)
    assert [m.training_step for m in list_checkpoints(tmp_path)] == [1]
    assert resolve_checkpoint(tmp_path) == good


def test_extra_files_are_stored_and_verified(tmp_path: Path) -> None:
    source = tmp_path / "replay-source.npz"
    source.write_bytes(os.urandom(3 * 1024 * 1024 + 17))  # more than one hashing chunk
    root = tmp_path / "checkpoints"
    path = save_checkpoint(
        root,
        _small_model(),
        training_step=2,
        extra_files={"optimizer.safetensors": b"optimiser state", "replay.npz": source},
    )
    manifest = verify_checkpoint(path)
    assert set(manifest.extra) == {"optimizer.safetensors", "replay.npz"}
    assert (path / "replay.npz").read_bytes() == source.read_bytes()
    assert (path / "optimizer.safetensors").read_bytes() == b"optimiser state"

    (path / "replay.npz").write_bytes(b"tampered")
    with pytest.raises(CheckpointError, match=r"replay\.npz sha256 [0-9a-f]{64} does not match"):
        verify_checkpoint(path)
    with pytest.raises(CheckpointError, match=r"replay\.npz"):
        load_checkpoint(path)
    # A service that only serves weights can skip hashing the trainer's files.
    assert load_checkpoint(path, check_extra_files=False).manifest == manifest

    (path / "replay.npz").unlink()
    with pytest.raises(CheckpointError, match="listed in the manifest but missing"):
        verify_checkpoint(path)


def test_list_checkpoints_sorts_by_step_and_skips_broken(tmp_path: Path) -> None:
    for step in (30, 10, 20):
        save_checkpoint(tmp_path, _small_model(), training_step=step)
    (tmp_path / "broken").mkdir()
    (tmp_path / "broken" / MANIFEST_FILE).write_text("{")
    (tmp_path / "empty").mkdir()
    (tmp_path / "stray-file").write_text("x")
    assert [m.training_step for m in list_checkpoints(tmp_path)] == [10, 20, 30]
    assert list_checkpoints(tmp_path / "absent") == []


def test_pointers_and_resolve(tmp_path: Path) -> None:
    with pytest.raises(CheckpointError, match="no checkpoints"):
        resolve_checkpoint(tmp_path)
    paths = {step: save_checkpoint(tmp_path, _small_model(), training_step=step) for step in (10, 30, 20)}

    # No pointer: latest falls back to the highest step; best needs a pointer.
    assert resolve_checkpoint(tmp_path) == paths[30]
    with pytest.raises(CheckpointError, match="no 'best' pointer"):
        resolve_checkpoint(tmp_path, "best")

    assert read_pointer(tmp_path, "best") is None
    pointer = write_pointer(tmp_path, "best", "step-000000020")
    assert pointer.read_text() == "step-000000020\n"
    assert read_pointer(tmp_path, "best") == "step-000000020"
    assert resolve_checkpoint(tmp_path, "best") == paths[20]
    write_pointer(tmp_path, "latest", "step-000000010")  # the pointer wins over the highest step
    assert resolve_checkpoint(tmp_path, "latest") == paths[10]
    write_pointer(tmp_path, "latest", "step-000000030")  # replaced in place
    assert resolve_checkpoint(tmp_path) == paths[30]
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(TMP_PREFIX)]
    # Pointer files do not show up as checkpoints.
    assert [m.training_step for m in list_checkpoints(tmp_path)] == [10, 20, 30]

    # A checkpoint directory resolves to itself; a version name pins that version.
    assert resolve_checkpoint(paths[20]) == paths[20]
    assert resolve_checkpoint(tmp_path, "step-000000010") == paths[10]
    with pytest.raises(CheckpointError, match="available"):
        resolve_checkpoint(tmp_path, "step-000000099")
    with pytest.raises(CheckpointError, match="neither"):
        resolve_checkpoint(tmp_path / "absent")

    # Pointers must name a real checkpoint; a dangling or garbled one is reported.
    with pytest.raises(CheckpointError, match="not a checkpoint"):
        write_pointer(tmp_path, "best", "step-000000099")
    with pytest.raises(ValueError, match="pointer name"):
        write_pointer(tmp_path, "newest", "step-000000010")
    (tmp_path / "best").write_text("step-000000099\n")
    with pytest.raises(CheckpointError, match="deleted"):
        resolve_checkpoint(tmp_path, "best")
    (tmp_path / "best").write_text("../../etc\n")
    with pytest.raises(CheckpointError, match="rewrite it"):
        resolve_checkpoint(tmp_path, "best")

    # What a service does: resolve, then verify and load.
    loaded = load_checkpoint(resolve_checkpoint(tmp_path))
    assert loaded.manifest.training_step == 30


def test_default_size_model_round_trips(tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = MuZeroNetwork().eval()
    path = save_checkpoint(tmp_path, model, training_step=0)
    loaded = load_checkpoint(path)
    assert loaded.manifest.parameter_count == parameter_count(model) == parameter_count(loaded.model)
    original = model.state_dict()
    for name, tensor in loaded.model.state_dict().items():
        assert torch.equal(tensor, original[name]), name
