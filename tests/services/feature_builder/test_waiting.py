"""The wait for the previous bar's position: no window goes out before the gateway's answer to the
window before it, a slow answer is logged and counted but still waited for, and a stop ends it."""

from __future__ import annotations

import socket
import threading
import time

import numpy as np
import pytest
import redis

from services.feature_builder.builder import FeatureBuilder, Stopped
from services.feature_builder.metrics import FeatureBuilderMetrics
from services.feature_builder.redis_io import RedisPositionReader, RedisWindowPublisher
from services.feature_builder.sources import BarRows
from services.feature_builder.validation import LiveBar
from shared.bars import Bars
from shared.position import PositionState
from shared.reward import Action
from shared.schema import N_MARKET
from shared.wire import PositionMessage, WindowMessage, position_key
from tests.services.feature_builder.conftest import Names, stream_messages

START, HISTORY = 1000, 450


def make_builder(
    client: redis.Redis, names: Names, wait: float = 5.0
) -> tuple[FeatureBuilder, FeatureBuilderMetrics, threading.Event]:
    metrics, stop = FeatureBuilderMetrics(), threading.Event()
    builder = FeatureBuilder(
        RedisWindowPublisher(client, names.windows_stream, stop=stop),
        RedisPositionReader(client, names.positions_stream, names.account, stop),
        position_wait_seconds=wait,
        metrics=metrics,
        stop=stop,
    )
    return builder, metrics, stop


def sample_bars(bars: Bars, lo: int, hi: int) -> list[LiveBar]:
    return list(BarRows.from_bars(bars).take(slice(lo, hi)).live_bars("GBPJPY"))


def answer(client: redis.Redis, names: Names, message: WindowMessage, state: PositionState, how: str) -> None:
    body = PositionMessage(
        account=names.account,
        instrument="GBPJPY",
        as_of_bar_ts=message.bar_ts,
        session_id=message.session_id,
        state=state.to_dict(),
    ).model_dump_json()
    if how in ("key", "both"):
        client.set(position_key(names.account, "GBPJPY"), body)
    if how in ("stream", "both"):
        client.xadd(names.positions_stream, {"data": body})


def in_background(call: object) -> tuple[threading.Thread, list[object]]:
    out: list[object] = []

    def target() -> None:
        try:
            out.append(call())  # type: ignore[operator]
        except BaseException as exc:
            out.append(exc)

    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    return thread, out


def value(metrics: FeatureBuilderMetrics, name: str, **labels: str) -> float:
    return metrics.registry.get_sample_value(name, labels) or 0.0


def test_no_window_before_the_previous_bars_position(
    gbpjpy_sample: Bars, redis_client: redis.Redis, names: Names
) -> None:
    builder, metrics, _stop = make_builder(redis_client, names, wait=0.3)
    builder.warm_up(sample_bars(gbpjpy_sample, START - HISTORY, START))
    first, second = sample_bars(gbpjpy_sample, START, START + 2)
    [window0] = builder.on_bar(first)
    assert window0.step == 0 and not np.asarray(window0.window)[:, N_MARKET:].any()  # flat at step 0

    def only_window0_published() -> bool:
        # The first window, and its copies re-sent at each timeout (the same but for published_at).
        published = stream_messages(redis_client, names.windows_stream)
        same = window0.model_dump(exclude={"published_at"})
        return all(m.model_dump(exclude={"published_at"}) == same for m in published)

    thread, out = in_background(lambda: builder.on_bar(second))
    time.sleep(0.5)
    assert thread.is_alive() and only_window0_published()
    # An answer to an older bar, and one of another account, are not the answer.
    state = PositionState(pip=0.01)
    stale = window0.model_copy(update={"bar_ts": window0.bar_ts - 60})
    answer(redis_client, names, stale, state, "both")
    other = PositionMessage(
        account="someone-else", instrument="GBPJPY", as_of_bar_ts=window0.bar_ts, session_id="x", state={}
    )
    redis_client.xadd(names.positions_stream, {"data": other.model_dump_json()})
    time.sleep(0.4)
    assert thread.is_alive() and only_window0_published()
    assert value(metrics, "smz_feature_builder_windows_resent_total", instrument="GBPJPY") >= 2

    # The gateway bought at step 0: the next window shows the long position marked at its close.
    state.mark(window0.close, 0)
    state.apply(Action.BUY, window0.close, 0, window0.bar_ts, False)
    answer(redis_client, names, window0, state, "stream")
    thread.join(3)
    assert not thread.is_alive()
    [window1] = out[0]  # type: ignore[misc]
    expected = state.marked(second.close, 1).features()
    assert np.array_equal(
        np.asarray(window1.window, dtype=np.float32)[:, N_MARKET:], np.tile(expected, (32, 1))
    )
    assert window1.window[-1][N_MARKET] == 1.0
    assert stream_messages(redis_client, names.windows_stream)[-1] == window1
    # Waited about 0.9 s with a 0.3 s limit: errors were logged and counted, the wait went on.
    assert value(metrics, "smz_feature_builder_position_timeouts_total") >= 2
    assert value(metrics, "smz_feature_builder_position_wait_seconds_count") == 1
    assert value(metrics, "smz_feature_builder_position_wait_seconds_sum") > 0.8


