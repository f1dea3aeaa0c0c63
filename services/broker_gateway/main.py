"""``smz serve broker-gateway``: settings from SMZ_GATEWAY_* variables, then uvicorn until SIGINT/SIGTERM."""

from __future__ import annotations

import logging
import signal
import sys
from types import FrameType

import uvicorn
from pydantic import ValidationError

from services.broker_gateway.app import create_app
from services.broker_gateway.settings import DEFAULT_TOKEN, GatewaySettings

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
        settings.redis_url,
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
