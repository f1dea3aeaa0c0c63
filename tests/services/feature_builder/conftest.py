"""Fixtures of the feature builder's tests: real sample bars, a sample DuckDB, real Redis, and a
stand-in broker gateway (a thread that answers every window with a position, as the gateway does)."""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest
import redis

from services.jobs.ingest import run_ingest
from shared.bars import Bars
from shared.position import PositionState
from shared.reward import Action
from shared.wire import PositionMessage, WindowMessage, position_key
from tests.helpers import GBPJPY_SAMPLE as SAMPLE
from tests.helpers import gbpjpy_sample as sample_bars

REDIS_URL = "redis://127.0.0.1:6379/0"


@pytest.fixture(scope="session")
def sample_zip() -> Path:
    return SAMPLE


@pytest.fixture(scope="session")
def gbpjpy_sample() -> Bars:
    """The three-week real GBPJPY sample shipped in the repo, sorted by time."""
    return sample_bars()


@pytest.fixture(scope="session")
def sample_db(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("fb") / "sample.duckdb"
    run_ingest([SAMPLE], instrument="GBPJPY", db=path)
    return path


@pytest.fixture(scope="session")
def redis_client() -> redis.Redis:
    client = redis.Redis.from_url(REDIS_URL, decode_responses=True)
    try:
        client.ping()
    except redis.RedisError as exc:
        pytest.skip(f"no Redis at {REDIS_URL}: {exc}")
    return client


@dataclass(frozen=True)
class Names:
    windows_stream: str
    positions_stream: str
    account: str


@pytest.fixture
def names(redis_client: redis.Redis) -> Iterator[Names]:
    """Streams and an account of this test only; deleted afterwards."""
    tag = uuid.uuid4().hex[:10]
    out = Names(f"test:fb:{tag}:windows", f"test:fb:{tag}:positions", f"fbtest{tag}")
    yield out
    keys = [out.windows_stream, out.positions_stream, *redis_client.scan_iter(position_key(out.account, "*"))]
    redis_client.delete(*keys)


Policy = Callable[[WindowMessage, PositionState], int]


def hold(_message: WindowMessage, _state: PositionState) -> int:
    return int(Action.HOLD)


def trader(seed: int = 5) -> Policy:
    """Random legal actions, mostly HOLD: opens, holds and closes positions of both sides."""
    rng = np.random.default_rng(seed)

    def policy(_message: WindowMessage, state: PositionState) -> int:
        if state.side:
            return int(Action.CLOSE) if rng.random() < 0.08 else int(Action.HOLD)
        u = rng.random()
        return int(Action.BUY) if u < 0.06 else int(Action.SELL) if u < 0.12 else int(Action.HOLD)

    return policy


@dataclass
class Gateway:
    """Plays the broker gateway: reads every window, applies the policy's action to the position
    (``PositionState``, as the gateway does), then SETs the position key and XADDs a PositionMessage.

    ``mode``: "both" (as the real gateway), "stream" (XADD only) or "key" (SET only).
    ``delay(message)``: seconds to wait before answering a window (to test the builder's wait).
    """

    client: redis.Redis
    names: Names
    policy: Policy = hold
    mode: str = "both"
    spread_pips: float = 4.0
    delay: Callable[[WindowMessage], float] = lambda _m: 0.0
    messages: list[WindowMessage] = field(default_factory=list)
    expected_position: dict[int, np.ndarray] = field(default_factory=dict)  # bar_ts -> columns 9-14
    actions: dict[int, int] = field(default_factory=dict)  # bar_ts -> action
    answered_at: dict[int, float] = field(default_factory=dict)  # bar_ts -> time.time() of the answer
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None
    _states: dict[str, PositionState] = field(default_factory=dict)
    error: BaseException | None = None

    def __enter__(self) -> Gateway:
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        assert self._thread is not None
        self._thread.join(5)
        if self.error is not None:
            raise self.error

    def windows(self) -> list[WindowMessage]:
        return [m for m in self.messages if m.kind == "window"]

    def _run(self) -> None:
        cursor = "0-0"
        try:
            while not self._stop.is_set():
                reply = self.client.xread({self.names.windows_stream: cursor}, block=50, count=100)
                for _stream, entries in reply or []:
                    for entry_id, fields in entries:
                        cursor = entry_id
                        self._answer(WindowMessage.model_validate_json(fields["data"]))
        except BaseException as exc:  # reported by __exit__
            self.error = exc

    def _answer(self, message: WindowMessage) -> None:
        self.messages.append(message)
        if message.kind == "session_break":
            self._states.pop(message.instrument, None)  # the gateway closes the position at the break
            return
        pause = self.delay(message)
        if pause:
            time.sleep(pause)
        pip = 0.01 if message.instrument.endswith("JPY") else 0.0001
        if message.step == 0:
            self._states[message.instrument] = PositionState(pip=pip, spread_pips=self.spread_pips)
        state = self._states[message.instrument]
        state.mark(message.close, message.step)
        self.expected_position[message.bar_ts] = state.features()
        action = self.policy(message, state)
        self.actions[message.bar_ts] = action
        state.apply(action, message.close, message.step, message.bar_ts, message.last_bar)
        answer = PositionMessage(
            account=self.names.account,
            instrument=message.instrument,
            as_of_bar_ts=message.bar_ts,
            session_id=message.session_id,
            state=state.to_dict(),
        ).model_dump_json()
        if self.mode in ("both", "key"):
            self.client.set(position_key(self.names.account, message.instrument), answer)
        if self.mode in ("both", "stream"):
            self.client.xadd(self.names.positions_stream, {"data": answer})
        self.answered_at[message.bar_ts] = time.time()


def stream_messages(client: redis.Redis, stream: str) -> list[WindowMessage]:
    return [WindowMessage.model_validate_json(f["data"]) for _id, f in client.xrange(stream)]
