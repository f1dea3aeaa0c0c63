"""The broker gateway's HTTP API: orders in, positions and trades out, the kill switch, health and metrics."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Annotated, Any, Literal

from fastapi import Depends, FastAPI, HTTPException, Query, Request, Response, status
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from pydantic import BaseModel, Field

from services.api_errors import install_error_handlers, reject_unknown_query
from services.broker_gateway.brokers import Broker, PaperBroker
from services.broker_gateway.engine import Gateway, OrderConflictError, OrderRejectedError
from services.broker_gateway.ledger import PositionRecord
from services.broker_gateway.settings import GatewaySettings
from services.broker_gateway.trade_views import (
    MAX_PATTERN_LENGTH,
    EventKind,
    TradeEventView,
    TradeFilter,
    trade_events,
)
from services.http_guard import RequestGuard, bearer_matches
from services.oanda.execution import OandaBroker
from shared.trading.rules import side_name
from shared.wire import OrderRequest, OrderResult


class PositionView(BaseModel):
    account: str
    instrument: str
    side: int  # 1 long, -1 short, 0 flat
    side_name: Literal["long", "short", "flat"]
    entry_price: float | None
    entry_ts: int | None  # epoch seconds UTC of the entry bar
    bars_since_entry: int
    unrealized_pnl_pips: float  # at the last mark, spread included (what closing there would make)
    as_of_bar_ts: int  # the bar whose order produced this state (0: none yet)
    session_id: str
    model_version: str  # of the model that opened the position
    broker_entry_price: float | None
    # The last decision's (equity) reward waits for the next bar's mark: that decision's bar, else None.
    reward_pending_bar_ts: int | None = None


class TradeView(BaseModel):
    """One closed trade: the fields of ``shared.env.TRADE_LOG_FIELDS``, then the gateway's own."""

    instrument: str
    side: Literal["long", "short"]
    entry_ts: int
    entry_price: float
    exit_ts: int
    exit_price: float
    pnl_pips: float
    bars_held: int
    exit_reason: str
    model_version: str
    account: str
    broker_entry_price: float | None
    broker_exit_price: float | None
    broker_trade_id: str | None


class RewardView(BaseModel):
    """The reward of one decision, once known (``shared.wire.OrderResult`` says when)."""

    account: str
    instrument: str
    bar_ts: int  # the decision's bar
    reward: float
    reward_kind: Literal["equity", "amddp1"]
    settled_by: str  # idempotency key of the order that settled it (the decision's own, or the next bar's)


class HaltRequest(BaseModel):
    reason: str = Field("", max_length=500)


class HaltStatus(BaseModel):
    halted: bool
    reason: str = ""
    since: int = 0  # epoch seconds of the last change


def make_broker(settings: GatewaySettings) -> Broker:
    if settings.broker == "oanda":
        assert settings.oanda_token is not None  # checked by the settings
        return OandaBroker(
            account_id=settings.oanda_account_id,
            token=settings.oanda_token.get_secret_value(),
            base_url=settings.oanda_url,
            units=settings.oanda_units,
            timeout=settings.oanda_timeout_seconds,
        )
    return PaperBroker()


def _position_view(record: PositionRecord) -> PositionView:
    s = record.state
    return PositionView(
        account=record.account,
        instrument=record.instrument,
        side=s.side,
        side_name=side_name(s.side),  # type: ignore[arg-type]
        entry_price=s.entry_price if s.side else None,
        entry_ts=s.entry_ts if s.side else None,
        bars_since_entry=int(s.bars_since_entry) if s.side else 0,
        unrealized_pnl_pips=s.pnl if s.side else 0.0,
        as_of_bar_ts=record.last_bar_ts or 0,
        session_id=record.session_id,
        model_version=record.entry_model_version,
        broker_entry_price=record.broker_entry_price,
        reward_pending_bar_ts=s.pending_ts if s.reward_pending else None,
    )


_bearer = HTTPBearer(auto_error=False, description="SMZ_GATEWAY_TOKEN (or the admin token)")
_admin_bearer = HTTPBearer(auto_error=False, scheme_name="AdminBearer", description="SMZ_GATEWAY_ADMIN_TOKEN")


