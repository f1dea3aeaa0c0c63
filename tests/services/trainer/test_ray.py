"""``smz train --ray`` on a two-node Ray cluster on this machine: the counters, checkpoints and replay
of the ``--workers`` path, an actor SIGKILLed mid-round restarted without a partial trajectory, and a
killed driver resumed from ``latest``.

The cluster (two ``ray start --block`` nodes of one CPU each, in process groups of their own, so only
they are stopped) is shared by the module; each test's driver is a separate ``smz train`` process.
"""

from __future__ import annotations

import os
import re
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from services.trainer.state import REPLAY_FILE, read_history
from shared.env import EnvConfig
from shared.model.checkpoint import load_checkpoint
from shared.model.checkpoint_root import list_checkpoints, resolve_checkpoint
from shared.replay import ReplayBuffer
from tests.helpers import REPO, free_port

pytest.importorskip("ray", reason="Ray is not installed (the ray extra: pip install -e '.[ray]')")

pytestmark = pytest.mark.slow

RAY = Path(sys.executable).parent / "ray"
SMALL_RUN = [
    "--instrument=SYNTHJPY",
    *(
        f"--set={kv}"
        for kv in (
            "sessions_per_round=4",
            "updates_per_round=3",
            "validate_every=4",
            "validation_sessions=4",
            "min_validation_trades=0",
            "threads=1",
            "metrics_port=0",
            "publish_every=2",
            "replay_min_size=4",
            "collect_simulations=4",
            "validation_simulations=4",
            "batch_size=16",
            "hidden=32",
            "tcn_channels=8",
            "support_size=20",
        )
    ),
]
EPISODES_AROUND_A_RESTART = 200
ACTOR_AT = re.compile(r"self-play actor (\d) on (\S+) \(node (\w+)\) pid (\d+)")


@dataclass(frozen=True)
class Cluster:
    address: str
    env: dict[str, str]


def _start_node(args: list[str], env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    with log.open("wb") as out:
        return subprocess.Popen(
            [str(RAY), "start", *args, "--num-cpus=1", "--object-store-memory=200000000", "--block"],
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its own process group: raylet, workers and all, stopped together
        )


def _stop(node: subprocess.Popen[bytes]) -> None:
    for sig, wait in ((signal.SIGTERM, 15), (signal.SIGKILL, 15)):
        try:
            os.killpg(node.pid, sig)
        except ProcessLookupError:
            return
        try:
            node.wait(timeout=wait)
            return
        except subprocess.TimeoutExpired:
            continue


def _alive_nodes(cluster: Cluster) -> int:
    probe = f"import ray; ray.init(address={cluster.address!r}); print(sum(n['Alive'] for n in ray.nodes()))"
    out = subprocess.run(
        [sys.executable, "-c", probe], env=cluster.env, capture_output=True, text=True, timeout=120
    )
    return int(out.stdout.split()[-1]) if out.returncode == 0 and out.stdout.split() else 0


@pytest.fixture(scope="module")
def cluster() -> Iterator[Cluster]:
    port = free_port()
    # Short: Ray's socket paths live under it (107 bytes at most).
    temp = Path(tempfile.mkdtemp(prefix="smzray", dir="/tmp"))
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]),
        # The cluster listens beyond loopback: only holders of this run's token may join it.
        "RAY_AUTH_MODE": "token",
        "RAY_AUTH_TOKEN": secrets.token_hex(32),
        "RAY_USAGE_STATS_ENABLED": "0",
    }
    head_args = ["--head", f"--port={port}", "--node-ip-address=127.0.0.1", "--include-dashboard=false"]
    nodes = [_start_node([*head_args, f"--temp-dir={temp}"], env, temp / "head.log")]
    try:
        up = Cluster(f"127.0.0.1:{port}", env)
        deadline = time.monotonic() + 120
        while _alive_nodes(up) < 1:
            assert time.monotonic() < deadline, (temp / "head.log").read_text()[-2000:]
            time.sleep(1)
        nodes.append(_start_node([f"--address={up.address}"], env, temp / "node.log"))
        while _alive_nodes(up) < 2:
            assert time.monotonic() < deadline, (temp / "node.log").read_text()[-2000:]
            time.sleep(1)
        yield up
    finally:
        for node in reversed(nodes):
            _stop(node)
        shutil.rmtree(temp, ignore_errors=True)


