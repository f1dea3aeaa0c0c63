"""``smz serve broker-gateway``: settings from SMZ_GATEWAY_* and the shared SMZ_* variables and a config
file (docs/CONFIG.md), then uvicorn until SIGINT/SIGTERM."""

from __future__ import annotations

import logging
import signal
from pathlib import Path
from types import FrameType
from urllib.parse import urlsplit

import uvicorn

from services.broker_gateway.app import create_app
from services.broker_gateway.settings import GatewaySettings
from services.logging_setup import configure_logging
from services.secrets import mask_secrets_in_logs, redact_url
from services.settings import DEFAULT_TOKEN

logger = logging.getLogger("services.broker_gateway")


def _exit_cleanly(signum: int, frame: FrameType | None) -> None:
    raise SystemExit(0)


def main(config_file: Path | None = None) -> None:
    """``smz serve broker-gateway [--config FILE]``."""
    settings = GatewaySettings.load_or_exit(config_file)
    shared = settings.shared
    configure_logging(settings.log_level, shared.log_format)
    mask_secrets_in_logs(
        shared.gateway_token.get_secret_value(),
        settings.admin_token.get_secret_value() if settings.admin_token else None,
        settings.oanda_token.get_secret_value() if settings.oanda_token else None,
        urlsplit(shared.redis_url).password,
    )
    if shared.gateway_token.get_secret_value() == DEFAULT_TOKEN:
        logger.warning(
            "using the paper demo token: set SMZ_GATEWAY_TOKEN for anything but local paper trading"
        )
    logger.info(
        "broker gateway on http://%s:%d (broker %s, ledger %s, redis %s)",
        settings.host,
        settings.port,
        settings.broker,
        settings.ledger_db,
        redact_url(shared.redis_url),
    )
    # uvicorn handles SIGINT/SIGTERM: it stops accepting, finishes in-flight requests, then runs the
    # app's shutdown (broker, Redis and ledger closed cleanly). Afterwards it re-raises the signal to
    # the handlers it found, these: the stop was asked for and went cleanly, so the exit code is 0.
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, _exit_cleanly)
    uvicorn.run(
        create_app(settings),
        host=settings.host,
        port=settings.port,
        log_level=settings.log_level,
        access_log=settings.log_level == "debug",
        log_config=None,  # uvicorn's records go through the root handler: one format, secrets masked
    )


if __name__ == "__main__":
    main()
