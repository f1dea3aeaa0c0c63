"""`smz rollout`: the exact kubectl command lines, refusal of a missing or broken version before any
kubectl runs, and the rollout semantics against the real inference service.

The runner is the only test double. `Cluster` below is one: it answers the kubectl commands for one
Deployment the way the API server and kubelet would (`set env` makes a new pod-template revision,
`rollout status` starts a pod of it, `rollout undo` goes back a revision), and each pod is a real
`smz serve inference` process pinned by SMZ_INFERENCE_MODEL_VERSION, on a checkpoint directory that
plays the cluster's volume.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest
from typer.testing import CliRunner

from services.cli import app
from services.jobs import rollout as job
from shared.model.checkpoint import WEIGHTS_FILE, save_checkpoint
from tests.services.inference.helpers import free_port, save_version, tiny_model

REPO = Path(__file__).resolve().parents[2]
NS = "smz-test"


@dataclass
class Recorder:
    """Records every command line; answers ``codes`` in turn (then 0)."""

    codes: list[int] = field(default_factory=list)
    commands: list[list[str]] = field(default_factory=list)

    def __call__(self, argv: Sequence[str]) -> int:
        self.commands.append(list(argv))
        return self.codes.pop(0) if self.codes else 0


def corrupt(checkpoint: Path) -> None:
    """Flip bytes in the middle of the weights: same size, wrong sha256."""
    weights = checkpoint / WEIGHTS_FILE
    data = bytearray(weights.read_bytes())
    data[len(data) // 2 : len(data) // 2 + 16] = bytes(
        b ^ 0xFF for b in data[len(data) // 2 : len(data) // 2 + 16]
    )
    weights.write_bytes(bytes(data))


@pytest.fixture
def local(tmp_path: Path) -> Path:
    """The operator's view of the checkpoint volume: vA, vB, vC, vD verify; vBroken does not."""
    root = tmp_path / "local"
    for seed, version in enumerate(["vA", "vB", "vC", "vD", "vBroken"], start=1):
        save_version(root, version, seed=seed, point=False, step=seed)
    corrupt(root / "vBroken")
    return root


# ------------------------------------------------------------------------------ command lines


def test_rollout_commands_exact_argv() -> None:
    target = job.Target(namespace=NS, deployment="inference", timeout="90s")
    assert job.rollout_commands("step-000000042", target) == [
        [
            "kubectl",
            "annotate",
            "deployment/inference",
            "kubernetes.io/change-cause=smz rollout step-000000042",
            "--overwrite",
            "-n",
            NS,
        ],
        [
            "kubectl",
            "set",
            "env",
            "deployment/inference",
            "SMZ_INFERENCE_MODEL_VERSION=step-000000042",
            "-n",
            NS,
        ],
        ["kubectl", "rollout", "status", "deployment/inference", "-n", NS, "--timeout=90s"],
    ]
    assert job.undo_commands(target) == [
        ["kubectl", "rollout", "undo", "deployment/inference", "-n", NS],
        ["kubectl", "rollout", "status", "deployment/inference", "-n", NS, "--timeout=90s"],
    ]
    other = job.Target(deployment="infer-eu", kubectl="/opt/kubectl", context="prod-eu")
    assert job.undo_commands(other)[0] == [
        "/opt/kubectl",
        "--context",
        "prod-eu",
        "rollout",
        "undo",
        "deployment/infer-eu",
        "-n",
        "micro-muzero",
    ]


def test_rollout_runs_the_commands_in_order(local: Path) -> None:
    recorder = Recorder()
    manifest = job.rollout("vB", local, job.Target(namespace=NS), runner=recorder, echo=lambda _: None)
    assert manifest.version == "vB"
    assert recorder.commands == job.rollout_commands("vB", job.Target(namespace=NS))


