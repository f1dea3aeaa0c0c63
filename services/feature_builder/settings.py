"""Feature builder settings: SMZ_FEATURE_BUILDER_* variables, the shared block (SMZ_REDIS_URL,
SMZ_WINDOWS_STREAM, SMZ_POSITIONS_STREAM, SMZ_ACCOUNT, SMZ_SPREAD_PIPS; services/settings.py) and the
``[feature_builder]`` table of a config file."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import SettingsConfigDict

from services.feature_builder.validation import BarLimits
from services.oanda.http import PRACTICE_URL
from services.settings import FEATURE_BUILDER_METRICS_PORT, LOCALHOST, LiveServiceSettings
from shared.instruments import validate_instrument
from shared.schema import WARMUP_BARS

DEFAULT_HISTORY_BARS = WARMUP_BARS + 300  # warm-up bars before the first live bar


class FeatureBuilderSettings(LiveServiceSettings):
    model_config = SettingsConfigDict(env_prefix="SMZ_FEATURE_BUILDER_", frozen=True)
    service = "feature builder"
    previous_shared_fields = ("redis_url", "windows_stream", "positions_stream", "account", "spread_pips")

    instrument: str
    source: Literal["duckdb", "file", "oanda"] = "duckdb"
    # Replay sources: live bars are those with start <= ts < end (UTC); history is what comes before.
    db: Path | None = None  # source=duckdb
    file: Path | None = None  # source=file: a bar file or the vendor's zip (any format `smz ingest` reads)
    file_format: str = "auto"  # as `smz ingest --format`
    file_tz: str | None = None  # as `smz ingest --tz`
    start: datetime | None = None  # ISO-8601; a time without zone means UTC
    end: datetime | None = None
    pace_ms: float = Field(0.0, ge=0)  # 0: as fast as possible; N: one bar every N ms
    realtime: bool = False  # replay at the bars' own pace (timestamp differences); overrides pace_ms
    # At the end of a replay: exit 0, or stay up serving metrics until stopped (containers, where an
    # exit would either restart the replay or leave the dashboards without the builder's series).
    after_replay: Literal["exit", "idle"] = "exit"
    history_bars: int = Field(DEFAULT_HISTORY_BARS, ge=WARMUP_BARS)
    # OANDA v20 practice feed.
    oanda_url: str = PRACTICE_URL
    oanda_token: SecretStr | None = None
    poll_seconds: float = Field(5.0, gt=0)
    # Redis and the protocol of shared.wire: windows out to shared.windows_stream, the positions of
    # shared.account in from shared.positions_stream, position columns at shared.spread_pips.
    windows_maxlen: int = Field(100_000, ge=0)  # approximate trim of the windows stream; 0: never trim
    position_wait_seconds: float = Field(30.0, gt=0)  # log an error (and keep waiting) after this
    # Bar checks beyond the OHLC rules: a live bar closed longer ago than this is stale (None: 300 s
    # for the OANDA feed, off for replays of history); a price further than max_price_jump (a
    # fraction) from the last close within the hour is refused as a jump.
    max_bar_age_seconds: float | None = Field(None, ge=0)
    max_price_jump: float = Field(0.1, gt=0)
    # Operations.
    log_every: int = Field(1000, ge=1)  # a progress line every N live bars
    metrics_port: int = Field(FEATURE_BUILDER_METRICS_PORT, ge=0, le=65535)  # Prometheus; 0 turns it off
    metrics_host: str = LOCALHOST  # 0.0.0.0 in containers, so Prometheus can scrape it

    @field_validator("instrument")
    @classmethod
    def _instrument(cls, value: str) -> str:
        return validate_instrument(value)

    @field_validator("start", "end")
    @classmethod
    def _utc(cls, value: datetime | None) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)

    @model_validator(mode="after")
    def _range(self) -> FeatureBuilderSettings:
        if self.start is not None and self.end is not None and self.end <= self.start:
            raise ValueError(f"end ({self.end.isoformat()}) must be after start ({self.start.isoformat()})")
        return self

    def check_source(self) -> None:
        """What the chosen source needs (checked when the service builds it, so that tests can inject
        a source of their own)."""
        if self.source == "duckdb" and self.db is None:
            raise ValueError("source=duckdb needs SMZ_FEATURE_BUILDER_DB")
        if self.source == "file" and self.file is None:
            raise ValueError("source=file needs SMZ_FEATURE_BUILDER_FILE")
        if self.source == "oanda" and self.oanda_token is None:
            raise ValueError("source=oanda needs SMZ_FEATURE_BUILDER_OANDA_TOKEN")

    def bar_limits(self) -> BarLimits:
        age = self.max_bar_age_seconds
        if age is None:
            age = 300.0 if self.source == "oanda" else 0.0
        return BarLimits(max_age_seconds=age, max_jump=self.max_price_jump)

    @property
    def start_ts(self) -> int | None:
        return None if self.start is None else int(self.start.timestamp())

    @property
    def end_ts(self) -> int | None:
        return None if self.end is None else int(self.end.timestamp())
