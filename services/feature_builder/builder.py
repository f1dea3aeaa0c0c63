"""Closed bars in, windows out: the feature builder's logic, free of Redis (adapters are injected).

Per instrument (``InstrumentState``): the bar-by-bar market features and the last 32 rows of them
(``shared.live_features.MarketWindow``), the session clock and the last published window. For each live
closed bar (``FeatureBuilder.on_bar``):

1. validate it (``validation.validate_bar``); a rejected bar is counted, logged and changes nothing;
2. update the features and the ring, and ask the clock where the bar stands;
3. if the bar's gap broke a running session, publish a ``session_break`` message for it;
4. if the bar is tradeable: take the position it starts from (flat at step 0; otherwise the gateway's
   state as of the previous window's bar, waiting for it if needed), mark it at the bar's close
   (``PositionState.marked``), and publish the window: 32 rows of market features, the 6 position
   columns on every row (``MarketWindow.observation``, which a decision from bars uses too).

The cursor of the positions stream is taken before a window is published, so the wait for that
window's position (at the next bar) reads every message the gateway wrote after it.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Protocol

from services.feature_builder.metrics import FeatureBuilderMetrics
from services.feature_builder.validation import BarLimits, LiveBar, validate_bar
from shared.instruments import DEFAULT_SPREAD_PIPS, pip_size
from shared.live_features import MarketWindow
from shared.position import PositionState
from shared.session_clock import BarSlot, SessionClock
from shared.wire import PositionMessage, WindowMessage, check_window

log = logging.getLogger(__name__)


class WindowPublisher(Protocol):
    def publish(self, message: WindowMessage) -> object: ...


class PositionReader(Protocol):
    """The broker gateway's position of one account (``redis_io.RedisPositionReader``)."""

    account: str

    def cursor(self) -> str:
        """Where the positions stream ends now."""
        ...

    def current(self, instrument: str) -> PositionMessage | None:
        """The latest position of the instrument (the position key), if any."""
        ...

    def read(self, cursor: str, block_seconds: float) -> tuple[str, list[PositionMessage]]:
        """Position messages after ``cursor`` (blocking up to ``block_seconds``), and the new cursor."""
        ...


class Stopped(Exception):  # noqa: N818 - a signal, not an error
    """The stop event was set while the builder was waiting."""


