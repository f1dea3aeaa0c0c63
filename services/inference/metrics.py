"""Prometheus metrics of the inference service (served on ``GET /metrics`` from the app's own registry).

Labels are the instrument, the action name and a few fixed values; never a key or a version other
than the one ``smz_inference_model_info`` carries.
"""

from __future__ import annotations

import threading

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from services.observability import LATENCY_BUCKETS
from shared.reward import ACTIONS

REQUEST_SECONDS_BUCKETS = (0.001, 0.002, 0.003, 0.005, 0.0075, 0.01, 0.015, 0.02, 0.03, 0.05, 0.1, 0.25, 1.0)
BATCH_SIZE_BUCKETS = (1, 2, 3, 4, 6, 8, 12, 16, 24, 32, 48, 64, 128, 256)


class InferenceMetrics:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        r = self.registry
        self.decisions = Counter(
            "smz_inference_decisions",
            "Decisions by instrument, action and source (rest, stream)",
            ["instrument", "action", "source"],
            registry=r,
        )
        self.search_seconds = Histogram(
            "smz_inference_search_seconds",
            "Wall time of one batched search",
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.batch_size = Histogram(
            "smz_inference_batch_size", "Windows per batched search", buckets=BATCH_SIZE_BUCKETS, registry=r
        )
        self.request_seconds = Histogram(
            "smz_inference_request_seconds",
            "POST /v1/decisions end to end (validation, queue, search)",
            buckets=REQUEST_SECONDS_BUCKETS,
            registry=r,
        )
        self.model_info = Gauge(
            "smz_inference_model_info", "The served checkpoint version (value 1)", ["version"], registry=r
        )
        self.model_loaded = Gauge(
            "smz_inference_model_loaded_timestamp_seconds",
            "When the served checkpoint was loaded (epoch seconds)",
            registry=r,
        )
        self.model_load_failures = Counter(
            "smz_inference_model_load_failures",
            "Checkpoints refused (corrupt, incomplete, foreign schema, unreadable pointer)",
            registry=r,
        )
        self.action_share = Gauge(
            "smz_inference_action_share",
            "Share of each action among the stream decisions of an instrument since start "
            "(health: no action over 0.4 healthy, over 0.6 warning, over 0.9 critical)",
            ["instrument", "action"],
            registry=r,
        )
        self.stream_lag = Gauge(
            "smz_inference_stream_lag_seconds",
            "time.time() - published_at of the last window taken from the stream",
            registry=r,
        )
        self.orders = Counter(
            "smz_inference_orders",
            "Orders sent to the gateway by outcome: filled, held, refused, duplicate (replayed result), "
            "conflict (409), invalid (422)",
            ["status"],
            registry=r,
        )
        self.gateway_errors = Counter(
            "smz_inference_gateway_errors",
            "Failed order attempts that are retried (connection error, timeout, 401, 5xx, other 4xx)",
            registry=r,
        )
        self.pending_reclaimed = Counter(
            "smz_inference_pending_reclaimed",
            "Stream entries re-read after a restart or claimed from an idle consumer",
            registry=r,
        )
        self.malformed = Counter(
            "smz_inference_stream_malformed",
            "Stream entries that could not be parsed or validated (acked, dead-lettered)",
            registry=r,
        )
        self._lock = threading.Lock()
        self._action_counts: dict[str, list[int]] = {}

    def decision(self, instrument: str, action: int, source: str) -> None:
        self.decisions.labels(instrument, ACTIONS[action], source).inc()
        if source != "stream":
            return
        with self._lock:
            counts = self._action_counts.setdefault(instrument, [0] * len(ACTIONS))
            counts[action] += 1
            total = sum(counts)
            for name, count in zip(ACTIONS, counts, strict=True):
                self.action_share.labels(instrument, name).set(count / total)

    def model_swapped(self, version: str, loaded_at: float) -> None:
        self.model_info.clear()
        self.model_info.labels(version).set(1)
        self.model_loaded.set(loaded_at)
