"""The OANDA v20 source against a local HTTP server serving recorded candle responses
(data/oanda_gbpjpy_m1_candles.json: real sample bars of 2017-01-03 08:00-08:15 UTC in the v20 shape)."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, urlparse

import pytest

from services.feature_builder.sources import OandaSource
from services.oanda.data import parse_rfc3339, rfc3339
from shared.bars import Bars

RECORDED = Path(__file__).parent / "data" / "oanda_gbpjpy_m1_candles.json"
TOKEN = "practice-token-123"
FIRST = 1_483_430_400  # 2017-01-03T08:00:00Z, the first recorded candle


class V20Stub:
    """Serves ``history`` for count=N requests and the ``polls`` in order for from=... requests
    (then the last one again); records every request."""

    def __init__(self) -> None:
        self.recorded = json.loads(RECORDED.read_text())
        self.requests: list[tuple[str, dict[str, list[str]], str | None]] = []
        self.polls = 0
        stub = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                url = urlparse(self.path)
                query = parse_qs(url.query)
                stub.requests.append((url.path, query, self.headers.get("Authorization")))
                if self.headers.get("Authorization") != f"Bearer {TOKEN}":
                    self._send(401, {"errorMessage": "Insufficient authorization to perform request."})
                elif url.path != "/v3/instruments/GBP_JPY/candles":
                    self._send(404, {"errorMessage": "Invalid value specified for 'instrument'"})
                elif "from" in query:
                    poll = stub.recorded["polls"][min(stub.polls, len(stub.recorded["polls"]) - 1)]
                    stub.polls += 1
                    self._send(poll["status"], poll["body"])
                else:
                    self._send(200, stub.recorded["history"])

            def _send(self, status: int, body: object) -> None:
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)


@pytest.fixture
def stub() -> Iterator[V20Stub]:
    server = V20Stub()
    server.thread.start()
    yield server
    server.server.shutdown()
    server.server.server_close()


def expected_bars(sample: Bars, n: int) -> list[tuple[object, ...]]:
    i = int(sample.ts.searchsorted(FIRST))
    cols = (sample.ts, sample.open, sample.high, sample.low, sample.close)
    return list(zip(*(c[i : i + n].tolist() for c in cols), strict=True))


def test_history_and_polls_yield_each_complete_candle_once(stub: V20Stub, gbpjpy_sample: Bars) -> None:
    source = OandaSource("GBPJPY", stub.url, TOKEN, history_bars=5, poll_seconds=0.05, backoff_initial=0.05)
    stop = threading.Event()
    history = source.history(stop)
    assert [(b.ts, b.open, b.high, b.low, b.close) for b in history] == expected_bars(gbpjpy_sample, 5)
    assert [b.volume for b in history][:2] == [132.0, 27.0]
    live = []
    for bar in source.bars(stop):
        live.append(bar)
        if len(live) == 11:
            stop.set()
    source.close()
    # Bars 5..15: the incomplete candles were skipped until complete, the repeated ones used once.
    assert [(b.ts, b.open, b.high, b.low, b.close) for b in live] == expected_bars(gbpjpy_sample, 16)[5:]
    assert all(b.instrument == "GBPJPY" for b in history + live)
    path, query, auth = stub.requests[0]
    assert path == "/v3/instruments/GBP_JPY/candles" and auth == f"Bearer {TOKEN}"
    assert query == {"granularity": ["M1"], "price": ["B"], "count": ["6"]}
    froms = [q["from"][0] for _p, q, _a in stub.requests[1:]]
    # After the history (last complete 08:04): from 08:05; after poll 1 (last 08:07): from 08:08 for
    # the poll with nothing new, the 503 and its retry; after poll 4 (08:07 again, then to 08:13): 08:14.
    assert froms[:5] == [
        "2017-01-03T08:05:00Z",
        "2017-01-03T08:08:00Z",
        "2017-01-03T08:08:00Z",
        "2017-01-03T08:08:00Z",
        "2017-01-03T08:14:00Z",
    ]
    assert source.errors == 1


def test_http_errors_are_retried_with_backoff(stub: V20Stub) -> None:
    source = OandaSource("GBPJPY", stub.url, "wrong-token", history_bars=5, backoff_initial=0.05)
    stop = threading.Event()
    threading.Timer(0.5, stop.set).start()
    assert source.history(stop) == []  # 401 every time, until stopped
    assert 3 <= source.errors <= 6  # 0.05 + 0.1 + 0.2 (+ 0.4) s of backoff in 0.5 s
    source.close()


def test_times() -> None:
    assert parse_rfc3339("2017-01-03T08:00:00.000000000Z") == FIRST == parse_rfc3339(rfc3339(FIRST))
    assert rfc3339(FIRST + 60) == "2017-01-03T08:01:00Z"
    with pytest.raises(ValueError):
        parse_rfc3339("2017-01-03T08:00:00+01:00")
