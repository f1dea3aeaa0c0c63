"""Logging of the smz processes: text lines for a terminal, or JSON lines for a log collector
(``SMZ_LOG_FORMAT``, the shared settings block; docs/CONFIG.md). Every service's main calls
``configure_logging`` once, before it logs."""

from __future__ import annotations

import json
import logging
import os
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any

from pydantic import ValidationError

from services.settings import SHARED_PREFIX, LogFormat, SharedSettings, read_config_table, validation_problems

TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
HANDLER_NAME = "smz"  # the root handler this module installs, replaced when called again
# A record's own attributes: anything else on it came from ``extra=`` and goes into the JSON object.
_RECORD_ATTRIBUTES = frozenset(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {
    "message",
    "asctime",
    "taskName",
    "color_message",  # uvicorn's copy of the message with terminal colour codes
}


class _StderrHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """Writes to ``sys.stderr`` as it is at each record, as logging's last-resort handler does: a CLI
    run inside a test runner sees stderr swapped and closed again, and must not keep a closed one."""

    def __init__(self) -> None:
        super().__init__(sys.stderr)

    @property  # type: ignore[override]
    def stream(self) -> IO[str]:
        return sys.stderr

    @stream.setter
    def stream(self, value: IO[str]) -> None:
        pass  # always the current sys.stderr


class JsonFormatter(logging.Formatter):
    """One JSON object per record on one line: ``time`` (UTC, ISO-8601, milliseconds), ``level``,
    ``logger``, ``message``, ``exc_info`` and ``stack_info`` (the formatted text) when present, and
    the fields given with ``extra=``. JSON escapes newlines, so a traceback stays on its line."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        if record.exc_info:
            entry["exc_info"] = self.formatException(record.exc_info)
        elif record.exc_text:
            entry["exc_info"] = record.exc_text
        if record.stack_info:
            entry["stack_info"] = self.formatStack(record.stack_info)
        for key, value in vars(record).items():
            # A leading underscore marks a library's own field (Ray's record factory adds
            # `_ray_timestamp_ns` to every record once it is imported), not one given with ``extra=``.
            if key not in _RECORD_ATTRIBUTES and key not in entry and not key.startswith("_"):
                entry[key] = value
        # default=str: an extra field that JSON cannot encode (a Path, a datetime) is written as text.
        return json.dumps(entry, default=str, ensure_ascii=False)


def configure_logging(level: str, log_format: LogFormat, stream: IO[str] | None = None) -> logging.Handler:
    """Log records at ``level`` and above to ``stream`` (stderr) as text or JSON lines. Python warnings
    become log records too, so they come out in the same format. Returns the installed handler."""
    if log_format not in ("text", "json"):
        raise ValueError(f"log format must be text or json, got {log_format!r}")
    root = logging.getLogger()
    for old in [h for h in root.handlers if h.get_name() == HANDLER_NAME]:
        root.removeHandler(old)
    handler = logging.StreamHandler(stream) if stream is not None else _StderrHandler()
    handler.set_name(HANDLER_NAME)
    handler.setFormatter(JsonFormatter() if log_format == "json" else logging.Formatter(TEXT_FORMAT))
    root.addHandler(handler)
    root.setLevel(level.upper())
    logging.captureWarnings(True)
    return handler


def shared_log_format(config_file: Path | None) -> LogFormat:
    """``log_format`` of the shared block for a process without the block (the trainer), in the
    block's order: ``SMZ_LOG_FORMAT``, else the config file's ``[shared]`` table, else the default."""
    variable = f"{SHARED_PREFIX}LOG_FORMAT"
    environ = {k.upper(): v for k, v in os.environ.items()}  # as pydantic-settings: case-insensitive
    value = environ.get(variable)
    if value is None and config_file is not None:
        value = read_config_table(config_file, "shared").get("log_format")
    if value is None:
        return SharedSettings().log_format
    try:
        return SharedSettings(log_format=value).log_format
    except ValidationError as exc:
        raise ValueError(f"invalid shared settings ({variable}): {validation_problems(exc)}") from exc
