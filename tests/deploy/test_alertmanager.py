"""deploy/alertmanager: `amtool check-config` accepts the config (and the Slack, Telegram and e-mail
block docs/DEPLOY.md shows), `amtool config routes test` sends every rule of alerts.yml to the
receiver of its severity, and end to end a real Prometheus fires a real rule on a real metrics
endpoint, a real Alertmanager started by the compose service's own command routes it, and a local
webhook receives the alert firing, then resolved."""

from __future__ import annotations

import json
import os
import queue
import re
import subprocess
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import IO, Any

import httpx
import pytest
import yaml
from prometheus_client import CollectorRegistry, start_http_server

from services.broker_gateway.metrics import GatewayMetrics
from tests.deploy.helpers import (
    ALERTMANAGER_CONFIG,
    ALERTS,
    COMPOSE_FILE,
    PROMETHEUS_CONFIG,
    REPO,
    alert_rules,
    alertmanager_tool,
    amtool,
    stop_process,
    tool,
)
from tests.helpers import free_port

DEPLOY_DOC = REPO / "docs" / "DEPLOY.md"
RECEIVER = {"critical": "smz-critical", "warning": "smz-warning"}


def config() -> dict[str, Any]:
    return yaml.safe_load(ALERTMANAGER_CONFIG.read_text())


def check_config(path: Path) -> subprocess.CompletedProcess[str]:
    return amtool("check-config", str(path))


def test_amtool_check_config() -> None:
    out = check_config(ALERTMANAGER_CONFIG)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "SUCCESS" in out.stdout and "2 receivers" in out.stdout and "1 inhibit rules" in out.stdout


def test_amtool_refuses_a_broken_config(tmp_path: Path) -> None:
    broken = config()
    broken["route"]["routes"][0]["receiver"] = "nobody"  # a receiver that does not exist
    path = tmp_path / "alertmanager.yml"
    path.write_text(yaml.safe_dump(broken))
    out = check_config(path)
    assert out.returncode != 0 and "nobody" in out.stdout + out.stderr


def route_to(labels: dict[str, str]) -> subprocess.CompletedProcess[str]:
    pairs = [f"{k}={v}" for k, v in labels.items()]
    return amtool("config", "routes", "test", f"--config.file={ALERTMANAGER_CONFIG}", *pairs)


@pytest.mark.parametrize("rule", alert_rules(), ids=lambda rule: rule["alert"])
def test_every_rule_reaches_the_receiver_of_its_severity(rule: dict[str, Any]) -> None:
    severity = rule["labels"]["severity"]
    labels = {
        "alertname": rule["alert"],
        "severity": severity,
        "instrument": "GBPJPY",
        "stack": "micro-muzero",
    }
    out = route_to(labels)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == [RECEIVER[severity]]


def test_an_alert_without_a_known_severity_still_reaches_someone() -> None:
    assert route_to({"alertname": "Watchdog"}).stdout.split() == ["smz-warning"]
    assert route_to({"alertname": "X", "severity": "info"}).stdout.split() == ["smz-warning"]


def test_the_route_tree() -> None:
    route = config()["route"]
    assert route["group_by"] == ["alertname", "instrument", "account"]
    critical, warning = route["routes"]
    assert critical["matchers"] == ['severity="critical"'] and critical["receiver"] == "smz-critical"
    assert warning["matchers"] == ['severity="warning"'] and warning["receiver"] == "smz-warning"
    assert critical["repeat_interval"] == "1h" and route["repeat_interval"] == "12h"
    (inhibit,) = config()["inhibit_rules"]
    assert inhibit["source_matchers"] == ['severity="critical"']
    assert inhibit["target_matchers"] == ['severity="warning"']
    assert inhibit["equal"] == ["alertname", "instrument"]
    # Every receiver delivers somewhere, with the URL from a file, never inline.
    for receiver in config()["receivers"]:
        (webhook,) = receiver["webhook_configs"]
        assert webhook["url_file"] == "/etc/alertmanager/secrets/webhook-url" and "url" not in webhook
        assert webhook["send_resolved"] is True


