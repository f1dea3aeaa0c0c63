"""The inference service's HTTP API, and the service object that owns its threads.

``InferenceService`` = model store (reload thread) + batcher (search thread) + stream worker (thread,
when ``stream_enabled``). ``create_app(settings)`` builds one and starts/stops it with the app's
lifespan, so ``uvicorn.run(create_app(settings))`` runs everything and SIGINT/SIGTERM stop it all.
"""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from typing import Any

from fastapi import Depends, FastAPI, HTTPException, Response, status
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from services.api_errors import install_error_handlers, reject_unknown_query
from services.http_guard import ConcurrencyLimit, RequestGuard
from services.inference.batcher import Batcher, OverloadedError
from services.inference.metrics import InferenceMetrics
from services.inference.model_store import ModelStore, NoModelError
from services.inference.settings import BACKEND, InferenceSettings
from services.inference.stream_worker import StreamWorker
from shared.wire import Decision, DecisionRequest

log = logging.getLogger(__name__)


class InferenceService:
    """Everything but HTTP: ``start()`` / ``stop()`` are idempotent."""

    def __init__(
        self,
        settings: InferenceSettings,
        metrics: InferenceMetrics | None = None,
        *,
        worker: StreamWorker | None = None,
    ) -> None:
        self.settings = settings
        self.metrics = metrics or InferenceMetrics()
        self.store = ModelStore(settings, self.metrics)
        self.batcher = Batcher(
            self.store,
            settings.search_config(),
            batch_wait_ms=settings.batch_wait_ms,
            max_batch=settings.max_batch,
            threads=settings.threads,
            workers=settings.search_workers,
            metrics=self.metrics,
            max_pending=settings.max_pending,
        )
        self.metrics.instruments.update(settings.metric_instruments)
        self.worker = worker
        if self.worker is None and settings.stream_enabled:
            self.worker = StreamWorker(settings, self.store, self.batcher, self.metrics)
        self.started = False

    def start(self) -> None:
        if self.started:
            return
        self.started = True
        self.batcher.start()
        self.store.start()
        if self.worker is not None:
            self.worker.start()

    def stop(self) -> None:
        """The worker finishes its current entry first, then the search thread, then the reload thread."""
        if not self.started:
            return
        self.started = False
        if self.worker is not None:
            self.worker.stop()
            self.worker.close()
        self.batcher.stop()
        self.store.stop()


def create_app(settings: InferenceSettings, service: InferenceService | None = None) -> FastAPI:
    """The app; its lifespan starts ``service`` (built from ``settings`` if not given) and stops it."""
    service = service or InferenceService(settings)
    metrics = service.metrics

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        service.start()
        try:
            yield
        finally:
            service.stop()

    app = FastAPI(
        title="micro-muzero inference",
        description="Decisions of the served checkpoint: the serving search (docs/CONTRACT.md section 7) "
        "over a window, batched across requests. See docs/SERVING.md.",
        lifespan=lifespan,
        dependencies=[Depends(reject_unknown_query)],
        **({} if settings.docs else {"docs_url": None, "redoc_url": None, "openapi_url": None}),
    )
    app.state.service = service
    install_error_handlers(app)
    _add_guards(app, settings, metrics)
    _add_decision_route(app, service)
    _add_status_routes(app, settings, service)
    return app


def _unavailable(detail: str) -> HTTPException:
    return HTTPException(status.HTTP_503_SERVICE_UNAVAILABLE, detail, headers={"Retry-After": "1"})


def _add_guards(app: FastAPI, settings: InferenceSettings, metrics: InferenceMetrics) -> None:
    tokens = None if settings.token is None else (settings.token.get_secret_value().encode(),)

    def rule(method: str, path: str) -> tuple[bytes, ...] | None:
        return tokens if path == "/v1/decisions" else None

    # Shedding, then the token (when set) and the body size: all before the body is read. (The last
    # added middleware runs first.)
    app.add_middleware(RequestGuard, rule=rule, max_body_bytes=settings.max_body_bytes)
    app.add_middleware(
        ConcurrencyLimit, path="/v1/decisions", limit=settings.max_pending, on_shed=metrics.shed.inc
    )


def _add_decision_route(app: FastAPI, service: InferenceService) -> None:
    metrics = service.metrics

    @app.post(
        "/v1/decisions",
        response_model=Decision,
        responses={
            422: {
                "description": "Malformed window or bars (the message names the row), a bad position "
                "or a foreign feature schema; 'message' says what"
            },
            401: {"description": "Missing or wrong bearer token (when SMZ_INFERENCE_TOKEN is set)"},
            413: {"description": "Body over SMZ_INFERENCE_MAX_BODY_BYTES"},
            503: {"description": "No verified model is loaded yet, or too many decisions wait (Retry-After)"},
        },
    )
    async def decide(body: DecisionRequest) -> Decision:
        """The serving search over one window, given or made of recent bars and the position held (as
        the live feature builder makes it): action, visit policy, root value, outcome probabilities."""
        started = time.perf_counter()
        if service.store.current() is None:
            raise _unavailable(f"no verified model loaded yet ({service.store.last_error or 'loading'})")
        window = body.observation()  # validated already; as float32
        try:
            decision = await service.batcher.decide(body.instrument, window, sheddable=True)
        except OverloadedError as exc:
            raise _unavailable(str(exc)) from exc
        except NoModelError as exc:
            raise _unavailable(str(exc)) from exc
        except RuntimeError as exc:  # the search thread is stopping
            raise _unavailable(str(exc)) from exc
        metrics.decision(body.instrument, decision.action, "rest")
        metrics.request_seconds.observe(time.perf_counter() - started)
        return decision if body.bars is None else decision.model_copy(update={"bar_ts": body.bar_ts})


def _add_status_routes(app: FastAPI, settings: InferenceSettings, service: InferenceService) -> None:
    @app.get("/healthz")
    async def healthz() -> dict[str, str]:
        """The process is up."""
        return {"status": "ok"}

    @app.get("/readyz")
    async def readyz(response: Response) -> dict[str, Any]:
        """200 only while a verified model is served (503 otherwise, with why)."""
        model = service.store.current()
        body: dict[str, Any] = {"ready": model is not None, "model_version": model.version if model else None}
        if model is None:
            response.status_code = status.HTTP_503_SERVICE_UNAVAILABLE
            body["reason"] = service.store.last_error or "loading"
        elif service.store.last_error:
            body["last_refused"] = service.store.last_error
        if service.worker is not None:
            s = service.worker.status
            body["stream"] = {"running": s.running, "settled": s.settled, "last_error": s.last_error}
        return body

    @app.get("/v1/model")
    async def model_info() -> dict[str, Any]:
        """The served checkpoint (version, when it was loaded, its config) and the search settings."""
        model = service.store.current()
        if model is None:
            raise _unavailable(f"no verified model loaded yet ({service.store.last_error or 'loading'})")
        return {
            **model.describe(),
            "loaded_at_iso": datetime.fromtimestamp(model.loaded_at, UTC).isoformat(),
            "source": service.store.describe_target(),
            "last_refused": service.store.last_error,
            "search": {
                **settings.search_config().model_dump(),
                "backend": BACKEND,
                "batch_wait_ms": settings.batch_wait_ms,
                "max_batch": settings.max_batch,
                "threads": settings.threads,
                "search_workers": settings.search_workers,
            },
        }

    @app.get("/metrics")
    def prometheus() -> Response:
        return Response(generate_latest(service.metrics.registry), media_type=CONTENT_TYPE_LATEST)
