"""The checkpoint format every service shares: safetensors weights plus a JSON manifest.

A checkpoint is a directory ``<root>/<version>/`` holding ``weights.safetensors`` (the model's state
dict, float32, contiguous), ``manifest.json`` (model config, feature schema hash, training step,
metrics, sha256 and size of every file) and optionally extra files a trainer adds (optimiser state,
replay buffer), each listed in the manifest with its sha256.

Nothing here unpickles: weights are safetensors, the manifest is JSON. Loading checks the format
version, the schema hash, the config, the weights' size and sha256 and their tensor names, shapes
and dtypes before any tensor is built, and refuses a mismatch with a ``CheckpointError`` (or
``SchemaMismatchError``) that names the path, what is wrong and what to do.

Saving is atomic: everything is written and fsynced in a hidden sibling ``<root>/.tmp-<version>-*``
and renamed into place, so a crash never leaves a half-written checkpoint visible. Pointer files
``<root>/latest`` and ``<root>/best`` hold a version name and are replaced atomically too.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import re
import secrets
import shutil
import struct
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Final

import safetensors.torch
import torch
from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, ValidationError, field_validator

from shared.model.config import ModelConfig
from shared.model.networks import MuZeroNetwork, parameter_count
from shared.reward import reward_name
from shared.schema import SCHEMA_HASH, SCHEMA_VERSION, SchemaMismatchError

FORMAT_VERSION: Final = 1
WEIGHTS_FILE: Final = "weights.safetensors"
MANIFEST_FILE: Final = "manifest.json"
TMP_PREFIX: Final = ".tmp-"
POINTER_NAMES: Final = ("latest", "best")

# Versions and file names become path components: letters, digits, '.', '_', '-', not starting with
# '.' (so never '..', never a hidden temp dir) and short enough for any file system.
_SAFE_NAME = re.compile(r"[A-Za-z0-9_-][A-Za-z0-9._-]{0,127}")
_SHA256_HEX = re.compile(r"[0-9a-f]{64}")
_RESERVED_FILE_NAMES: Final = (WEIGHTS_FILE, MANIFEST_FILE)
_HASH_CHUNK: Final = 1 << 20
_MAX_LISTED: Final = 10  # names listed per kind of mismatch in an error message


class CheckpointError(Exception):
    """A checkpoint is missing, malformed, tampered with, or does not fit this code."""


def _is_safe_name(name: str) -> bool:
    return _SAFE_NAME.fullmatch(name) is not None


def validate_version(version: str) -> str:
    """Return ``version`` if it is usable as a checkpoint directory name, else raise ValueError."""
    if not _is_safe_name(version):
        raise ValueError(
            f"checkpoint version {version!r} is not a safe directory name: use 1-128 of "
            "A-Z a-z 0-9 . _ - and do not start with '.'"
        )
    if version in POINTER_NAMES:
        raise ValueError(f"checkpoint version {version!r} is reserved for the pointer file of that name")
    return version


def _validate_file_name(name: str) -> str:
    if not _is_safe_name(name):
        raise ValueError(
            f"checkpoint file name {name!r} is not safe: use 1-128 of A-Z a-z 0-9 . _ - "
            "and do not start with '.'"
        )
    return name


class CheckpointManifest(BaseModel):
    """``manifest.json``: what the weights are, what they were trained on, and how to check them."""

    # Additive fields do not bump format_version, so an older reader ignores ones it does not know.
    model_config = ConfigDict(frozen=True, extra="ignore", populate_by_name=True)

    format_version: int = FORMAT_VERSION
    version: str
    created_at: AwareDatetime
    # "model_config" is pydantic's own attribute name, so the field is renamed in Python only.
    network_config: dict[str, Any] = Field(alias="model_config")
    schema_version: int
    schema_hash: str
    training_step: int = Field(ge=0)
    metrics: dict[str, float] = Field(default_factory=dict)
    parameter_count: int = Field(ge=0)
    weights_file: str = WEIGHTS_FILE
    weights_sha256: str
    weights_bytes: int = Field(ge=0)
    extra: dict[str, str] = Field(default_factory=dict)  # extra file name -> sha256
    # How it was trained: every training setting (TrainingConfig, the reward among them) and the
    # trainer's settings. The backtest and the live stack compute the reward it names.
    training: dict[str, Any] = Field(default_factory=dict)
    # How to serve it: the entry gate chosen on the validation split (shared.search.config.EntryGate).
    serving: dict[str, Any] = Field(default_factory=dict)

    @property
    def reward(self) -> str:
        """The reward the model was trained with; a manifest without one predates the equity default."""
        return reward_name(str(self.training.get("reward", "amddp1")))

    @field_validator("version")
    @classmethod
    def _check_version(cls, version: str) -> str:
        return validate_version(version)

    @field_validator("weights_file")
    @classmethod
    def _check_weights_file(cls, name: str) -> str:
        return _validate_file_name(name)

    @field_validator("weights_sha256")
    @classmethod
    def _check_weights_sha256(cls, digest: str) -> str:
        if _SHA256_HEX.fullmatch(digest) is None:
            raise ValueError(f"weights_sha256 {digest!r} is not 64 lower-case hex digits")
        return digest

    @field_validator("extra")
    @classmethod
    def _check_extra(cls, extra: dict[str, str]) -> dict[str, str]:
        for name, digest in extra.items():
            _validate_file_name(name)
            if name in _RESERVED_FILE_NAMES:
                raise ValueError(f"extra file name {name!r} is reserved")
            if _SHA256_HEX.fullmatch(digest) is None:
                raise ValueError(f"sha256 of extra file {name!r} is not 64 lower-case hex digits")
        return extra

    def to_json(self) -> str:
        return json.dumps(self.model_dump(mode="json", by_alias=True), indent=2) + "\n"


@dataclass(frozen=True)
class LoadedCheckpoint:
    path: Path
    manifest: CheckpointManifest
    model: MuZeroNetwork  # in eval mode


# ---------------------------------------------------------------------------------------------
# Saving


def fsync_dir(directory: Path) -> None:
    """Make a directory's entries (new files, renames) durable, not just the files' bytes."""
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_bytes_durably(path: Path, data: bytes) -> None:
    with open(path, "xb") as file:
        file.write(data)
        file.flush()
        os.fsync(file.fileno())


def _copy_durably(source: Path, destination: Path) -> str:
    """Copy a file in chunks, fsync it, and return the sha256 of what was written."""
    digest = hashlib.sha256()
    with open(source, "rb") as reader, open(destination, "xb") as writer:
        while chunk := reader.read(_HASH_CHUNK):
            digest.update(chunk)
            writer.write(chunk)
        writer.flush()
        os.fsync(writer.fileno())
    return digest.hexdigest()


def _state_dict_for_saving(model: MuZeroNetwork) -> dict[str, torch.Tensor]:
    tensors: dict[str, torch.Tensor] = {}
    for name, tensor in model.state_dict().items():
        if not tensor.is_floating_point():
            raise CheckpointError(
                f"state dict entry {name!r} has dtype {tensor.dtype}; the checkpoint format holds "
                "float32 tensors only"
            )
        tensors[name] = tensor.detach().to(device="cpu", dtype=torch.float32).contiguous()
    return tensors


# A test seam: called with the training step once the weights are written and before the manifest
# is. The crash test sets it (in the trainer process it starts) to stall a save, so it can SIGKILL the
# writer half-way; nothing else sets it.
before_manifest: Callable[[int], None] | None = None


def _finite_metrics(metrics: Mapping[str, float]) -> dict[str, float]:
    values = {name: float(value) for name, value in metrics.items()}
    non_finite = sorted(name for name, value in values.items() if not math.isfinite(value))
    if non_finite:
        raise ValueError(f"metrics {non_finite} are not finite; JSON cannot hold them, drop or replace them")
    return values


def _checked_extra_files(extra_files: Mapping[str, bytes | Path]) -> dict[str, bytes | Path]:
    for name in extra_files:
        _validate_file_name(name)
        if name in _RESERVED_FILE_NAMES:
            raise ValueError(f"extra file name {name!r} is reserved for the checkpoint itself")
    return dict(extra_files)


def _write_extra_file(path: Path, content: bytes | Path) -> str:
    """Write one extra file durably (bytes, or a copy of a file); return its sha256."""
    if isinstance(content, bytes | bytearray | memoryview):
        write_bytes_durably(path, bytes(content))
        return hashlib.sha256(content).hexdigest()
    return _copy_durably(Path(content), path)


def save_checkpoint(
    root: Path,
    model: MuZeroNetwork,
    *,
    version: str | None = None,
    training_step: int,
    metrics: Mapping[str, float] | None = None,
    extra_files: Mapping[str, bytes | Path] | None = None,
    training: Mapping[str, Any] | None = None,
    serving: Mapping[str, Any] | None = None,
) -> Path:
    """Write ``model`` as ``<root>/<version>/`` atomically and return that directory.

    ``version`` defaults to ``step-<training_step, 9 digits>``. ``extra_files`` maps a file name to
    its bytes or to a file to copy; each is stored beside the weights and its sha256 recorded.
    ``training`` and ``serving`` go into the manifest as they are (JSON values). An existing version
    is never overwritten.
    """
    root = Path(root)
    if training_step < 0:
        raise ValueError(f"training_step must be >= 0, got {training_step}")
    version = validate_version(version if version is not None else f"step-{training_step:09d}")
    metrics = _finite_metrics(metrics or {})
    extra_files = _checked_extra_files(extra_files or {})

    final_dir = root / version
    if final_dir.exists():
        raise CheckpointError(
            f"checkpoint {final_dir} already exists; checkpoints are never overwritten, "
            "save under another version or delete the old one first"
        )

    weights = safetensors.torch.save(_state_dict_for_saving(model), metadata={"format": "pt"})
    root.mkdir(parents=True, exist_ok=True)
    temp_dir = root / f"{TMP_PREFIX}{version}-{secrets.token_hex(4)}"
    temp_dir.mkdir()
    try:
        write_bytes_durably(temp_dir / WEIGHTS_FILE, weights)
        if before_manifest is not None:
            before_manifest(training_step)
        extra_hashes = {
            name: _write_extra_file(temp_dir / name, content) for name, content in extra_files.items()
        }
        manifest = CheckpointManifest(
            format_version=FORMAT_VERSION,
            version=version,
            created_at=datetime.now(UTC),
            network_config=model.cfg.model_dump(mode="json"),
            schema_version=SCHEMA_VERSION,
            schema_hash=SCHEMA_HASH,
            training_step=training_step,
            metrics=metrics,
            parameter_count=parameter_count(model),
            weights_file=WEIGHTS_FILE,
            weights_sha256=hashlib.sha256(weights).hexdigest(),
            weights_bytes=len(weights),
            extra=extra_hashes,
            training=dict(training or {}),
            serving=dict(serving or {}),
        )
        # The manifest goes last: a directory with a manifest has everything the manifest names.
        write_bytes_durably(temp_dir / MANIFEST_FILE, manifest.to_json().encode())
        fsync_dir(temp_dir)
        try:
            # rename(2) refuses to replace a non-empty directory, so a racing writer cannot be clobbered.
            os.rename(temp_dir, final_dir)
        except OSError as error:
            if final_dir.exists():
                raise CheckpointError(
                    f"checkpoint {final_dir} appeared while saving (another writer?); it was not "
                    "overwritten, save under another version"
                ) from error
            raise
        fsync_dir(root)
    except BaseException:
        shutil.rmtree(temp_dir, ignore_errors=True)
        raise
    return final_dir


# ---------------------------------------------------------------------------------------------
# Reading and verifying


def read_manifest(path: Path) -> CheckpointManifest:
    """Parse ``<path>/manifest.json``; a missing, malformed or newer-format manifest is refused."""
    manifest_path = Path(path) / MANIFEST_FILE
    if not manifest_path.is_file():
        raise CheckpointError(
            f"{manifest_path} is missing: {path} is not a checkpoint directory (or its save did not "
            "finish); point at a directory written by save_checkpoint"
        )
    try:
        raw = json.loads(manifest_path.read_bytes())
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise CheckpointError(
            f"{manifest_path} is not valid JSON ({error}); the checkpoint is corrupt, use another one"
        ) from error
    if not isinstance(raw, dict):
        raise CheckpointError(f"{manifest_path} holds a JSON {type(raw).__name__}, not an object; corrupt")
    # Checked before the full validation so a newer format gets a message about versions, not fields.
    found_format = raw.get("format_version")
    if found_format != FORMAT_VERSION:
        raise CheckpointError(
            f"{manifest_path} has format_version {found_format!r}, this code reads format "
            f"{FORMAT_VERSION}; load it with a matching release or re-export the checkpoint"
        )
    try:
        return CheckpointManifest.model_validate(raw)
    except ValidationError as error:
        raise CheckpointError(
            f"{manifest_path} is not a valid checkpoint manifest; the checkpoint is corrupt, "
            f"use another one:\n{error}"
        ) from error


def _sha256_of_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as file:
        while chunk := file.read(_HASH_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def _safetensors_header(data: bytes, where: Path) -> dict[str, tuple[str, tuple[int, ...]]]:
    """Tensor name -> (dtype, shape) from a safetensors header, without building any tensor."""
    try:
        (header_len,) = struct.unpack("<Q", data[:8])
        if header_len > len(data) - 8:
            raise ValueError(f"header length {header_len} exceeds the file")
        header = json.loads(data[8 : 8 + header_len])
        return {
            name: (str(entry["dtype"]), tuple(int(d) for d in entry["shape"]))
            for name, entry in header.items()
            if name != "__metadata__"
        }
    except (struct.error, ValueError, KeyError, TypeError, AttributeError) as error:
        raise CheckpointError(
            f"{where} is not a readable safetensors file ({error}); the checkpoint is corrupt, "
            "use another one"
        ) from error


def _expected_state(cfg: ModelConfig) -> tuple[dict[str, tuple[str, tuple[int, ...]]], int]:
    """Names, dtypes and shapes this code's network has for ``cfg``, plus its parameter count.

    Built on the meta device: no memory for weights and no draw from the global RNG.
    """
    with torch.device("meta"):
        model = MuZeroNetwork(cfg)
    expected = {name: ("F32", tuple(t.shape)) for name, t in model.state_dict().items()}
    return expected, parameter_count(model)


def _limited(names: list[str]) -> str:
    shown = ", ".join(names[:_MAX_LISTED])
    return shown + (f", ... ({len(names) - _MAX_LISTED} more)" if len(names) > _MAX_LISTED else "")


def _check_weights_fit(
    found: dict[str, tuple[str, tuple[int, ...]]],
    expected: dict[str, tuple[str, tuple[int, ...]]],
    where: Path,
) -> None:
    missing = sorted(expected.keys() - found.keys())
    unexpected = sorted(found.keys() - expected.keys())
    mismatched = sorted(
        f"{name} (file {found[name][0]}{list(found[name][1])}, "
        f"model {expected[name][0]}{list(expected[name][1])})"
        for name in expected.keys() & found.keys()
        if found[name] != expected[name]
    )
    if missing or unexpected or mismatched:
        problems = []
        if missing:
            problems.append(f"missing keys: {_limited(missing)}")
        if unexpected:
            problems.append(f"unexpected keys: {_limited(unexpected)}")
        if mismatched:
            problems.append(f"shape/dtype mismatches: {_limited(mismatched)}")
        raise CheckpointError(
            f"{where} does not fit the network its manifest's model_config describes ("
            + "; ".join(problems)
            + "); the manifest and weights disagree or the network code changed, "
            "use a checkpoint written by this release"
        )


@dataclass(frozen=True)
class _Verified:
    manifest: CheckpointManifest
    config: ModelConfig
    weights: bytes  # exactly the bytes whose sha256 was checked


def _verify(path: Path, expected_schema_hash: str, check_extra_files: bool) -> _Verified:
    path = Path(path)
    manifest = read_manifest(path)
    if manifest.schema_hash != expected_schema_hash:
        raise SchemaMismatchError(
            f"checkpoint {path} was trained with feature schema {manifest.schema_hash!r} "
            f"(version {manifest.schema_version}), this code expects {expected_schema_hash!r} "
            f"(version {SCHEMA_VERSION}); retrain on features from this release or use a matching release"
        )
    try:
        config = ModelConfig.model_validate(manifest.network_config)
    except ValidationError as error:
        raise CheckpointError(
            f"{path / MANIFEST_FILE} has a model_config this code cannot build; use a matching "
            f"release:\n{error}"
        ) from error

    weights_path = path / manifest.weights_file
    if not weights_path.is_file():
        raise CheckpointError(f"{weights_path} is missing; the checkpoint is incomplete, use another one")
    size = weights_path.stat().st_size
    if size != manifest.weights_bytes:
        raise CheckpointError(
            f"{weights_path} is {size} bytes but the manifest says {manifest.weights_bytes} "
            "(truncated or replaced); the checkpoint is corrupt, use another one"
        )
    # Read once and keep the bytes: what is hashed is exactly what gets deserialised.
    weights = weights_path.read_bytes()
    sha256 = hashlib.sha256(weights).hexdigest()
    if sha256 != manifest.weights_sha256:
        raise CheckpointError(
            f"{weights_path} sha256 {sha256} does not match the manifest {manifest.weights_sha256}; "
            "the weights are corrupt or were modified, use another checkpoint"
        )

    expected, expected_parameters = _expected_state(config)
    _check_weights_fit(_safetensors_header(weights, weights_path), expected, weights_path)
    if manifest.parameter_count != expected_parameters:
        raise CheckpointError(
            f"{path / MANIFEST_FILE} says parameter_count {manifest.parameter_count} but its "
            f"model_config builds {expected_parameters}; the manifest is inconsistent, use another checkpoint"
        )

    if check_extra_files:
        for name, expected_sha256 in manifest.extra.items():
            extra_path = path / name
            if not extra_path.is_file():
                raise CheckpointError(
                    f"{extra_path} is listed in the manifest but missing; the checkpoint is incomplete"
                )
            found_sha256 = _sha256_of_file(extra_path)
            if found_sha256 != expected_sha256:
                raise CheckpointError(
                    f"{extra_path} sha256 {found_sha256} does not match the manifest {expected_sha256}; "
                    "the file is corrupt or was modified, use another checkpoint"
                )
    return _Verified(manifest, config, weights)


def verify_checkpoint(
    path: Path, *, expected_schema_hash: str = SCHEMA_HASH, check_extra_files: bool = True
) -> CheckpointManifest:
    """Every check ``load_checkpoint`` makes, without building the model; returns the manifest.

    ``check_extra_files=False`` skips hashing extra files (a replay buffer can be large) for callers
    that only serve the weights.
    """
    return _verify(Path(path), expected_schema_hash, check_extra_files).manifest


def load_checkpoint(
    path: Path, *, expected_schema_hash: str = SCHEMA_HASH, check_extra_files: bool = True
) -> LoadedCheckpoint:
    """Verify the checkpoint at ``path`` and return its model (eval mode) with the manifest."""
    path = Path(path)
    verified = _verify(path, expected_schema_hash, check_extra_files)
    weights_path = path / verified.manifest.weights_file
    try:
        tensors = safetensors.torch.load(verified.weights)  # safetensors: never pickle
    except Exception as error:  # the library raises its own error types for malformed data
        raise CheckpointError(
            f"{weights_path} could not be decoded as safetensors ({error}); the checkpoint is corrupt"
        ) from error
    # Meta-device construction then assign: no throw-away random init, no draw from the global RNG.
    with torch.device("meta"):
        model = MuZeroNetwork(verified.config)
    try:
        model.load_state_dict(tensors, strict=True, assign=True)
    except RuntimeError as error:
        raise CheckpointError(f"{weights_path} does not load into the network: {error}") from error
    left_on_meta = [name for name, t in (*model.named_parameters(), *model.named_buffers()) if t.is_meta]
    if left_on_meta:
        raise CheckpointError(f"{weights_path} left tensors without values: {_limited(left_on_meta)}")
    model.eval()
    return LoadedCheckpoint(path=path, manifest=verified.manifest, model=model)
