"""Time to edge: wall seconds from an empty run directory until the default ``smz train --workers 2``
first validates at half the oracle's expectancy or more, on the synthetic market.

The market is made fresh (``smz synth``, fixed seed, 200,000 bars by default) and featurised; the
oracle runs over the same validation sessions the trainer validates on. Then ``smz train`` runs with
its defaults (only ``--workers`` and a time cap given) while this script follows its
``history.jsonl``; at the first validation record at or above half the oracle's expectancy (the
entry gate open) the trainer is stopped. The last line printed is one JSON object with
``seconds_to_half_oracle`` (null if the cap came first), ``episodes`` and ``updates``.
Target: at most 600 s on a 2-core machine (docs/BENCHMARKS.md).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from services.jobs.evaluate import make_policy
from services.jobs.features import run_features
from services.jobs.synth import run_synth
from services.trainer.settings import TrainerSettings
from shared.env import MarketData
from shared.evaluation import evaluate_policy
from shared.sessions import tile_sessions
from shared.store import Store

INSTRUMENT = "SYNTHJPY"


def oracle_on_validation(db: Path, sessions: int) -> float:
    """The oracle's expectancy on the sessions the trainer validates on (its first ``sessions``)."""
    with Store(db, read_only=True) as store:
        dataset = store.load_dataset(INSTRUMENT)
        oracle = make_policy("oracle", store, INSTRUMENT, dataset.bars.ts, 0)
    market = MarketData(INSTRUMENT, dataset.bars.ts, dataset.bars.close, dataset.features)
    starts = tile_sessions(dataset.starts_of("validation"))[:sessions]
    return evaluate_policy(market, starts, oracle).metrics.expectancy_pips


def follow(history: Path, target: float, proc: subprocess.Popen[bytes], began: float) -> dict[str, object]:
    """Poll the run's history until a validation reaches ``target`` or the trainer exits."""
    seen = 0
    validations: list[dict[str, float]] = []
    while True:
        lines = history.read_text().splitlines() if history.exists() else []
        for line in lines[seen:]:
            try:
                record = json.loads(line)
            except json.JSONDecodeError:
                break  # a line still being written: read it again next time
            seen += 1
            if record.get("kind") != "validation":
                continue
            elapsed = time.monotonic() - began
            row = {
                "seconds": round(elapsed, 1),
                "episodes": record["episodes"],
                "updates": record.get("updates"),
                "expectancy_pips": record["validation_expectancy_pips"],
                "trades": record["validation_trades"],
            }
            validations.append(row)
            print(f"validation at {elapsed:.0f} s: {row}", file=sys.stderr, flush=True)
            if (
                record["validation_expectancy_pips"] >= target
                and record.get("validation_entry_margin", 0) >= 0
            ):
                return {"reached": row, "validations": validations}
        if proc.poll() is not None:
            return {"reached": None, "validations": validations}
        time.sleep(1.0)


def main() -> dict[str, object]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bars", type=int, default=200_000)
    parser.add_argument("--seed", type=int, default=0, help="Seed of the synthetic market.")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--max-minutes", type=float, default=30.0, help="Stop the trainer after this.")
    parser.add_argument("--keep", type=Path, default=None, help="Keep the run directory here.")
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="smz-time-to-edge-"))
    db = work / "synth.duckdb"
    run_synth(db, INSTRUMENT, args.bars, args.seed)
    run_features(db, INSTRUMENT)
    sessions = TrainerSettings.model_fields["validation_sessions"].default
    oracle = oracle_on_validation(db, sessions)
    target = 0.5 * oracle
    print(
        f"oracle on the validation sessions: {oracle:+.2f} pips/trade; target {target:+.2f}", file=sys.stderr
    )

    out = args.keep or work / "run"
    smz = Path(sys.executable).with_name("smz")
    argv = [str(smz), "train", "--db", str(db), "--instrument", INSTRUMENT, "--out", str(out)]
    argv += ["--workers", str(args.workers), "--minutes", str(args.max_minutes)]
    env = {**os.environ, "SMZ_TRAINER_METRICS_PORT": "0"}
    began = time.monotonic()
    log = (work / "train.log").open("wb")
    proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, env=env)
    try:
        followed = follow(out / "history.jsonl", target, proc, began)
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                proc.kill()
        log.close()
    reached = followed["reached"]
    result = {
        "bench": "time_to_edge",
        "bars": args.bars,
        "seed": args.seed,
        "workers": args.workers,
        "oracle_expectancy_pips": round(oracle, 3),
        "target_expectancy_pips": round(target, 3),
        "seconds_to_half_oracle": reached["seconds"] if reached else None,  # type: ignore[index]
        "episodes": reached["episodes"] if reached else None,  # type: ignore[index]
        "updates": reached["updates"] if reached else None,  # type: ignore[index]
        "validations": followed["validations"],
        "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cpus",
        "python": platform.python_version(),
    }
    print(json.dumps(result))
    return result


if __name__ == "__main__":
    main()
