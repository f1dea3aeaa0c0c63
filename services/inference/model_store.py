"""The served model: a verified checkpoint, loaded off the serving path and swapped in atomically.

The store serves either a pinned version (``model_version``) or the checkpoint the ``latest``/``best``
pointer of ``checkpoint_dir`` names (``latest`` without a pointer file: the highest training step, as
``resolve_checkpoint`` does). A background thread re-reads the target every ``reload_seconds``; a new
one is loaded with ``load_checkpoint`` (sha256, schema hash, config, tensor names and shapes), turned
into model functions and warmed up with one search on a flat window (which also checks that its
outputs are finite). Only then is it swapped in: one reference assignment under a lock, so a search
that already took the old model finishes on it.

The served model's reward (``manifest.reward`` and the equity reward's ``pips_per_reward`` of its
training settings) goes with every decision, so that the broker gateway computes the reward the model
was trained with.

A checkpoint that fails any of this is refused: logged and counted
(``smz_inference_model_load_failures_total``) once per state of its files, and retried until it
verifies: at once when any of its files changes (a copy that wrote the manifest before the weights
completes later), else with a backoff from ``reload_seconds`` up to a minute. The old model keeps
serving meanwhile.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from services.inference.metrics import InferenceMetrics
from services.inference.settings import BACKEND, InferenceSettings
from shared.model.checkpoint import MANIFEST_FILE, CheckpointError, CheckpointManifest, load_checkpoint
from shared.model.checkpoint_root import list_checkpoints, read_pointer
from shared.model.config import ModelConfig
from shared.model.inference import ModelFunctions, make_model_functions
from shared.position import PIPS_PER_REWARD
from shared.schema import N_FEATURES, WINDOW
from shared.search import search

log = logging.getLogger(__name__)


class NoModelError(RuntimeError):
    """No verified model is loaded yet."""


@dataclass(frozen=True)
class ServingModel:
    version: str
    path: Path
    manifest: CheckpointManifest
    config: ModelConfig
    # One per search thread of the batcher (``search_workers``): they are not thread-safe (reused
    # work buffers), so each thread calls only its own.
    functions: tuple[ModelFunctions, ...]
    loaded_at: float  # epoch seconds

    @property
    def reward(self) -> str:
        """The reward the model was trained with (``shared.reward``), which its orders carry."""
        return self.manifest.reward

    @property
    def pips_per_reward(self) -> float:
        """The scale of its equity reward (its training setting; the environment's default if absent)."""
        return _pips_per_reward(self.manifest)

    def describe(self) -> dict[str, Any]:
        return {
            "version": self.version,
            "path": str(self.path),
            "loaded_at": self.loaded_at,
            "training_step": self.manifest.training_step,
            "created_at": self.manifest.created_at.isoformat(),
            "schema_hash": self.manifest.schema_hash,
            "weights_sha256": self.manifest.weights_sha256,
            "parameter_count": self.manifest.parameter_count,
            "metrics": self.manifest.metrics,
            "config": self.config.model_dump(mode="json"),
            "reward": self.reward,
            "pips_per_reward": self.pips_per_reward,
            "training": self.manifest.training,
        }


# What the store last tried: a version and its files' (name, mtime_ns, size), None when it has no manifest.
_Target = tuple[str, tuple[tuple[str, int, int], ...] | None]
RETRY_MAX_SECONDS = 60.0


class ModelStore:
    def __init__(self, settings: InferenceSettings, metrics: InferenceMetrics | None = None) -> None:
        self.settings = settings
        self.metrics = metrics or InferenceMetrics()
        self._current: ServingModel | None = None
        self._swap_lock = threading.Lock()
        self._poll_lock = threading.Lock()  # one load at a time (the thread, or a direct poll())
        self._ready = threading.Event()
        self._last_target: _Target | None = None
        self._retry_at = 0.0  # monotonic time of the next try of a refused, unchanged target
        self._retry_wait = 0.0
        self._waiting_logged: str | None = None
        self.last_error: str | None = None  # why the last candidate was refused (or nothing to load)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    # ------------------------------------------------------------------ serving side
    def current(self) -> ServingModel | None:
        with self._swap_lock:
            return self._current

    def require(self) -> ServingModel:
        model = self.current()
        if model is None:
            raise NoModelError(f"no verified model loaded yet ({self.last_error or 'loading'})")
        return model

    def wait_ready(self, timeout: float | None = None) -> bool:
        return self._ready.wait(timeout)

    # ------------------------------------------------------------------ loading side
    def start(self) -> None:
        if self._thread is not None:
            return
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name="inference-model-reload", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 10.0) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self.poll()
            except Exception:  # never let the reload thread die; the old model keeps serving
                log.exception("model reload poll failed")
            self._stop.wait(self.settings.reload_seconds)

    def describe_target(self) -> str:
        root = self.settings.checkpoint_dir
        if self.settings.model_version:
            return f"pinned version {self.settings.model_version!r} under {root}"
        return f"the {self.settings.follow!r} pointer of {root}"

    def poll(self) -> bool:
        """Load the target if it changed since the last attempt; True when a new model was swapped in."""
        with self._poll_lock:
            try:
                version = self._target_version()
            except CheckpointError as exc:  # an unreadable pointer file
                return self._refuse(("<pointer>", None), str(exc))
            if version is None:
                self._waiting(f"nothing to load yet: no checkpoint under {self.describe_target()}")
                return False
            path = self.settings.checkpoint_dir / version
            target: _Target = (version, _files_stat(path))
            current = self.current()
            if current is not None and current.version == version:
                return False
            retrying = target == self._last_target
            if retrying and time.monotonic() < self._retry_at:
                return False
            if target[1] is None and self.settings.model_version:
                # A pinned version that does not exist (yet): wait for it, do not count a failure.
                self._waiting(f"nothing to load yet: {path} is not a checkpoint (pinned, not written yet?)")
                return False
            self._last_target = target
            started = time.perf_counter()
            try:
                model = self._load(version, path)
            except Exception as exc:  # CheckpointError, SchemaMismatchError, or anything unexpected
                return self._refuse(target, f"{type(exc).__name__}: {exc}", again=retrying)
            with self._swap_lock:
                previous, self._current = self._current, model
            self.last_error = None
            self._waiting_logged = None
            self.metrics.model_swapped(model.version, model.loaded_at, model.manifest.created_at.timestamp())
            self._ready.set()
            log.info(
                "serving %s (step %d, from %s) after %.0f ms of loading and warm-up%s",
                model.version,
                model.manifest.training_step,
                self.describe_target(),
                (time.perf_counter() - started) * 1000,
                f"; replaced {previous.version}" if previous else "",
            )
            return True

    def _target_version(self) -> str | None:
        root = self.settings.checkpoint_dir
        if self.settings.model_version:
            return self.settings.model_version
        version = read_pointer(root, self.settings.follow)
        if version is None and self.settings.follow == "latest":
            manifests = list_checkpoints(root)  # no pointer yet: the highest training step
            return manifests[-1].version if manifests else None
        return version

    def _load(self, version: str, path: Path) -> ServingModel:
        # The optimiser state and replay buffer a trainer adds are not served: their hashes are not checked.
        loaded = load_checkpoint(path, check_extra_files=False)
        if loaded.manifest.version != version:
            raise CheckpointError(
                f"{path / MANIFEST_FILE} says version {loaded.manifest.version!r}, its directory is "
                f"{version!r}; the checkpoint was moved or renamed, save it again"
            )
        _check_reward(loaded.manifest, path)
        functions = tuple(
            make_model_functions(loaded.model, BACKEND, threads=self.settings.threads)
            for _ in range(self.settings.search_workers)
        )
        for worker_functions in functions:
            _warm_up(worker_functions, self.settings, path)
        return ServingModel(
            version=version,
            path=path,
            manifest=loaded.manifest,
            config=loaded.model.cfg,
            functions=functions,
            loaded_at=time.time(),
        )

    def _refuse(self, target: _Target, reason: str, again: bool = False) -> bool:
        """Remember the refusal; the same files are tried again after a growing wait (``again``: this
        was such a retry, logged quietly and not counted again)."""
        self._last_target = target
        self._retry_wait = (
            min(self._retry_wait * 2, RETRY_MAX_SECONDS) if again else self.settings.reload_seconds
        )
        self._retry_at = time.monotonic() + self._retry_wait
        self.last_error = f"refused {target[0]}: {reason}"
        current = self.current()
        if again:
            log.debug("checkpoint %s still refused (%s)", target[0], reason)
            return False
        self.metrics.model_load_failures.inc()
        log.error(
            "refused checkpoint %s (%s); %s; retried when its files change, else in %.0f s",
            target[0],
            reason,
            f"still serving {current.version}" if current else "no model is served",
            self._retry_wait,
        )
        return False

    def _waiting(self, message: str) -> None:
        if self.current() is None:
            self.last_error = message
        if self._waiting_logged != message:
            self._waiting_logged = message
            log.warning("%s", message)


