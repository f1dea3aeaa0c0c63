"""Real bars for the core's tests, parsed once per session straight from the vendor's zip."""

from __future__ import annotations

import zipfile
from pathlib import Path

import numpy as np
import pytest

from shared.bars import Bars
from shared.dataset import build_dataset
from shared.env import MarketData
from shared.ingest import parse_bars
from shared.sessions import tile_sessions
from shared.synth import generate_synthetic_market

REPO = Path(__file__).resolve().parents[2]
GBPJPY_2017 = REPO.parent / "shared" / "data" / "fx" / "GBPJPY" / "HISTDATA_COM_ASCII_GBPJPY_M1_2017.zip"
SAMPLE = REPO / "data" / "sample" / "HISTDATA_COM_ASCII_GBPJPY_M1_2017-01-sample.zip"


def _bars_from_zip(path: Path, instrument: str) -> Bars:
    with zipfile.ZipFile(path) as archive:
        member = next(name for name in archive.namelist() if name.endswith(".csv"))
        parsed = parse_bars(archive.read(member), source=f"{path.name}:{member}")
    assert not parsed.rejects
    order = np.argsort(parsed.ts, kind="stable")
    return Bars(
        instrument,
        parsed.ts[order],
        parsed.open[order],
        parsed.high[order],
        parsed.low[order],
        parsed.close[order],
        parsed.volume[order],
    )


@pytest.fixture(scope="session")
def gbpjpy_2017() -> Bars:
    """All 370,949 real GBPJPY bars of 2017 (from ../shared/data beside the repo)."""
    if not GBPJPY_2017.exists():
        pytest.skip(f"{GBPJPY_2017} is not beside the repo")
    return _bars_from_zip(GBPJPY_2017, "GBPJPY")


@pytest.fixture(scope="session")
def gbpjpy_sample() -> Bars:
    """The three-week real sample shipped in the repo."""
    return _bars_from_zip(SAMPLE, "GBPJPY")


@pytest.fixture(scope="session")
def synthetic() -> tuple[MarketData, np.ndarray, np.ndarray]:
    """60,000 bars of the seeded synthetic market: its data, every session start, and its hidden regime."""
    market = generate_synthetic_market("GBPJPY", n_bars=60_000, seed=0)
    ds = build_dataset(market.bars)
    data = MarketData("GBPJPY", market.bars.ts, market.bars.close, ds.features)
    return data, tile_sessions(ds.session_starts), market.regime
