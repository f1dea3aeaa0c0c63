"""What the deploy tests share: paths, the metrics the services really export, and a small PromQL reader
that finds the metric and label names an expression uses (enough for our dashboards and rules; it is
not a PromQL parser)."""

from __future__ import annotations

import importlib
import inspect
import json
import os
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import IO, Any

import pytest
import yaml
from prometheus_client import CollectorRegistry
from prometheus_client.metrics import MetricWrapperBase

REPO = Path(__file__).resolve().parents[2]
DEPLOY = REPO / "deploy"
COMPOSE_FILE = REPO / "docker-compose.yml"
ENV_EXAMPLE = REPO / ".env.example"
PROMETHEUS_DIR = DEPLOY / "prometheus"
PROMETHEUS_CONFIG = PROMETHEUS_DIR / "prometheus.yml"
ALERTS = PROMETHEUS_DIR / "alerts.yml"
ALERTS_TEST = PROMETHEUS_DIR / "alerts_test.yml"
ALERTMANAGER_DIR = DEPLOY / "alertmanager"
ALERTMANAGER_CONFIG = ALERTMANAGER_DIR / "alertmanager.yml"
# The version of prom/alertmanager in docker-compose.yml and k8s, which
# deploy/alertmanager/install-alertmanager.sh installs beside the venv's python.
ALERTMANAGER_VERSION = "0.28.1"
DASHBOARDS = sorted((DEPLOY / "grafana" / "dashboards").glob("*.json"))
LIVE_DASHBOARD = DEPLOY / "grafana" / "dashboards" / "live-trading.json"
GRAFANA_PROVISIONING = DEPLOY / "grafana" / "provisioning"
INFINITY = "yesoreyeram-infinity-datasource"  # the data source plugin of the gateway's trades
# Labels Prometheus adds to every scraped series.
TARGET_LABELS = frozenset({"job", "instance"})
# Series every Prometheus has besides the services' own.
PROMETHEUS_SERIES = {"up": frozenset()}


def tool(name: str, packages: str = "docker-compose prometheus") -> str:
    """A binary the test needs: fail in CI (.ci/run installs it), skip elsewhere."""
    found = shutil.which(name)
    if found:
        return found
    if os.environ.get("CI"):
        pytest.fail(f"{name} is not installed: .ci/run installs it with apt-get")
    pytest.skip(f"{name} is not installed (apt-get install -y {packages})")


def alertmanager_tool(name: str) -> str:
    """``alertmanager`` or ``amtool`` of ALERTMANAGER_VERSION: beside the venv's python (where
    install-alertmanager.sh puts them), else on PATH. Debian bookworm's own (0.25) is too old for the
    config (no ``url_file``): fail in CI, skip elsewhere."""
    for found in (str(Path(sys.executable).parent / name), shutil.which(name)):
        if not found or not Path(found).is_file():
            continue
        out = subprocess.run([found, "--version"], capture_output=True, text=True, timeout=30, check=False)
        if f"version {ALERTMANAGER_VERSION}" in out.stdout + out.stderr:
            return found
    message = f"no {name} {ALERTMANAGER_VERSION}: run deploy/alertmanager/install-alertmanager.sh"
    if os.environ.get("CI"):
        pytest.fail(message + " (.ci/run does)")
    pytest.skip(message)


def amtool(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [alertmanager_tool("amtool"), *args], capture_output=True, text=True, timeout=60, check=False
    )


def stop_process(process: subprocess.Popen[bytes], log: IO[bytes]) -> None:
    """Stop a server the test started (SIGTERM, then SIGKILL after 15 s) and close its log."""
    process.terminate()
    try:
        process.wait(timeout=15)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(timeout=5)
    log.close()


def promtool(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [tool("promtool"), *args], input=stdin, capture_output=True, text=True, timeout=120, check=False
    )


def promtool_check_metrics(text: str) -> list[str]:
    """What `promtool check metrics` says about a /metrics exposition (nothing when it is clean): it
    reports on stderr and exits non-zero."""
    out = promtool("check", "metrics", stdin=text)
    problems = (out.stdout + out.stderr).strip().splitlines()
    if out.returncode != 0 and not problems:
        problems = [f"promtool check metrics exited {out.returncode}"]
    return problems


