"""Grafana dashboards and provisioning: every dashboard parses, every panel but the gateway's trades
(test_grafana_trades.py) has the provisioned Prometheus data source, and every query (panels,
template variables, alert rules) uses metric and label names that services/*/metrics.py really
exports."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
import yaml
from prometheus_client import CollectorRegistry

from services.trainer.metrics import ACTION_SHARE_PREFIX, VALIDATION_GAUGES, TrainerMetrics
from shared.metrics import trade_metrics, validation_metrics
from shared.reward import ACTIONS
from tests.deploy.helpers import (
    DASHBOARDS,
    GRAFANA_PROVISIONING,
    LIVE_DASHBOARD,
    REPO,
    alert_rules,
    concrete,
    exported_series,
    load_dashboard,
    panels,
    prometheus_panels,
    promql_names,
    promql_problems,
    query_panels,
    service_metrics,
    variable_queries,
)


def provisioned_datasource() -> dict:
    doc = yaml.safe_load((GRAFANA_PROVISIONING / "datasources" / "prometheus.yml").read_text())
    (source,) = doc["datasources"]
    return source


def test_the_metric_inventory_is_read_from_the_services() -> None:
    modules = {m.module for m in service_metrics()}
    assert modules == {
        "services.broker_gateway.metrics",
        "services.feature_builder.metrics",
        "services.inference.metrics",
        "services.trainer.metrics",
    }
    series = exported_series()
    assert series["smz_inference_flat_decisions_total"] == {"instrument", "action"}
    assert series["smz_gateway_orders_total"] == {"instrument", "action", "status"}
    assert "le" in series["smz_inference_search_seconds_bucket"]


def test_the_promql_reader_catches_wrong_names() -> None:
    assert promql_problems("sum by (instrument) (rate(smz_gateway_trades_total[5m]))") == []
    assert promql_problems("smz_gateway_trades") == [
        "unknown metric or word 'smz_gateway_trades'",
        "uses no metric of the services",
    ]
    assert promql_problems('smz_gateway_halted{instrument="X"}') == [
        "smz_gateway_halted has no label 'instrument'"
    ]
    assert promql_problems("sum by (reason) (smz_gateway_halted)") == [
        "grouping by 'reason', a label none of ['smz_gateway_halted'] has"
    ]
    names = promql_names(
        "histogram_quantile(0.99, sum by (le) (rate(smz_inference_search_seconds_bucket[1m])))"
    )
    assert names.metrics == {"smz_inference_search_seconds_bucket"} and names.grouping_labels == {"le"}


def test_provisioning_points_at_the_compose_prometheus_and_the_dashboards() -> None:
    source = provisioned_datasource()
    assert source["type"] == "prometheus" and source["url"] == "http://prometheus:9090"
    providers = yaml.safe_load((GRAFANA_PROVISIONING / "dashboards" / "micro-muzero.yml").read_text())
    (provider,) = providers["providers"]
    assert provider["type"] == "file" and provider["options"]["path"] == "/etc/grafana/dashboards"


@pytest.mark.parametrize("path", DASHBOARDS, ids=lambda p: p.name)
def test_dashboard(path: Path) -> None:
    dashboard = load_dashboard(path)
    uid = provisioned_datasource()["uid"]
    assert dashboard["uid"] and dashboard["title"] and dashboard["schemaVersion"] >= 36
    ids = [p["id"] for p in panels(dashboard)]
    assert len(ids) == len(set(ids)), "panel ids must be unique"
    problems: list[str] = []
    for panel in query_panels(dashboard):
        grid = panel["gridPos"]
        assert grid["x"] + grid["w"] <= 24, panel["title"]
    # The gateway's panels (Infinity) are checked by test_grafana_trades.py.
    for panel in prometheus_panels(dashboard):
        title = panel["title"]
        datasource = panel.get("datasource") or {}
        if datasource.get("type") != "prometheus" or datasource.get("uid") != uid:
            problems.append(f"{title}: data source {datasource} is not the provisioned Prometheus ({uid})")
        if not panel.get("targets"):
            problems.append(f"{title}: no query")
        for target in panel.get("targets", []):
            if (target.get("datasource") or datasource).get("uid") != uid:
                problems.append(f"{title} {target['refId']}: foreign data source")
            expr = target.get("expr", "")
            concrete(expr)  # only the Grafana variables the live test knows how to fill in
            problems += [f"{title} {target['refId']}: {p}: {expr}" for p in promql_problems(expr)]
    series = exported_series()
    for metric, label in variable_queries(dashboard):
        if label not in series.get(metric, ()):
            problems.append(f"variable: {metric} has no label {label!r}")
    assert not problems, "\n".join(problems)


def test_live_dashboard_shows_what_the_desk_needs() -> None:
    board = load_dashboard(LIVE_DASHBOARD)
    exprs = " ".join(t["expr"] for p in prometheus_panels(board) for t in p["targets"])
    for metric in (
        "smz_gateway_realized_pnl_pips",
        "smz_gateway_unrealized_pnl_pips",
        "smz_gateway_position_side",
        "smz_gateway_trades_total",
        "smz_gateway_gross_profit_pips_total",
        "smz_gateway_gross_loss_pips_total",
        "smz_inference_decisions_total",
        "smz_inference_flat_decisions_total",
        "smz_inference_search_seconds_bucket",
        "smz_feature_builder_bar_lag_seconds",
        "smz_feature_builder_rejected_bars_total",
        "smz_gateway_halted",
        "smz_gateway_risk_refusals_total",
    ):
        assert metric in exprs, metric
    # Win rate and expectancy: from counters over the time range, per account (no per-process ratio).
    by_title = {p["title"]: " ".join(t["expr"] for t in p["targets"]) for p in prometheus_panels(board)}
    for title in ("Win rate", "Expectancy (pips/trade)"):
        assert "increase(smz_gateway_trades_total{" in by_title[title], title
        assert 'account=~"$account"' in by_title[title], title
    assert 'result="win"' in by_title["Win rate"]
    assert 'account=~"$account"' in by_title["Trade P&L distribution (pips)"]
    assert 'instrument=~"$instrument"' in by_title["Trade P&L distribution (pips)"]
    assert by_title["Model age"] == "time() - max(smz_inference_model_created_timestamp_seconds)"
    assert {label for _, label in variable_queries(board)} == {"instrument", "account"}
    # The action distribution is reported, not judged: no threshold colours it.
    (share,) = [p for p in prometheus_panels(board) if p["title"] == "Action distribution"]
    steps = [s["value"] for s in share["fieldConfig"]["defaults"]["thresholds"]["steps"]]
    assert steps == [None]
    # Health is judged: trades per session against 0.05, the long share of entries against 5%/95%.
    (health,) = [p for p in prometheus_panels(board) if p["title"].startswith("Policy health")]
    exprs = {t["refId"]: t["expr"] for t in health["targets"]}
    assert "/ 360" in exprs["A"] and 'action=~"BUY|SELL"' in exprs["A"]
    assert [s["value"] for s in health["fieldConfig"]["defaults"]["thresholds"]["steps"]] == [None, 0.05]
    (long_share,) = [o for o in health["fieldConfig"]["overrides"] if o["matcher"]["options"] == "B"]
    (thresholds,) = [p["value"] for p in long_share["properties"] if p["id"] == "thresholds"]
    assert [s["value"] for s in thresholds["steps"]] == [None, 0.05, 0.95]


def test_training_dashboard_shows_the_learning() -> None:
    board = load_dashboard(DASHBOARDS[[p.name for p in DASHBOARDS].index("training.json")])
    exprs = " ".join(t["expr"] for p in prometheus_panels(board) for t in p["targets"])
    for needle in (
        "smz_trainer_loss",
        "smz_trainer_weighted_loss",
        "smz_trainer_validation_expectancy_pips",
        "smz_trainer_selfplay_bar_steps_per_second",
        "smz_trainer_updates_per_second",
        "smz_trainer_replay_trade_ratio",
    ):
        assert needle in exprs, needle
    for needle in ("expectancy_ci95_low_pips", "trades_per_session", "long_entry_ratio", "healthy"):
        assert f"smz_trainer_validation_{needle}" in exprs, needle
    assert 'component="total"' not in exprs  # the parts only; the weighted sum is its own gauge
    # Every validation key (those of shared.metrics.validation_metrics, and any worker.validate() adds)
    # has its own gauge, in its own unit.
    m = trade_metrics(
        np.array([1.0]), 1, np.ones(4), trade_sides=np.array([1]), flat_action_counts=np.ones(4)
    )
    keys = set(validation_metrics(m))
    worker = (REPO / "services" / "trainer" / "worker.py").read_text()
    keys |= set(re.findall(r'metrics\["(validation_\w+)"\] =', worker))
    assert "validation_entry_margin" in keys
    metrics = TrainerMetrics(CollectorRegistry())
    for key in sorted(keys):
        name = key.removeprefix("validation_")
        if name.startswith(ACTION_SHARE_PREFIX):
            assert name.removeprefix(ACTION_SHARE_PREFIX).upper() in ACTIONS, key
        else:
            assert name in VALIDATION_GAUGES, f"validation metric {key!r} has no gauge"
    metrics.record_validation(validation_metrics(m))
    assert metrics.registry.get_sample_value("smz_trainer_validation_win_ratio") == 1.0
    assert metrics.registry.get_sample_value("smz_trainer_validation_action_ratio", {"action": "BUY"}) == 0.25


def test_alert_rules_use_real_metrics() -> None:
    problems = [f"{r['alert']}: {p}" for r in alert_rules() for p in promql_problems(r["expr"])]
    assert not problems, "\n".join(problems)
    for rule in alert_rules():
        for actions in re.findall(r'action(?:!?=~?)"([^"]+)"', rule["expr"]):
            for action in actions.split("|"):
                assert action in ACTIONS, f"{rule['alert']}: no action {action!r}"