def test_a_failing_command_stops_the_rollout_and_says_how_to_undo(local: Path) -> None:
    recorder = Recorder(codes=[0, 0, 1])  # rollout status times out
    with pytest.raises(job.KubectlError, match=r"smz rollout --undo -n smz-test"):
        job.rollout("vB", local, job.Target(namespace=NS), runner=recorder, echo=lambda _: None)
    recorder = Recorder(codes=[0, 5])  # set env refused: status is not waited for
    with pytest.raises(job.KubectlError, match="exited with 5"):
        job.rollout("vB", local, job.Target(namespace=NS), runner=recorder, echo=lambda _: None)
    assert [c[1] for c in recorder.commands] == ["annotate", "set"]


@pytest.mark.parametrize(
    ("version", "reason"),
    [
        ("vZ", r"no checkpoint 'vZ' .* available: vA, vB, vC, vD, vBroken"),
        ("vBroken", r"'vBroken' .* does not verify: .*sha256"),
        ("../vA", "not a safe directory name"),
        ("latest", "reserved for the pointer"),
    ],
)
def test_refuses_a_missing_or_broken_version_before_any_kubectl(
    local: Path, version: str, reason: str
) -> None:
    recorder = Recorder()
    with pytest.raises(job.RolloutError, match=reason):
        job.rollout(version, local, job.Target(), runner=recorder, echo=lambda _: None)
    assert recorder.commands == []


def test_refuses_a_renamed_checkpoint(local: Path) -> None:
    """The pods refuse a checkpoint whose manifest names another version, so rollout does too."""
    shutil.copytree(local / "vA", local / "vA-copy")
    recorder = Recorder()
    with pytest.raises(job.RolloutError, match="says version 'vA'"):
        job.rollout("vA-copy", local, job.Target(), runner=recorder, echo=lambda _: None)
    assert recorder.commands == []


# ------------------------------------------------------------------------------ the CLI


@pytest.fixture
def cli_recorder(monkeypatch: pytest.MonkeyPatch) -> Recorder:
    recorder = Recorder()
    monkeypatch.setattr(job, "DEFAULT_RUNNER", recorder)
    return recorder


def test_cli_rollout_and_undo(local: Path, cli_recorder: Recorder) -> None:
    runner = CliRunner()
    result = runner.invoke(app, ["rollout", "vC", "--checkpoints", str(local), "-n", NS, "--timeout", "2m"])
    assert result.exit_code == 0, result.output
    assert cli_recorder.commands == job.rollout_commands("vC", job.Target(namespace=NS, timeout="2m"))
    assert "checkpoint vC verified" in result.output
    cli_recorder.commands.clear()
    result = runner.invoke(app, ["rollout", "--undo", "--namespace", NS, "--timeout", "2m"])
    assert result.exit_code == 0, result.output
    assert cli_recorder.commands == [
        ["kubectl", "rollout", "undo", "deployment/inference", "-n", NS],
        ["kubectl", "rollout", "status", "deployment/inference", "-n", NS, "--timeout=2m"],
    ]


@pytest.mark.parametrize(
    "args",
    [
        ["rollout", "vBroken"],
        ["rollout", "vZ"],
        ["rollout", "../etc"],
        ["rollout"],  # neither a version nor --undo
        ["rollout", "vA", "--undo"],  # both
    ],
)
def test_cli_refuses_with_exit_2_and_runs_no_kubectl(
    local: Path, cli_recorder: Recorder, args: list[str]
) -> None:
    result = CliRunner().invoke(app, [*args, "--checkpoints", str(local)])
    assert result.exit_code == 2, result.output
    assert "error:" in result.output
    assert cli_recorder.commands == []


def test_cli_dry_run_prints_and_runs_nothing(local: Path, cli_recorder: Recorder) -> None:
    result = CliRunner().invoke(app, ["rollout", "vA", "--checkpoints", str(local), "--dry-run"])
    assert result.exit_code == 0, result.output
    assert "would run: kubectl set env deployment/inference SMZ_INFERENCE_MODEL_VERSION=vA" in result.output
    assert cli_recorder.commands == []


