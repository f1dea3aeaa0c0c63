"""The HTTP client of the v20 REST API, shared by data and execution."""

from __future__ import annotations

import httpx

PRACTICE_URL = "https://api-fxpractice.oanda.com"  # https://api-fxtrade.oanda.com is live money


def v20_client(base_url: str, token: str, timeout: float = 10.0) -> httpx.Client:
    """A client that sends the bearer token and asks for RFC 3339 times (what both sides parse)."""
    return httpx.Client(
        base_url=base_url.rstrip("/"),
        timeout=timeout,
        headers={
            "Authorization": f"Bearer {token}",
            "Content-Type": "application/json",
            "Accept-Datetime-Format": "RFC3339",
        },
    )