def _train(cluster: Cluster, db: Path, out: Path, episodes: int) -> subprocess.Popen[str]:
    args = ["train", f"--db={db}", f"--out={out}", f"--episodes={episodes}", f"--ray={cluster.address}"]
    return subprocess.Popen(
        [sys.executable, "-m", "services.cli", *args, "--actors=2", *SMALL_RUN],
        env=cluster.env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def _finish(proc: subprocess.Popen[str], timeout: float = 600) -> str:
    try:
        output, _ = proc.communicate(timeout=timeout)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, output[-3000:]
    return output


def _replay(out: Path) -> ReplayBuffer:
    return ReplayBuffer.from_bytes((resolve_checkpoint(out) / REPLAY_FILE).read_bytes())


def _whole(replay: ReplayBuffer) -> bool:
    session = EnvConfig().session_bars
    return all(len(t) == session and t.actions.shape == (session,) for t in replay.trajectories)


def test_two_nodes_train_as_the_workers_path_does(cluster: Cluster, db: Path, tmp_path: Path) -> None:
    """Two actors, one on each node, feed the learner: the counters, history, checkpoint and replay
    are those of ``test_two_workers_overlap_selfplay_with_learning_and_resume``."""
    out = tmp_path / "ray"
    output = _finish(_train(cluster, db, out, episodes=12))
    assert '"episodes": 12, "updates": 9' in output  # 3 updates per round of 4, as one process
    nodes = {m.group(3) for m in ACTOR_AT.finditer(output)}
    assert len(nodes) == 2, output  # one CPU a node, one CPU an actor: each node ran one
    rounds = [r for r in read_history(out) if r["kind"] == "round"]
    assert [r["episodes"] for r in rounds] == [4, 8, 12]
    assert rounds[0]["selfplay_weights_step"] == 0
    assert all(r["selfplay_weights_step"] <= r["updates"] for r in rounds)
    latest = load_checkpoint(resolve_checkpoint(out))
    assert latest.manifest.training_step == 9
    replay = _replay(out)
    assert len(replay) == 12 and replay.added == 12 and _whole(replay)


def _wait_for(proc: subprocess.Popen[str], pattern: re.Pattern[str], seen: list[str]) -> re.Match[str]:
    """Read the driver's output line by line (kept in ``seen``) until ``pattern`` matches."""
    assert proc.stdout is not None
    for line in proc.stdout:
        seen.append(line)
        match = pattern.search(line)
        if match:
            return match
    pytest.fail("the driver ended before printing " + pattern.pattern + ":\n" + "".join(seen)[-3000:])


def test_sigkilled_actor_is_restarted_and_its_round_dropped(
    cluster: Cluster, db: Path, tmp_path: Path
) -> None:
    out = tmp_path / "kill-actor"
    # Long enough (rounds take about a second here) for the restarted actor to play again.
    proc = _train(cluster, db, out, episodes=EPISODES_AROUND_A_RESTART)
    seen: list[str] = []
    try:
        first = _wait_for(proc, ACTOR_AT, seen)
        victim, pid = first.group(1), int(first.group(4))
        os.kill(pid, signal.SIGKILL)  # mid-round: it was handed its next round as this line printed
        output = "".join(seen) + _finish(proc)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert f"self-play actor {victim} lost its round" in output and "Ray restarts it" in output
    pids = {int(m.group(4)) for m in ACTOR_AT.finditer(output) if m.group(1) == victim}
    assert pid in pids and len(pids) == 2, output  # it played again, from a new process
    assert f'"episodes": {EPISODES_AROUND_A_RESTART}' in output
    lost = [r for r in read_history(out) if r["kind"] == "actor_lost"]
    assert len(lost) == 1 and lost[0]["restarting"] is True, output
    replay = _replay(out)
    assert len(replay) == replay.added == EPISODES_AROUND_A_RESTART and _whole(replay)


def test_killed_driver_resumes_from_latest(cluster: Cluster, db: Path, tmp_path: Path) -> None:
    out = tmp_path / "kill-driver"
    proc = _train(cluster, db, out, episodes=1000)
    try:
        deadline = time.monotonic() + 300
        while not (out.exists() and list_checkpoints(out)):
            assert proc.poll() is None and time.monotonic() < deadline, "no checkpoint before the deadline"
            time.sleep(0.2)
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    saved = load_checkpoint(resolve_checkpoint(out)).manifest
    episodes = int(saved.version.split("-ep-")[1])
    # Ray ends a dead driver's actors, so the cluster's two CPUs are free for the restarted one.
    output = _finish(_train(cluster, db, out, episodes=4))
    assert f"resumed from {saved.version}" in output
    assert f'"episodes": {episodes + 4}' in output
    assert load_checkpoint(resolve_checkpoint(out)).manifest.training_step > saved.training_step
    replay = _replay(out)
    assert replay.added == episodes + 4 and _whole(replay)
