"""``smz serve broker-gateway``: settings from SMZ_GATEWAY_* variables, then uvicorn until SIGINT/SIGTERM."""

from __future__ import annotations

import logging
import signal
import sys
from types import FrameType
from urllib.parse import urlsplit

import uvicorn
from pydantic import ValidationError

from services.broker_gateway.app import create_app
from services.broker_gateway.settings import DEFAULT_TOKEN, GatewaySettings
from services.secrets import mask_secrets_in_logs, redact_url

logger = logging.getLogger("services.broker_gateway")


def _exit_cleanly(signum: int, frame: FrameType | None) -> None:
    raise SystemExit(0)


def main() -> None:
    try:
        settings = GatewaySettings()
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e['loc']) or 'settings'}: {e['msg']}" for e in exc.errors()
        )
        print(f"error: invalid broker gateway settings (SMZ_GATEWAY_*): {problems}", file=sys.stderr)
        raise SystemExit(2) from None
    logging.basicConfig(
        level=settings.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    mask_secrets_in_logs(
        settings.token.get_secret_value(),
        settings.admin_token.get_secret_value() if settings.admin_token else None,
        settings.oanda_token.get_secret_value() if settings.oanda_token else None,
        urlsplit(settings.redis_url).password,
    )
    if settings.token.get_secret_value() == DEFAULT_TOKEN:
        logger.warning(
            "using the paper demo token: set SMZ_GATEWAY_TOKEN for anything but local paper trading"
        )
    logger.info(
        "broker gateway on http://%s:%d (broker %s, ledger %s, redis %s)",
        settings.host,
        settings.port,
        settings.broker,
        settings.ledger_db,
        redact_url(settings.redis_url),
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
    )


if __name__ == "__main__":
    main()
