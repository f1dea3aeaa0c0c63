"""docker-compose.yml: `docker-compose config` (v1, the Debian package) accepts it with the committed
.env.example as a Compose Specification file (no `version:`, what Compose v2 reads), refuses it
without the secrets, and the resolved config says what the deployment relies on."""

from __future__ import annotations

import re
import subprocess
from functools import cache
from pathlib import Path
from typing import Any

import yaml

from services.broker_gateway.settings import GatewaySettings
from services.feature_builder.settings import FeatureBuilderSettings
from services.inference.settings import InferenceSettings
from services.trainer.settings import TrainerSettings
from tests.deploy.helpers import (
    ALERTMANAGER_CONFIG,
    ALERTMANAGER_VERSION,
    COMPOSE_FILE,
    ENV_EXAMPLE,
    PROMETHEUS_CONFIG,
    REPO,
    tool,
)

SMZ_SERVICES = ("data-init", "trainer", "broker-gateway", "inference", "feature-builder")
LONG_RUNNING = (
    "redis",
    "trainer",
    "broker-gateway",
    "inference",
    "feature-builder",
    "prometheus",
    "alertmanager",
    "grafana",
)
SECRETS = (
    "SMZ_GATEWAY_TOKEN",
    "SMZ_GATEWAY_ADMIN_TOKEN",
    "REDIS_PASSWORD",
    "GRAFANA_ADMIN_PASSWORD",
    "ALERT_WEBHOOK_URL",
)
SETTINGS = {
    "inference": InferenceSettings,
    "broker-gateway": GatewaySettings,
    "feature-builder": FeatureBuilderSettings,
    "trainer": TrainerSettings,
}


def compose(*args: str, env_file: Path | None = ENV_EXAMPLE, file: Path = COMPOSE_FILE):
    argv = [tool("docker-compose"), "--project-directory", str(REPO), "-f", str(file)]
    if env_file is not None:
        argv += ["--env-file", str(env_file)]
    return subprocess.run([*argv, *args], capture_output=True, text=True, timeout=60, check=False, cwd=REPO)


@cache
def resolved() -> dict[str, Any]:
    out = compose("config")
    assert out.returncode == 0, out.stderr
    return yaml.safe_load(out.stdout)


def test_compose_config_accepts_the_file() -> None:
    config = resolved()
    assert set(config["services"]) == {"redis", "prometheus", "alertmanager", "grafana", *SMZ_SERVICES}
    assert set(config["volumes"]) >= {"checkpoints", "redis-data", "market-data", "ledger"}


def test_the_file_is_a_compose_specification_file() -> None:
    """No obsolete `version:` (Compose v2 warns about it): docker-compose 1.29 then validates the file
    against the Compose Specification schema, the format Compose v2 implements, and accepts it."""
    assert "version" not in yaml.safe_load(COMPOSE_FILE.read_text())
    assert set(resolved()["services"]) >= set(LONG_RUNNING)  # docker-compose config accepted it


def test_secrets_come_from_the_env_file_only(tmp_path: Path) -> None:
    text = COMPOSE_FILE.read_text()
    example = ENV_EXAMPLE.read_text()
    for name in SECRETS:
        assert re.search(rf"\$\{{{name}:\?", text), f"{name} must be required (${{{name}:?...}})"
        assert re.search(rf"(?m)^{name}=.*change-me", example), f".env.example must hold a placeholder {name}"
    assert ".env" in (REPO / ".gitignore").read_text().split()
    assert ".env" in (REPO / ".dockerignore").read_text().split()
    # Every variable the compose file reads is documented in .env.example.
    used = set(re.findall(r"\$\{([A-Z0-9_]+)", text))
    documented = set(re.findall(r"(?m)^([A-Z0-9_]+)=", example))
    assert used <= documented, f"not in .env.example: {sorted(used - documented)}"
    # Without them, compose refuses to start and says which one is missing.
    empty = tmp_path / "empty.env"
    empty.write_text("")
    out = compose("config", env_file=empty)
    assert out.returncode != 0
    assert any(f"set {name} in .env" in out.stderr for name in SECRETS), out.stderr


def test_checkpoints_volume_is_written_by_the_trainer_and_read_by_inference() -> None:
    services = resolved()["services"]

    def mount(service: str, target: str) -> str:
        for volume in services[service]["volumes"]:
            source, path, *mode = volume.split(":")
            if path == target:
                return f"{source}:{mode[0] if mode else 'rw'}"
        raise AssertionError(f"{service} does not mount {target}")

    assert mount("trainer", "/checkpoints") == "checkpoints:rw"
    assert mount("inference", "/checkpoints") == "checkpoints:ro"
    assert mount("broker-gateway", "/var/lib/smz/ledger") == "ledger:rw"
    assert mount("data-init", "/data") == "market-data:rw"
    assert mount("trainer", "/data") == "market-data:ro"
    assert mount("feature-builder", "/data") == "market-data:ro"
    redis = services["redis"]
    assert "--appendonly" in redis["command"]
    assert redis["command"][redis["command"].index("--appendonly") + 1] == "yes"
    assert redis["volumes"] == ["redis-data:/data:rw"]


def test_healthchecks_and_start_order() -> None:
    services = resolved()["services"]
    for name in LONG_RUNNING:
        check = services[name].get("healthcheck", {})
        assert check.get("test") and not check.get("disable"), f"{name} has no health check"
    deps = {name: s.get("depends_on", {}) for name, s in services.items()}
    assert deps["trainer"]["data-init"]["condition"] == "service_completed_successfully"
    assert deps["feature-builder"]["data-init"]["condition"] == "service_completed_successfully"
    for service, dependency in [
        ("broker-gateway", "redis"),
        ("inference", "redis"),
        ("inference", "broker-gateway"),
        ("feature-builder", "redis"),
        ("feature-builder", "broker-gateway"),
        ("feature-builder", "inference"),
        ("grafana", "prometheus"),
    ]:
        assert deps[service][dependency]["condition"] == "service_healthy", (service, dependency)


