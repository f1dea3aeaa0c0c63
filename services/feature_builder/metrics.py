"""Prometheus metrics of the feature builder (exposed on ``metrics_port``; 0 turns the endpoint off)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server

WAIT_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)


class FeatureBuilderMetrics:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        r = self.registry
        self.bars = Counter(
            "smz_feature_builder_bars",
            "Live closed bars accepted (after validation)",
            ["instrument"],
            registry=r,
        )
        self.windows = Counter(
            "smz_feature_builder_windows_published", "Windows published", ["instrument"], registry=r
        )
        self.rejected = Counter(
            "smz_feature_builder_rejected_bars",
            "Bars rejected before use, by reason",
            ["instrument", "reason"],
            registry=r,
        )
        self.session_breaks = Counter(
            "smz_feature_builder_session_breaks",
            "Session-break messages published (a gap over 10 minutes inside a session)",
            ["instrument"],
            registry=r,
        )
        self.last_bar_ts = Gauge(
            "smz_feature_builder_last_bar_timestamp_seconds",
            "Open time (epoch seconds UTC) of the last accepted bar",
            ["instrument"],
            registry=r,
        )
        self.bar_lag = Gauge(
            "smz_feature_builder_bar_lag_seconds",
            "Wall clock minus the bar's close time (open + 60 s) when its message was published",
            ["instrument"],
            registry=r,
        )
        self.position_wait = Histogram(
            "smz_feature_builder_position_wait_seconds",
            "Time spent waiting for the previous bar's position before publishing a window",
            buckets=WAIT_BUCKETS,
            registry=r,
        )
        self.position_timeouts = Counter(
            "smz_feature_builder_position_timeouts",
            "Position waits that went past position_wait_seconds (the builder keeps waiting)",
            registry=r,
        )
        self.windows_resent = Counter(
            "smz_feature_builder_windows_resent",
            "Windows published again because their position did not come within position_wait_seconds",
            ["instrument"],
            registry=r,
        )

        self.replay_finished = Gauge(
            "smz_feature_builder_replay_finished",
            "1 once a replay source has no more bars (the last window's position arrived or timed out)",
            ["instrument"],
            registry=r,
        )

    def serve(self, port: int, host: str) -> None:
        if port:
            start_http_server(port, addr=host, registry=self.registry)
