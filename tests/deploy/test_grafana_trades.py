"""The live-trading dashboard's trades from the gateway's ledger: the Infinity data source provisioning,
the trade table and the entry/exit annotations. No Grafana runs here (neither Debian, PyPI nor npm
ships a Grafana server): each Infinity query is checked against the real gateway app instead. Its URL
is a GET route, its parameters are ones the route takes, its variables are the dashboard's, and, sent
as Grafana sends it (variables in their format, Infinity's time macros) to a running gateway whose
ledger holds real trades, it returns rows holding every field its columns select, of the type the
column declares, filtered as the variables say."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
import yaml
from fastapi.testclient import TestClient

from services.broker_gateway.app import create_app
from services.broker_gateway.settings import GatewaySettings
from tests.deploy.helpers import (
    COMPOSE_FILE,
    DASHBOARDS,
    GRAFANA_PROVISIONING,
    INFINITY,
    INFINITY_COLUMN_TYPES,
    LIVE_DASHBOARD,
    REPO,
    check_infinity_rows,
    dashboard_variables,
    grafana_interpolate,
    grafana_regex,
    infinity_queries,
    load_dashboard,
    panels,
    run_infinity_query,
)
from tests.helpers import ROUND_TRIPS, trade_through

REDIS_URL = "redis://127.0.0.1:6379/0"
TOKEN = "grafana-trades-test-token"


def provisioned_datasources() -> dict[str, dict[str, Any]]:
    """uid -> data source, over every provisioning file."""
    out = {}
    for path in sorted((GRAFANA_PROVISIONING / "datasources").glob("*.yml")):
        for source in yaml.safe_load(path.read_text())["datasources"]:
            assert source["uid"] not in out, f"uid {source['uid']} provisioned twice"
            out[source["uid"]] = source
    return out


def gateway_datasource() -> dict[str, Any]:
    (source,) = [s for s in provisioned_datasources().values() if s["type"] == INFINITY]
    return source


def all_infinity_queries() -> list[tuple[str, dict[str, Any], set[str]]]:
    """(where, query, the variables of its dashboard) of every dashboard's Infinity queries."""
    out = []
    for path in DASHBOARDS:
        board = load_dashboard(path)
        out += [
            (f"{path.name} {where}", q, dashboard_variables(board)) for where, q in infinity_queries(board)
        ]
    return out


def _settings(tmp_path: Path, stream: str) -> GatewaySettings:
    shared = {"gateway_token": TOKEN, "redis_url": REDIS_URL, "positions_stream": stream}
    return GatewaySettings(ledger_db=tmp_path / "ledger.duckdb", shared=shared)  # type: ignore[arg-type]


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in list(os.environ):
        if name.startswith("SMZ_GATEWAY_"):
            monkeypatch.delenv(name)


def test_the_gateway_data_source_is_provisioned_with_the_token_from_the_environment() -> None:
    source = gateway_datasource()
    assert source["uid"] == "smz-gateway" and source["access"] == "proxy" and not source["editable"]
    compose = yaml.safe_load(COMPOSE_FILE.read_text())
    gateway_url = compose["x-shared-settings"]["SMZ_GATEWAY_URL"]
    assert source["url"] == gateway_url == "http://broker-gateway:8002"
    assert source["jsonData"]["auth_method"] == "bearerToken"
    # The token goes to the gateway only, and is never written in the repository.
    assert source["jsonData"]["allowedHosts"] == [gateway_url]
    assert source["secureJsonData"] == {"bearerToken": "${SMZ_GATEWAY_TOKEN}"}
    # The Prometheus data source is still the default one.
    assert [s["uid"] for s in provisioned_datasources().values() if s.get("isDefault")] == ["prometheus"]


