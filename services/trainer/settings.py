"""Trainer settings: CLI options override environment variables (prefix SMZ_TRAINER_)."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class TrainerSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="SMZ_TRAINER_", frozen=True)

    db: Path
    instrument: str
    out: Path  # checkpoint directory (the shared volume in deployment)
    minutes: float | None = Field(None, gt=0)
    episodes: int | None = Field(None, gt=0)
    workers: int = Field(1, ge=1)
    sessions_per_round: int = Field(64, ge=1)  # self-play sessions stepped together
    updates_per_round: int = Field(128, ge=0)  # learner updates after each round
    publish_every: int = Field(50, ge=1)  # learner updates between weight refreshes of self-play
    validate_every: int = Field(512, ge=1)  # episodes between validations
    validation_sessions: int = Field(64, ge=1)  # at most this many tiled validation sessions
    min_validation_trades: int = Field(10, ge=0)  # fewer trades cannot make a checkpoint "best"
    threads: int = Field(2, ge=1)
    seed: int = 0
    metrics_port: int = Field(9101, ge=0, le=65535)  # Prometheus endpoint; 0 turns it off
    metrics_host: str = "127.0.0.1"  # 0.0.0.0 in containers, so Prometheus can scrape it
