"""OANDA v20 data: closed M1 bid candles of one instrument."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import NamedTuple

from services.oanda.http import v20_client
from services.oanda.instruments import to_oanda_instrument

OANDA_MAX_COUNT = 5000  # the v20 API's limit on candles per request


class Candle(NamedTuple):
    """One complete M1 bid candle; ``ts`` its open time in epoch seconds UTC."""

    ts: int
    open: float
    high: float
    low: float
    close: float
    volume: float


def rfc3339(ts: int) -> str:
    return datetime.fromtimestamp(ts, tz=UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def parse_rfc3339(text: str) -> int:
    """Epoch seconds of an OANDA RFC 3339 time like ``2017-01-03T00:01:00.000000000Z`` (UTC)."""
    if not text.endswith("Z"):
        raise ValueError(f"expected a UTC time ending in Z, got {text!r}")
    base, _, fraction = text[:-1].partition(".")
    if fraction and not fraction.isdigit():
        raise ValueError(f"bad fraction of a second in {text!r}")
    return int(datetime.fromisoformat(base).replace(tzinfo=UTC).timestamp())


class CandleFeed:
    """``GET /v3/instruments/{GBP_JPY}/candles?granularity=M1&price=B`` of one instrument."""

    def __init__(self, instrument: str, base_url: str, token: str, timeout: float = 10.0) -> None:
        self.oanda_instrument = to_oanda_instrument(instrument)
        self.requests = 0
        self._client = v20_client(base_url, token, timeout)
        self._path = f"/v3/instruments/{self.oanda_instrument}/candles"

    def close(self) -> None:
        self._client.close()

    def complete(self, since: int | None, count: int) -> list[Candle]:
        """The complete candles from ``since`` on (the last ``count`` when None), in time order; stops
        at the first incomplete one. Raises httpx.HTTPError or ValueError/KeyError on a bad answer."""
        params: dict[str, object] = {"granularity": "M1", "price": "B", "count": count}
        if since is not None:
            params["from"] = rfc3339(since)
        self.requests += 1
        response = self._client.get(self._path, params=params)
        response.raise_for_status()
        body = response.json()
        if body.get("instrument", self.oanda_instrument) != self.oanda_instrument:
            raise ValueError(f"asked for {self.oanda_instrument}, got candles of {body.get('instrument')}")
        out = []
        for candle in body["candles"]:
            if not candle.get("complete", False):
                break  # only the last candle is ever incomplete; never skip past one
            bid = candle["bid"]
            out.append(
                Candle(
                    parse_rfc3339(candle["time"]),
                    float(bid["o"]),
                    float(bid["h"]),
                    float(bid["l"]),
                    float(bid["c"]),
                    float(candle.get("volume", 0)),
                )
            )
        return out
