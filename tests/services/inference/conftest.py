"""Fixtures of the inference service's tests: a checkpoint root with a tiny model, real Redis with
streams of this test only."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import redis

from tests.services.inference.helpers import save_version

REDIS_URL = "redis://127.0.0.1:6379/0"


@pytest.fixture
def root(tmp_path: Path) -> Path:
    """A checkpoint root holding ``v1`` (seed 1), with ``latest`` pointing at it."""
    checkpoints = tmp_path / "checkpoints"
    save_version(checkpoints, "v1", seed=1)
    return checkpoints


@pytest.fixture(scope="session")
def redis_client() -> redis.Redis:
    client = redis.Redis.from_url(REDIS_URL, decode_responses=True)
    try:
        client.ping()
    except redis.RedisError as exc:
        pytest.skip(f"no Redis at {REDIS_URL}: {exc}")
    return client


@dataclass(frozen=True)
class Streams:
    windows: str
    dead: str


@pytest.fixture
def streams(redis_client: redis.Redis) -> Iterator[Streams]:
    tag = uuid.uuid4().hex[:10]
    out = Streams(f"test:inference:{tag}:windows", f"test:inference:{tag}:dead")
    yield out
    redis_client.delete(out.windows, out.dead)
