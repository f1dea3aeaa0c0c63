"""The Dockerfile and its build context (no Docker engine here: what can be checked without building),
and the image's health check script."""

from __future__ import annotations

import fnmatch
import importlib.util
import re
import subprocess
import sys
import tomllib
import zipfile
from pathlib import Path

import pytest

from services.settings import FEATURE_BUILDER_METRICS_PORT, GATEWAY_PORT, INFERENCE_PORT, TRAINER_METRICS_PORT
from tests.deploy.helpers import REPO

DOCKERFILE = REPO / "Dockerfile"
HEALTHCHECK = REPO / "deploy" / "docker" / "healthcheck.py"


def stages() -> list[list[str]]:
    """Instructions (continuation lines joined, comments dropped) per build stage."""
    text = re.sub(r"\\\n", " ", DOCKERFILE.read_text())
    out: list[list[str]] = []
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        if line.upper().startswith("FROM "):
            out.append([])
        if out:
            out[-1].append(line)
    return out


def ignored(path: str) -> bool:
    """Docker's .dockerignore rule: the last matching pattern wins, `!` re-includes."""
    result = False
    for raw in (REPO / ".dockerignore").read_text().splitlines():
        pattern = raw.strip()
        if not pattern or pattern.startswith("#"):
            continue
        negate = pattern.startswith("!")
        pattern = pattern.lstrip("!").rstrip("/")
        candidates = [path, *(str(p) for p in Path(path).parents if str(p) != ".")]
        if any(
            fnmatch.fnmatch(c, pattern) or fnmatch.fnmatch(c, pattern.replace("**/", "")) for c in candidates
        ):
            result = not negate
    return result


def test_multi_stage_slim_non_root_image() -> None:
    builder, runtime = stages()
    assert re.match(r"FROM \$\{PYTHON_IMAGE\} AS builder", builder[0])
    assert re.search(r"ARG PYTHON_IMAGE=python:3\.11-slim", DOCKERFILE.read_text())
    text = " ".join(builder)
    assert "download.pytorch.org/whl/cpu" in text and "torch==2.13.0" in text
    assert "python -m venv /opt/venv" in text
    final = " ".join(runtime)
    assert runtime[0].startswith("FROM ${PYTHON_IMAGE}")
    assert "COPY --from=builder /opt/venv /opt/venv" in final
    # Nothing compiles in the final stage: no package installs, no compilers.
    assert not re.search(r"apt-get|pip install|gcc|build-essential", final)
    user = [i for i in runtime if i.startswith("USER ")]
    assert user and user[-1].split()[1].split(":")[0] not in {"0", "root"}
    assert any(i.startswith("HEALTHCHECK ") and "healthcheck.py" in i for i in runtime)
    assert 'ENTRYPOINT ["smz"]' in runtime
    assert any(i.startswith("CMD ") for i in runtime)


def test_the_pinned_torch_is_what_pyproject_pins() -> None:
    deps = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["dependencies"]
    assert "torch==2.13.0" in deps


def test_ray_is_an_optional_extra_the_default_install_and_image_leave_out() -> None:
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    assert not [d for d in project["dependencies"] if d.lower().startswith("ray")]
    assert project["optional-dependencies"]["ray"] == ["ray==2.60.0"]
    assert any("ray" in d for d in project["optional-dependencies"]["dev"] if d.startswith("micro-muzero["))
    assert 'ARG EXTRAS=""' in DOCKERFILE.read_text()  # the image gets Ray only with --build-arg EXTRAS=ray


def test_build_context_holds_what_the_copies_need_and_no_secrets() -> None:
    copies = [i.split()[1:-1] for s in stages() for i in s if i.startswith("COPY ") and "--from" not in i]
    sources = [src for srcs in copies for src in srcs]
    assert sources, "no COPY found"
    for source in sources:
        assert not ignored(source.rstrip("/")), f"{source} is excluded by .dockerignore"
    for inside in ("shared/model/checkpoint.py", "services/cli.py", "data/sample/README.md"):
        assert not ignored(inside), inside
    for outside in (".env", ".git", ".venv", "runs", "data/demo.duckdb", "tests/conftest.py", "k8s"):
        assert ignored(outside), f"{outside} would be sent to the Docker daemon"