# ------------------------------------------------------------------------------------------ metrics
@dataclass(frozen=True)
class Metric:
    name: str  # as created, e.g. smz_gateway_orders (a counter's series is smz_gateway_orders_total)
    kind: str  # counter, gauge, histogram
    labels: frozenset[str]
    module: str


@cache
def service_metrics() -> tuple[Metric, ...]:
    """Every metric of services/*/metrics.py: each ``*Metrics`` class there, instantiated on a fresh
    registry, and its prometheus_client metrics read back."""
    found: list[Metric] = []
    for module_name, instance in service_metrics_objects():
        for value in metric_objects(instance):
            found.append(Metric(value._name, value._type, frozenset(value._labelnames), module_name))
    return tuple(found)


def service_metrics_objects() -> list[tuple[str, Any]]:
    """(module, instance on a fresh registry) of each ``*Metrics`` class of services/*/metrics.py."""
    out = []
    for path in sorted((REPO / "services").glob("*/metrics.py")):
        module_name = f"services.{path.parent.name}.metrics"
        module = importlib.import_module(module_name)
        for _, cls in inspect.getmembers(module, inspect.isclass):
            if cls.__module__ == module_name and cls.__name__.endswith("Metrics"):
                out.append((module_name, cls(CollectorRegistry())))
    return out


def metric_objects(instance: Any) -> list[MetricWrapperBase]:
    """The prometheus_client metrics an instance holds, in attributes or in dicts of them."""
    out = []
    for value in vars(instance).values():
        for item in value.values() if isinstance(value, dict) else [value]:
            if isinstance(item, MetricWrapperBase):
                out.append(item)
    return out


@cache
def exported_series() -> dict[str, frozenset[str]]:
    """Series name -> its label names, as Prometheus scrapes them (without job and instance)."""
    series: dict[str, frozenset[str]] = dict(PROMETHEUS_SERIES)
    for m in service_metrics():
        if m.kind == "counter":
            series[f"{m.name}_total"] = m.labels
            series[f"{m.name}_created"] = m.labels
        elif m.kind == "histogram":
            series[f"{m.name}_bucket"] = m.labels | {"le"}
            for suffix in ("_sum", "_count", "_created"):
                series[m.name + suffix] = m.labels
        else:
            series[m.name] = m.labels
    return series


# ------------------------------------------------------------------------------------------- PromQL
# Functions, aggregations and keywords that may appear as bare words in our expressions.
PROMQL_WORDS = frozenset(
    {
        "sum",
        "min",
        "max",
        "avg",
        "count",
        "stddev",
        "stdvar",
        "topk",
        "bottomk",
        "quantile",
        "count_values",
        "group",
        "by",
        "without",
        "on",
        "ignoring",
        "group_left",
        "group_right",
        "and",
        "or",
        "unless",
        "bool",
        "offset",
        "rate",
        "irate",
        "increase",
        "delta",
        "idelta",
        "deriv",
        "predict_linear",
        "histogram_quantile",
        "abs",
        "ceil",
        "floor",
        "round",
        "clamp",
        "clamp_min",
        "clamp_max",
        "vector",
        "scalar",
        "time",
        "timestamp",
        "absent",
        "absent_over_time",
        "changes",
        "resets",
        "day_of_week",
        "day_of_month",
        "days_in_month",
        "hour",
        "minute",
        "month",
        "year",
        "label_replace",
        "label_join",
        "sort",
        "sort_desc",
        "sgn",
        "exp",
        "ln",
        "log2",
        "log10",
        "sqrt",
        "avg_over_time",
        "min_over_time",
        "max_over_time",
        "sum_over_time",
        "count_over_time",
        "last_over_time",
        "quantile_over_time",
        "stddev_over_time",
        "present_over_time",
        "inf",
        "nan",
    }
)
_STRING = re.compile(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'')
_SELECTOR = re.compile(r"([A-Za-z_:][A-Za-z0-9_:]*)?\s*\{([^}]*)\}")
_MATCHER = re.compile(r"([A-Za-z_][A-Za-z0-9_]*)\s*(=~|!~|!=|=)")
_GROUPING = re.compile(r"\b(by|without|on|ignoring|group_left|group_right)\s*\(([^)]*)\)")
_WORD = re.compile(r"(?<![\w.$])([A-Za-z_:][A-Za-z0-9_:]*)")