def test_services_bind_all_interfaces_and_read_real_settings() -> None:
    services = resolved()["services"]
    hosts = {
        "broker-gateway": "SMZ_GATEWAY_HOST",
        "inference": "SMZ_INFERENCE_HOST",
        "feature-builder": "SMZ_FEATURE_BUILDER_METRICS_HOST",
        "trainer": "SMZ_TRAINER_METRICS_HOST",
    }
    for service, variable in hosts.items():
        assert services[service]["environment"][variable] == "0.0.0.0", service
    for service in SMZ_SERVICES:
        s = services[service]
        assert s["image"] == "micro-muzero:0.1.0" and s["build"]["context"] == str(REPO)
        for variable in s.get("environment", {}):
            assert service in SETTINGS, f"{service}: {variable} is not a setting of any service"
            # The service's own SMZ_<SERVICE>_* and the shared SMZ_* (services/settings.py).
            assert variable in SETTINGS[service].variables(), f"{service}: {variable} is read by no setting"
    # The gateway's token is the one inference sends; the shared block is the same in every service.
    live = [services[name]["environment"] for name in ("broker-gateway", "inference", "feature-builder")]
    assert live[0]["SMZ_GATEWAY_TOKEN"] == live[1]["SMZ_GATEWAY_TOKEN"]
    for variable in ("SMZ_REDIS_URL", "SMZ_ACCOUNT", "SMZ_SPREAD_PIPS", "SMZ_GATEWAY_URL"):
        assert len({env[variable] for env in live}) == 1, variable
    # Published ports stay on the loopback unless BIND_ADDRESS says otherwise.
    for name, s in services.items():
        for port in s.get("ports", []):
            assert str(port).startswith("127.0.0.1:"), (name, port)


def test_prometheus_scrapes_the_compose_services_on_their_ports() -> None:
    services = resolved()["services"]
    prometheus = yaml.safe_load(PROMETHEUS_CONFIG.read_text())
    ports = {
        "inference": services["inference"]["environment"]["SMZ_INFERENCE_PORT"],
        "broker-gateway": services["broker-gateway"]["environment"]["SMZ_GATEWAY_PORT"],
        "feature-builder": services["feature-builder"]["environment"]["SMZ_FEATURE_BUILDER_METRICS_PORT"],
        "trainer": services["trainer"]["environment"]["SMZ_TRAINER_METRICS_PORT"],
    }
    targets = {
        job["job_name"]: [t for c in job["static_configs"] for t in c["targets"]]
        for job in prometheus["scrape_configs"]
    }
    for service, port in ports.items():
        assert targets[service] == [f"{service}:{port}"]
    mounts = services["prometheus"]["volumes"]
    assert f"{REPO}/deploy/prometheus:/etc/prometheus:ro" in mounts
    grafana = services["grafana"]["volumes"]
    assert f"{REPO}/deploy/grafana/dashboards:/etc/grafana/dashboards:ro" in grafana
    assert f"{REPO}/deploy/grafana/provisioning:/etc/grafana/provisioning:ro" in grafana


def test_grafana_installs_the_pinned_infinity_plugin_and_gets_the_gateway_token() -> None:
    services = resolved()["services"]
    grafana = services["grafana"]["environment"]
    # One plugin, at an exact version (the image's `id version` form; a bare id would take the latest).
    assert re.fullmatch(r"yesoreyeram-infinity-datasource \d+\.\d+\.\d+", grafana["GF_INSTALL_PLUGINS"])
    assert grafana["SMZ_GATEWAY_TOKEN"] == services["broker-gateway"]["environment"]["SMZ_GATEWAY_TOKEN"]


def test_alertmanager_gets_the_config_and_the_webhook_url_prometheus_expects() -> None:
    """The image is the version the tests run; the command writes ALERT_WEBHOOK_URL to the file the
    config's webhooks read (on the tmpfs), loads the mounted deploy/alertmanager/alertmanager.yml, and
    listens where prometheus.yml sends the alerts."""
    service = resolved()["services"]["alertmanager"]
    assert service["image"] == f"prom/alertmanager:v{ALERTMANAGER_VERSION}"
    assert f"{REPO}/deploy/alertmanager:/etc/alertmanager/config:ro" in service["volumes"]
    assert service["environment"]["ALERT_WEBHOOK_URL"].startswith("https://")
    assert service["entrypoint"] == ["/bin/sh", "-ec"]
    (script,) = service["command"]
    assert "--config.file=/etc/alertmanager/config/alertmanager.yml" in script
    url_files = {
        webhook["url_file"]
        for receiver in yaml.safe_load(ALERTMANAGER_CONFIG.read_text())["receivers"]
        for webhook in receiver.get("webhook_configs", [])
    }
    (url_file,) = url_files
    assert f"printf '%s' \"$$ALERT_WEBHOOK_URL\" > {url_file};" in script  # $$: compose's literal $
    assert script.index(url_file) < script.index("exec /bin/alertmanager")
    (tmpfs,) = service["tmpfs"]
    assert url_file.startswith(tmpfs.split(":")[0] + "/") and service["read_only"] is True
    prometheus = yaml.safe_load(PROMETHEUS_CONFIG.read_text())
    (manager,) = prometheus["alerting"]["alertmanagers"]
    assert manager["static_configs"] == [{"targets": ["alertmanager:9093"]}]
    assert service["ports"] == ["127.0.0.1:9093:9093/tcp"]
    assert "alertmanager-data:/alertmanager:rw" in service["volumes"]
