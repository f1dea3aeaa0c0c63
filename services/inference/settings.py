"""Inference service settings: SMZ_INFERENCE_* variables, the shared block (SMZ_REDIS_URL,
SMZ_WINDOWS_STREAM, SMZ_ACCOUNT, SMZ_GATEWAY_URL, SMZ_GATEWAY_TOKEN; services/settings.py) and the
``[inference]`` table of a config file."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import SettingsConfigDict

from services.settings import INFERENCE_PORT, LOCALHOST, LiveServiceSettings
from shared.model.checkpoint import validate_version
from shared.search import SearchConfig
from shared.wire import INFERENCE_GROUP, WINDOWS_STREAM

# The live decisions run the offline evaluation's search (services/jobs/evaluate.py): this backend,
# SearchConfig.serving() with ``simulations``, no noise, greedy.
BACKEND = "auto"


class InferenceSettings(LiveServiceSettings):
    model_config = SettingsConfigDict(env_prefix="SMZ_INFERENCE_", frozen=True)
    service = "inference"
    previous_shared_fields = ("redis_url", "windows_stream", "gateway_url", "gateway_token", "account")

    # Model: a pinned version, else the checkpoint the pointer names (re-read every reload_seconds).
    checkpoint_dir: Path = Path("runs/checkpoints")  # a checkpoint root written by `smz train`
    follow: Literal["latest", "best"] = "latest"
    model_version: str | None = None  # a checkpoint directory name under checkpoint_dir; pins it
    reload_seconds: float = Field(5.0, gt=0)
    # Search and batching.
    simulations: int = Field(25, ge=1)
    # After a batch's first request, wait this long for more. 0: take what is queued; under load requests
    # queue up while a search runs, so batches form without adding a wait to every decision.
    batch_wait_ms: float = Field(0.0, ge=0)
    max_batch: int = Field(64, ge=1)
    threads: int = Field(1, ge=1)  # torch/numba threads of each search
    # Search threads, each taking its own batches from the queue (the numba kernels release the GIL,
    # so two run on two cores at once: +28% decisions/s at concurrency 32, measured); 1 keeps every
    # search on one thread.
    search_workers: int = Field(2, ge=1, le=8)
    # HTTP API.
    host: str = LOCALHOST  # 0.0.0.0 in containers
    port: int = Field(INFERENCE_PORT, ge=1, le=65535)
    # Bearer token of POST /v1/decisions; unset leaves it open (loopback, or a NetworkPolicy: k8s/).
    token: SecretStr | None = None
    # Decisions waiting for a search beyond this many are shed with 503 and Retry-After.
    max_pending: int = Field(256, ge=1)
    max_body_bytes: int = Field(65_536, ge=1024)  # a window is about 10 kB of JSON
    docs: bool = True  # /docs and /openapi.json (off in the prod overlay)
    # Label allowlist beyond shared.instruments.KNOWN_INSTRUMENTS.
    metric_instruments: list[str] = Field(default_factory=list)
    log_level: Literal["debug", "info", "warning", "error"] = "info"
    # Stream worker: windows from Redis in (shared.redis_url, shared.windows_stream), orders for
    # shared.account to the broker gateway out (shared.gateway_url, shared.gateway_token).
    stream_enabled: bool = True
    group: str = INFERENCE_GROUP
    consumer: str = Field("inference-1", min_length=1)  # stable, so a restart re-reads its own pending
    claim_idle_ms: int = Field(10_000, ge=1)  # reclaim other consumers' entries idle this long
    dead_letter_stream: str = f"{WINDOWS_STREAM}:dead"  # malformed and refused entries; "" drops them
    # An entry that fails this often (gateway 5xx, a search error) is dead-lettered, not retried
    # forever: the entries behind it go on. A gateway that is down or refuses the token is waited out.
    max_attempts: int = Field(5, ge=1)
    gateway_timeout_seconds: float = Field(5.0, gt=0)
    retry_max_seconds: float = Field(5.0, gt=0)  # backoff cap of gateway and Redis retries

    @field_validator("model_version")
    @classmethod
    def _version(cls, value: str | None) -> str | None:
        if value is None or value == "":
            return None
        return validate_version(value)

    def search_config(self) -> SearchConfig:
        """The serving search with this many simulations (no noise, greedy)."""
        return SearchConfig(**{**SearchConfig.serving().model_dump(), "num_simulations": self.simulations})