@dataclass
class PromQLNames:
    metrics: set[str]
    selector_labels: dict[str, set[str]]  # metric -> label names in its {...}
    grouping_labels: set[str]  # labels of by/without/on/ignoring/group_left/group_right
    unknown_words: set[str]  # bare words that are neither PromQL nor a known series


def promql_names(expr: str) -> PromQLNames:
    known = exported_series()
    text = _STRING.sub('""', expr)
    text = re.sub(r"\[[^\]]*\]", "", text)  # range selectors: [5m], [$__rate_interval]
    selector_labels: dict[str, set[str]] = {}
    for m in _SELECTOR.finditer(text):
        name = m.group(1) or ""
        selector_labels.setdefault(name, set()).update(x.group(1) for x in _MATCHER.finditer(m.group(2)))
    text = _SELECTOR.sub(lambda m: f" {m.group(1) or ''} ", text)
    grouping: set[str] = set()
    for m in _GROUPING.finditer(text):
        grouping.update(label.strip() for label in m.group(2).split(",") if label.strip())
    text = _GROUPING.sub(" ", text)
    metrics, unknown = set(), set()
    for word in _WORD.findall(text):
        if word in PROMQL_WORDS:
            continue
        if word in known:
            metrics.add(word)
        else:
            unknown.add(word)
    return PromQLNames(metrics, selector_labels, grouping, unknown)


def promql_problems(expr: str) -> list[str]:
    """Why ``expr`` would not find the services' series: unknown metric names or labels."""
    known = exported_series()
    names = promql_names(expr)
    problems = [f"unknown metric or word {w!r}" for w in sorted(names.unknown_words)]
    if not names.metrics:
        problems.append("uses no metric of the services")
    for metric, labels in names.selector_labels.items():
        if metric == "":
            problems.append("a selector without a metric name")
            continue
        for label in sorted(labels - known.get(metric, frozenset()) - TARGET_LABELS):
            problems.append(f"{metric} has no label {label!r}")
    available = set(TARGET_LABELS).union(*(known[m] for m in names.metrics)) if names.metrics else set()
    for label in sorted(names.grouping_labels - available):
        problems.append(f"grouping by {label!r}, a label none of {sorted(names.metrics)} has")
    return problems


# -------------------------------------------------------------------------------- dashboards, rules
def load_dashboard(path: Path) -> dict[str, Any]:
    return json.loads(path.read_text())


def panels(dashboard: dict[str, Any]) -> list[dict[str, Any]]:
    """Every panel, rows' collapsed panels included."""
    out = []
    for panel in dashboard["panels"]:
        out.append(panel)
        out.extend(panel.get("panels", []))
    return out


def query_panels(dashboard: dict[str, Any]) -> list[dict[str, Any]]:
    return [p for p in panels(dashboard) if p.get("type") != "row"]


def prometheus_panels(dashboard: dict[str, Any]) -> list[dict[str, Any]]:
    """The panels that query Prometheus (the others read the gateway through Infinity)."""
    return [p for p in query_panels(dashboard) if (p.get("datasource") or {}).get("type") != INFINITY]