def test_cli_failed_status_exits_1(local: Path, cli_recorder: Recorder) -> None:
    cli_recorder.codes = [0, 0, 1]
    result = CliRunner().invoke(app, ["rollout", "vA", "--checkpoints", str(local)])
    assert result.exit_code == 1
    assert "smz rollout --undo" in result.output


# ------------------------------------------------------------------------------ against the real service


class Pod:
    """One inference pod: a real `smz serve inference` process with the template's environment."""

    def __init__(self, env: dict[str, str], volume: Path, log: Path) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.template = dict(env)
        full = {k: v for k, v in os.environ.items() if not k.startswith("SMZ_")}
        full |= env | {
            "SMZ_INFERENCE_CHECKPOINT_DIR": str(volume),  # the volume's mountPath
            "SMZ_INFERENCE_HOST": "127.0.0.1",  # 0.0.0.0 in the cluster; loopback here
            "SMZ_INFERENCE_PORT": str(self.port),
            "SMZ_INFERENCE_STREAM_ENABLED": "false",
        }
        self._log = log.open("w")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "services.cli", "serve", "inference"],
            env=full,
            cwd=REPO,
            stdout=self._log,
            stderr=subprocess.STDOUT,
        )

    def readyz(self) -> tuple[int, dict[str, object]] | None:
        try:
            answer = httpx.get(f"{self.url}/readyz", timeout=2)
        except httpx.HTTPError:
            return None
        return answer.status_code, answer.json()

    def served_version(self) -> str:
        answer = httpx.get(f"{self.url}/v1/model", timeout=2)
        answer.raise_for_status()
        return answer.json()["version"]

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self._log.close()


def _seconds(timeout: str) -> float:
    units = {"s": 1, "m": 60}
    return float(timeout[:-1]) * units[timeout[-1]]


class Cluster:
    """kubectl + API server + kubelet for one single-replica Deployment, as the runner of `smz rollout`.

    `set env` writes a new template revision; `rollout status --timeout=T` starts a pod of the newest
    revision unless the serving pod already runs it, and succeeds once that pod is ready, stopping
    the old one (maxSurge 1, maxUnavailable 0: the old pod serves until then). T counts from the
    moment the new pod's HTTP server answers. A pod not ready by then stays up, unready, beside the
    old one, and status fails. `rollout undo` makes the previous revision the newest again and
    drops the unready pod.
    """

    def __init__(self, volume: Path, env: dict[str, str], logs: Path) -> None:
        self.volume, self.logs = volume, logs
        self.revisions = [dict(env)]
        self.commands: list[list[str]] = []
        self.serving = self._start(env)
        assert self._wait_ready(self.serving, 60), self.serving.readyz()
        self.unready: Pod | None = None

    def _start(self, env: dict[str, str]) -> Pod:
        return Pod(env, self.volume, self.logs / f"pod-{len(self.commands)}-{time.monotonic_ns()}.log")

    @staticmethod
    def _wait_ready(pod: Pod, timeout: float) -> bool:
        deadline = time.monotonic() + 60  # the process starts and binds
        while pod.readyz() is None:
            assert pod.process.poll() is None, f"pod exited with {pod.process.returncode}"
            assert time.monotonic() < deadline, "pod never answered HTTP"
            time.sleep(0.1)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            answer = pod.readyz()
            if answer is not None and answer[0] == 200:
                return True
            time.sleep(0.1)
        return False

    def __call__(self, argv: Sequence[str]) -> int:
        self.commands.append(list(argv))
        args = list(argv[1:])
        if args[0] == "annotate":
            return 0
        if args[:2] == ["set", "env"]:
            key, value = args[3].split("=", 1)
            template = self.revisions[-1] | {key: value}
            if template != self.revisions[-1]:
                self.revisions.append(template)
            return 0
        if args[:2] == ["rollout", "undo"]:
            self.revisions.append(self.revisions[-2])
            if self.unready is not None:
                self.unready.stop()
                self.unready = None
            return 0
        if args[:2] == ["rollout", "status"]:
            if self.serving.template == self.revisions[-1]:
                return 0
            if self.unready is not None:
                self.unready.stop()
            pod = self._start(self.revisions[-1])
            timeout = _seconds(next(a for a in args if a.startswith("--timeout=")).split("=", 1)[1])
            if not self._wait_ready(pod, timeout):
                self.unready = pod
                return 1
            self.serving.stop()
            self.serving = pod
            return 0
        raise AssertionError(f"unexpected kubectl command {argv}")

    def close(self) -> None:
        for pod in (self.serving, self.unready):
            if pod is not None:
                pod.stop()


