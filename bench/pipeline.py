"""Ingest plus features for the eight USDJPY years (about 2.9 million bars) into a fresh database.

Target: under 60 s in all on the 2-core reference machine. Prints one JSON line at the end.
"""

from __future__ import annotations

import json
import os
import platform
import resource
import sys
import tempfile
import time
from pathlib import Path

from services.jobs.features import run_features
from services.jobs.ingest import run_ingest

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "fx" / "USDJPY"


def main() -> dict[str, object]:
    files = sorted(DATA.glob("HISTDATA_COM_MT_USDJPY_M1*.zip"))
    if len(files) != 8:
        sys.exit(f"expected the eight USDJPY zips in {DATA}, found {len(files)}")
    with tempfile.TemporaryDirectory() as tmp:
        db = Path(tmp) / "bench.duckdb"
        t0 = time.perf_counter()
        summary = run_ingest(files, instrument="USDJPY", db=db, fmt="auto", tz=None, strict=False)
        t1 = time.perf_counter()
        features = run_features(db, "USDJPY")
        t2 = time.perf_counter()
    peak_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return {
        "bench": "pipeline",
        "bars": features["bars"],
        "rows_read": summary.rows_read,
        "duplicates": summary.duplicates,
        "ingest_seconds": round(t1 - t0, 2),
        "features_seconds": round(t2 - t1, 2),
        "seconds": round(t2 - t0, 2),
        "peak_rss_mb": round(peak_kb / 1024, 1),
        "machine": f"{platform.machine()} {os.cpu_count()} cpus, python {platform.python_version()}",
    }


if __name__ == "__main__":
    print(json.dumps(main()))
