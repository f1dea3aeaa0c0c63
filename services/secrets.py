"""Keeping credentials out of logs: URLs printed without their password, and a logging filter that
masks every configured secret in every record (a library's message included)."""

from __future__ import annotations

import logging
from collections.abc import Iterable
from urllib.parse import urlsplit, urlunsplit

MASK = "***"


def redact_url(url: str) -> str:
    """``url`` with its password (and a user name that may be a token) replaced by ``***``."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return MASK
    if parts.password is None and parts.username is None:
        return url
    host = parts.hostname or ""
    if parts.port is not None:
        host = f"{host}:{parts.port}"
    user = f"{parts.username}:" if parts.username and parts.password is not None else ""
    return urlunsplit(parts._replace(netloc=f"{user}{MASK}@{host}"))


class SecretFilter(logging.Filter):
    """Replaces each secret (4 characters or longer) in a record's rendered message by ``***``."""

    def __init__(self, secrets: Iterable[str | None]) -> None:
        super().__init__()
        self.secrets = sorted({s for s in secrets if s and len(s) >= 4}, key=len, reverse=True)

    def filter(self, record: logging.LogRecord) -> bool:
        if not self.secrets:
            return True
        message = record.getMessage()
        masked = message
        for secret in self.secrets:
            masked = masked.replace(secret, MASK)
        if masked != message:
            record.msg, record.args = masked, None
        return True


def mask_secrets_in_logs(*secrets: str | None) -> None:
    """Install a ``SecretFilter`` on every handler of the root logger (call after logging is set up)."""
    secret_filter = SecretFilter(secrets)
    for handler in logging.getLogger().handlers:
        handler.addFilter(secret_filter)
