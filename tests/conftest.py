"""Fixtures shared by every test package: where the test data lives, and a fresh database path."""

from __future__ import annotations

from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
TEST_DATA_DIR = REPO_ROOT / "tests" / "data"  # small hand-written files
SAMPLE_DIR = REPO_ROOT / "data" / "sample"  # the real three-week sample shipped with the repo
SHARED_DATA_DIR = (REPO_ROOT / ".." / "shared" / "data").resolve()  # the full real data, beside the repo


@pytest.fixture(scope="session")
def test_data_dir() -> Path:
    return TEST_DATA_DIR


@pytest.fixture(scope="session")
def sample_dir() -> Path:
    return SAMPLE_DIR


@pytest.fixture(scope="session")
def shared_data_dir() -> Path:
    """``../shared/data`` relative to the repo root; tests using it skip when it is absent."""
    if not SHARED_DATA_DIR.is_dir():
        pytest.skip(f"real data directory {SHARED_DATA_DIR} is absent")
    return SHARED_DATA_DIR


@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    """A database file that does not exist yet."""
    return tmp_path / "bars.duckdb"
