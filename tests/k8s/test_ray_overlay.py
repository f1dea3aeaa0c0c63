"""k8s/overlays/ray: prod with the trainer as a KubeRay RayJob. It renders with the pinned kubectl, every
object validates (the RayJob against tests/k8s/schemas/, each of its pod templates as a Kubernetes
PodTemplate, strictly), and the job says what training on Ray relies on."""

from __future__ import annotations

import json
import shlex
from typing import Any

import jsonschema
import kubernetes_validate
import pytest
import typer.main

from services.cli import app as smz_app
from services.trainer.settings import TrainerSettings
from tests.k8s.test_manifests import (
    KUBERNETES_VERSION,
    NAMESPACE,
    SCHEMAS,
    find,
    pod_env,
    render,
    validate,
)

OVERLAY = "overlays/ray"
RAY_IMAGE = "micro-muzero:0.1.0-ray"
RAYJOB_SCHEMA = json.loads((SCHEMAS / "rayjob-ray.io-v1.json").read_text())


def _rayjob() -> dict[str, Any]:
    return find(render(OVERLAY), "RayJob", "trainer")


def _templates(job: dict[str, Any]) -> dict[str, dict[str, Any]]:
    cluster = job["spec"]["rayClusterSpec"]
    templates = {
        "head": cluster["headGroupSpec"]["template"],
        "submitter": job["spec"]["submitterPodTemplate"],
    }
    for group in cluster["workerGroupSpecs"]:
        templates[group["groupName"]] = group["template"]
    return templates


def _as_pod_template(name: str, template: dict[str, Any]) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "PodTemplate", "metadata": {"name": name}, "template": template}


def test_renders_and_every_object_validates() -> None:
    objs = render(OVERLAY)
    for obj in objs:
        if obj["kind"] == "RayJob":
            jsonschema.Draft202012Validator(RAYJOB_SCHEMA).validate(obj)
            for name, template in _templates(obj).items():
                kubernetes_validate.validate(
                    _as_pod_template(name, template), KUBERNETES_VERSION, strict=True
                )
        else:
            validate(obj)
        if obj["kind"] != "Namespace":
            assert obj["metadata"]["namespace"] == NAMESPACE, obj["metadata"]["name"]
    # The RayJob trains instead of the trainer Deployment: one writer of the checkpoint root.
    assert not [o for o in objs if o["kind"] == "Deployment" and o["metadata"]["name"] == "trainer"]


def test_the_validators_refuse_a_bad_rayjob() -> None:
    job = _rayjob()
    bad = json.loads(json.dumps(job))
    bad["spec"]["rayClusterSpec"]["workerGroupSpecs"][0]["replica"] = 3
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.Draft202012Validator(RAYJOB_SCHEMA).validate(bad)
    head = json.loads(json.dumps(_templates(job)["head"]))
    head["spec"]["containers"][0]["volumeMount"] = []
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(_as_pod_template("head", head), KUBERNETES_VERSION, strict=True)


def test_the_driver_is_the_learner_on_the_head_and_actors_fill_the_workers() -> None:
    objs = render(OVERLAY)
    job = _rayjob()
    argv = shlex.split(job["spec"]["entrypoint"])
    assert argv[:2] == ["smz", "train"]
    command = typer.main.get_command(smz_app).get_command(None, "train")  # type: ignore[attr-defined]
    assert command is not None
    command.make_context("train", argv[2:])  # parses as `smz train`: no unknown option, no bad value
    options = dict(arg.removeprefix("--").split("=", 1) for arg in argv[2:])
    assert options["ray"] == "auto"
    cluster = job["spec"]["rayClusterSpec"]
    assert cluster["headGroupSpec"]["rayStartParams"]["num-cpus"] == "0"  # no actor takes the learner's cores
    (workers,) = cluster["workerGroupSpecs"]
    cpus = int(workers["rayStartParams"]["num-cpus"])
    (worker,) = workers["template"]["spec"]["containers"]
    assert worker["resources"]["requests"]["cpu"] == str(cpus)  # one actor per CPU the pod is given
    assert int(options["actors"]) == cpus * workers["replicas"]
    # The head writes the checkpoints the inference pods read and serves the trainer's metrics.
    head_spec = cluster["headGroupSpec"]["template"]["spec"]
    (head,) = head_spec["containers"]
    mounts = {m["name"]: m for m in head["volumeMounts"]}
    claims = {
        v["name"]: v["persistentVolumeClaim"]["claimName"]
        for v in head_spec["volumes"]
        if "persistentVolumeClaim" in v
    }
    assert claims["checkpoints"] == "checkpoints" and mounts["checkpoints"]["mountPath"] == options["out"]
    assert not mounts["checkpoints"].get("readOnly")
    assert claims["market-data"] == "market-data" and mounts["market-data"]["readOnly"] is True
    assert options["db"].startswith(mounts["market-data"]["mountPath"] + "/")
    env = pod_env(objs, {"kind": "Pod", "spec": head_spec})
    settings_env = {k: v for k, v in env.items() if k.startswith("SMZ_")}
    assert set(settings_env) <= set(TrainerSettings.variables())
    assert env["SMZ_TRAINER_METRICS_HOST"] == "0.0.0.0"
    assert int(env["SMZ_TRAINER_METRICS_PORT"]) in {p["containerPort"] for p in head["ports"]}
    service = find(objs, "Service", "trainer")
    labels = cluster["headGroupSpec"]["template"]["metadata"]["labels"]
    assert service["spec"]["selector"].items() <= labels.items()
    # Self-play pods need no volume but the object store's /dev/shm and a writable /tmp.
    assert {v["name"] for v in workers["template"]["spec"]["volumes"]} == {"tmp", "shm"}


def test_every_ray_pod_is_locked_down_and_runs_the_ray_image() -> None:
    for name, template in _templates(_rayjob()).items():
        spec = template["spec"]
        assert spec["automountServiceAccountToken"] is False, name
        assert spec["securityContext"]["runAsNonRoot"] is True and spec["securityContext"]["runAsUser"] > 0
        assert spec["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}, name
        for c in spec["containers"]:
            assert c["image"] == RAY_IMAGE, name
            sc = c["securityContext"]
            assert sc["allowPrivilegeEscalation"] is False and sc["readOnlyRootFilesystem"] is True, name
            assert sc["capabilities"] == {"drop": ["ALL"]}, name
            assert "memory" in c["resources"]["limits"], name
            assert any(m["mountPath"] == "/tmp" for m in c["volumeMounts"]), name
            if name != "submitter":  # probes of our own: KubeRay would inject ones that call wget
                assert "readinessProbe" in c and "livenessProbe" in c, name


def test_ray_nodes_may_reach_each_other_and_the_submitter_the_job_api() -> None:
    policy = find(render(OVERLAY), "NetworkPolicy", "ray-cluster-internal")["spec"]
    assert policy["podSelector"] == {"matchLabels": {"ray.io/is-ray-node": "yes"}}
    peers, submitter = policy["ingress"]
    assert peers["from"] == [{"podSelector": {"matchLabels": {"ray.io/is-ray-node": "yes"}}}]
    labels = _rayjob()["spec"]["submitterPodTemplate"]["metadata"]["labels"]
    assert submitter["from"][0]["podSelector"]["matchLabels"].items() <= labels.items()
    assert submitter["ports"] == [{"port": 8265, "protocol": "TCP"}]
