"""Prometheus conventions shared by the live services."""

from __future__ import annotations

# Fine latency buckets (seconds) for per-bar and per-request timings: the budgets are 15 ms for a
# decision and 50 ms from bar to order, so most resolution sits below 100 ms.
LATENCY_BUCKETS = (
    0.0005, 0.001, 0.0015, 0.002, 0.003, 0.004, 0.005, 0.0075, 0.01, 0.015, 0.02, 0.03, 0.05,
    0.075, 0.1, 0.15, 0.25, 0.5, 1.0,
)  # fmt: skip
