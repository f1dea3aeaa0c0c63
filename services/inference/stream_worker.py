"""The stream worker: windows from Redis in, one order per window to the broker gateway out.

It reads ``windows_stream`` in consumer group ``group`` (created with MKSTREAM at id 0) as
``consumer``. Each entry's field ``data`` is a ``shared.wire.WindowMessage``:

- ``kind="window"``: searched through the batcher (so the windows of many instruments share one
  search), then ``POST {gateway_url}/v1/orders`` with an ``OrderRequest`` whose idempotency key is
  ``idempotency_key(account, instrument, bar_ts)`` and whose ``reward`` / ``pips_per_reward`` are
  those the deciding model was trained with (its manifest's), the reward the gateway computes;
- ``kind="session_break"``: an ``OrderRequest`` with ``kind="session_break"``, ``action=3`` (CLOSE),
  no search.

Ack rules (XACK only once the entry is settled):

- gateway 2xx (it answers 200 for refused actions too): ack;
- gateway 409 (out of order, or the key used for another bar) or 422 (the order is malformed): logged,
  counted, acked, so one bad entry cannot block the stream forever;
- anything else (connection error, timeout, 401, 5xx, other 4xx): not acked, retried with backoff
  (0.1 s doubling to ``retry_max_seconds``) until it succeeds or the worker stops;
- an entry that does not parse or validate: logged, counted, copied to ``dead_letter_stream``, acked.

Entries are handled one by one in stream order, so the orders of one instrument reach the gateway in
order. At start (and after a Redis outage) the worker first re-reads its own pending entries from id
0 (a restart with the same consumer name), then claims entries idle for ``claim_idle_ms`` from
other consumers (XAUTOCLAIM; again every ``claim_idle_ms``). A re-processed entry produces the same
idempotency key, so the gateway replays its first result and never places a second order.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass
from typing import Any

import httpx
import redis
from pydantic import ValidationError

from services.inference.batcher import Batcher
from services.inference.metrics import InferenceMetrics
from services.inference.model_store import ModelStore, NoModelError
from services.inference.settings import InferenceSettings
from shared.reward import Action
from shared.schema import FEATURES
from shared.wire import Decision, OrderRequest, OrderResult, WindowMessage, idempotency_key

log = logging.getLogger(__name__)

DEAD_LETTER_MAXLEN = 10_000
FIRST_BACKOFF_SECONDS = 0.1
READ_BLOCK_MS = 1000
POSITION_SIDE = FEATURES.index("position_side")  # column of the window: 0 flat, +-1 long/short
Entry = tuple[str, dict[str, str] | None]


class WorkerStoppedError(Exception):
    """The worker was asked to stop while waiting; the current entry stays pending."""


@dataclass
class _Work:
    entry_id: str
    message: WindowMessage
    order: OrderRequest  # action and model_version are filled in after the search
    window: Any = None  # (32, 15) float32 for kind "window"
    future: Any = None


@dataclass
class WorkerStatus:
    running: bool = False
    settled: int = 0  # entries acked
    orders: int = 0  # orders the gateway accepted (2xx)
    last_error: str = ""


def connect(url: str) -> redis.Redis:
    # The socket timeout must exceed the blocking read (READ_BLOCK_MS); a dead Redis is retried.
    return redis.Redis.from_url(
        url, decode_responses=True, socket_timeout=10, socket_connect_timeout=5, health_check_interval=30
    )


class StreamWorker:
    def __init__(
        self,
        settings: InferenceSettings,
        store: ModelStore,
        batcher: Batcher,
        metrics: InferenceMetrics | None = None,
        *,
        client: redis.Redis | None = None,
        http: httpx.Client | None = None,
    ) -> None:
        self.settings = settings
        self.store = store
        self.batcher = batcher
        self.metrics = metrics or store.metrics
        self.client = client or connect(settings.shared.redis_url)
        self.http = http or httpx.Client(
            timeout=settings.gateway_timeout_seconds,
            headers={"Authorization": f"Bearer {settings.shared.gateway_token.get_secret_value()}"},
        )
        self.orders_url = settings.shared.gateway_url.rstrip("/") + "/v1/orders"
        self.stream = settings.shared.windows_stream
        self.account = settings.shared.account
        self.group = settings.group
        self.consumer = settings.consumer
        self.status = WorkerStatus()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._redis_backoff = FIRST_BACKOFF_SECONDS

    # ------------------------------------------------------------------ lifecycle
    def start(self) -> None:
        if self._thread is not None:
            return
        self._stop.clear()
        self._thread = threading.Thread(target=self.run, name="inference-stream", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 15.0) -> None:
        """Finish the entry in progress (unless it is waiting out a gateway outage), then end."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)
            if self._thread.is_alive():
                log.error("the stream worker did not stop within %.0f s", timeout)
            self._thread = None

    def close(self) -> None:
        self.http.close()
        self.client.close()

    def run(self) -> None:
        """Until stopped: set up, drain own and others' pending entries, then read new ones."""
        self.status.running = True
        log.info(
            "stream worker: %s group %s as %s -> %s (account %s)",
            self.stream,
            self.group,
            self.consumer,
            self.orders_url,
            self.account,
        )
        try:
            while not self._stop.is_set():
                try:
                    self._session()
                    return
                except WorkerStoppedError:
                    return
                except Exception as exc:  # Redis errors; anything else is a bug, logged with its trace
                    backoff = self._redis_backoff
                    self.status.last_error = f"{type(exc).__name__}: {exc}"
                    if isinstance(exc, redis.RedisError):
                        log.error("stream worker: Redis failed (%s); retrying in %.1f s", exc, backoff)
                    else:
                        log.exception("stream worker failed; restarting it in %.1f s", backoff)
                    if self._stop.wait(backoff):
                        return
                    self._redis_backoff = min(backoff * 2, self.settings.retry_max_seconds)
        finally:
            self.status.running = False
            log.info("stream worker stopped after %d entries", self.status.settled)

    def _session(self) -> None:
        self._ensure_group()
        self._redis_backoff = FIRST_BACKOFF_SECONDS  # Redis answers again
        self._wait_for_model()
        self._drain_own_pending()
        self._reclaim()
        claim_every = self.settings.claim_idle_ms / 1000.0
        last_claim = time.monotonic()
        block_ms = max(1, min(READ_BLOCK_MS, self.settings.claim_idle_ms))
        while not self._stop.is_set():
            if time.monotonic() - last_claim >= claim_every:
                self._reclaim()
                last_claim = time.monotonic()
            reply = self.client.xreadgroup(
                self.group, self.consumer, {self.stream: ">"}, count=self.settings.max_batch, block=block_ms
            )
            self.status.last_error = ""
            entries = _entries(reply)
            if entries:
                self.process(entries)

    # ------------------------------------------------------------------ reading
    def _ensure_group(self) -> None:
        try:
            self.client.xgroup_create(self.stream, self.group, id="0", mkstream=True)
            log.info("created consumer group %s on %s", self.group, self.stream)
        except redis.ResponseError as exc:
            if "BUSYGROUP" not in str(exc):
                raise

    def _wait_for_model(self) -> None:
        if self.store.current() is None:
            log.info("stream worker: waiting for a verified model before reading %s", self.stream)
        while not self.store.wait_ready(0.5):
            if self._stop.is_set():
                raise WorkerStoppedError

    def _drain_own_pending(self) -> None:
        """Entries delivered to this consumer name and never acked (a restart): from id 0, in order."""
        cursor = "0"
        while not self._stop.is_set():
            reply = self.client.xreadgroup(
                self.group, self.consumer, {self.stream: cursor}, count=self.settings.max_batch
            )
            entries = _entries(reply)
            if not entries:
                return
            log.info("re-reading %d pending entries of %s", len(entries), self.consumer)
            self.metrics.pending_reclaimed.inc(len(entries))
            cursor = entries[-1][0]
            self.process(entries)

    def _reclaim(self) -> None:
        """Claim entries other consumers read and did not ack within ``claim_idle_ms`` (crashed)."""
        start = "0-0"
        while not self._stop.is_set():
            reply = self.client.xautoclaim(
                self.stream,
                self.group,
                self.consumer,
                min_idle_time=self.settings.claim_idle_ms,
                start_id=start,
                count=self.settings.max_batch,
            )
            start, claimed = reply[0], reply[1]
            if claimed:
                log.warning("claimed %d idle pending entries of other consumers", len(claimed))
                self.metrics.pending_reclaimed.inc(len(claimed))
                self.process(claimed)
            if start in ("0-0", b"0-0"):
                return

    # ------------------------------------------------------------------ processing
    def process(self, entries: list[Entry]) -> None:
        """Settle entries in order: the windows are searched together first, then sent one by one."""
        work: list[_Work] = []
        for entry_id, fields in entries:
            item = self._parse(entry_id, fields)
            if item is not None:
                work.append(item)
        for item in work:
            if item.window is not None:
                item.future = self.batcher.submit(item.message.instrument, item.window)
        for item in work:
            if self._stop.is_set():
                return  # the rest stays pending: re-read from id 0 at the next start
            try:
                self._settle(item)
            except WorkerStoppedError:
                return

    def _parse(self, entry_id: str, fields: dict[str, str] | None) -> _Work | None:
        if not fields:
            log.warning(
                "%s %s was deleted from the stream before it was acked; acking it", self.stream, entry_id
            )
            self._ack(entry_id)
            return None
        raw = fields.get("data")
        try:
            if raw is None:
                raise ValueError(f"no field 'data' (fields: {sorted(fields)})")
            message = WindowMessage.model_validate_json(raw)
            window = message.array() if message.kind == "window" else None
            order = OrderRequest(
                idempotency_key=idempotency_key(self.account, message.instrument, message.bar_ts),
                account=self.account,
                instrument=message.instrument,
                bar_ts=message.bar_ts,
                close=message.close,
                action=int(Action.CLOSE) if message.kind == "session_break" else int(Action.HOLD),
                kind="session_break" if message.kind == "session_break" else "decision",
                session_id=message.session_id,
                step=message.step,
                last_bar=message.last_bar,
                published_at=message.published_at,
            )
        except (ValidationError, ValueError) as exc:
            self.metrics.malformed.inc()
            reason = _one_line(exc)
            log.error("malformed entry %s %s: %s; dead-lettered and acked", self.stream, entry_id, reason)
            self._dead_letter(entry_id, raw or "", f"malformed: {reason}")
            self._ack(entry_id)
            return None
        return _Work(entry_id, message, order, window)

    def _settle(self, item: _Work) -> None:
        message = item.message
        if message.published_at > 0:
            self.metrics.stream_lag.set(time.time() - message.published_at)
        if item.window is not None:
            try:
                decision = self._decision(item)
            except EntryFailedError as exc:
                self._give_up(item.entry_id, message.model_dump_json(), str(exc))
                return
            flat = bool(item.window[-1, POSITION_SIDE] == 0)
            self.metrics.decision(message.instrument, decision.action, "stream", flat=flat)
            # The gateway computes the reward the deciding model was trained with.
            order = item.order.model_copy(
                update={
                    "action": decision.action,
                    "model_version": decision.model_version,
                    "reward": decision.reward,
                    "pips_per_reward": decision.pips_per_reward,
                }
            )
        else:
            current = self.store.current()
            update: dict[str, Any] = {"model_version": current.version if current else ""}
            if current is not None:
                update |= {"reward": current.reward, "pips_per_reward": current.pips_per_reward}
            order = item.order.model_copy(update=update)
        self._send(item.entry_id, order)
        self._ack(item.entry_id)

    def _decision(self, item: _Work) -> Decision:
        backoff = FIRST_BACKOFF_SECONDS
        failures = 0
        while True:
            try:
                return self._wait(item.future)
            except WorkerStoppedError:
                raise
            except NoModelError:
                self._wait_for_model()
                backoff = FIRST_BACKOFF_SECONDS
            except Exception as exc:  # an unexpected search failure: retried, then dead-lettered
                self.status.last_error = f"search: {type(exc).__name__}: {exc}"
                failures += 1
                if failures >= self.settings.max_attempts:
                    raise EntryFailedError(f"search failed {failures} times: {exc}") from exc
                log.error("search of %s failed (%s); retrying in %.1f s", item.entry_id, exc, backoff)
                if self._stop.wait(backoff):
                    raise WorkerStoppedError from exc
                backoff = min(backoff * 2, self.settings.retry_max_seconds)
            item.future = self.batcher.submit(item.message.instrument, item.window)

    def _wait(self, future: Any) -> Decision:
        while True:
            try:
                return future.result(timeout=0.5)
            except TimeoutError:
                if self._stop.is_set():
                    raise WorkerStoppedError from None

    def _send(self, entry_id: str, order: OrderRequest) -> None:
        """POST until the gateway settles the order (2xx, 409, 422); WorkerStoppedError if asked to stop.

        A gateway that cannot be reached, is overloaded (503) or refuses the token is waited out: the
        fault is the deployment's, not the entry's. A server error (500 and the other 5xx) is this
        entry's: after ``max_attempts`` it is dead-lettered and acked, so the entries behind it go on."""
        backoff = FIRST_BACKOFF_SECONDS
        body = order.model_dump(mode="json")
        failures = 0
        while True:
            try:
                response = self.http.post(self.orders_url, json=body)
            except httpx.HTTPError as exc:
                problem = f"{type(exc).__name__}: {exc}"
            else:
                if response.is_success:
                    self._accepted(order, response)
                    return
                if response.status_code in (409, 422):
                    status = "conflict" if response.status_code == 409 else "invalid"
                    self.metrics.orders.labels(status).inc()
                    detail = _detail(response)
                    log.warning(
                        "gateway refused order %s with %d (%s); acked, not retried",
                        order.idempotency_key,
                        response.status_code,
                        detail,
                    )
                    if status == "invalid":
                        self._dead_letter(entry_id, order.model_dump_json(), f"gateway 422: {detail}")
                    return
                problem = f"HTTP {response.status_code}: {_detail(response)}"
                if response.status_code >= 500 and response.status_code != 503:
                    failures += 1
                    if failures >= self.settings.max_attempts:
                        self._give_up(entry_id, order.model_dump_json(), f"gateway {problem}")
                        return
            self.metrics.gateway_errors.inc()
            self.status.last_error = f"gateway: {problem}"
            log.error(
                "order %s not delivered (%s); not acked, retrying in %.1f s",
                order.idempotency_key,
                problem,
                backoff,
            )
            if self._stop.wait(backoff):
                raise WorkerStoppedError
            backoff = min(backoff * 2, self.settings.retry_max_seconds)

    def _accepted(self, order: OrderRequest, response: httpx.Response) -> None:
        self.status.orders += 1
        try:
            result = OrderResult.model_validate_json(response.content)
        except ValidationError as exc:  # accepted all the same: the gateway holds the order
            log.warning("gateway answered order %s with an unexpected body: %s", order.idempotency_key, exc)
            status = "unknown"
        else:
            status = "duplicate" if result.duplicate else result.status
            if result.status == "refused":
                log.info("gateway refused %s: %s", order.idempotency_key, result.reason)
        self.metrics.orders.labels(status).inc()

    def _give_up(self, entry_id: str, raw: str, reason: str) -> None:
        """An entry that failed ``max_attempts`` times: dead-lettered (alert StreamEntriesDeadLettered)
        and acked. No order went out for it, so the feature builder's wait for the bar's position
        re-sends the window, or stops the instrument where the fault persists."""
        self.metrics.dead_lettered.inc()
        log.error(
            "entry %s %s failed %d times (%s); dead-lettered and acked",
            self.stream,
            entry_id,
            self.settings.max_attempts,
            reason,
        )
        self._dead_letter(entry_id, raw, f"gave up after {self.settings.max_attempts} attempts: {reason}")
        self._ack(entry_id)

    def _ack(self, entry_id: str) -> None:
        self.client.xack(self.stream, self.group, entry_id)
        self.status.settled += 1

    def _dead_letter(self, entry_id: str, raw: str, reason: str) -> None:
        if not self.settings.dead_letter_stream:
            return
        self.client.xadd(
            self.settings.dead_letter_stream,
            {"data": raw, "error": reason[:2000], "stream": self.stream, "entry_id": entry_id},
            maxlen=DEAD_LETTER_MAXLEN,
            approximate=True,
        )


class EntryFailedError(Exception):
    """One entry failed as often as allowed."""


def _entries(reply: Any) -> list[Entry]:
    """The entries of an XREADGROUP reply (RESP2: ``[[stream, entries]]``; ``connect`` uses RESP2)."""
    if not reply:
        return []
    streams: Any = reply.items() if isinstance(reply, dict) else reply
    return [(entry_id, fields) for _name, entries in streams for entry_id, fields in entries]


def _detail(response: httpx.Response) -> str:
    try:
        body = response.json()
    except ValueError:
        return response.text[:300]
    if isinstance(body, dict) and "detail" in body:
        return str(body["detail"])[:300]
    return str(body)[:300]


def _one_line(exc: Exception) -> str:
    if isinstance(exc, ValidationError):
        return "; ".join(
            f"{'.'.join(str(p) for p in e['loc']) or 'message'}: {e['msg']}" for e in exc.errors()
        )
    return str(exc)
