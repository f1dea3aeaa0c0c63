"""Prometheus metrics of the inference service (served on ``GET /metrics`` from the app's own registry).

Labels are the instrument, the action name and a few fixed values; never a key or a version other
than the one ``smz_inference_model_info`` carries. The policy's health (docs/METRICS.md) is judged
from counters summed over every inference process: entries (BUY/SELL while flat) per 360 stream
decisions are trades per session, and their BUY share is the long share of the entries.
"""

from __future__ import annotations

import threading

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from services.observability import LATENCY_BUCKETS
from shared.instruments import KNOWN_INSTRUMENTS, instrument_label
from shared.reward import ACTIONS

REQUEST_SECONDS_BUCKETS = (0.001, 0.002, 0.003, 0.005, 0.0075, 0.01, 0.015, 0.02, 0.03, 0.05, 0.1, 0.25, 1.0)
BATCH_SIZE_BUCKETS = (1, 2, 3, 4, 6, 8, 12, 16, 24, 32, 48, 64, 128, 256)


class InferenceMetrics:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        self._define_decision_metrics(self.registry)
        self._define_model_metrics(self.registry)
        self._define_stream_metrics(self.registry)
        self._lock = threading.Lock()
        self._stream_instruments: set[str] = set()
        self.instruments: set[str] = set(KNOWN_INSTRUMENTS)  # label allowlist; services add theirs

    def _define_decision_metrics(self, r: CollectorRegistry) -> None:
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

    def _define_model_metrics(self, r: CollectorRegistry) -> None:
        self.model_info = Gauge(
            "smz_inference_model_info", "The served checkpoint version (value 1)", ["version"], registry=r
        )
        self.model_loaded = Gauge(
            "smz_inference_model_loaded_timestamp_seconds",
            "When the served checkpoint was loaded by this process (epoch seconds)",
            registry=r,
        )
        self.model_created = Gauge(
            "smz_inference_model_created_timestamp_seconds",
            "When the trainer wrote the served checkpoint (its manifest's created_at, epoch seconds)",
            registry=r,
        )
        self.model_load_failures = Counter(
            "smz_inference_model_load_failures",
            "Checkpoints refused (corrupt, incomplete, foreign schema, unreadable pointer)",
            registry=r,
        )

    def _define_stream_metrics(self, r: CollectorRegistry) -> None:
        self.flat_decisions = Counter(
            "smz_inference_flat_decisions",
            "Stream decisions taken while flat (the window's position side is 0), by instrument and "
            "action: BUY and SELL are the entries, HOLD the bars left out",
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
        self.shed = Counter(
            "smz_inference_shed",
            "REST decisions refused with 503 because too many were waiting (SMZ_INFERENCE_MAX_PENDING)",
            registry=r,
        )
        self.dead_lettered = Counter(
            "smz_inference_stream_dead_lettered",
            "Stream entries given up after SMZ_INFERENCE_MAX_ATTEMPTS failures (moved to the dead letters)",
            registry=r,
        )

    def decision(self, instrument: str, action: int, source: str, flat: bool = False) -> None:
        """Count one decision; ``flat``: a stream decision taken without an open position. An instrument
        outside ``shared.instruments.KNOWN_INSTRUMENTS`` and the served ones counts as "other"."""
        instrument = instrument_label(instrument, self.instruments)
        self.decisions.labels(instrument, ACTIONS[action], source).inc()
        if source != "stream":
            return
        with self._lock:
            if instrument not in self._stream_instruments:
                # Every action's series exists from the first decision on, at 0: an instrument that
                # never enters still has entry counters for the health alerts to read.
                self._stream_instruments.add(instrument)
                for name in ACTIONS:
                    self.flat_decisions.labels(instrument, name)
        if flat:
            self.flat_decisions.labels(instrument, ACTIONS[action]).inc()

    def model_swapped(self, version: str, loaded_at: float, created_at: float) -> None:
        self.model_info.clear()
        self.model_info.labels(version).set(1)
        self.model_loaded.set(loaded_at)
        self.model_created.set(created_at)
