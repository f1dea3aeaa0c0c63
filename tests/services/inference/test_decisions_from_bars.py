"""Decisions from bars: the window the service makes of recent bars and the position held is the feature
builder's window of the same bars, bit for bit, so the decision is the same; bad bars get a 422 naming
the row; the client module works against the running service."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import httpx
import numpy as np
import pytest

from services.feature_builder.builder import FeatureBuilder
from services.feature_builder.sources import BarRows
from services.feature_builder.validation import LiveBar
from services.inference.app import InferenceService, create_app
from services.inference.client import DecisionError, DecisionsClient, bar_rows
from services.inference.settings import InferenceSettings
from shared.bars import Bars
from shared.decision_bars import DECISION_BARS, MAX_DECISION_BARS, HeldPosition, window_from_bars
from shared.position import PositionState
from shared.reward import Action
from shared.schema import SCHEMA_HASH, SCHEMA_VERSION
from shared.trading.rules import SIDE_NAMES, Side
from shared.wire import Decision, DecisionRequest, PositionMessage, WindowMessage
from tests.helpers import gbpjpy_sample
from tests.services.inference.helpers import TOKEN, save_version, serving

START, HISTORY, LIVE = 1000, 450, 400  # sample index of the first live bar; a session and 40 bars
READY_SECONDS = 120  # a fresh clone compiles the numba kernels during the first warm-up


@dataclass
class Published:
    """A window the builder published, at sample row ``row``, and the position held when it was made."""

    message: WindowMessage
    row: int
    held: HeldPosition

    def window(self) -> np.ndarray:
        return np.asarray(self.message.window, dtype=np.float32)


@dataclass
class InstantGateway:
    """The feature builder's publisher and position reader in one: answers every window at once as the
    broker gateway does (mark at the close, a random legal action, apply) and keeps what it published."""

    bars: Bars
    account: str = "bars-test"
    rng: np.random.Generator = field(default_factory=lambda: np.random.default_rng(11))
    published: list[Published] = field(default_factory=list)
    state: PositionState | None = None
    latest: PositionMessage | None = None

    def publish(self, message: WindowMessage) -> None:
        if message.step == 0:
            self.state = PositionState(pip=self.bars.pip)
        state = self.state
        assert state is not None and message.kind == "window"
        # A closed position leaves its entry in the state: flat is flat.
        held = HeldPosition()
        if state.side:
            held = HeldPosition(Side(state.side), state.entry_ts, state.entry_price)
        row = int(np.searchsorted(self.bars.ts, message.bar_ts))
        self.published.append(Published(message, row, held))
        state.mark(message.close, message.step)
        state.apply(self._action(state), message.close, message.step, message.bar_ts, message.last_bar)
        self.latest = PositionMessage(
            account=self.account,
            instrument=message.instrument,
            as_of_bar_ts=message.bar_ts,
            session_id=message.session_id,
            state=state.to_dict(),
        )

    def _action(self, state: PositionState) -> int:
        u = self.rng.random()
        if state.side:
            return int(Action.CLOSE) if u < 0.05 else int(Action.HOLD)
        return int(Action.BUY) if u < 0.05 else int(Action.SELL) if u < 0.1 else int(Action.HOLD)

    def cursor(self) -> str:
        return "0-0"

    def current(self, _instrument: str) -> PositionMessage | None:
        return self.latest

    def read(self, cursor: str, _block_seconds: float) -> tuple[str, list[PositionMessage]]:
        return cursor, []


def live_bars(bars: Bars, lo: int, hi: int) -> list[LiveBar]:
    return list(BarRows.from_bars(bars).take(slice(lo, hi)).live_bars(bars.instrument))


def request_rows(bars: Bars, p: Published, extra: int = 0) -> list[LiveBar]:
    """The bars a caller sends for ``p``: the last ``DECISION_BARS`` (and ``extra`` older ones), from
    the entry bar on if that is older."""
    lo = p.row - DECISION_BARS + 1 - extra
    if p.held.entry_ts is not None:
        lo = min(lo, int(np.searchsorted(bars.ts, p.held.entry_ts)))
    return live_bars(bars, lo, p.row + 1)


@pytest.fixture(scope="module")
def sample() -> Bars:
    return gbpjpy_sample()


@pytest.fixture(scope="module")
def replay(sample: Bars) -> list[Published]:
    """The feature builder's windows of a session and 40 bars of real GBPJPY bars, trading at random."""
    gateway = InstantGateway(sample)
    builder = FeatureBuilder(gateway, gateway, position_wait_seconds=1.0)
    builder.warm_up(live_bars(sample, START - HISTORY, START))
    for bar in live_bars(sample, START, START + LIVE):
        builder.on_bar(bar)
    assert len(gateway.published) == LIVE
    return gateway.published