def _iso(ts: int) -> str:
    return datetime.fromtimestamp(ts, tz=UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass(frozen=True)
class PublishedWindow:
    bar_ts: int
    session_id: str
    step: int
    last_bar: bool
    cursor: str  # the positions stream's last id, taken just before the window was published
    # What was published: re-sent when its position does not come (a lost entry, a Redis blip).
    message: WindowMessage | None = field(default=None, compare=False, repr=False)


@dataclass
class InstrumentState:
    instrument: str
    pip: float = field(init=False)
    market: MarketWindow = field(init=False)  # the features, and the last 32 rows of them
    clock: SessionClock = field(default_factory=SessionClock)
    last_ts: int | None = None  # the last accepted bar (history or live)
    last_close: float | None = None
    last_window: PublishedWindow | None = None
    history_bars: int = 0
    live_bars: int = 0
    windows: int = 0
    session_breaks: int = 0
    rejected: Counter[str] = field(default_factory=Counter)
    # A restarted builder resumes after the last bar the gateway processed (its position's bar): the
    # live bars up to it were decided already; they move the clock and the features, nothing is sent.
    resume_after: int | None = None
    resume_checked: bool = False
    resumed_bars: int = 0

    def __post_init__(self) -> None:
        self.pip = pip_size(self.instrument)
        self.market = MarketWindow(self.instrument)

    def push(self, bar: LiveBar) -> None:
        """A validated bar: its market features join the window's rows."""
        self.market.push(bar.ts, bar.high, bar.low, bar.close)
        self.last_ts, self.last_close = bar.ts, bar.close


class FeatureBuilder:
    def __init__(
        self,
        publisher: WindowPublisher,
        positions: PositionReader,
        *,
        spread_pips: float = DEFAULT_SPREAD_PIPS,
        position_wait_seconds: float = 30.0,
        metrics: FeatureBuilderMetrics | None = None,
        stop: threading.Event | None = None,
        log_every: int = 1000,
        wall_clock: Callable[[], float] = time.time,
        limits: BarLimits | None = None,
    ) -> None:
        self.publisher = publisher
        self.positions = positions
        self.account = positions.account
        self.spread_pips = spread_pips
        self.position_wait_seconds = position_wait_seconds
        self.metrics = metrics or FeatureBuilderMetrics()
        self.stop = stop or threading.Event()
        self.log_every = log_every
        self.wall_clock = wall_clock
        self.limits = limits or BarLimits()
        self.states: dict[str, InstrumentState] = {}

    def state(self, instrument: str) -> InstrumentState:
        if instrument not in self.states:
            self.states[instrument] = InstrumentState(instrument)
        return self.states[instrument]

    # ---------------------------------------------------------------- bars
    def warm_up(self, bars: Iterable[LiveBar]) -> int:
        """History bars: features, ring and session clock advance; nothing is published."""
        accepted = 0
        for bar in bars:
            st = self.state(bar.instrument)
            if self._rejected(st, bar, "history"):
                continue
            st.push(bar)
            st.clock.history(bar.ts)
            st.history_bars += 1
            accepted += 1
        return accepted

    def on_bar(self, bar: LiveBar) -> list[WindowMessage]:
        """One live closed bar; returns the messages published for it (raises ``Stopped``)."""
        st = self.state(bar.instrument)
        if self._rejected(st, bar, "live"):
            return []
        if not st.resume_checked:
            st.resume_checked = True
            known = self.positions.current(bar.instrument)
            if known is not None and known.as_of_bar_ts >= bar.ts:
                st.resume_after = known.as_of_bar_ts
                log.info(
                    "%s: the gateway has decided up to the bar at %s already; resuming after it",
                    bar.instrument,
                    _iso(known.as_of_bar_ts),
                )
        if st.resume_after is not None and bar.ts <= st.resume_after:
            return self._skip_decided(st, bar)
        st.push(bar)
        st.live_bars += 1
        m = self.metrics
        m.bars.labels(bar.instrument).inc()
        m.last_bar_ts.labels(bar.instrument).set(bar.ts)
        slot = st.clock.live(bar.ts)
        out = []
        if slot.broke_session:
            out.append(self._publish_break(st, bar, slot))
        if slot.tradeable:
            out.append(self._publish_window(st, bar, slot))
        if st.live_bars % self.log_every == 0:
            self._progress(st)
        return out

    def _skip_decided(self, st: InstrumentState, bar: LiveBar) -> list[WindowMessage]:
        """A live bar the gateway processed before this builder started: clock and features move on;
        the last one becomes the window whose position the next bar waits for (the gateway's current)."""
        st.push(bar)
        slot = st.clock.live(bar.ts)
        st.resumed_bars += 1
        if slot.tradeable:
            st.last_window = PublishedWindow(
                bar.ts, slot.session_id, slot.step, slot.last_bar, self.positions.cursor()
            )
        return []

    def _rejected(self, st: InstrumentState, bar: LiveBar, kind: str) -> bool:
        reason = validate_bar(
            bar,
            st.last_ts,
            last_close=st.last_close,
            now=self.wall_clock(),
            live=kind == "live",
            limits=self.limits,
        )
        if reason is None:
            return False
        st.rejected[reason] += 1
        self.metrics.rejected.labels(bar.instrument, reason).inc()
        log.warning(
            "%s: rejected %s bar at %s (ts %d): %s (o %r h %r l %r c %r; last accepted %s)",
            bar.instrument,
            kind,
            _iso(bar.ts),
            bar.ts,
            reason,
            bar.open,
            bar.high,
            bar.low,
            bar.close,
            "-" if st.last_ts is None else _iso(st.last_ts),
        )
        return True

    # ----------------------------------------------------------- messages
    def _publish_break(self, st: InstrumentState, bar: LiveBar, slot: BarSlot) -> WindowMessage:
        message = WindowMessage(
            kind="session_break",
            instrument=bar.instrument,
            bar_ts=bar.ts,
            close=bar.close,
            session_id=slot.broke_session,
            step=-1,
            window=None,
            published_at=self.wall_clock(),
        )
        self.publisher.publish(message)
        st.session_breaks += 1
        self.metrics.session_breaks.labels(bar.instrument).inc()
        self.metrics.bar_lag.labels(bar.instrument).set(message.published_at - (bar.ts + 60))
        log.warning(
            "%s: gap before the bar at %s broke session %s; published a session break",
            bar.instrument,
            _iso(bar.ts),
            slot.broke_session,
        )
        return message

    def _publish_window(self, st: InstrumentState, bar: LiveBar, slot: BarSlot) -> WindowMessage:
        window = st.market.observation(self._position_before(st, slot).marked(bar.close, slot.step))
        check_window(window)
        cursor = self.positions.cursor()  # before publishing: the answer to this window comes after it
        message = WindowMessage(
            instrument=bar.instrument,
            bar_ts=bar.ts,
            close=bar.close,
            session_id=slot.session_id,
            step=slot.step,
            last_bar=slot.last_bar,
            window=window.tolist(),  # float32 values as exact doubles: the JSON round trip is lossless
            published_at=self.wall_clock(),
        )
        self.publisher.publish(message)
        st.last_window = PublishedWindow(bar.ts, slot.session_id, slot.step, slot.last_bar, cursor, message)
        st.windows += 1
        self.metrics.windows.labels(bar.instrument).inc()
        self.metrics.bar_lag.labels(bar.instrument).set(message.published_at - (bar.ts + 60))
        return message

    # ---------------------------------------------------------- positions
    def _position_before(self, st: InstrumentState, slot: BarSlot) -> PositionState:
        """The position a tradeable bar starts from: flat at step 0, else the gateway's state after the
        previous window's order (waited for)."""
        if slot.step == 0:
            return PositionState(pip=st.pip, spread_pips=self.spread_pips)
        previous = st.last_window
        if previous is None or previous.session_id != slot.session_id or previous.step != slot.step - 1:
            raise RuntimeError(
                f"{st.instrument}: step {slot.step} of session {slot.session_id} does not follow the last "
                f"published window {previous}"
            )
        message = self.wait_for_position(st.instrument, previous)
        assert message is not None
        return PositionState.from_dict(message.state)

    def wait_for_position(
        self, instrument: str, window: PublishedWindow, give_up_after: float | None = None
    ) -> PositionMessage | None:
        """The gateway's position as of ``window``'s bar. Logs an error and counts a timeout every
        ``position_wait_seconds`` and keeps waiting, unless ``give_up_after`` seconds have passed
        (then None). Raises ``Stopped`` when the stop event is set."""
        started = time.monotonic()

        def is_answer(msg: PositionMessage | None) -> bool:
            return (
                msg is not None
                and msg.account == self.account
                and msg.instrument == instrument
                and msg.as_of_bar_ts == window.bar_ts
            )

        found = self.positions.current(instrument)
        cursor = window.cursor
        deadline = started + self.position_wait_seconds
        while not is_answer(found):
            if self.stop.is_set():
                raise Stopped
            now = time.monotonic()
            if give_up_after is not None and now - started >= give_up_after:
                return None
            if now >= deadline:
                self.metrics.position_timeouts.inc()
                log.error(
                    "%s: no position of account %s as of the bar at %s (session %s, step %d) after %.0f s; "
                    "still waiting (is the inference service or the broker gateway down?)",
                    instrument,
                    self.account,
                    _iso(window.bar_ts),
                    window.session_id,
                    window.step,
                    now - started,
                )
                deadline = now + self.position_wait_seconds
                found = self.positions.current(instrument)
                if not is_answer(found) and window.message is not None:
                    # Same bar, same idempotency key: an order already made is replayed by the
                    # gateway (which publishes the position again), a lost one is made now.
                    resent = window.message.model_copy(update={"published_at": self.wall_clock()})
                    self.publisher.publish(resent)
                    self.metrics.windows_resent.labels(instrument).inc()
                    log.warning("%s: re-sent the window of the bar at %s", instrument, _iso(window.bar_ts))
                continue
            limit = deadline if give_up_after is None else min(deadline, started + give_up_after)
            cursor, messages = self.positions.read(cursor, min(max(limit - now, 0.001), 1.0))
            found = next((msg for msg in messages if is_answer(msg)), None)
            if not messages:  # a quiet second: look at the key again, in case a stream entry was lost
                found = self.positions.current(instrument)
        self.metrics.position_wait.observe(time.monotonic() - started)
        return found

    def finish(self, give_up_after: float | None = None) -> bool:
        """At the end of a replay: wait for the position of each instrument's last window (at most
        ``give_up_after`` seconds, default ``position_wait_seconds``). True if all arrived."""
        limit = self.position_wait_seconds if give_up_after is None else give_up_after
        complete = True
        for st in self.states.values():
            if st.last_window is None:
                continue
            if self.wait_for_position(st.instrument, st.last_window, give_up_after=limit) is None:
                complete = False
                log.warning(
                    "%s: the position of the last window (bar %s) did not arrive within %.0f s",
                    st.instrument,
                    _iso(st.last_window.bar_ts),
                    limit,
                )
        return complete

    # ------------------------------------------------------------ logging
    def _progress(self, st: InstrumentState) -> None:
        last = st.last_window
        log.info(
            "%s: %d live bars, %d windows, %d session breaks, %d rejected; last bar %s%s",
            st.instrument,
            st.live_bars,
            st.windows,
            st.session_breaks,
            sum(st.rejected.values()),
            "-" if st.last_ts is None else _iso(st.last_ts),
            "" if last is None else f", last window: session {last.session_id} step {last.step}",
        )

    def summary(self) -> dict[str, dict[str, object]]:
        return {
            name: {
                "history_bars": st.history_bars,
                "live_bars": st.live_bars,
                "windows": st.windows,
                "session_breaks": st.session_breaks,
                "rejected": dict(st.rejected),
                "last_bar": None if st.last_ts is None else _iso(st.last_ts),
            }
            for name, st in self.states.items()
        }