def test_the_project_installs_from_the_build_context(tmp_path: Path) -> None:
    """`pip install --no-deps .` of the builder stage, on exactly the files the Dockerfile copies."""
    context = tmp_path / "src"
    context.mkdir()
    for name in ("pyproject.toml", "README.md"):
        (context / name).write_bytes((REPO / name).read_bytes())
    for package in ("shared", "services"):
        for path in (REPO / package).rglob("*.py"):
            target = context / path.relative_to(REPO)
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(path.read_bytes())
    out = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(tmp_path),
         str(context)],
        capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    (wheel,) = tmp_path.glob("micro_muzero-*.whl")
    with zipfile.ZipFile(wheel) as zf:
        names = zf.namelist()
        entry_points = next(zf.read(n).decode() for n in names if n.endswith("entry_points.txt"))
    for module in ("services/cli.py", "services/inference/main.py", "shared/model/checkpoint.py"):
        assert module in names, module
    assert "smz = services.cli:app" in entry_points


@pytest.fixture(scope="module")
def healthcheck():  # type: ignore[no-untyped-def]
    spec = importlib.util.spec_from_file_location("smz_healthcheck", HEALTHCHECK)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize(
    ("argv", "env", "url"),
    [
        (["smz", "serve", "inference"], {}, "http://127.0.0.1:8001/healthz"),
        (["/sbin/docker-init", "--", "smz", "serve", "inference"], {"SMZ_INFERENCE_PORT": "9001"},
         "http://127.0.0.1:9001/healthz"),
        (["smz", "serve", "broker-gateway"], {}, "http://127.0.0.1:8002/healthz"),
        (["smz", "serve", "feature-builder"], {}, "http://127.0.0.1:9102/metrics"),
        (["smz", "serve", "feature-builder"], {"SMZ_FEATURE_BUILDER_METRICS_PORT": "0"}, None),
        (["smz", "train", "--db=/data/market.duckdb"], {"SMZ_TRAINER_METRICS_PORT": "9111"},
         "http://127.0.0.1:9111/metrics"),
        (["sh", "-ec", "smz ingest x && smz features"], {}, None),
        (["smz", "--help"], {}, None),
        (["smz", "serve", "inference"], {"SMZ_HEALTHCHECK_URL": "http://127.0.0.1:8001/readyz"},
         "http://127.0.0.1:8001/readyz"),
        (["smz", "serve", "inference"], {"SMZ_HEALTHCHECK_URL": "none"}, None),
    ],
)  # fmt: skip
def test_healthcheck_picks_the_jobs_endpoint(healthcheck, argv, env, url) -> None:  # type: ignore[no-untyped-def]
    assert healthcheck.health_url(argv, env) == url


def test_healthcheck_reports_a_dead_endpoint(healthcheck) -> None:  # type: ignore[no-untyped-def]
    ok, message = healthcheck.check("http://127.0.0.1:9/healthz")
    assert not ok and "127.0.0.1:9" in message


def test_healthcheck_defaults_are_the_settings_ports(healthcheck) -> None:  # type: ignore[no-untyped-def]
    """healthcheck.py imports nothing of ours: its default ports must be services/settings.py's."""
    expected = {
        ("serve", "inference"): f"http://127.0.0.1:{INFERENCE_PORT}/healthz",
        ("serve", "broker-gateway"): f"http://127.0.0.1:{GATEWAY_PORT}/healthz",
        ("serve", "feature-builder"): f"http://127.0.0.1:{FEATURE_BUILDER_METRICS_PORT}/metrics",
        ("train",): f"http://127.0.0.1:{TRAINER_METRICS_PORT}/metrics",
    }
    for args, url in expected.items():
        assert healthcheck.health_url(["smz", *args], {}) == url