def test_kubernetes_grafana_gets_the_same_data_source_and_plugin() -> None:
    """k8s/overlays/monitoring/grafana-values.yaml (kube-prometheus-stack's Grafana): the compose data
    source but for the gateway's cluster URL, the same plugin pin, the token from a Secret."""
    values = yaml.safe_load((REPO / "k8s" / "overlays" / "monitoring" / "grafana-values.yaml").read_text())
    grafana = values["grafana"]
    compose = yaml.safe_load(COMPOSE_FILE.read_text())["services"]["grafana"]["environment"]
    assert grafana["plugins"] == [compose["GF_INSTALL_PLUGINS"]]
    (source,) = grafana["additionalDataSources"]
    url = "http://broker-gateway.micro-muzero.svc:8002"
    expected = gateway_datasource()
    expected = {**expected, "url": url, "jsonData": {**expected["jsonData"], "allowedHosts": [url]}}
    assert source == expected
    token = grafana["envValueFrom"]["SMZ_GATEWAY_TOKEN"]["secretKeyRef"]
    assert token == {"name": "smz-grafana-gateway-token", "key": "gateway-token"}


def test_the_live_dashboard_has_the_trade_table_and_annotations() -> None:
    board = load_dashboard(LIVE_DASHBOARD)
    wheres = [where for where, _ in infinity_queries(board)]
    assert wheres == [
        "panel Trades in the time range / A",
        "annotation Trade entries",
        "annotation Trade exits",
    ]
    (table,) = [p for p in panels(board) if p["title"] == "Trades in the time range"]
    texts = {c["text"] for c in table["targets"][0]["columns"]}
    assert {"Exit", "Entry", "Account", "Instrument", "Side", "P&L (pips)", "Exit reason"} <= texts
    # What the panel's options name are columns of the query.
    assert {s["displayName"] for s in table["options"]["sortBy"]} <= texts
    assert set(table["options"]["footer"]["fields"]) <= texts
    assert {o["matcher"]["options"] for o in table["fieldConfig"]["overrides"]} <= texts
    ids = {p["id"] for p in panels(board)}
    for annotation in board["annotations"]["list"]:
        if annotation["datasource"]["type"] != INFINITY:
            continue
        columns = {c["text"]: c["type"] for c in annotation["target"]["columns"]}
        mappings = annotation["mappings"]
        assert {m["source"] for m in mappings.values()} == {"field"}
        assert {m["value"] for m in mappings.values()} <= set(columns), annotation["name"]
        assert columns[mappings["time"]["value"]] == "timestamp_epoch_s"
        assert set(annotation["filter"]["ids"]) <= ids and annotation["filter"]["exclude"] is False
        (equity,) = [p for p in panels(board) if p["id"] in annotation["filter"]["ids"]]
        assert equity["title"] == "Equity (pips)"


def test_every_infinity_query_is_a_route_of_the_gateway(tmp_path: Path, clean_env: None) -> None:
    schema = create_app(_settings(tmp_path, "unused")).openapi()["paths"]
    problems: list[str] = []
    queries = all_infinity_queries()
    assert queries
    for where, query, variables in queries:
        if query["datasource"]["uid"] not in provisioned_datasources():
            problems.append(f"{where}: data source {query['datasource']} is not provisioned")
        if (query["type"], query["source"], query["parser"], query["format"]) != (
            "json",
            "url",
            "backend",
            "table",
        ):
            problems.append(f"{where}: not a JSON URL query with the backend parser as a table")
        get = schema.get(query["url"], {}).get("get")
        if get is None or query["url_options"]["method"] != "GET":
            problems.append(f"{where}: GET {query['url']} is not a route of the gateway")
            continue
        takes = {p["name"] for p in get["parameters"] if p["in"] == "query"}
        keys = [p["key"] for p in query["url_options"]["params"]]
        if len(keys) != len(set(keys)) or not set(keys) <= takes:
            problems.append(f"{where}: parameters {keys}; {query['url']} takes {sorted(takes)}")
        selection = dict.fromkeys(variables)
        for param in query["url_options"]["params"]:
            try:
                grafana_interpolate(param["value"], selection, 0, 1)
            except AssertionError as exc:
                problems.append(f"{where}: {exc}")
        for column in query["columns"]:
            if column["type"] not in INFINITY_COLUMN_TYPES:
                problems.append(f"{where}: column {column} has a type this test does not know")
    assert not problems, "\n".join(problems)