def test_a_position_already_on_the_key_needs_no_wait(
    gbpjpy_sample: Bars, redis_client: redis.Redis, names: Names
) -> None:
    builder, metrics, _stop = make_builder(redis_client, names)
    builder.warm_up(sample_bars(gbpjpy_sample, START - HISTORY, START))
    first, second = sample_bars(gbpjpy_sample, START, START + 2)
    [window0] = builder.on_bar(first)
    state = PositionState(pip=0.01)
    state.mark(window0.close, 0)
    state.apply(Action.SELL, window0.close, 0, window0.bar_ts, False)
    answer(redis_client, names, window0, state, "key")  # the key only, no stream entry
    started = time.monotonic()
    [window1] = builder.on_bar(second)
    assert time.monotonic() - started < 0.5
    assert window1.window[-1][N_MARKET] == -1.0
    assert value(metrics, "smz_feature_builder_position_timeouts_total") == 0


def test_stop_ends_the_wait_and_finish_gives_up(
    gbpjpy_sample: Bars, redis_client: redis.Redis, names: Names
) -> None:
    builder, _metrics, stop = make_builder(redis_client, names)
    builder.warm_up(sample_bars(gbpjpy_sample, START - HISTORY, START))
    first, second = sample_bars(gbpjpy_sample, START, START + 2)
    builder.on_bar(first)
    started = time.monotonic()
    assert builder.finish(give_up_after=0.3) is False  # nobody answers the last window
    assert 0.25 < time.monotonic() - started < 2.0
    thread, out = in_background(lambda: builder.on_bar(second))
    time.sleep(0.3)
    stop.set()
    thread.join(3)
    assert not thread.is_alive() and isinstance(out[0], Stopped)
    assert len(stream_messages(redis_client, names.windows_stream)) == 1
    with pytest.raises(Stopped):
        builder.wait_for_position("GBPJPY", builder.states["GBPJPY"].last_window)  # type: ignore[arg-type]


def test_a_redis_outage_is_waited_out_not_spun_on() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        dead = f"redis://127.0.0.1:{s.getsockname()[1]}/0"  # nothing listens there once closed
    stop = threading.Event()
    client = redis.Redis.from_url(dead, decode_responses=True, socket_connect_timeout=0.2)
    reader = RedisPositionReader(client, "nowhere", "paper", stop)
    started = time.monotonic()
    assert reader.read("0-0", 0.2) == ("0-0", [])
    assert reader.current("GBPJPY") is None
    assert 0.2 <= time.monotonic() - started < 2.0
    threading.Timer(0.3, stop.set).start()
    publisher = RedisWindowPublisher(client, "nowhere", stop=stop, retry_seconds=0.05)
    message = WindowMessage(
        kind="session_break", instrument="GBPJPY", bar_ts=1_699_999_980, close=1.0, session_id="0", step=-1
    )
    with pytest.raises(redis.ConnectionError):
        publisher.publish(message)  # retried until stopped
    assert time.monotonic() - started < 3.0