@pytest.fixture
def cluster(local: Path, tmp_path: Path) -> Iterator[Cluster]:
    """The cluster's volume holds vA, vB and a copy of vC corrupted in transit; vD never arrived.
    The Deployment starts pinned to vA."""
    volume = tmp_path / "volume"
    volume.mkdir()
    for version in ("vA", "vB", "vC"):
        shutil.copytree(local / version, volume / version)
    corrupt(volume / "vC")
    logs = tmp_path / "logs"
    logs.mkdir()
    cluster = Cluster(
        volume, {"SMZ_INFERENCE_MODEL_VERSION": "vA", "SMZ_INFERENCE_RELOAD_SECONDS": "1"}, logs
    )
    try:
        yield cluster
    finally:
        cluster.close()


def stays_unready(pod: Pod, reason: str, timeout: float = 20.0) -> None:
    """Every /readyz answer is 503 until one gives ``reason`` (a loaded machine may still say 'loading')."""
    deadline = time.monotonic() + timeout
    while True:
        code, body = pod.readyz() or (0, {})
        assert code == 503, (code, body)
        if reason in str(body["reason"]):
            return
        assert time.monotonic() < deadline, body
        time.sleep(0.1)


def test_rollout_against_the_real_inference_service(local: Path, cluster: Cluster) -> None:
    quiet = {"echo": lambda _: None}
    ok = job.Target(namespace=NS, timeout="60s")
    stall = job.Target(namespace=NS, timeout="3s")

    # Pinned to vA, the pod serves vA.
    assert cluster.serving.served_version() == "vA"

    # Roll vB out: a new pod with the new env turns ready on vB and replaces the old one.
    job.rollout("vB", local, ok, runner=cluster, **quiet)
    assert cluster.commands == job.rollout_commands("vB", ok)
    assert cluster.serving.template["SMZ_INFERENCE_MODEL_VERSION"] == "vB"
    assert cluster.serving.served_version() == "vB"

    # vC verifies where `smz rollout` looks, but the pods' copy is corrupt: the new pod refuses it and
    # never turns ready, status fails, and the vB pod keeps serving.
    with pytest.raises(job.KubectlError, match="--undo"):
        job.rollout("vC", local, stall, runner=cluster, **quiet)
    assert cluster.unready is not None
    stays_unready(cluster.unready, "refused vC")
    assert (cluster.serving.readyz() or (0,))[0] == 200
    assert cluster.serving.served_version() == "vB"

    # Undo: back to the vB revision, which the serving pod already runs.
    cluster.commands.clear()
    job.undo(stall, runner=cluster, **quiet)
    assert cluster.commands == job.undo_commands(stall)
    assert cluster.unready is None and cluster.revisions[-1]["SMZ_INFERENCE_MODEL_VERSION"] == "vB"
    assert cluster.serving.served_version() == "vB"

    # vD is missing from the pods' volume: the pod waits for it, unready, and undo goes back again.
    with pytest.raises(job.KubectlError):
        job.rollout("vD", local, stall, runner=cluster, **quiet)
    assert cluster.unready is not None
    stays_unready(cluster.unready, "nothing to load yet")
    job.undo(stall, runner=cluster, **quiet)
    assert cluster.serving.served_version() == "vB"


def test_checkpoints_made_here_are_what_the_pods_load(tmp_path: Path) -> None:
    """save_checkpoint output passes rollout's verification (the same checks the store makes)."""
    path = save_checkpoint(tmp_path, tiny_model(7), version="step-000000007", training_step=7)
    assert job.verify_version(tmp_path, path.name).training_step == 7
