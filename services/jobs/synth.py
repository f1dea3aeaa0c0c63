"""``smz synth``: write a seeded synthetic market (bars and hidden regimes) into the store."""

from __future__ import annotations

from pathlib import Path

from shared.instruments import validate_instrument
from shared.store import Store
from shared.synth import generate_synthetic_market


def run_synth(db: Path, instrument: str, n_bars: int, seed: int) -> dict[str, object]:
    validate_instrument(instrument)
    if n_bars < 1:
        raise ValueError("--bars must be at least 1")
    market = generate_synthetic_market(instrument, n_bars, seed)
    with Store(db) as store:
        if store.count_bars(instrument):
            raise ValueError(
                f"{db} already holds bars for {instrument}; synthetic data goes under a fresh "
                "instrument name or database"
            )
        with store.transaction():
            stored = store.insert_bars(market.bars)
            store.insert_regimes(instrument, market.bars.ts, market.regime)
    return {
        "instrument": instrument,
        "bars": stored,
        "seed": seed,
        "trend_share": round(float((market.regime != 0).mean()), 4),
        "first_ts": int(market.bars.ts[0]),
        "last_ts": int(market.bars.ts[-1]),
    }
