"""deploy/prometheus: `promtool check config` and `check rules` pass, `promtool test rules` runs the
alerts' unit tests (market hours, thresholds, `for` durations), and the rules the brief asks for exist."""

from __future__ import annotations

import subprocess

from tests.deploy.helpers import ALERTS, ALERTS_TEST, PROMETHEUS_CONFIG, alert_rules, tool


def promtool(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([tool("promtool"), *args], capture_output=True, text=True, timeout=120, check=False)


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