def require_token(
    request: Request, credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)]
) -> None:
    """401 unless the request carries ``Authorization: Bearer <the app's token>``."""
    if credentials is None:
        raise HTTPException(
            status.HTTP_401_UNAUTHORIZED,
            "missing bearer token: send the header 'Authorization: Bearer <SMZ_GATEWAY_TOKEN>'",
            headers={"WWW-Authenticate": "Bearer"},
        )
    # Constant-time comparison: the time taken must not tell how much of a guess was right.
    tokens = (request.app.state.token, request.app.state.admin_token)
    if not bearer_matches(f"Bearer {credentials.credentials}".encode(), tokens):
        raise HTTPException(
            status.HTTP_401_UNAUTHORIZED,
            "invalid bearer token",
            headers={"WWW-Authenticate": 'Bearer error="invalid_token"'},
        )


def require_admin_token(
    request: Request, credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_admin_bearer)]
) -> None:
    """401 unless the request carries the admin token (``SMZ_GATEWAY_ADMIN_TOKEN``)."""
    if credentials is None or not bearer_matches(
        f"Bearer {credentials.credentials}".encode(), (request.app.state.admin_token,)
    ):
        raise HTTPException(
            status.HTTP_401_UNAUTHORIZED,
            "the kill switch takes the admin token (SMZ_GATEWAY_ADMIN_TOKEN)",
            headers={"WWW-Authenticate": "Bearer"},
        )


_UNAUTHORIZED: dict[int | str, dict[str, Any]] = {401: {"description": "Missing or wrong bearer token"}}


def create_app(settings: GatewaySettings, broker: Broker | None = None) -> FastAPI:
    """The gateway app; the ledger, Redis and broker are opened at startup and closed at shutdown."""
    gateway = Gateway(settings, broker or make_broker(settings))

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        gateway.start()
        try:
            yield
        finally:
            gateway.stop()

    app = FastAPI(
        title="micro-muzero broker gateway",
        description="Executes the model's orders bar by bar (docs/CONTRACT.md section 5), keeps the "
        "ledger and publishes positions to Redis. See docs/GATEWAY.md.",
        lifespan=lifespan,
        dependencies=[Depends(reject_unknown_query)],
        **({} if settings.docs else {"docs_url": None, "redoc_url": None, "openapi_url": None}),
    )
    install_error_handlers(app)
    app.state.gateway = gateway
    _add_guards(app, settings)
    _add_order_routes(app, gateway)
    _add_ledger_routes(app, gateway)
    _add_status_routes(app, gateway)
    return app


def _add_guards(app: FastAPI, settings: GatewaySettings) -> None:
    token = settings.shared.gateway_token.get_secret_value().encode()
    admin = settings.admin_secret.encode()
    app.state.token, app.state.admin_token = token, admin

    def rule(method: str, path: str) -> tuple[bytes, ...] | None:
        """The kill switch's changes take the admin token; every other /v1 call the order token."""
        if method == "POST" and path in ("/v1/halt", "/v1/resume"):
            return (admin,)
        return (token, admin) if path.startswith("/v1/") else None

    # Token and body size are checked before the body is read (services/http_guard.py); the
    # dependencies below repeat the token check and document it in the OpenAPI schema.
    app.add_middleware(RequestGuard, rule=rule, max_body_bytes=settings.max_body_bytes)


def _add_order_routes(app: FastAPI, gateway: Gateway) -> None:
    auth = [Depends(require_token)]
    admin_auth = [Depends(require_admin_token)]

    # Sync handlers: they block on the broker, DuckDB and Redis, so FastAPI runs them in its threadpool.
    @app.post(
        "/v1/orders",
        response_model=OrderResult,
        dependencies=auth,
        responses={
            **_UNAUTHORIZED,
            409: {"description": "Out of order, or the key was used for another order"},
            422: {"description": "Malformed order, or a close outside the price band; 'message' says why"},
        },
    )
    def post_order(order: OrderRequest) -> OrderResult:
        """Process one bar's order; a repeated idempotency key replays the first result."""
        try:
            return gateway.submit(order)
        except OrderConflictError as exc:
            raise HTTPException(status.HTTP_409_CONFLICT, str(exc)) from exc
        except OrderRejectedError as exc:
            raise HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT, str(exc)) from exc

    @app.post("/v1/halt", response_model=HaltStatus, dependencies=admin_auth, responses=_UNAUTHORIZED)
    def halt(body: HaltRequest | None = None) -> HaltStatus:
        """Kill switch on: new entries are refused (closes still go through). Survives a restart."""
        return HaltStatus(**gateway.set_halted(True, body.reason if body else ""))

    @app.post("/v1/resume", response_model=HaltStatus, dependencies=admin_auth, responses=_UNAUTHORIZED)
    def resume(body: HaltRequest | None = None) -> HaltStatus:
        """Kill switch off."""
        return HaltStatus(**gateway.set_halted(False, body.reason if body else ""))

    @app.get("/v1/halt", response_model=HaltStatus, dependencies=auth, responses=_UNAUTHORIZED)
    def halt_status() -> HaltStatus:
        return HaltStatus(**gateway.halt_status())


