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
    assert {"HoldCollapse", "NoBarInMarketHours", "DecisionLatencyP99High", "GatewayHalted"} <= set(rules)
    assert "smz_inference_action_share" in rules["HoldCollapse"]["expr"]
    assert "0.9" in rules["HoldCollapse"]["expr"]
    assert "smz_feature_builder_last_bar_timestamp_seconds" in rules["NoBarInMarketHours"]["expr"]
    assert "day_of_week()" in rules["NoBarInMarketHours"]["expr"]
    assert "0.015" in rules["DecisionLatencyP99High"]["expr"]
    assert "smz_gateway_halted" in rules["GatewayHalted"]["expr"]
    for name, rule in rules.items():
        assert rule["labels"]["severity"] in {"critical", "warning"}, name
        assert rule["annotations"]["summary"], name
