"""Broker gateway settings from environment variables (prefix SMZ_GATEWAY_)."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from shared.wire import POSITIONS_STREAM

# The paper broker's demo token (the local stack uses it too). It only guards paper trading on
# 127.0.0.1; the OANDA broker refuses to start with it.
DEFAULT_TOKEN = "paper-demo-token"


class GatewaySettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="SMZ_GATEWAY_", frozen=True)

    # HTTP API.
    host: str = "127.0.0.1"  # 0.0.0.0 in containers
    port: int = Field(8002, ge=1, le=65535)
    token: SecretStr = SecretStr(DEFAULT_TOKEN)  # bearer token of every /v1 endpoint
    log_level: Literal["debug", "info", "warning", "error"] = "info"
    # The ledger: orders, fills, trades, positions and the kill switch survive a restart here.
    ledger_db: Path = Path("data/ledger.duckdb")
    # Redis: where the feature builder waits for the position after each bar's order.
    redis_url: str = "redis://127.0.0.1:6379/0"
    positions_stream: str = POSITIONS_STREAM
    positions_maxlen: int = Field(10_000, ge=1)  # approximate trim of the positions stream
    redis_timeout_seconds: float = Field(2.0, gt=0)  # a dead Redis must not stall an order
    # Trading arithmetic: must match the backtest's and the feature builder's spread.
    spread_pips: float = Field(4.0, ge=0)
    # Risk (0 turns a limit off).
    max_daily_loss_pips: float = Field(0.0, ge=0)  # per account, over trades closed in a UTC day
    stale_bar_seconds: float = Field(0.0, ge=0)  # refuse entries on bars closed longer ago than this
    start_halted: bool = False  # start with the kill switch on (it also persists in the ledger)
    # Broker.
    broker: Literal["paper", "oanda"] = "paper"
    oanda_url: str = "https://api-fxpractice.oanda.com"  # practice; https://api-fxtrade.oanda.com is live
    oanda_account_id: str = ""
    oanda_token: SecretStr | None = None
    oanda_units: int = Field(1, ge=1)  # units per position (SPEC: one unit)
    oanda_timeout_seconds: float = Field(10.0, gt=0)

    @model_validator(mode="after")
    def _consistent(self) -> GatewaySettings:
        if not self.token.get_secret_value():
            raise ValueError("SMZ_GATEWAY_TOKEN must not be empty")
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
            if self.token.get_secret_value() == DEFAULT_TOKEN:
                raise ValueError("broker=oanda needs a real SMZ_GATEWAY_TOKEN, not the paper demo token")
        return self
