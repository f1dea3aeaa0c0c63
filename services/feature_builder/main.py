"""``smz serve feature-builder``: run the feature builder until its replay ends or SIGINT/SIGTERM.

Settings come from ``SMZ_FEATURE_BUILDER_*`` and the shared ``SMZ_*`` environment variables and a
config file (``settings.py``, docs/FEATURE_BUILDER.md, docs/CONFIG.md). Exit codes: 0 at the end of a
replay (after the last window's position arrived, or ``position_wait_seconds`` passed without it,
which is logged; with ``after_replay=idle`` it stays up serving metrics instead) and on
SIGINT/SIGTERM; 2 for bad settings or a source that cannot be read.
"""

from __future__ import annotations

import logging
import signal
import sys
import threading
import time
from pathlib import Path
from urllib.parse import urlsplit

import duckdb
import redis

from services.feature_builder.builder import FeatureBuilder, Stopped
from services.feature_builder.metrics import FeatureBuilderMetrics
from services.feature_builder.redis_io import RedisPositionReader, RedisWindowPublisher, connect, retrying
from services.feature_builder.settings import FeatureBuilderSettings
from services.feature_builder.sources import BarSource, OandaSource, Pacer, duckdb_source, file_source
from services.logging_setup import configure_logging
from services.secrets import mask_secrets_in_logs, redact_url
from shared.ingest import IngestFormatError
from shared.inputs import IngestError

log = logging.getLogger("services.feature_builder")


def build_source(settings: FeatureBuilderSettings) -> BarSource:
    settings.check_source()
    pacer = Pacer(settings.pace_ms, settings.realtime)
    common = {"start": settings.start_ts, "end": settings.end_ts, "history_bars": settings.history_bars}
    if settings.source == "duckdb":
        assert settings.db is not None
        return duckdb_source(settings.db, settings.instrument, pacer=pacer, **common)
    if settings.source == "file":
        assert settings.file is not None
        return file_source(
            settings.file,
            settings.instrument,
            fmt=settings.file_format,
            tz=settings.file_tz,
            pacer=pacer,
            **common,
        )
    assert settings.oanda_token is not None
    return OandaSource(
        settings.instrument,
        settings.oanda_url,
        settings.oanda_token.get_secret_value(),
        history_bars=settings.history_bars,
        poll_seconds=settings.poll_seconds,
    )


def run(
    settings: FeatureBuilderSettings,
    *,
    stop: threading.Event | None = None,
    source: BarSource | None = None,
    metrics: FeatureBuilderMetrics | None = None,
    client: redis.Redis | None = None,
) -> int:
    """Warm up, then publish until the source ends or ``stop`` is set; returns the exit code."""
    stop = stop or threading.Event()
    metrics = metrics or FeatureBuilderMetrics()
    source = source or build_source(settings)
    client = client or connect(settings.shared.redis_url)
    started = time.monotonic()
    builder = None
    try:
        metrics.serve(settings.metrics_port, settings.metrics_host)
        retrying(client.ping, f"connecting to Redis at {redact_url(settings.shared.redis_url)}", stop)
        for row in getattr(source, "rejects", []):  # rows a bar file's parser refused
            metrics.rejected.labels(settings.instrument, row.reason).inc()
            log.warning("%s:%d: rejected row (%s): %s", row.file, row.line, row.reason, row.text[:100])
        builder = FeatureBuilder(
            RedisWindowPublisher(client, settings.shared.windows_stream, settings.windows_maxlen, stop),
            RedisPositionReader(client, settings.shared.positions_stream, settings.shared.account, stop),
            spread_pips=settings.shared.spread_pips,
            position_wait_seconds=settings.position_wait_seconds,
            metrics=metrics,
            stop=stop,
            log_every=settings.log_every,
            limits=settings.bar_limits(),
        )
        warm = builder.warm_up(source.history(stop))
        log.info(
            "%s: warmed up on %d history bars; publishing to %s (account %s, source %s%s)",
            settings.instrument,
            warm,
            settings.shared.windows_stream,
            settings.shared.account,
            settings.source,
            f", {source.pacer.describe()}" if hasattr(source, "pacer") else "",
        )
        for bar in source.bars(stop):
            builder.on_bar(bar)
        if not stop.is_set():
            log.info("%s: replay ended; waiting for the last window's position", settings.instrument)
            builder.finish()
            metrics.replay_finished.labels(settings.instrument).set(1)
    except (Stopped, redis.RedisError) as exc:
        if not stop.is_set():
            raise
        log.info("stopping (%s)", type(exc).__name__)
    finally:
        source.close()
    for name, summary in (builder.summary() if builder else {}).items():
        log.info("%s: done in %.1f s: %s", name, time.monotonic() - started, summary)
    if settings.after_replay == "idle" and not stop.is_set():
        log.info(
            "%s: replay finished; serving metrics until stopped (after_replay=idle)", settings.instrument
        )
        stop.wait()
    return 0


def main(config_file: Path | None = None) -> None:
    """``smz serve feature-builder [--config FILE]``."""
    settings = FeatureBuilderSettings.load_or_exit(config_file)
    configure_logging("info", settings.shared.log_format)
    mask_secrets_in_logs(
        settings.oanda_token.get_secret_value() if settings.oanda_token else None,
        urlsplit(settings.shared.redis_url).password,
    )
    stop = threading.Event()

    def request_stop(signum: int, _frame: object) -> None:
        log.info("received %s", signal.Signals(signum).name)
        stop.set()

    signal.signal(signal.SIGINT, request_stop)
    signal.signal(signal.SIGTERM, request_stop)
    try:
        source = build_source(settings)
    except (LookupError, OSError, IngestError, IngestFormatError, ValueError, duckdb.Error) as exc:
        log.error("cannot open the %s source: %s", settings.source, exc)
        sys.exit(2)
    sys.exit(run(settings, stop=stop, source=source))


if __name__ == "__main__":
    main()