def infinity_queries(dashboard: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    """(where, query) of every Infinity query: the panels' targets and the annotations' targets."""
    out = [
        (f"panel {p['title']} / {t['refId']}", t)
        for p in query_panels(dashboard)
        if (p.get("datasource") or {}).get("type") == INFINITY
        for t in p["targets"]
    ]
    for annotation in dashboard.get("annotations", {}).get("list", []):
        if (annotation.get("datasource") or {}).get("type") == INFINITY:
            out.append((f"annotation {annotation['name']}", annotation["target"]))
    return out


def dashboard_variables(dashboard: dict[str, Any]) -> set[str]:
    return {var["name"] for var in dashboard.get("templating", {}).get("list", [])}


# Grafana's escapeRegex: what its `regex` variable format escapes in each value.
_GRAFANA_REGEX_SPECIALS = re.compile(r"[\\^$*+?.()|\[\]{}/]")
_GRAFANA_VARIABLE = re.compile(r"\$\{(\w+)(?::([^}]+))?\}|\$(\w+)")


def grafana_regex(values: list[str] | None) -> str:
    """Grafana's ``${var:regex}`` of a multi-value variable with the custom all value ``.*`` (None:
    All): one value escaped, several as ``(a|b)``."""
    if values is None:
        return ".*"
    escaped = [_GRAFANA_REGEX_SPECIALS.sub(lambda m: "\\" + m.group(0), v) for v in values]
    return escaped[0] if len(escaped) == 1 else f"({'|'.join(escaped)})"


def grafana_interpolate(text: str, selection: dict[str, list[str] | None], start: int, end: int) -> str:
    """``text`` as Grafana and Infinity send it: the dashboard variables of ``selection`` in the regex
    format, Infinity's time macros ``${__timeFrom:date:seconds}`` and ``${__timeTo:date:seconds}``
    as [start, end]. Any other variable or format fails: this reader knows only those."""

    def replace(m: re.Match[str]) -> str:
        name, fmt = m.group(1) or m.group(3), m.group(2)
        if (name, fmt) == ("__timeFrom", "date:seconds"):
            return str(start)
        if (name, fmt) == ("__timeTo", "date:seconds"):
            return str(end)
        assert fmt == "regex" and name in selection, f"unsupported variable {m.group(0)} in {text!r}"
        return grafana_regex(selection[name])

    return _GRAFANA_VARIABLE.sub(replace, text)


def variable_queries(dashboard: dict[str, Any]) -> list[tuple[str, str]]:
    """(metric, label) of every ``label_values(metric, label)`` template variable."""
    out = []
    for var in dashboard.get("templating", {}).get("list", []):
        if var.get("type") != "query":
            continue
        query = var["query"]["query"] if isinstance(var["query"], dict) else var["query"]
        m = re.fullmatch(r"\s*label_values\(\s*([A-Za-z_:][\w:]*)\s*,\s*(\w+)\s*\)\s*", query)
        assert m, f"variable {var['name']}: only label_values(metric, label) is supported, got {query!r}"
        out.append((m.group(1), m.group(2)))
    return out


# Grafana's variables, made concrete for a query straight to Prometheus.
GRAFANA_SUBSTITUTIONS = {
    "$__rate_interval": "1m",
    "$__interval": "15s",
    "$__range": "1h",
    "${instrument}": ".*",
    "$instrument": ".*",
    "${account}": ".*",
    "$account": ".*",
}


def concrete(expr: str, substitutions: dict[str, str] | None = None) -> str:
    subs = {**GRAFANA_SUBSTITUTIONS, **(substitutions or {})}
    for key in sorted(subs, key=len, reverse=True):
        expr = expr.replace(key, subs[key])
    assert "$" not in expr, f"a Grafana variable is left in {expr!r}"
    return expr


def alert_rules() -> list[dict[str, Any]]:
    doc = yaml.safe_load(ALERTS.read_text())
    return [rule for group in doc["groups"] for rule in group["rules"]]


# Infinity's column types, and the JSON values each accepts.
INFINITY_COLUMN_TYPES: dict[str, tuple[type, ...]] = {
    "string": (str,),
    "number": (int, float),
    "timestamp_epoch_s": (int,),
}


def run_infinity_query(
    http: Any, token: str, query: dict[str, Any], selection: dict[str, Any], start: int, end: int
) -> list[dict[str, Any]]:
    """The rows of an Infinity query as Infinity sends it to the gateway (``http``: a client on its
    URL, the data source's): the bearer token, the parameters interpolated as Grafana does."""
    params = {
        p["key"]: grafana_interpolate(p["value"], selection, start, end)
        for p in query["url_options"]["params"]
    }
    response = http.get(query["url"], params=params, headers={"Authorization": f"Bearer {token}"})
    assert response.status_code == 200, (query["refId"], params, response.text)
    rows = response.json()
    assert isinstance(rows, list) and query["root_selector"] == ""
    return rows


def check_infinity_rows(
    where: str, query: dict[str, Any], rows: list[dict[str, Any]], start: int, end: int
) -> None:
    """Every column's selector is a field of every row, of the column's type; an annotation's times
    are in [start, end]."""
    for row in rows:
        for column in query["columns"]:
            value = row.get(column["selector"], KeyError)
            assert value is not KeyError, f"{where}: no field {column['selector']!r} in {row}"
            kinds = INFINITY_COLUMN_TYPES[column["type"]]
            assert isinstance(value, kinds) and not isinstance(value, bool), f"{where}: {column} {value!r}"
            if column["type"] == "timestamp_epoch_s" and "annotation" in where:
                assert start <= value <= end, f"{where}: {value} outside [{start}, {end}]"
