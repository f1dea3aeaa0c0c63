"""k8s/: every overlay renders with the pinned kubectl's kustomize, every rendered object passes
kubernetes-validate (strict, Kubernetes 1.30) or, for the one CRD kind used, the schema in
tests/k8s/schemas/, and the objects say what the deployment relies on (probes, rollout strategy,
security, volumes, autoscaling, settings the services really read)."""

from __future__ import annotations

import copy
import json
import os
import shutil
import subprocess
import sys
from functools import cache
from pathlib import Path
from typing import Any
from unittest import mock

import jsonschema
import kubernetes_validate
import pytest
import typer.main
import yaml

from services.broker_gateway.settings import GatewaySettings
from services.cli import LiveService
from services.cli import app as smz_app
from services.feature_builder.settings import FeatureBuilderSettings
from services.inference.settings import InferenceSettings
from services.settings import ServiceSettings
from services.trainer.settings import TrainerSettings

REPO = Path(__file__).resolve().parents[2]
K8S = REPO / "k8s"
KUBERNETES_VERSION = "1.30.0"
KUBECTL_VERSION = "v1.30.0"  # k8s/tools/install-kubectl.sh
OVERLAYS = ["base", "overlays/dev", "overlays/prod", "overlays/monitoring"]
NAMESPACE = "micro-muzero"
IMAGE = "micro-muzero:0.1.0"
SCHEMAS = Path(__file__).parent / "schemas"
ALERTMANAGER_CONFIG = REPO / "deploy" / "alertmanager" / "alertmanager.yml"
ALERTMANAGER_SECRET = K8S / "overlays" / "monitoring" / "alertmanager-secret.example.yaml"
# Kinds kubernetes-validate has no schema for (CRDs), validated against a schema of ours instead.
CRD_SCHEMAS = {
    ("monitoring.coreos.com/v1", "ServiceMonitor"): SCHEMAS / "servicemonitor-monitoring.coreos.com-v1.json"
}
# The settings of each `smz serve SERVICE`.
SETTINGS = {
    "inference": InferenceSettings,
    "broker-gateway": GatewaySettings,
    "feature-builder": FeatureBuilderSettings,
}


def kubectl() -> str:
    """The pinned kubectl (install-kubectl.sh puts it beside the venv's python), else SMZ_KUBECTL or PATH."""
    for candidate in (os.environ.get("SMZ_KUBECTL"), str(Path(sys.executable).parent / "kubectl")):
        if candidate and Path(candidate).is_file():
            return candidate
    found = shutil.which("kubectl")
    if found:
        return found
    if os.environ.get("CI"):
        pytest.fail("no kubectl: .ci/run installs it with k8s/tools/install-kubectl.sh")
    pytest.skip("no kubectl: run k8s/tools/install-kubectl.sh")


@cache
def render(overlay: str) -> tuple[dict[str, Any], ...]:
    out = subprocess.run(
        [kubectl(), "kustomize", str(K8S / overlay)], capture_output=True, text=True, timeout=60, check=False
    )
    assert out.returncode == 0, f"kubectl kustomize {overlay} failed:\n{out.stderr}"
    return tuple(doc for doc in yaml.safe_load_all(out.stdout) if doc)


def validate(obj: dict[str, Any]) -> None:
    """kubernetes-validate (strict: unknown fields fail) or our schema for a CRD kind; anything else fails."""
    key = (obj["apiVersion"], obj["kind"])
    if key in CRD_SCHEMAS:
        jsonschema.Draft202012Validator(json.loads(CRD_SCHEMAS[key].read_text())).validate(obj)
    else:
        kubernetes_validate.validate(obj, KUBERNETES_VERSION, strict=True)


def find(objs: tuple[dict[str, Any], ...], kind: str, name: str) -> dict[str, Any]:
    found = [o for o in objs if o["kind"] == kind and o["metadata"]["name"] == name]
    assert len(found) == 1, f"{kind}/{name}: {len(found)} objects"
    return found[0]


def by_prefix(objs: tuple[dict[str, Any], ...], kind: str, prefix: str) -> dict[str, Any]:
    """A generated object (ConfigMap, Secret): its name is the generator's name plus a content hash."""
    found = [o for o in objs if o["kind"] == kind and o["metadata"]["name"].rsplit("-", 1)[0] == prefix]
    assert len(found) == 1, f"{kind}/{prefix}-<hash>: {len(found)} objects"
    return found[0]


