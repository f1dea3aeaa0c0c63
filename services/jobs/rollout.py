"""``smz rollout``: serve another checkpoint version from the inference Deployment, or go back.

The inference pods serve the version named by the Deployment's ``SMZ_INFERENCE_MODEL_VERSION``
(k8s/base/inference.yaml). Rolling a version out is therefore a pod-template change:

1. verify the version locally: ``DIR/VERSION`` must exist and pass ``verify_checkpoint`` (the
   checks every inference pod makes again before it turns ready); otherwise refuse, exit 2, and
   run no kubectl command at all;
2. ``kubectl annotate deployment/inference kubernetes.io/change-cause=...`` (``rollout history``
   then says which version each revision serves);
3. ``kubectl set env deployment/inference SMZ_INFERENCE_MODEL_VERSION=VERSION``: a rolling update,
   maxUnavailable 0 and maxSurge 1, so no ready pod goes before its replacement is ready;
4. ``kubectl rollout status deployment/inference --timeout=...``: waits until every pod serves it.
   A pod that cannot load the version never becomes ready, the update stalls with the old pods
   serving, status fails at the timeout (or the Deployment's progress deadline) and
   ``smz rollout --undo`` (``kubectl rollout undo`` then ``rollout status``) goes back.

The command lines are built by pure functions and run by an injectable runner.
"""

from __future__ import annotations

import shlex
import subprocess
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from shared.model.checkpoint import (
    MANIFEST_FILE,
    CheckpointError,
    CheckpointManifest,
    validate_version,
    verify_checkpoint,
)
from shared.model.checkpoint_root import list_checkpoints
from shared.schema import SchemaMismatchError

VERSION_ENV = "SMZ_INFERENCE_MODEL_VERSION"
CHANGE_CAUSE = "kubernetes.io/change-cause"
DEFAULT_NAMESPACE = "micro-muzero"
DEFAULT_DEPLOYMENT = "inference"
DEFAULT_TIMEOUT = "10m"

# argv -> exit code. The default runs kubectl with the terminal's stdout and stderr.
Runner = Callable[[Sequence[str]], int]


class RolloutError(Exception):
    """Refused before any kubectl command ran: the version is missing, broken or not a version."""


class KubectlError(Exception):
    """A kubectl command failed (the rollout may have stalled: ``smz rollout --undo`` goes back)."""


@dataclass(frozen=True)
class Target:
    """Which Deployment, and how to reach it."""

    namespace: str = DEFAULT_NAMESPACE
    deployment: str = DEFAULT_DEPLOYMENT
    timeout: str = DEFAULT_TIMEOUT  # of `kubectl rollout status`, e.g. 90s, 10m
    kubectl: str = "kubectl"
    context: str | None = None  # kubeconfig context; None: the current one

    def base(self) -> list[str]:
        return [self.kubectl, *(["--context", self.context] if self.context else [])]

    def ref(self) -> str:
        return f"deployment/{self.deployment}"

    def status_command(self) -> list[str]:
        return [
            *self.base(),
            "rollout",
            "status",
            self.ref(),
            "-n",
            self.namespace,
            f"--timeout={self.timeout}",
        ]


def rollout_commands(version: str, target: Target) -> list[list[str]]:
    """The kubectl command lines that make ``target`` serve ``version``, in order."""
    validate_version(version)
    kubectl, ref, ns = target.base(), target.ref(), target.namespace
    return [
        [*kubectl, "annotate", ref, f"{CHANGE_CAUSE}=smz rollout {version}", "--overwrite", "-n", ns],
        [*kubectl, "set", "env", ref, f"{VERSION_ENV}={version}", "-n", ns],
        target.status_command(),
    ]


def undo_commands(target: Target) -> list[list[str]]:
    """The kubectl command lines that go back to the Deployment's previous revision, in order."""
    return [
        [*target.base(), "rollout", "undo", target.ref(), "-n", target.namespace],
        target.status_command(),
    ]


def verify_version(checkpoints: Path, version: str) -> CheckpointManifest:
    """The manifest of ``checkpoints/version`` if it passes every check an inference pod makes, else
    RolloutError saying why (and which versions exist)."""
    try:
        validate_version(version)
    except ValueError as exc:
        raise RolloutError(str(exc)) from exc
    checkpoints = Path(checkpoints)
    if not checkpoints.is_dir():
        raise RolloutError(f"checkpoint directory {checkpoints} does not exist")
    path = checkpoints / version
    if not (path / MANIFEST_FILE).is_file():
        available = [m.version for m in list_checkpoints(checkpoints)]
        raise RolloutError(
            f"no checkpoint {version!r} in {checkpoints} ({path / MANIFEST_FILE} is missing); "
            f"available: {', '.join(available) or 'none'}"
        )
    try:
        # As the inference store loads it: the trainer's extra files (optimiser, replay) are not served.
        manifest = verify_checkpoint(path, check_extra_files=False)
    except (CheckpointError, SchemaMismatchError) as exc:
        raise RolloutError(f"checkpoint {version!r} in {checkpoints} does not verify: {exc}") from exc
    if manifest.version != version:
        raise RolloutError(
            f"{path / MANIFEST_FILE} says version {manifest.version!r}, its directory is {version!r}; "
            "the inference pods would refuse it (moved or renamed checkpoint)"
        )
    return manifest


def subprocess_runner(argv: Sequence[str]) -> int:
    try:
        return subprocess.run(list(argv), check=False).returncode
    except FileNotFoundError as exc:
        raise KubectlError(f"{argv[0]} not found: install kubectl or pass --kubectl PATH") from exc


# What `smz rollout` runs kubectl with (looked up at call time, so tests can record instead).
DEFAULT_RUNNER: Runner = subprocess_runner


def run_commands(
    commands: list[list[str]], runner: Runner | None, echo: Callable[[str], None], dry_run: bool
) -> None:
    run = runner or subprocess_runner
    for argv in commands:
        echo(("would run: " if dry_run else "+ ") + shlex.join(argv))
        if dry_run:
            continue
        code = run(argv)
        if code != 0:
            raise KubectlError(f"`{shlex.join(argv)}` exited with {code}")


def rollout(
    version: str,
    checkpoints: Path,
    target: Target,
    *,
    runner: Runner | None = None,
    dry_run: bool = False,
    echo: Callable[[str], None] = print,
) -> CheckpointManifest:
    """Verify ``version`` in ``checkpoints``, then roll it out (RolloutError before any kubectl)."""
    manifest = verify_version(checkpoints, version)
    echo(
        f"checkpoint {version} verified (training step {manifest.training_step}, "
        f"weights sha256 {manifest.weights_sha256[:12]}...)"
    )
    try:
        run_commands(rollout_commands(version, target), runner, echo, dry_run)
    except KubectlError as exc:
        raise KubectlError(
            f"{exc}; pods that cannot serve {version} stay unready and the old ones keep serving. "
            f"See `kubectl -n {target.namespace} get pods` and their /readyz reason, then go back "
            f"with `smz rollout --undo -n {target.namespace}`"
        ) from exc
    return manifest


def undo(
    target: Target,
    *,
    runner: Runner | None = None,
    dry_run: bool = False,
    echo: Callable[[str], None] = print,
) -> None:
    """Go back to the previous revision of the Deployment and wait for it."""
    run_commands(undo_commands(target), runner, echo, dry_run)