def test_the_window_of_bars_is_the_feature_builders_window_bit_for_bit(
    sample: Bars, replay: list[Published]
) -> None:
    sides = {Side(p.held.side) for p in replay}
    assert sides == {Side.FLAT, Side.LONG, Side.SHORT}  # the replay traded both ways
    for i, p in enumerate(replay):
        bars = request_rows(sample, p, extra=(0, 1, 200)[i % 3])  # more history changes nothing
        window = window_from_bars("GBPJPY", bars, p.held, now=float(sample.ts[-1]))
        assert window.dtype == np.float32
        assert np.array_equal(window, p.window()), (i, p.held)
        assert window.tobytes() == p.window().tobytes()  # the same zeros, not -0.0


def test_the_entry_price_is_the_entry_bars_close_by_default(sample: Bars, replay: list[Published]) -> None:
    p = next(p for p in replay if p.held.side == Side.SHORT)
    bars = request_rows(sample, p)
    entry = next(bar for bar in bars if bar.ts == p.held.entry_ts)
    assert p.held.entry_price == entry.close
    default = HeldPosition(Side.SHORT, p.held.entry_ts)
    assert np.array_equal(window_from_bars("GBPJPY", bars, default), p.window())
    lower = HeldPosition(Side.SHORT, p.held.entry_ts, entry.close - 0.05)  # sold 5 pips lower: 5 pips less
    assert window_from_bars("GBPJPY", bars, lower)[0, 10] < p.window()[0, 10]


