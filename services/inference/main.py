"""``smz serve inference``: settings from SMZ_INFERENCE_* variables, then uvicorn until SIGINT/SIGTERM.

One process, one uvicorn worker: the HTTP API, the model reload thread, the search thread and (when
``SMZ_INFERENCE_STREAM_ENABLED``, the default) the stream worker. Exit code 2 for bad settings.
"""

from __future__ import annotations

import logging
import sys
from urllib.parse import urlsplit

import uvicorn
from pydantic import ValidationError

from services.inference.app import create_app
from services.inference.settings import DEFAULT_GATEWAY_TOKEN, InferenceSettings
from services.secrets import mask_secrets_in_logs

logger = logging.getLogger("services.inference")


def main() -> None:
    try:
        settings = InferenceSettings()
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e['loc']) or 'settings'}: {e['msg']}" for e in exc.errors()
        )
        print(f"error: invalid inference settings (SMZ_INFERENCE_*): {problems}", file=sys.stderr)
        raise SystemExit(2) from None
    logging.basicConfig(
        level=settings.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    mask_secrets_in_logs(
        settings.gateway_token.get_secret_value(),
        settings.token.get_secret_value() if settings.token else None,
        urlsplit(settings.redis_url).password,
    )
    if settings.stream_enabled and settings.gateway_token.get_secret_value() == DEFAULT_GATEWAY_TOKEN:
        logger.warning("sending orders with the paper demo token: set SMZ_INFERENCE_GATEWAY_TOKEN")
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
        f"on {settings.windows_stream} as {settings.consumer} -> {settings.gateway_url}"
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
    )


if __name__ == "__main__":
    main()