def _add_ledger_routes(app: FastAPI, gateway: Gateway) -> None:
    auth = [Depends(require_token)]

    @app.get("/v1/positions", response_model=list[PositionView], dependencies=auth, responses=_UNAUTHORIZED)
    def positions(account: str | None = None, instrument: str | None = None) -> list[PositionView]:
        """Every (account, instrument) position the gateway keeps, flat ones included."""
        return [
            _position_view(r)
            for r in gateway.positions()
            if (account is None or r.account == account)
            and (instrument is None or r.instrument == instrument)
        ]

    @app.get("/v1/trades", response_model=list[TradeView], dependencies=auth, responses=_UNAUTHORIZED)
    def trades(which: Annotated[TradeFilter, Depends(_trade_filter)]) -> list[TradeView]:
        """The last ``limit`` closed trades that the filters select, oldest first."""
        return [TradeView(**row) for row in gateway.ledger.trades(which)]

    @app.get(
        "/v1/trade-events", response_model=list[TradeEventView], dependencies=auth, responses=_UNAUTHORIZED
    )
    def trade_event_list(
        which: Annotated[TradeFilter, Depends(_trade_filter)], kind: EventKind | None = None
    ) -> list[TradeEventView]:
        """The entries and exits (or only ``kind``) in [start, end] of the last ``limit`` closed trades
        that the filters select, in time order: Grafana's trade annotations (docs/METRICS.md)."""
        return trade_events(gateway.ledger.trades(which), kind, which.start, which.end)

    @app.get("/v1/rewards", response_model=list[RewardView], dependencies=auth, responses=_UNAUTHORIZED)
    def rewards(
        instrument: str | None = None,
        account: str | None = None,
        limit: Annotated[int, Query(ge=1, le=100_000)] = 100,
    ) -> list[RewardView]:
        """The rewards of the last ``limit`` decisions whose reward is known, oldest first."""
        return [RewardView(**row) for row in gateway.ledger.rewards(instrument, account, limit)]


_Pattern = Annotated[
    str | None,
    Query(
        max_length=MAX_PATTERN_LENGTH,
        description="RE2 regular expression the whole name must match (Prometheus' =~)",
    ),
]
_Epoch = Annotated[int | None, Query(ge=0, description="epoch seconds UTC")]


def _trade_filter(
    instrument: str | None = None,
    account: str | None = None,
    instrument_match: _Pattern = None,
    account_match: _Pattern = None,
    start: _Epoch = None,
    end: _Epoch = None,
    limit: Annotated[int, Query(ge=1, le=100_000)] = 100,
) -> TradeFilter:
    """The query parameters of the trade reads: exact names, patterns, the window the trades overlap
    (closed at or after ``start``, opened at or before ``end``) and how many (the last ``limit``)."""
    try:
        return TradeFilter(instrument, account, instrument_match, account_match, start, end, limit)
    except ValueError as exc:
        raise HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT, str(exc)) from exc


def _add_status_routes(app: FastAPI, gateway: Gateway) -> None:
    @app.get("/healthz")
    async def healthz() -> dict[str, str]:
        """The process is up."""
        return {"status": "ok"}

    @app.get("/readyz")
    def readyz(response: Response) -> dict[str, Any]:
        """Ready when the ledger and Redis answer (503 otherwise, with what failed)."""
        checks: dict[str, str] = {}
        for name, probe in (
            ("ledger", lambda: gateway.ledger.ping()),
            ("redis", gateway.publisher.redis.ping),
        ):
            try:
                probe()
                checks[name] = "ok"
            except Exception as exc:  # any failure means not ready; say which
                checks[name] = f"error: {type(exc).__name__}: {exc}"
        ready = all(v == "ok" for v in checks.values())
        if not ready:
            response.status_code = status.HTTP_503_SERVICE_UNAVAILABLE
        return {"ready": ready, **checks, "halted": gateway.risk.halted, "broker": gateway.broker.name}

    @app.get("/metrics")
    def metrics() -> Response:
        return Response(generate_latest(gateway.metrics.registry), media_type=CONTENT_TYPE_LATEST)