# ------------------------------------------------------------- the service
@pytest.fixture(scope="module")
def url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The inference service with a tiny model and a token, served by uvicorn in a thread."""
    root = tmp_path_factory.mktemp("bars") / "checkpoints"
    save_version(root, "v1", seed=1)
    settings = InferenceSettings(checkpoint_dir=root, stream_enabled=False, token=TOKEN)
    service = InferenceService(settings)
    with serving(create_app(settings, service)) as base:
        assert service.store.wait_ready(READY_SECONDS)
        yield base


@pytest.fixture
def client(url: str) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=url, headers={"Authorization": f"Bearer {TOKEN}"}, timeout=30) as http:
        yield http


def bars_body(bars: list[LiveBar], held: HeldPosition | None = None) -> dict[str, Any]:
    body: dict[str, Any] = {"instrument": "GBPJPY", "bars": bar_rows(map(vars_of, bars))}
    if held is not None and held.side != Side.FLAT:
        body["position"] = {"side": SIDE_NAMES[held.side], "entry_ts": held.entry_ts}
    return body


def vars_of(bar: LiveBar) -> dict[str, Any]:
    return {"ts": bar.ts, "open": bar.open, "high": bar.high, "low": bar.low, "close": bar.close}


def same_decision(a: dict[str, Any], b: dict[str, Any]) -> None:
    keys = ("action", "action_name", "visit_policy", "root_value", "outcome_probabilities", "model_version")
    assert {k: a[k] for k in keys} == {k: b[k] for k in keys}


def picks(replay: list[Published]) -> list[Published]:
    """Windows flat, long and short, two of each."""
    return [p for side in Side for p in [q for q in replay if q.held.side == side][:2]]


def test_a_decision_from_bars_is_the_decision_on_the_builders_window(
    client: httpx.Client, sample: Bars, replay: list[Published]
) -> None:
    for p in picks(replay):
        from_bars = client.post("/v1/decisions", json=bars_body(request_rows(sample, p), p.held))
        from_window = client.post("/v1/decisions", json={"instrument": "GBPJPY", "window": p.message.window})
        assert from_bars.status_code == 200 and from_window.status_code == 200, from_bars.text
        same_decision(from_bars.json(), from_window.json())
        assert from_bars.json()["bar_ts"] == p.message.bar_ts and from_window.json()["bar_ts"] is None
        for answer in (from_bars.json(), from_window.json()):
            assert (answer["schema_version"], answer["schema_hash"]) == (SCHEMA_VERSION, SCHEMA_HASH)
        if p.held.side != Side.FLAT:  # in a position: BUY and SELL are illegal
            assert from_bars.json()["action"] in (Action.HOLD, Action.CLOSE)


def test_bar_times_may_be_iso_8601_with_an_offset(
    client: httpx.Client, sample: Bars, replay: list[Published]
) -> None:
    p = replay[-1]
    body = bars_body(request_rows(sample, p), p.held)
    for bar in body["bars"]:
        bar["ts"] = datetime.fromtimestamp(bar["ts"], UTC).isoformat().replace("+00:00", "Z")
    if "position" in body:
        body["position"]["entry_ts"] = datetime.fromtimestamp(body["position"]["entry_ts"], UTC).isoformat()
    response = client.post("/v1/decisions", json=body)
    assert response.status_code == 200, response.text
    window = client.post("/v1/decisions", json={"instrument": "GBPJPY", "window": p.message.window})
    same_decision(response.json(), window.json())


def _bad(case: str, body: dict[str, Any]) -> dict[str, Any] | str:
    """``body`` (``DECISION_BARS`` + 20 good bars) made bad as ``case`` says."""
    bars = body["bars"]
    if case == "too_few":
        body["bars"] = bars[-(DECISION_BARS - 1) :]
    elif case == "high_below_close":
        bars[100]["high"] = bars[100]["close"] - 0.01
        bars[100]["open"] = bars[100]["low"] = min(bars[100]["low"], bars[100]["high"] - 0.01)
    elif case == "low_above_open":
        bars[100]["low"] = bars[100]["open"] + 0.001
        bars[100]["high"] = bars[100]["close"] = max(bars[100]["high"], bars[100]["low"])
    elif case == "negative":
        bars[9]["low"] = -1.0
    elif case == "out_of_order":
        bars[50]["ts"], bars[51]["ts"] = bars[51]["ts"], bars[50]["ts"]
    elif case == "duplicate":
        bars[51]["ts"] = bars[50]["ts"]
    elif case == "half_minute":
        bars[3]["ts"] += 30
    elif case == "future":
        shift = (int(datetime.now(UTC).timestamp()) // 60 + 1440) * 60 - bars[-1]["ts"]
        for bar in bars:
            bar["ts"] += shift
    elif case == "gap":
        body["bars"] = bars[:100] + bars[112:]  # 13 minutes or more between rows 99 and 100
    elif case == "jump":
        for key in ("open", "high", "low", "close"):
            bars[120][key] *= 1.5
    elif case == "huge":
        bars[0] = {"ts": bars[0]["ts"], "open": 2e7, "high": 2e7, "low": 2e7, "close": 2e7}
    elif case == "naive_iso":
        bars[0]["ts"] = datetime.fromtimestamp(bars[0]["ts"], UTC).replace(tzinfo=None).isoformat()
    elif case == "volume":
        bars[0]["volume"] = 10.0
    elif case == "nan":
        bars[7]["close"] = "not-a-number"
        return json.dumps(body).replace('"not-a-number"', "NaN")  # what json.dumps writes of a nan
    else:
        body.update(UPDATES[case])
    return body


# Cases made by replacing parts of the body.
UPDATES: dict[str, dict[str, Any]] = {
    "window_too": {"window": [[0.0] * 15] * 32},
    "neither": {"bars": None},
    "long_without_entry": {"position": {"side": "long"}},
    "entry_not_a_bar": {"position": {"side": "short", "entry_ts": 60}},
    "flat_with_entry": {"position": {"entry_price": 150.0}},
    "bad_side": {"position": {"side": "up"}},
    "unknown_instrument": {"instrument": "PAIR0"},
}
# What the 422's message says of each case: the row and why, or what is wrong.
CASES: dict[str, tuple[str, ...]] = {
    "too_few": (f"bars: {DECISION_BARS - 1} given; a decision needs {DECISION_BARS} to",),
    "high_below_close": ("bars[100] (ts ", "close_outside_range"),
    "low_above_open": ("bars[100] (ts ", "open_outside_range"),
    "negative": ("bars[9] (ts ", "non_positive_price"),
    "out_of_order": ("bars[51] (ts ", "out_of_order"),
    "duplicate": ("bars[51] (ts ", "duplicate_timestamp"),
    "half_minute": ("bars[3] (ts ", "not_whole_minute"),
    "future": ("bars[0] (ts ", "future"),
    "gap": ("bars[100] (ts ", "breaks a session"),
    "jump": ("bars[120] (ts ", "price_jump"),
    "huge": ("bars[0] (ts ", "open must be a finite positive price below 1e+07"),
    "naive_iso": ("bars.0.ts", "has no UTC offset"),
    "volume": ("bars.0.volume", "Extra inputs are not permitted"),
    "nan": ("bars[7] (ts ", "non_finite"),
    "window_too": ("give exactly one of window",),
    "neither": ("give exactly one of window",),
    "long_without_entry": ("an open position needs entry_ts",),
    "entry_not_a_bar": ("entry_ts 60 is not the open time",),
    "flat_with_entry": ("a flat position has no entry_ts",),
    "bad_side": ("position.side",),
    "unknown_instrument": ("no pip size or spread on record",),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_bad_bars_get_422_naming_the_row(
    client: httpx.Client, sample: Bars, replay: list[Published], case: str
) -> None:
    flat = next(p for p in replay if p.held.side == Side.FLAT and p.row - START > DECISION_BARS)
    payload = _bad(case, bars_body(live_bars(sample, flat.row - DECISION_BARS - 19, flat.row + 1)))
    content = payload if isinstance(payload, str) else json.dumps(payload)
    response = client.post("/v1/decisions", content=content, headers={"content-type": "application/json"})
    assert response.status_code == 422, response.text
    message = response.json()["message"]
    assert all(fragment in message for fragment in CASES[case]), message


def test_at_most_a_session_and_its_warm_up_of_bars(sample: Bars) -> None:
    rows = [vars_of(bar) for bar in live_bars(sample, 0, MAX_DECISION_BARS + 1)]
    with pytest.raises(ValueError, match=f"at most {MAX_DECISION_BARS} items"):
        DecisionRequest.model_validate({"instrument": "GBPJPY", "bars": rows})
    assert len(json.dumps({"instrument": "GBPJPY", "bars": rows[1:]})) < 65_536  # fits the body limit


# -------------------------------------------------------------- the client
def decided(decision: Decision) -> dict[str, Any]:
    """What was decided (not how long it took, nor which bar it was asked about)."""
    return decision.model_dump(exclude={"search_ms", "bar_ts"})


def test_the_client_against_the_running_service(url: str, sample: Bars, replay: list[Published]) -> None:
    long = next(p for p in replay if p.held.side == Side.LONG)
    flat = next(p for p in replay if p.held.side == Side.FLAT and p.row - START > DECISION_BARS)
    with DecisionsClient(url, token=TOKEN) as client:
        # A Bars: the client sends the tail the decision needs (from the entry bar on).
        position = {"side": "long", "entry_ts": datetime.fromtimestamp(long.held.entry_ts or 0, UTC)}
        decision = client.decide_bars("GBPJPY", sample.slice(0, long.row + 1), position)
        on_window = client.decide_window("GBPJPY", long.window())
        assert decided(decision) == decided(on_window)
        assert decision.bar_ts == long.message.bar_ts and decision.schema_hash == SCHEMA_HASH
        # Mappings with aware datetimes (a pandas frame's records), other keys left out.
        rows = [
            {**vars_of(bar), "ts": datetime.fromtimestamp(bar.ts, UTC), "volume": 1.0}
            for bar in live_bars(sample, flat.row - DECISION_BARS + 1, flat.row + 1)
        ]
        on_window = client.decide_window("GBPJPY", flat.window())
        assert decided(client.decide_bars("GBPJPY", rows)) == decided(on_window)
        with pytest.raises(DecisionError, match=r"422: .*bars\[1\].*duplicate_timestamp"):
            client.decide_bars("GBPJPY", rows[:1] * DECISION_BARS)
    with DecisionsClient(url) as anonymous, pytest.raises(DecisionError) as refused:
        anonymous.decide_window("GBPJPY", flat.window())
    assert refused.value.status == 401


def test_the_client_waits_out_a_503() -> None:
    decision = {
        "instrument": "GBPJPY",
        "action": 0,
        "action_name": "HOLD",
        "visit_policy": [1.0, 0.0, 0.0, 0.0],
        "root_value": 0.0,
        "outcome_probabilities": [0.3, 0.4, 0.3],
        "model_version": "v1",
        "search_ms": 1.0,
    }
    busy = httpx.Response(503, headers={"Retry-After": "0"}, json={"detail": "no verified model loaded yet"})
    answers = [busy, busy, httpx.Response(200, json=decision)]
    calls: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        calls.append(request)
        return answers[len(calls) - 1]

    with DecisionsClient(transport=httpx.MockTransport(handler), retries=2) as client:
        assert client.decide_window("GBPJPY", np.zeros((32, 15))).action_name == "HOLD"
    assert len(calls) == 3
    calls.clear()
    with (
        DecisionsClient(transport=httpx.MockTransport(handler), retries=1) as client,
        pytest.raises(DecisionError, match="503: no verified model"),
    ):
        client.decide_window("GBPJPY", np.zeros((32, 15)))
    assert len(calls) == 2
