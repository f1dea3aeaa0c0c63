"""deploy/prometheus: `promtool check config` and `check rules` pass, `promtool test rules` runs the
alerts' unit tests (market hours, thresholds, `for` durations, pods summed), the rules the brief asks for
exist, and `promtool check metrics` finds nothing to say about each service's /metrics exposition."""

from __future__ import annotations

from typing import Any

import pytest
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

from tests.deploy.helpers import (
    ALERTS,
    ALERTS_TEST,
    PROMETHEUS_CONFIG,
    alert_rules,
    metric_objects,
    promtool,
    promtool_check_metrics,
    service_metrics_objects,
)


def exercised_exposition(instance: Any) -> str:
    """The /metrics text of a ``*Metrics`` instance with every metric given one value (one label set
    each), so every series of the service is in it."""
    for metric in metric_objects(instance):
        series = (
            metric.labels(*(f"x{i}" for i in range(len(metric._labelnames))))
            if metric._labelnames
            else metric
        )
        if isinstance(series, Counter):
            series.inc()
        elif isinstance(series, Gauge):
            series.set(1.0)
        elif isinstance(series, Histogram):
            series.observe(0.01)
    return generate_latest(instance.registry).decode()


def test_promtool_check_config() -> None:
    out = promtool("check", "config", str(PROMETHEUS_CONFIG))
    assert out.returncode == 0, out.stdout + out.stderr
    assert "1 rule files found" in out.stdout + out.stderr


def test_promtool_check_rules() -> None:
    out = promtool("check", "rules", str(ALERTS))
    assert out.returncode == 0, out.stdout + out.stderr


def test_promtool_test_rules() -> None:
    out = promtool("test", "rules", str(ALERTS_TEST))
    assert out.returncode == 0, out.stdout + out.stderr


def test_the_required_alerts_exist() -> None:
    rules = {rule["alert"]: rule for rule in alert_rules()}
    assert {"PolicyNeverTrades", "PolicyOneSided", "NoBarInMarketHours", "DecisionLatencyP99High"} <= set(
        rules
    )
    assert "GatewayHalted" in rules
    # Policy health from counters summed over every inference process, as docs/METRICS.md defines it;
    # the action distribution is not judged.
    never, one_sided = rules["PolicyNeverTrades"]["expr"], rules["PolicyOneSided"]["expr"]
    for expr in (never, one_sided):
        assert "smz_inference_flat_decisions_total" in expr and "increase(" in expr
        assert "max by" not in expr and "share" not in expr
    assert "< 0.05" in never and "/ 360" in never and ">= 3600" in never
    assert "> 0.95" in one_sided and ">= 30" in one_sided
    assert not any("HOLD" in rule["expr"] for rule in rules.values())
    assert "smz_feature_builder_last_bar_timestamp_seconds" in rules["NoBarInMarketHours"]["expr"]
    assert "day_of_week()" in rules["NoBarInMarketHours"]["expr"]
    assert "0.015" in rules["DecisionLatencyP99High"]["expr"]
    assert "smz_gateway_halted" in rules["GatewayHalted"]["expr"]
    for name, rule in rules.items():
        assert rule["labels"]["severity"] in {"critical", "warning"}, name
        assert rule["annotations"]["summary"], name


def test_promtool_check_metrics_catches_a_bad_name() -> None:
    registry = CollectorRegistry()
    Gauge("smz_test_requests_total", "A gauge named like a counter", registry=registry).set(1)
    Gauge("smz_test_latency_milliseconds", "Not the base unit", registry=registry).set(1)
    problems = " ".join(promtool_check_metrics(generate_latest(registry).decode()))
    assert "_total" in problems and "seconds" in problems


@pytest.mark.parametrize(
    "module_name", [m for m, _ in service_metrics_objects()], ids=lambda m: m.split(".")[1]
)
def test_promtool_check_metrics_is_clean_for_every_service(module_name: str) -> None:
    (instance,) = [i for m, i in service_metrics_objects() if m == module_name]
    text = exercised_exposition(instance)
    for metric in metric_objects(instance):
        assert f"# TYPE {metric._name}" in text, metric._name  # every metric made it into the text
    assert promtool_check_metrics(text) == []