def documented_receivers() -> list[dict[str, Any]]:
    """The ```yaml block of docs/DEPLOY.md that adds Slack, Telegram and e-mail to a receiver."""
    blocks = re.findall(r"```yaml\n(.*?)```", DEPLOY_DOC.read_text(), flags=re.S)
    (block,) = [b for b in blocks if "telegram_configs" in b]
    return yaml.safe_load(block)["receivers"]


def test_the_documented_slack_telegram_email_receivers_are_valid(tmp_path: Path) -> None:
    receivers = documented_receivers()
    (documented,) = receivers
    kinds = {key for key in documented if key.endswith("_configs")}
    assert kinds == {"webhook_configs", "slack_configs", "telegram_configs", "email_configs"}
    merged = config()
    merged["receivers"] = [documented if r["name"] == documented["name"] else r for r in merged["receivers"]]
    assert documented in merged["receivers"], "the block must replace a receiver of the config"
    path = tmp_path / "alertmanager.yml"
    path.write_text(yaml.safe_dump(merged))
    out = check_config(path)
    assert out.returncode == 0, out.stdout + out.stderr
    # Secrets only as files in the directory the compose tmpfs and the k8s Secret provide.
    text = yaml.safe_dump(documented)
    for key in ("api_url", "bot_token", "auth_password"):
        assert f"{key}:" not in text and f"{key}_file: /etc/alertmanager/secrets/" in text


# ------------------------------------------------------------------------------------- end to end
class Webhook:
    """A local HTTP server that keeps every JSON body POSTed to it."""

    def __init__(self) -> None:
        self.received: queue.Queue[dict[str, Any]] = queue.Queue()
        received = self.received

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                received.put(json.loads(body))
                self.send_response(200)
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/smz-alerts"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def next(self, status: str, timeout: float) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while (left := deadline - time.monotonic()) > 0:
            try:
                payload = self.received.get(timeout=left)
            except queue.Empty:
                break
            if payload["status"] == status:
                return payload
        raise AssertionError(f"no {status} notification within {timeout} s")

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def _alertmanager_command(tmp_path: Path, port: int) -> list[str]:
    """The compose service's own shell command, with the container's paths mapped into tmp_path and
    the deploy config made fast (1 s grouping) but otherwise unchanged."""
    service = yaml.safe_load(COMPOSE_FILE.read_text())["services"]["alertmanager"]
    (script,) = service["command"]
    script = script.replace("$$", "$")  # compose's escape of a literal $
    fast = ALERTMANAGER_CONFIG.read_text().replace("/etc/alertmanager/secrets", str(tmp_path / "secrets"))
    timed = yaml.safe_load(fast)
    for route in [timed["route"], *timed["route"]["routes"]]:
        route.update(group_wait="1s", group_interval="1s")
    (tmp_path / "config").mkdir()
    (tmp_path / "config" / "alertmanager.yml").write_text(yaml.safe_dump(timed))
    (tmp_path / "secrets").mkdir()  # the tmpfs
    for container_path, local in [
        ("/etc/alertmanager/secrets", tmp_path / "secrets"),
        ("/etc/alertmanager/config", tmp_path / "config"),
        ("exec /bin/alertmanager", f"exec {alertmanager_tool('alertmanager')}"),
        ("--storage.path=/alertmanager", f"--storage.path={tmp_path / 'data'}"),
    ]:
        assert container_path in script, container_path
        script = script.replace(container_path, str(local))
    return ["sh", "-ec", f"{script} --web.listen-address=127.0.0.1:{port}"]


