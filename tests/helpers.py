"""Small helpers shared by tests across the tree."""

from __future__ import annotations

import socket
import uuid
import zipfile
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import duckdb
import httpx
import numpy as np

from services.jobs.stack import StackConfig
from services.settings import SharedSettings
from services.trainer.settings import TrainerSettings
from shared.bars import Bars
from shared.ingest import parse_bars

REPO = Path(__file__).resolve().parents[1]
GBPJPY_SAMPLE = REPO / "data" / "sample" / "HISTDATA_COM_ASCII_GBPJPY_M1_2017-01-sample.zip"


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def iso(ts: int) -> str:
    """ISO-8601 UTC of epoch seconds."""
    return datetime.fromtimestamp(ts, UTC).isoformat()


def gbpjpy_sample() -> Bars:
    """The three-week real GBPJPY sample shipped in the repo, sorted by time."""
    with zipfile.ZipFile(GBPJPY_SAMPLE) as archive:
        member = next(name for name in archive.namelist() if name.endswith(".csv"))
        parsed = parse_bars(archive.read(member), source=member)
    order = np.argsort(parsed.ts, kind="stable")
    cols = (parsed.open, parsed.high, parsed.low, parsed.close, parsed.volume)
    return Bars("GBPJPY", parsed.ts[order], *(c[order] for c in cols))


def isolated_stack_config(
    tmp_path: Path, db: Path, instrument: str, checkpoint_dir: Path, name: str, **settings: Any
) -> StackConfig:
    """A live stack that shares nothing with another run on this machine: free ports, and a token,
    account, streams and consumer of its own (``name``-<random>). ``settings`` adds or overrides (a
    field of the shared block goes into it)."""
    run_id = uuid.uuid4().hex[:8]
    shared: dict[str, Any] = {
        "redis_url": "redis://127.0.0.1:6379/0",
        "gateway_token": f"token-{run_id}",
        "account": f"{name}-{run_id}",
        "windows_stream": f"smz:test:{run_id}:windows",
        "positions_stream": f"smz:test:{run_id}:positions",
    }
    shared |= {k: settings.pop(k) for k in list(settings) if k in SharedSettings.model_fields}
    fields: dict[str, Any] = {
        "db": db,
        "instrument": instrument,
        "checkpoint_dir": checkpoint_dir,
        "run_dir": tmp_path / "live",
        "shared": SharedSettings(**shared),
        "inference_port": free_port(),
        "gateway_port": free_port(),
        "feature_builder_metrics_port": free_port(),
        "consumer": f"inference-{run_id}",
    }
    return StackConfig(**{**fields, **settings})


def small_trainer_settings(db: Path, out: Path, episodes: int, validate_every: int) -> TrainerSettings:
    """A trainer run of ``episodes`` on the SYNTHJPY market in ``db``: 4 sessions a round, 3 updates,
    4 validation sessions with no trade minimum, one thread, no metrics server."""
    return TrainerSettings(
        db=db,
        instrument="SYNTHJPY",
        out=out,
        episodes=episodes,
        sessions_per_round=4,
        updates_per_round=3,
        validate_every=validate_every,
        validation_sessions=4,
        min_validation_trades=0,
        threads=1,
        metrics_port=0,
    )


def live_trades(config: StackConfig) -> list[dict[str, Any]]:
    """Every trade of the stack's account, from the gateway's API, oldest first."""
    return httpx.get(
        f"{config.gateway_url}/v1/trades",
        params={"account": config.shared.account, "limit": 100_000},
        headers={"Authorization": f"Bearer {config.token}"},
        timeout=10,
    ).json()


def ledger_decisions(config: StackConfig) -> tuple[int, int, int, int]:
    """(decisions, distinct bars, first bar, last bar) of the stack's account in its ledger."""
    with duckdb.connect(str(config.ledger_db), read_only=True) as con:
        row = con.execute(
            "SELECT count(*), count(DISTINCT bar_ts), epoch(min(bar_ts)), epoch(max(bar_ts)) "
            "FROM orders WHERE account = ? AND kind = 'decision'",
            [config.shared.account],
        ).fetchone()
    assert row is not None
    return int(row[0]), int(row[1]), int(row[2]), int(row[3])


# (instrument, side, entry close, exit close, entry bar, bars held) of the trades ``trade_through``
# makes: two instruments, long and short, a win and a loss each.
ROUND_TRIPS = (
    ("GBPJPY", 1, 150.00, 150.20, 1_704_189_600, 3),  # 2024-01-02 10:00 UTC
    ("EURUSD", -1, 1.1000, 1.1010, 1_704_189_660, 2),
    ("GBPJPY", -1, 150.10, 149.80, 1_704_190_200, 5),
    ("EURUSD", 1, 1.1005, 1.1030, 1_704_190_800, 4),
)


def trade_through(http: Any, token: str, account: str, round_trips: tuple = ROUND_TRIPS) -> None:
    """Real closed trades in a running gateway app (a TestClient or an httpx.Client on it): each round
    trip is a BUY or SELL order, HOLDs, then a CLOSE, one bar apart, in one session per instrument."""
    steps: dict[str, int] = {}
    for instrument, side, entry, exit_, bar_ts, bars in round_trips:
        actions = [1 if side > 0 else 2] + [0] * (bars - 1) + [3]
        for i, action in enumerate(actions):
            close = entry if i < len(actions) - 1 else exit_
            step = steps[instrument] = steps.get(instrument, -1) + 1
            body = {
                "idempotency_key": f"{account}-{instrument}-{bar_ts + 60 * i}",
                "account": account,
                "instrument": instrument,
                "bar_ts": bar_ts + 60 * i,
                "close": close,
                "action": action,
                "session_id": f"s-{instrument}",
                "step": step,
            }
            response = http.post("/v1/orders", json=body, headers={"Authorization": f"Bearer {token}"})
            assert response.status_code == 200, response.text
