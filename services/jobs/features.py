"""``smz features``: bars in the store -> features, outcomes, session starts and splits."""

from __future__ import annotations

from pathlib import Path

from shared.dataset import build_dataset
from shared.schema import SCHEMA_HASH, SCHEMA_VERSION
from shared.store import Store


def run_features(db: Path, instrument: str) -> dict[str, object]:
    with Store(db) as store:
        bars = store.load_bars(instrument)
        if len(bars) == 0:
            raise LookupError(f"no bars for {instrument} in {db}; run `smz ingest` first")
        dataset = build_dataset(bars)
        store.write_dataset(dataset)
    return {**dataset.summary(), "schema_version": SCHEMA_VERSION, "schema_hash": SCHEMA_HASH}