def _files_stat(path: Path) -> tuple[tuple[str, int, int], ...] | None:
    """(name, mtime_ns, size) of each file of a checkpoint directory; None without a manifest."""
    if not (path / MANIFEST_FILE).is_file():
        return None
    try:
        entries = sorted((p.name, p.stat()) for p in path.iterdir() if p.is_file())
    except OSError:
        return None
    return tuple((name, st.st_mtime_ns, st.st_size) for name, st in entries)


def _pips_per_reward(manifest: CheckpointManifest) -> float:
    return float(manifest.training.get("pips_per_reward", PIPS_PER_REWARD))


def _check_reward(manifest: CheckpointManifest, path: Path) -> None:
    """Refuse a checkpoint whose reward the gateway could not compute."""
    try:
        reward, scale = manifest.reward, _pips_per_reward(manifest)
    except (TypeError, ValueError) as exc:
        raise CheckpointError(f"{path / MANIFEST_FILE}: training reward settings unusable: {exc}") from exc
    if not (math.isfinite(scale) and scale > 0):
        raise CheckpointError(f"{path / MANIFEST_FILE}: pips_per_reward {scale} is not a positive number")
    log.debug("%s was trained with the %s reward (%g pips per unit)", path, reward, scale)


def _warm_up(functions: ModelFunctions, settings: InferenceSettings, path: Path) -> None:
    """Searches on flat windows of zeros, one alone and a batch of 8: compiles what is compiled lazily
    (the per-row kernels and the row-blocked ones a batch of concurrent requests uses; in a fresh
    container that takes seconds, which must not fall on the first batched request), and refuses
    non-finite outputs (weights that verify but cannot be served, such as NaN weights saved by a
    diverged run)."""
    for rows in (1, 8):
        window = np.zeros((rows, WINDOW, N_FEATURES), np.float32)
        out = search(functions, window, settings.search_config())
        if not all(np.isfinite(v).all() for v in (out.root_value, out.visit_policy, out.outcome_probs)):
            raise CheckpointError(f"{path} produces non-finite values on a flat zero window; not served")
