"""The trainer tests' market: a small synthetic one with its features, made once per test module."""

from __future__ import annotations

from pathlib import Path

import pytest

from services.jobs.features import run_features
from services.jobs.synth import run_synth


@pytest.fixture(scope="module")
def db(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("train") / "synth.duckdb"
    run_synth(path, "SYNTHJPY", 12_000, seed=4)
    run_features(path, "SYNTHJPY")
    return path
