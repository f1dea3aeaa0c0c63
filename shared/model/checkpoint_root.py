"""A checkpoint root: the checkpoints in it, and its ``latest`` and ``best`` pointers.

A root is the directory ``smz train --out`` writes: one directory per checkpoint
(``shared.model.checkpoint``) and two pointer files naming a version each, replaced atomically.
"""

from __future__ import annotations

import contextlib
import os
import secrets
from pathlib import Path

from shared.model.checkpoint import (
    MANIFEST_FILE,
    POINTER_NAMES,
    TMP_PREFIX,
    CheckpointError,
    CheckpointManifest,
    fsync_dir,
    read_manifest,
    validate_version,
    write_bytes_durably,
)


def _scan(root: Path) -> list[tuple[Path, CheckpointManifest]]:
    """(directory, manifest) for every checkpoint under ``root`` whose manifest reads, oldest first."""
    found: list[tuple[Path, CheckpointManifest]] = []
    if not root.is_dir():
        return found
    for entry in root.iterdir():
        if entry.name.startswith(".") or not entry.is_dir():
            continue  # temp dirs of unfinished saves, pointer files
        try:
            found.append((entry, read_manifest(entry)))
        except CheckpointError:
            continue  # broken checkpoints are not listed; verify/load say why
    found.sort(key=lambda item: (item[1].training_step, item[1].created_at, item[0].name))
    return found


def list_checkpoints(root: Path) -> list[CheckpointManifest]:
    """Manifests of the checkpoints under ``root`` by training step; skips temp dirs and unreadable ones.

    Only manifests are read: call ``verify_checkpoint`` before trusting one.
    """
    return [manifest for _, manifest in _scan(Path(root))]


def _validate_pointer_name(name: str) -> None:
    if name not in POINTER_NAMES:
        raise ValueError(f"pointer name {name!r} is not one of {POINTER_NAMES}")


def write_pointer(root: Path, name: str, version: str) -> Path:
    """Point ``<root>/<name>`` (latest or best) at ``version``, atomically; returns the pointer file."""
    root = Path(root)
    _validate_pointer_name(name)
    validate_version(version)
    if not (root / version / MANIFEST_FILE).is_file():
        raise CheckpointError(
            f"cannot point {root / name} at {version!r}: {root / version} is not a checkpoint; save it first"
        )
    pointer_path = root / name
    temp_path = root / f"{TMP_PREFIX}{name}-{secrets.token_hex(4)}"
    try:
        write_bytes_durably(temp_path, f"{version}\n".encode())
        os.replace(temp_path, pointer_path)  # readers see the old pointer or the new one, never half
        fsync_dir(root)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            temp_path.unlink()
        raise
    return pointer_path


def read_pointer(root: Path, name: str) -> str | None:
    """The version ``<root>/<name>`` points at, or None when there is no such pointer."""
    _validate_pointer_name(name)
    pointer_path = Path(root) / name
    try:
        text = pointer_path.read_text().strip()
    except FileNotFoundError:
        return None
    try:
        return validate_version(text)
    except ValueError as error:
        raise CheckpointError(
            f"pointer {pointer_path} holds {text!r}, not a checkpoint version; rewrite it with write_pointer"
        ) from error


def resolve_checkpoint(path_or_root: Path, which: str = "latest") -> Path:
    """The checkpoint directory to load.

    ``path_or_root`` is either a checkpoint directory (returned as is) or a root holding checkpoints.
    For a root, ``which`` is ``latest`` or ``best`` (follow that pointer; ``latest`` falls back to the
    highest training step when there is no pointer) or a version name to pin. Nothing is verified here.
    """
    path = Path(path_or_root)
    if (path / MANIFEST_FILE).is_file():
        return path
    if not path.is_dir():
        raise CheckpointError(f"{path} is neither a checkpoint directory nor a checkpoint root")
    if which in POINTER_NAMES:
        version = read_pointer(path, which)
        if version is None:
            if which == "best":
                raise CheckpointError(
                    f"{path} has no 'best' pointer; write one with write_pointer or ask for 'latest'"
                )
            checkpoints = _scan(path)
            if not checkpoints:
                raise CheckpointError(f"{path} holds no checkpoints; train first or pass a checkpoint dir")
            return checkpoints[-1][0]
        target = path / version
        if not (target / MANIFEST_FILE).is_file():
            raise CheckpointError(
                f"pointer {path / which} names {version!r} but {target} is not a checkpoint "
                "(deleted?); rewrite the pointer with write_pointer"
            )
        return target
    try:
        validate_version(which)
    except ValueError as error:
        raise CheckpointError(f"cannot resolve {which!r} under {path}: {error}") from error
    target = path / which
    if not (target / MANIFEST_FILE).is_file():
        raise CheckpointError(
            f"{target} is not a checkpoint; available: "
            f"{[m.version for m in list_checkpoints(path)] or 'none'}"
        )
    return target
