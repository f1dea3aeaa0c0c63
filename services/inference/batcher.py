"""Batched search: concurrent requests (REST and the stream worker, any instruments) share one search.

Requests go into a queue. A search thread takes the first, then everything that arrives within
``batch_wait_ms`` after it (and whatever is already queued), up to ``max_batch``, and runs ONE
``search(model_fns, windows, config)`` on the model served at that moment. With ``workers`` > 1 as
many search threads take batches from the same queue, each with its own model functions: under
load one searches while the other collects the requests that arrived meanwhile. Each request's future is
resolved with its own ``Decision``. ``submit`` returns a ``concurrent.futures.Future`` (for threads);
``decide`` awaits it (for asyncio).

Search thread ``i`` alone calls ``model.functions[i]`` (the numba backend reuses work buffers, it is
not thread-safe), and a model swapped in during a search is used from the next batch on.
"""

from __future__ import annotations

import asyncio
import logging
import queue
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass

import numba
import numpy as np
import torch

from services.inference.metrics import InferenceMetrics
from services.inference.model_store import ModelStore, NoModelError, ServingModel
from shared.reward import ACTIONS
from shared.search import EntryGate, SearchConfig, SearchOutput, search
from shared.wire import Decision

log = logging.getLogger(__name__)

SearchFn = Callable[..., SearchOutput]


class OverloadedError(RuntimeError):
    """More decisions are waiting than ``max_pending``: this one is shed (503 with Retry-After)."""


@dataclass(frozen=True)
class _Request:
    instrument: str
    window: np.ndarray  # (32, 15) float32, validated by shared.wire.check_window
    future: Future[Decision]


class Batcher:
    def __init__(
        self,
        store: ModelStore,
        config: SearchConfig,
        *,
        batch_wait_ms: float = 0.0,
        max_batch: int = 64,
        threads: int = 1,
        workers: int = 1,
        metrics: InferenceMetrics | None = None,
        search_fn: SearchFn = search,
        max_pending: int = 256,
    ) -> None:
        self.store = store
        self.config = config
        self.batch_wait = batch_wait_ms / 1000.0
        self.max_batch = max_batch
        self.threads = threads
        self.workers = workers
        self.metrics = metrics or store.metrics
        self.search_fn = search_fn
        self.max_pending = max_pending
        self._pending = 0  # submitted and not yet resolved (under _submit_lock)
        self._queue: queue.SimpleQueue[_Request | None] = queue.SimpleQueue()
        self._threads: list[threading.Thread] = []
        self._stopping = False
        self._submit_lock = threading.Lock()  # nothing is queued after stop() drained the queue
        self._gated: tuple[str, SearchConfig] | None = None  # (version, its gated search config)

    # ------------------------------------------------------------------ callers
    def submit(self, instrument: str, window: np.ndarray, *, sheddable: bool = False) -> Future[Decision]:
        """Queue one window; the future resolves to its Decision (or raises NoModelError). A
        ``sheddable`` request (REST) fails with OverloadedError while ``max_pending`` wait; the
        stream worker's are never shed (they are the trading path and arrive one bar at a time)."""
        future: Future[Decision] = Future()
        with self._submit_lock:
            if self._stopping or not self._threads:
                future.set_exception(RuntimeError("the search thread is not running"))
            elif sheddable and self._pending >= self.max_pending:
                self.metrics.shed.inc()
                future.set_exception(OverloadedError(f"{self._pending} decisions are waiting; try again"))
            else:
                self._pending += 1
                future.add_done_callback(self._resolved)
                self._queue.put(_Request(instrument, np.asarray(window, dtype=np.float32), future))
        return future

    def _resolved(self, _future: Future[Decision]) -> None:
        with self._submit_lock:
            self._pending -= 1

    async def decide(self, instrument: str, window: np.ndarray, *, sheddable: bool = False) -> Decision:
        return await asyncio.wrap_future(self.submit(instrument, window, sheddable=sheddable))

    # ------------------------------------------------------------------ lifecycle
    def start(self) -> None:
        if self._threads:
            return
        threads = [
            threading.Thread(target=self._run, args=(i,), name=f"inference-search-{i}", daemon=True)
            for i in range(self.workers)
        ]
        for thread in threads:
            thread.start()
        with self._submit_lock:
            self._threads, self._stopping = threads, False

    def stop(self, timeout: float = 10.0) -> None:
        """Finish the batches in progress, fail what is still queued, and end the threads."""
        with self._submit_lock:
            self._stopping = True
        if not self._threads:
            return
        for _ in self._threads:
            self._queue.put(None)  # one stop mark per search thread
        deadline = time.monotonic() + timeout
        for thread in self._threads:
            thread.join(max(0.0, deadline - time.monotonic()))
        self._threads = []
        while True:
            try:
                request = self._queue.get_nowait()
            except queue.Empty:
                break
            if request is not None and request.future.set_running_or_notify_cancel():
                request.future.set_exception(RuntimeError("the inference service stopped"))

    # ------------------------------------------------------------------ the search thread
    def _run(self, worker: int) -> None:
        # numba's thread count is per thread, and torch's OpenMP one can be: set them in this thread.
        numba.set_num_threads(min(self.threads, numba.config.NUMBA_NUM_THREADS))
        torch.set_num_threads(self.threads)
        while True:
            first = self._queue.get()
            if first is None:
                return
            batch, stop = self._collect(first)
            self._search(batch, worker)
            if stop:
                return

    def _collect(self, first: _Request) -> tuple[list[_Request], bool]:
        batch = [first]
        deadline = time.monotonic() + self.batch_wait
        while len(batch) < self.max_batch:
            remaining = deadline - time.monotonic()
            try:
                request = self._queue.get(timeout=remaining) if remaining > 0 else self._queue.get_nowait()
            except queue.Empty:
                break
            if request is None:
                return batch, True
            batch.append(request)
        return batch, False

    def _config_for(self, model: ServingModel) -> SearchConfig:
        """The search settings with the served checkpoint's entry gate (its manifest's ``serving``)."""
        cached = self._gated
        if cached is None or cached[0] != model.version:
            cached = (model.version, self.config.gated(EntryGate.from_manifest(model.manifest.serving)))
            self._gated = cached
        return cached[1]

    def _search(self, batch: list[_Request], worker: int) -> None:
        # Requests whose caller gave up (a cancelled asyncio task) are dropped here.
        live = [r for r in batch if r.future.set_running_or_notify_cancel()]
        if not live:
            return
        try:
            model = self.store.require()
        except NoModelError as exc:
            for request in live:
                request.future.set_exception(exc)
            return
        try:
            started = time.perf_counter()
            config = self._config_for(model)
            out = self.search_fn(model.functions[worker], np.stack([r.window for r in live]), config)
            seconds = time.perf_counter() - started
        except Exception as exc:
            log.exception("search of a batch of %d failed", len(live))
            for request in live:
                request.future.set_exception(exc)
            return
        self.metrics.search_seconds.observe(seconds)
        self.metrics.batch_size.observe(len(live))
        for i, request in enumerate(live):
            action = int(out.action[i])
            request.future.set_result(
                Decision(
                    instrument=request.instrument,
                    action=action,
                    action_name=ACTIONS[action],
                    visit_policy=out.visit_policy[i].tolist(),
                    root_value=float(out.root_value[i]),
                    outcome_probabilities=out.outcome_probs[i].tolist(),
                    model_version=model.version,
                    search_ms=seconds * 1000.0,
                    reward=model.reward,  # type: ignore[arg-type]
                    pips_per_reward=model.pips_per_reward,
                )
            )
