"""``smz serve inference``: settings from SMZ_INFERENCE_* and the shared SMZ_* variables and a config
file (docs/CONFIG.md), then uvicorn until SIGINT/SIGTERM.

One process, one uvicorn worker: the HTTP API, the model reload thread, the search thread and (when
``SMZ_INFERENCE_STREAM_ENABLED``, the default) the stream worker. Exit code 2 for bad settings.
"""

from __future__ import annotations

import logging
from pathlib import Path
from urllib.parse import urlsplit

import uvicorn

from services.inference.app import create_app
from services.inference.settings import InferenceSettings
from services.logging_setup import configure_logging
from services.secrets import mask_secrets_in_logs
from services.settings import DEFAULT_TOKEN

logger = logging.getLogger("services.inference")


def main(config_file: Path | None = None) -> None:
    """``smz serve inference [--config FILE]``."""
    settings = InferenceSettings.load_or_exit(config_file)
    shared = settings.shared
    configure_logging(settings.log_level, shared.log_format)
    mask_secrets_in_logs(
        shared.gateway_token.get_secret_value(),
        settings.token.get_secret_value() if settings.token else None,
        urlsplit(shared.redis_url).password,
    )
    if settings.stream_enabled and shared.gateway_token.get_secret_value() == DEFAULT_TOKEN:
        logger.warning("sending orders with the paper demo token: set SMZ_GATEWAY_TOKEN")
    logger.info(
        "inference on http://%s:%d: model from %s, %d simulations, batches of <= %d within %.1f ms, "
        "%d thread(s); stream worker %s",
        settings.host,
        settings.port,
        f"{settings.checkpoint_dir} ("
        + (f"pinned {settings.model_version}" if settings.model_version else f"{settings.follow} pointer")
        + ")",
        settings.simulations,
        settings.max_batch,
        settings.batch_wait_ms,
        settings.threads,
        f"on {shared.windows_stream} as {settings.consumer} -> {shared.gateway_url}"
        if settings.stream_enabled
        else "off",
    )
    # uvicorn handles SIGINT/SIGTERM: it stops accepting, finishes in-flight requests, then runs the
    # app's shutdown, where the stream worker finishes its current entry and the threads end.
    uvicorn.run(
        create_app(settings),
        host=settings.host,
        port=settings.port,
        workers=1,
        log_level=settings.log_level,
        access_log=settings.log_level == "debug",
        log_config=None,  # uvicorn's records go through the root handler: one format, secrets masked
    )


if __name__ == "__main__":
    main()