def _prometheus_config(tmp_path: Path, gateway_port: int, alertmanager_port: int) -> Path:
    """deploy/prometheus/prometheus.yml every second, scraping the gateway's endpoint only and sending
    to the local Alertmanager; alerts.yml with GatewayHalted firing at once (no `for`)."""
    rules = yaml.safe_load(ALERTS.read_text())
    (halted,) = [r for g in rules["groups"] for r in g["rules"] if r.get("alert") == "GatewayHalted"]
    halted.pop("for")
    (tmp_path / "alerts.yml").write_text(yaml.safe_dump(rules))
    prometheus = yaml.safe_load(PROMETHEUS_CONFIG.read_text())
    prometheus["global"].update(scrape_interval="1s", scrape_timeout="1s", evaluation_interval="1s")
    prometheus["rule_files"] = [str(tmp_path / "alerts.yml")]
    (job,) = [j for j in prometheus["scrape_configs"] if j["job_name"] == "broker-gateway"]
    job["static_configs"] = [{"targets": [f"127.0.0.1:{gateway_port}"]}]
    prometheus["scrape_configs"] = [job]
    (manager,) = prometheus["alerting"]["alertmanagers"]
    manager["static_configs"] = [{"targets": [f"127.0.0.1:{alertmanager_port}"]}]
    path = tmp_path / "prometheus.yml"
    path.write_text(yaml.safe_dump(prometheus))
    return path


def _start(
    argv: list[str], log: Path, env: dict[str, str] | None = None
) -> tuple[subprocess.Popen[bytes], IO[bytes]]:
    out = log.open("wb")
    return subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, env=env), out


def _wait_ready(url: str, process: subprocess.Popen[bytes], log: Path, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert process.poll() is None, log.read_text()
        try:
            if httpx.get(url, timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise AssertionError(f"{url} not ready in {timeout} s:\n{log.read_text()}")


@pytest.mark.slow
def test_a_firing_rule_reaches_the_webhook_through_prometheus_and_alertmanager(tmp_path: Path) -> None:
    prometheus_bin = tool("prometheus")
    metrics = GatewayMetrics(CollectorRegistry())
    gateway_port, am_port, prom_port = free_port(), free_port(), free_port()
    server, _ = start_http_server(gateway_port, addr="127.0.0.1", registry=metrics.registry)
    webhook = Webhook()
    metrics.halted.set(1)  # the kill switch is on
    am_log, prom_log = tmp_path / "alertmanager.log", tmp_path / "prometheus.log"
    alertmanager, am_out = _start(
        _alertmanager_command(tmp_path, am_port), am_log, env={**os.environ, "ALERT_WEBHOOK_URL": webhook.url}
    )
    prometheus, prom_out = _start(
        [
            prometheus_bin,
            f"--config.file={_prometheus_config(tmp_path, gateway_port, am_port)}",
            f"--storage.tsdb.path={tmp_path / 'tsdb'}",
            f"--web.listen-address=127.0.0.1:{prom_port}",
        ],
        prom_log,
    )
    try:
        _wait_ready(f"http://127.0.0.1:{am_port}/-/ready", alertmanager, am_log)
        # The compose command wrote the URL to the file the config reads, readable by its user only.
        url_file = tmp_path / "secrets" / "webhook-url"
        assert url_file.read_text() == webhook.url and url_file.stat().st_mode & 0o077 == 0
        _wait_ready(f"http://127.0.0.1:{prom_port}/-/ready", prometheus, prom_log)

        firing = webhook.next("firing", timeout=30)
        assert firing["version"] == "4" and firing["receiver"] == "smz-critical"
        (alert,) = firing["alerts"]
        assert alert["labels"] == {
            "alertname": "GatewayHalted",
            "severity": "critical",
            "instance": f"127.0.0.1:{gateway_port}",
            "stack": "micro-muzero",  # prometheus.yml's external label
        }
        assert (
            alert["annotations"]["summary"]
            == f"The broker gateway's kill switch is on (127.0.0.1:{gateway_port})"
        )
        assert firing["groupLabels"] == {"alertname": "GatewayHalted"}

        metrics.halted.set(0)  # resumed: the same receiver hears that it is over
        resolved = webhook.next("resolved", timeout=30)
        assert resolved["receiver"] == "smz-critical"
        assert resolved["alerts"][0]["labels"]["alertname"] == "GatewayHalted"
        assert resolved["alerts"][0]["endsAt"] >= alert["startsAt"]
    finally:
        stop_process(prometheus, prom_out)
        stop_process(alertmanager, am_out)
        webhook.close()
        server.shutdown()
        server.server_close()