@pytest.fixture
def gateway_with_trades(tmp_path: Path, clean_env: None) -> Iterator[tuple[TestClient, list[str]]]:
    """The real gateway app (paper broker, a fresh ledger, Redis) holding ROUND_TRIPS of one account
    and the first of another."""
    client = redis.Redis.from_url(REDIS_URL, socket_connect_timeout=1)
    try:
        client.ping()
    except redis.RedisError:
        pytest.skip(f"no Redis answers at {REDIS_URL}")
    tag = uuid.uuid4().hex[:12]
    accounts = [f"test-grafana-{tag}-a", f"test-grafana-{tag}-b"]
    stream = f"test:smz:positions:grafana-{tag}"
    try:
        with TestClient(create_app(_settings(tmp_path, stream))) as http:
            trade_through(http, TOKEN, accounts[0])
            trade_through(http, TOKEN, accounts[1], ROUND_TRIPS[:1])
            yield http, accounts
    finally:
        client.delete(stream)
        for account in accounts:
            for key in client.scan_iter(f"smz:position:{account}:*"):
                client.delete(key)


def test_every_infinity_query_resolves_on_a_running_gateway(
    gateway_with_trades: tuple[TestClient, list[str]],
) -> None:
    http, (mine, other) = gateway_with_trades
    start, end = ROUND_TRIPS[0][4], ROUND_TRIPS[-1][4] + 3600
    everything = {"instrument": None, "account": None}
    for where, query, _ in all_infinity_queries():
        rows = run_infinity_query(http, TOKEN, query, everything, start, end)
        check_infinity_rows(where, query, rows, start, end)
        if query["url"] == "/v1/trades":
            assert len(rows) == len(ROUND_TRIPS) + 1, where
            assert {r["account"] for r in rows} == {mine, other}
        else:  # one annotation per entry, or per exit
            assert len(rows) == len(ROUND_TRIPS) + 1, where
            assert all(r["tags"].split(",")[:2] == [r["instrument"], r["account"]] for r in rows)
        # One instrument and both accounts (Grafana's regex format), then one account.
        picked = run_infinity_query(
            http, TOKEN, query, {"instrument": ["GBPJPY"], "account": [mine, other]}, start, end
        )
        assert {r["instrument"] for r in picked} == {"GBPJPY"} and len(picked) == 3, where
        one = run_infinity_query(http, TOKEN, query, {"instrument": None, "account": [mine]}, start, end)
        assert {r["account"] for r in one} == {mine} and len(one) == len(ROUND_TRIPS), where
        # The time range: only the second half of the day's trades.
        late = run_infinity_query(http, TOKEN, query, everything, ROUND_TRIPS[2][4], end)
        check_infinity_rows(where, query, late, ROUND_TRIPS[2][4], end)
        assert len(late) == 2, where


def test_grafana_regex_format() -> None:
    assert grafana_regex(None) == ".*"
    assert grafana_regex(["GBPJPY"]) == "GBPJPY"
    assert grafana_regex(["GBPJPY", "EUR.USD"]) == "(GBPJPY|EUR\\.USD)"
    with pytest.raises(AssertionError, match="unsupported variable"):
        grafana_interpolate("$instrument", {"instrument": None}, 0, 1)
    with pytest.raises(AssertionError, match="unsupported variable"):
        grafana_interpolate("${__from}", {}, 0, 1)
    assert grafana_interpolate("${__timeFrom:date:seconds}-${__timeTo:date:seconds}", {}, 5, 9) == "5-9"
