"""A small client of the inference service's ``POST /v1/decisions``, for callers outside the stack (a
MetaTrader bridge, a Freqtrade strategy, a notebook): send the recent 1-minute bars and the position
held, get the decision the live stack would take. The service computes the window with the feature
builder's code (``shared.decision_bars``); docs/SERVING.md shows the request.

    from services.inference.client import DecisionsClient

    with DecisionsClient("http://127.0.0.1:8001", token="...") as client:
        decision = client.decide_bars("GBPJPY", bars, {"side": "long", "entry_ts": 1_704_186_000})
        print(decision.action_name, decision.visit_policy, decision.schema_hash)

``bars``: the last ``DECISION_BARS`` (151) closed bid bars or more, oldest first, each a mapping with
``ts`` (epoch seconds, an ISO-8601 string with its UTC offset, or an aware ``datetime``) and ``open``,
``high``, ``low``, ``close`` (other keys, such as a volume, are left out); or a ``shared.bars.Bars``,
of which the tail the decision needs is sent. A refused request raises ``DecisionError`` with the
service's message (a 422 names the bad row); a 503 (no model yet, or overloaded) is retried after its
``Retry-After`` up to ``retries`` times.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping
from datetime import datetime
from types import TracebackType
from typing import Any

import httpx
import numpy as np

from shared.bars import Bars
from shared.decision_bars import DECISION_BARS
from shared.wire import Decision, HeldPositionIn

BAR_FIELDS = ("ts", "open", "high", "low", "close")
Position = HeldPositionIn | Mapping[str, Any] | None


class DecisionError(Exception):
    """The service answered with an error: ``status`` and its ``message``."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(f"{status}: {message}")
        self.status = status
        self.message = message


def bar_rows(bars: Bars | Iterable[Mapping[str, Any]], entry_ts: int | None = None) -> list[dict[str, Any]]:
    """The request's ``bars``: of a ``Bars``, the last ``DECISION_BARS`` (from the entry bar on if
    that is older); of mappings, each one's five fields, datetimes as ISO-8601."""
    if isinstance(bars, Bars):
        start = max(len(bars) - DECISION_BARS, 0)
        if entry_ts is not None:
            start = min(start, int(np.searchsorted(bars.ts, entry_ts)))
        columns = [c[start:].tolist() for c in (bars.ts, bars.open, bars.high, bars.low, bars.close)]
        return [dict(zip(BAR_FIELDS, row, strict=True)) for row in zip(*columns, strict=True)]
    return [{k: _plain(bar[k]) for k in BAR_FIELDS} for bar in bars]


def _plain(value: Any) -> Any:
    """A JSON value: datetimes (pandas timestamps too) as ISO-8601, numpy numbers as Python's."""
    if isinstance(value, datetime):
        return value.isoformat()
    return value.item() if isinstance(value, np.generic) else value


class DecisionsClient:
    """``POST /v1/decisions`` over one HTTP connection pool; use it as a context manager or ``close()``."""

    def __init__(
        self,
        url: str = "http://127.0.0.1:8001",
        token: str | None = None,
        *,
        timeout: float = 10.0,
        retries: int = 3,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        headers = {} if token is None else {"Authorization": f"Bearer {token}"}
        self.http = httpx.Client(base_url=url, headers=headers, timeout=timeout, transport=transport)
        self.retries = retries

    def decide_bars(
        self, instrument: str, bars: Bars | Iterable[Mapping[str, Any]], position: Position = None
    ) -> Decision:
        """The decision on the last of ``bars`` with ``position`` held (flat if None)."""
        held = HeldPositionIn.model_validate(position or {})
        body: dict[str, Any] = {"instrument": instrument, "bars": bar_rows(bars, held.entry_ts)}
        if position is not None:
            body["position"] = held.model_dump(exclude_none=True)
        return self._post(body)

    def decide_window(self, instrument: str, window: np.ndarray) -> Decision:
        """The decision on a (32, 15) observation window made by the caller."""
        return self._post({"instrument": instrument, "window": np.asarray(window, dtype=np.float64).tolist()})

    def _post(self, body: dict[str, Any]) -> Decision:
        attempts = 0
        while True:
            response = self.http.post("/v1/decisions", json=body)
            if response.status_code == 503 and attempts < self.retries:
                attempts += 1
                time.sleep(_retry_after(response))
                continue
            if response.status_code != 200:
                raise DecisionError(response.status_code, _message(response))
            return Decision.model_validate(response.json())

    def close(self) -> None:
        self.http.close()

    def __enter__(self) -> DecisionsClient:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()


def _retry_after(response: httpx.Response) -> float:
    try:
        return min(max(float(response.headers.get("Retry-After", "1")), 0.0), 60.0)
    except ValueError:  # an HTTP date: the service never sends one
        return 1.0


def _message(response: httpx.Response) -> str:
    try:
        body = response.json()
    except ValueError:
        return response.text
    if isinstance(body, dict):
        return str(body.get("message") or body.get("detail") or body)
    return str(body)
