"""Broker gateway settings: SMZ_GATEWAY_* variables, the shared block (SMZ_REDIS_URL, SMZ_GATEWAY_TOKEN,
SMZ_POSITIONS_STREAM, SMZ_SPREAD_PIPS; services/settings.py) and the ``[gateway]`` table of a config file."""

from __future__ import annotations

from datetime import time
from pathlib import Path
from typing import Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import SettingsConfigDict

from services.oanda.http import PRACTICE_URL
from services.settings import GATEWAY_PORT, LOCALHOST, LiveServiceSettings

# The paper broker's demo admin token (services.settings.DEFAULT_TOKEN is the order path's): it only
# guards paper trading on 127.0.0.1; the OANDA broker refuses to start with it, or with any weak token.
DEFAULT_ADMIN_TOKEN = "paper-demo-admin-token"
MIN_TOKEN_LENGTH = 32  # `openssl rand -hex 24` makes 48 characters
# Words of the placeholders in .env.example, the k8s dev overlay and the secret template.
PLACEHOLDER_WORDS = ("change-me", "changeme", "replace-me", "not-a-secret", "paper-demo", "example", "dev-")


def weak_token_reason(token: str) -> str | None:
    """Why ``token`` may not guard real money, or None if it may."""
    if len(token) < MIN_TOKEN_LENGTH:
        return f"it has {len(token)} characters (at least {MIN_TOKEN_LENGTH}: `openssl rand -hex 24`)"
    lowered = token.lower()
    word = next((w for w in PLACEHOLDER_WORDS if w in lowered), None)
    if word is not None:
        return f"it is a placeholder (contains {word!r})"
    if len(set(token)) < 8:
        return "it repeats too few characters"
    return None


class GatewaySettings(LiveServiceSettings):
    model_config = SettingsConfigDict(env_prefix="SMZ_GATEWAY_", frozen=True)
    service = "broker gateway"
    previous_shared_fields = ("redis_url", "positions_stream", "spread_pips")  # token: SMZ_GATEWAY_TOKEN

    # HTTP API. The bearer token of the /v1 endpoints (orders, reads) is shared.gateway_token.
    host: str = LOCALHOST  # 0.0.0.0 in containers
    port: int = Field(GATEWAY_PORT, ge=1, le=65535)
    # Bearer token of the kill switch (POST /v1/halt, /v1/resume): operators', not the order path's.
    # Unset: the paper demo admin token with the paper broker; required with any other broker.
    admin_token: SecretStr | None = None
    max_body_bytes: int = Field(16_384, ge=1024)  # larger request bodies get 413 before parsing
    docs: bool = True  # /docs and /openapi.json (off in the prod overlay)
    log_level: Literal["debug", "info", "warning", "error"] = "info"
    # The ledger: orders, fills, trades, positions and the kill switch survive a restart here.
    ledger_db: Path = Path("data/ledger.duckdb")
    # Redis (shared.redis_url, shared.positions_stream): where the feature builder waits for the position
    # after each bar's order.
    positions_maxlen: int = Field(10_000, ge=1)  # approximate trim of the positions stream
    redis_timeout_seconds: float = Field(2.0, gt=0)  # a dead Redis must not stall an order
    # An order whose close is further than this fraction from the last close (within the hour) is
    # refused with 422: a price no market moves in a minute is a bug or an attack. 0 turns it off.
    price_band: float = Field(0.1, ge=0)
    # Risk (0 turns a limit off; unset: off for paper, on for any other broker).
    # Per account: realised P&L of the trading day plus the open positions' unrealised P&L.
    max_daily_loss_pips: float | None = Field(None, ge=0)
    stale_bar_seconds: float | None = Field(None, ge=0)  # refuse entries on bars closed longer ago
    # The trading day's boundary (FX convention: 17:00 New York), as HH:MM in an IANA zone.
    day_boundary: str = "17:00"
    day_boundary_zone: str = "America/New_York"
    start_halted: bool = False  # start with the kill switch on (it also persists in the ledger)
    # Broker.
    broker: Literal["paper", "oanda"] = "paper"
    oanda_url: str = PRACTICE_URL  # practice; https://api-fxtrade.oanda.com is live
    oanda_account_id: str = ""
    oanda_token: SecretStr | None = None
    oanda_units: int = Field(1, ge=1)  # units per position (CONTRACT section 1: one unit)
    oanda_timeout_seconds: float = Field(10.0, gt=0)
    # Positions compared with the broker's this often (and after every unknown outcome); 0: only at
    # start and after unknowns. The paper broker keeps no book: never.
    reconcile_seconds: float = Field(60.0, ge=0)

    @field_validator("max_daily_loss_pips", "stale_bar_seconds", "admin_token", mode="before")
    @classmethod
    def _empty_is_unset(cls, value: object) -> object:
        # An empty variable (compose's ${VAR:-}) means: not set, take the default.
        return None if value == "" else value

    @model_validator(mode="after")
    def _consistent(self) -> GatewaySettings:
        token = self.shared.gateway_token
        if not token.get_secret_value():
            raise ValueError("SMZ_GATEWAY_TOKEN must not be empty")
        try:
            ZoneInfo(self.day_boundary_zone)
            hour, minute = (int(part) for part in self.day_boundary.split(":"))
            time(hour, minute)
        except (ValueError, KeyError, ZoneInfoNotFoundError) as exc:
            raise ValueError(
                f"day boundary {self.day_boundary!r} in {self.day_boundary_zone!r} is not HH:MM in an "
                f"IANA zone: {exc}"
            ) from None
        if self.broker == "oanda":
            missing = [
                name
                for name, value in (
                    ("SMZ_GATEWAY_OANDA_ACCOUNT_ID", self.oanda_account_id),
                    ("SMZ_GATEWAY_OANDA_TOKEN", self.oanda_token and self.oanda_token.get_secret_value()),
                )
                if not value
            ]
            if missing:
                raise ValueError(f"broker=oanda needs {' and '.join(missing)}")
        if self.broker != "paper":
            if self.admin_token is None:
                raise ValueError(f"broker={self.broker} needs SMZ_GATEWAY_ADMIN_TOKEN (the kill switch's)")
            for name, secret in (
                ("SMZ_GATEWAY_TOKEN", token),
                ("SMZ_GATEWAY_ADMIN_TOKEN", self.admin_token),
            ):
                weak = weak_token_reason(secret.get_secret_value())
                if weak is not None:
                    raise ValueError(f"broker={self.broker} refuses {name}: {weak}")
            if self.admin_token.get_secret_value() == token.get_secret_value():
                raise ValueError("SMZ_GATEWAY_ADMIN_TOKEN must differ from SMZ_GATEWAY_TOKEN")
        return self

    @property
    def admin_secret(self) -> str:
        return DEFAULT_ADMIN_TOKEN if self.admin_token is None else self.admin_token.get_secret_value()

    def risk_limits(self) -> tuple[float, float]:
        """(max daily loss in pips, stale bar seconds), 0 meaning off: unset limits are off for the
        paper broker and on (200 pips, 120 s) for a broker that moves money."""
        live = self.broker != "paper"
        loss = self.max_daily_loss_pips if self.max_daily_loss_pips is not None else (200.0 if live else 0.0)
        stale = self.stale_bar_seconds if self.stale_bar_seconds is not None else (120.0 if live else 0.0)
        return loss, stale