def workloads(objs: tuple[dict[str, Any], ...]) -> list[dict[str, Any]]:
    return [o for o in objs if o["kind"] in ("Deployment", "StatefulSet", "Job", "Pod")]


def pod_spec(obj: dict[str, Any]) -> dict[str, Any]:
    return obj["spec"] if obj["kind"] == "Pod" else obj["spec"]["template"]["spec"]


def container(deployment: dict[str, Any]) -> dict[str, Any]:
    (only,) = pod_spec(deployment)["containers"]
    return only


def mount(deployment: dict[str, Any], claim: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """(volume, volumeMount) of the PVC ``claim`` in a one-container workload."""
    spec = pod_spec(deployment)
    (volume,) = [v for v in spec["volumes"] if v.get("persistentVolumeClaim", {}).get("claimName") == claim]
    (vmount,) = [m for m in container(deployment)["volumeMounts"] if m["name"] == volume["name"]]
    return volume, vmount


def pod_env(objs: tuple[dict[str, Any], ...], deployment: dict[str, Any]) -> dict[str, str]:
    """The container's plain environment: its ConfigMaps' data, then its literal env values."""
    env: dict[str, str] = {}
    for source in container(deployment).get("envFrom", []):
        env |= find(objs, "ConfigMap", source["configMapRef"]["name"])["data"]
    env |= {e["name"]: e["value"] for e in container(deployment).get("env", []) if "value" in e}
    return env


# ------------------------------------------------------------------------------ render and validate


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_overlay_renders_and_every_object_validates(overlay: str) -> None:
    objs = render(overlay)
    assert len(objs) >= 15
    for obj in objs:
        try:
            validate(obj)
        except Exception as exc:  # name the object
            raise AssertionError(f"{overlay}: {obj['kind']}/{obj['metadata']['name']}: {exc}") from exc
    names = [(o["kind"], o["metadata"]["name"]) for o in objs]
    assert len(names) == len(set(names)), "duplicate objects"
    for obj in objs:
        if obj["kind"] != "Namespace":
            assert obj["metadata"].get("namespace") == NAMESPACE, obj["metadata"]["name"]
        assert obj["metadata"]["labels"]["app.kubernetes.io/part-of"] == "micro-muzero"


def test_pinned_kubectl_is_the_one_used() -> None:
    out = subprocess.run([kubectl(), "version", "--client", "-o", "json"], capture_output=True, text=True)
    version = json.loads(out.stdout)["clientVersion"]["gitVersion"]
    if os.environ.get("CI"):
        assert version == KUBECTL_VERSION
    elif version != KUBECTL_VERSION:
        pytest.skip(f"kubectl {version} is not the pinned {KUBECTL_VERSION} (k8s/tools/install-kubectl.sh)")


def test_files_outside_the_overlays_validate() -> None:
    """The Secret template (applied by nobody) is still a valid Secret."""
    examples = [K8S / "base" / "secret.example.yaml", ALERTMANAGER_SECRET]
    for path in [*examples, *sorted((K8S / "tools").glob("*.yaml"))]:
        for obj in yaml.safe_load_all(path.read_text()):
            validate(obj)


def test_the_validators_refuse_bad_objects() -> None:
    """Strict validation refuses unknown fields and wrong types; the CRD schema refuses unknown fields."""
    objs = render("overlays/monitoring")
    deployment = copy.deepcopy(find(objs, "Deployment", "inference"))
    container(deployment)["readinesProbe"] = container(deployment).pop("readinessProbe")
    with pytest.raises(kubernetes_validate.ValidationError):
        validate(deployment)
    deployment = copy.deepcopy(find(objs, "Deployment", "inference"))
    deployment["spec"]["strategy"]["rollingUpdate"]["maxSurge"] = [1]
    with pytest.raises(kubernetes_validate.ValidationError):
        validate(deployment)
    monitor = copy.deepcopy(find(objs, "ServiceMonitor", "smz-http"))
    monitor["spec"]["endpoints"][0]["intervall"] = "15s"
    with pytest.raises(jsonschema.ValidationError):
        validate(monitor)
    unknown = {"apiVersion": "example.com/v1", "kind": "Widget", "metadata": {"name": "w"}}
    with pytest.raises(kubernetes_validate.SchemaNotFoundError):
        validate(unknown)


# ------------------------------------------------------------------------------ what the objects say


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_inference_deployment(overlay: str) -> None:
    objs = render(overlay)
    deployment = find(objs, "Deployment", "inference")
    c = container(deployment)
    assert c["image"] == IMAGE and c["args"] == ["serve", "inference"]
    ports = {p["name"]: p["containerPort"] for p in c["ports"]}
    env = pod_env(objs, deployment)
    assert ports["http"] == int(env["SMZ_INFERENCE_PORT"]) and env["SMZ_INFERENCE_HOST"] == "0.0.0.0"
    assert c["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "http"}
    assert c["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "http"}
    assert deployment["spec"]["strategy"] == {
        "type": "RollingUpdate",
        "rollingUpdate": {"maxUnavailable": 0, "maxSurge": 1},
    }
    assert "replicas" not in deployment["spec"], "the HPA owns the replica count"
    assert deployment["spec"]["revisionHistoryLimit"] >= 2  # something to undo to
    # `smz rollout` edits this entry with `kubectl set env`; empty means: follow the pointer. It is
    # env[0]: docs/K8S.md pins a version in an overlay with a patch of /env/0/value.
    assert c["env"][0] == {"name": "SMZ_INFERENCE_MODEL_VERSION", "value": ""}
    (consumer,) = [e for e in c["env"] if e["name"] == "SMZ_INFERENCE_CONSUMER"]
    assert consumer["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.name"
    assert {"cpu", "memory"} <= c["resources"]["requests"].keys() and "memory" in c["resources"]["limits"]
    volume, vmount = mount(deployment, "checkpoints")
    assert vmount["readOnly"] is True and volume["persistentVolumeClaim"]["readOnly"] is True
    assert vmount["mountPath"] == env["SMZ_INFERENCE_CHECKPOINT_DIR"]
    assert env["SMZ_GATEWAY_URL"] == "http://broker-gateway:8002"


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_trainer_writes_the_checkpoint_volume_the_inference_pods_read(overlay: str) -> None:
    objs = render(overlay)
    trainer = find(objs, "Deployment", "trainer")
    assert trainer["spec"]["replicas"] == 1 and trainer["spec"]["strategy"] == {"type": "Recreate"}
    volume, vmount = mount(trainer, "checkpoints")
    assert not vmount.get("readOnly") and not volume["persistentVolumeClaim"].get("readOnly")
    args = container(trainer)["args"]
    assert f"--out={vmount['mountPath']}" in args
    _, inference_mount = mount(find(objs, "Deployment", "inference"), "checkpoints")
    assert inference_mount["mountPath"] == vmount["mountPath"]
    pvc = find(objs, "PersistentVolumeClaim", "checkpoints")
    expected = ["ReadWriteOnce"] if overlay == "overlays/dev" else ["ReadWriteMany"]
    assert pvc["spec"]["accessModes"] == expected


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_gateway_is_a_single_writer_of_its_ledger(overlay: str) -> None:
    objs = render(overlay)
    gateway = find(objs, "Deployment", "broker-gateway")
    assert gateway["spec"]["replicas"] == 1 and gateway["spec"]["strategy"] == {"type": "Recreate"}
    assert find(objs, "PersistentVolumeClaim", "ledger")["spec"]["accessModes"] == ["ReadWriteOnce"]
    _, vmount = mount(gateway, "ledger")
    env = pod_env(objs, gateway)
    assert Path(env["SMZ_GATEWAY_LEDGER_DB"]).parent == Path(vmount["mountPath"])
    c = container(gateway)
    assert c["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert c["livenessProbe"]["httpGet"]["path"] == "/healthz"
    (token,) = [e for e in c["env"] if e["name"] == "SMZ_GATEWAY_TOKEN"]
    assert token["valueFrom"]["secretKeyRef"]["key"] == "gateway-token"


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_hpa_scales_the_inference_deployment_on_cpu(overlay: str) -> None:
    objs = render(overlay)
    hpa = find(objs, "HorizontalPodAutoscaler", "inference")
    ref = hpa["spec"]["scaleTargetRef"]
    assert (ref["apiVersion"], ref["kind"]) == ("apps/v1", "Deployment")
    find(objs, ref["kind"], ref["name"])  # exists
    assert ref["name"] == "inference"
    (metric,) = hpa["spec"]["metrics"]
    assert metric["type"] == "Resource" and metric["resource"]["name"] == "cpu"
    assert 1 <= hpa["spec"]["minReplicas"] <= hpa["spec"]["maxReplicas"]
    # Utilization is relative to the CPU request.
    assert "cpu" in container(find(objs, "Deployment", "inference"))["resources"]["requests"]


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_pod_is_locked_down(overlay: str) -> None:
    for workload in workloads(render(overlay)):
        spec = pod_spec(workload)
        name = workload["metadata"]["name"]
        assert spec["securityContext"]["runAsNonRoot"] is True, name
        assert spec["securityContext"]["runAsUser"] > 0, name
        assert spec["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}, name
        assert spec["automountServiceAccountToken"] is False, name
        for c in spec["containers"] + spec.get("initContainers", []):
            sc = c["securityContext"]
            assert sc["allowPrivilegeEscalation"] is False, name
            assert sc["capabilities"] == {"drop": ["ALL"]}, name
            assert sc["readOnlyRootFilesystem"] is True, name
            assert "memory" in c["resources"]["limits"], name
            if c["image"].startswith("micro-muzero"):
                assert c["image"] == IMAGE, name
                assert any(m["mountPath"] == "/tmp" for m in c["volumeMounts"]), f"{name}: no writable /tmp"


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_references_resolve(overlay: str) -> None:
    """ConfigMaps, PVCs and Services point at objects of the same render; Secrets too, except the
    hand-made smz-secrets outside dev."""
    objs = render(overlay)
    for workload in workloads(objs):
        spec = pod_spec(workload)
        for volume in spec.get("volumes", []):
            if "persistentVolumeClaim" in volume:
                find(objs, "PersistentVolumeClaim", volume["persistentVolumeClaim"]["claimName"])
        for c in spec["containers"]:
            for source in c.get("envFrom", []):
                find(objs, "ConfigMap", source["configMapRef"]["name"])
            for e in c.get("env", []):
                ref = e.get("valueFrom", {}).get("secretKeyRef")
                if ref and overlay == "overlays/dev":
                    secret = find(objs, "Secret", ref["name"])
                    assert ref.get("optional") or ref["key"] in secret["data"]
                elif ref:
                    assert ref["name"] == "smz-secrets"
            names = {p["name"] for p in c.get("ports", [])}
            annotations = spec_annotations(workload)
            if annotations.get("prometheus.io/scrape") == "true":
                assert int(annotations["prometheus.io/port"]) in {p["containerPort"] for p in c["ports"]}
            for probe in ("readinessProbe", "livenessProbe"):
                port = (c.get(probe, {}).get("httpGet") or c.get(probe, {}).get("tcpSocket") or {}).get(
                    "port"
                )
                assert port is None or port in names, f"{workload['metadata']['name']} {probe} port {port}"
    for service in (o for o in objs if o["kind"] == "Service"):
        (target,) = [
            w for w in workloads(objs) if service["spec"]["selector"].items() <= pod_labels(w).items()
        ]
        names = {p["name"] for p in container(target)["ports"]}
        assert {p["targetPort"] for p in service["spec"]["ports"]} <= names, service["metadata"]["name"]


def spec_annotations(workload: dict[str, Any]) -> dict[str, str]:
    meta = workload["metadata"] if workload["kind"] == "Pod" else workload["spec"]["template"]["metadata"]
    return meta.get("annotations", {})


def pod_labels(workload: dict[str, Any]) -> dict[str, str]:
    meta = workload["metadata"] if workload["kind"] == "Pod" else workload["spec"]["template"]["metadata"]
    return meta.get("labels", {})


def settings_class(workload: dict[str, Any]) -> type[ServiceSettings] | None:
    """The settings class of the smz command a workload runs (None: not an smz service)."""
    args = container(workload).get("args") or [""]
    if args[0] == "serve":
        return SETTINGS[args[1]]
    return TrainerSettings if args[0] == "train" else None


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_settings_are_ones_the_services_read(overlay: str) -> None:
    """Every SMZ_* key names a real setting (pydantic-settings would silently ignore a typo), the
    services accept the values, and every HTTP/metrics server binds 0.0.0.0."""
    objs = render(overlay)
    for workload in workloads(objs):
        env = {k: v for k, v in pod_env(objs, workload).items() if k.startswith("SMZ_")}
        names = {e["name"] for e in container(workload).get("env", []) if e["name"].startswith("SMZ_")}
        settings = settings_class(workload)
        if settings is None:
            assert not env and not names, workload["metadata"]["name"]
            continue
        assert set(env) | names <= set(settings.variables()), workload["metadata"]["name"]
        given: dict[str, Any] = {}
        if settings is FeatureBuilderSettings:
            given["oanda_token"] = "from-the-secret"
        if settings is TrainerSettings:
            given |= {"db": "x", "instrument": "x", "out": "x"}  # CLI options
        with mock.patch.dict(os.environ, env, clear=True):
            settings(**given)  # what the container reads from these variables
        for host in ("host", "metrics_host"):
            if host in settings.model_fields:
                variable = f"{settings.prefix()}{host.upper()}"
                assert env.get(variable) == "0.0.0.0", f"{workload['metadata']['name']}: {variable}"


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_the_live_services_read_one_shared_config_map(overlay: str) -> None:
    """Account, spread and the gateway's URL are set once, for all three (services/settings.py)."""
    objs = render(overlay)
    shared = by_prefix(objs, "ConfigMap", "smz-shared-config")
    assert shared["data"]["SMZ_SPREAD_PIPS"] and shared["data"]["SMZ_ACCOUNT"]
    for name in SETTINGS:
        sources = [s["configMapRef"]["name"] for s in container(find(objs, "Deployment", name))["envFrom"]]
        assert shared["metadata"]["name"] in sources, name
        for source in sources:  # no service sets a shared variable of its own
            if source != shared["metadata"]["name"]:
                assert not set(find(objs, "ConfigMap", source)["data"]) & set(shared["data"]), name


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_container_args_are_smz_commands(overlay: str) -> None:
    """The args of every micro-muzero container parse as an `smz` command line (typer's own parser)."""
    group = typer.main.get_command(smz_app)
    for workload in workloads(render(overlay)):
        for c in pod_spec(workload)["containers"]:
            if not c["image"].startswith("micro-muzero"):
                continue
            name, *rest = c["args"]
            command = group.get_command(None, name)  # type: ignore[attr-defined, arg-type]
            assert command is not None, c["args"]
            command.make_context(name, list(rest))  # raises on an unknown option or a bad value
            if name == "serve":
                assert rest[0] in {s.value for s in LiveService}


def test_servicemonitors_select_services_with_their_ports() -> None:
    objs = render("overlays/monitoring")
    services = [o for o in objs if o["kind"] == "Service"]
    monitors = [o for o in objs if o["kind"] == "ServiceMonitor"]
    scraped = set()
    for monitor in monitors:
        (expr,) = monitor["spec"]["selector"]["matchExpressions"]
        selected = [s for s in services if s["metadata"]["labels"].get(expr["key"]) in expr["values"]]
        assert len(selected) == len(expr["values"])
        for service in selected:
            for endpoint in monitor["spec"]["endpoints"]:
                assert endpoint["port"] in {p["name"] for p in service["spec"]["ports"]}
            scraped.add(service["metadata"]["name"])
    assert scraped == {"inference", "broker-gateway", "trainer", "feature-builder"}
    assert not any(o["kind"] == "ServiceMonitor" for o in render("overlays/prod"))


def test_alertmanager_runs_the_compose_config_with_its_secrets_as_files() -> None:
    """The monitoring overlay's Alertmanager: the ConfigMap is deploy/alertmanager/alertmanager.yml as
    is, the webhooks' url_file is a key of the hand-made Secret mounted where the config looks, the
    image is compose's, and only Prometheus' namespace reaches it."""
    objs = render("overlays/monitoring")
    deployment = find(objs, "Deployment", "alertmanager")
    c = container(deployment)
    volumes = {v["name"]: v for v in pod_spec(deployment)["volumes"]}
    mounts = {m["name"]: m["mountPath"] for m in c["volumeMounts"]}
    config_map = by_prefix(objs, "ConfigMap", "alertmanager-config")
    assert config_map["data"] == {"alertmanager.yml": ALERTMANAGER_CONFIG.read_text()}
    assert volumes["config"]["configMap"]["name"] == config_map["metadata"]["name"]
    assert f"--config.file={mounts['config']}/alertmanager.yml" in c["args"]
    assert volumes["secrets"]["secret"]["secretName"] == "alertmanager-secrets"
    secret_keys = set(yaml.safe_load(ALERTMANAGER_SECRET.read_text())["stringData"])
    config = yaml.safe_load(ALERTMANAGER_CONFIG.read_text())
    for receiver in config["receivers"]:
        for webhook in receiver["webhook_configs"]:
            directory, key = webhook["url_file"].rsplit("/", 1)
            assert directory == mounts["secrets"] and key in secret_keys, webhook["url_file"]
    compose = yaml.safe_load((REPO / "docker-compose.yml").read_text())
    assert c["image"] == compose["services"]["alertmanager"]["image"]
    assert deployment["spec"]["replicas"] == 1 and deployment["spec"]["strategy"]["type"] == "Recreate"
    service = find(objs, "Service", "alertmanager")
    assert service["spec"]["ports"] == [{"name": "http", "port": 9093, "targetPort": "http"}]
    (rule,) = find(objs, "NetworkPolicy", "alertmanager-from-prometheus")["spec"]["ingress"]
    assert rule["from"] == [
        {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "monitoring"}}}
    ]
    assert rule["ports"] == [{"port": 9093, "protocol": "TCP"}]
    assert not any("alertmanager" in o["metadata"]["name"] for o in render("overlays/prod"))


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_redis_needs_its_password_and_only_the_live_services_reach_it(overlay: str) -> None:
    objs = render(overlay)
    redis_args = container(find(objs, "Deployment", "redis"))["args"]
    assert redis_args[redis_args.index("--requirepass") + 1] == "$(REDIS_PASSWORD)"
    for name in ("broker-gateway", "inference", "feature-builder"):
        env = container(find(objs, "Deployment", name))["env"]
        names = [e["name"] for e in env]
        url = next(e["value"] for e in env if e["name"] == "SMZ_REDIS_URL")
        assert url == "redis://:$(REDIS_PASSWORD)@redis:6379/0"
        assert names.index("REDIS_PASSWORD") < names.index("SMZ_REDIS_URL")  # expanded in order
    policies = {o["metadata"]["name"]: o for o in objs if o["kind"] == "NetworkPolicy"}
    deny = policies["default-deny-ingress"]["spec"]
    assert deny["podSelector"] == {} and deny["policyTypes"] == ["Ingress"] and "ingress" not in deny
    (rule,) = policies["redis-from-the-live-services"]["spec"]["ingress"]
    (clients,) = rule["from"][0]["podSelector"]["matchExpressions"]
    assert set(clients["values"]) == {"feature-builder", "inference", "broker-gateway"}
    (gateway_rule,) = policies["broker-gateway-from-inference-and-prometheus"]["spec"]["ingress"]
    assert gateway_rule["from"][0]["podSelector"]["matchLabels"] == {"app.kubernetes.io/name": "inference"}
    gateway_env = {e["name"]: e for e in container(find(objs, "Deployment", "broker-gateway"))["env"]}
    assert gateway_env["SMZ_GATEWAY_ADMIN_TOKEN"]["valueFrom"]["secretKeyRef"]["key"] == "admin-token"


def test_prod_serves_no_api_docs() -> None:
    objs = render("overlays/prod")
    for name, key in (
        ("inference-config", "SMZ_INFERENCE_DOCS"),
        ("broker-gateway-config", "SMZ_GATEWAY_DOCS"),
    ):
        (config,) = [o for o in objs if o["kind"] == "ConfigMap" and o["metadata"]["name"].startswith(name)]
        assert config["data"][key] == "false"
