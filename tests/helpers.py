"""Small helpers shared by tests across the tree."""

from __future__ import annotations

import socket
from datetime import UTC, datetime


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def iso(ts: int) -> str:
    """ISO-8601 UTC of epoch seconds."""
    return datetime.fromtimestamp(ts, UTC).isoformat()
