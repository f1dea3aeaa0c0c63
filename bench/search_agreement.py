"""How often a candidate inference backend makes the same search decision as the fp32 reference.

Real windows: random bars of real GBPJPY 2017 (``../shared/data``, or the bundled sample), with flat,
long and short positions from random trading. A lower-precision serving path is acceptable only at
99% agreement or more. Weights: random (seed 0) or a checkpoint. Prints one JSON line at the end.

    .venv/bin/python bench/search_agreement.py --candidate numba_int8 [--windows 2000] [--checkpoint DIR]
"""

from __future__ import annotations

import argparse
import json
import zipfile
from pathlib import Path

import numpy as np
import torch

from shared.bars import Bars
from shared.dataset import build_dataset
from shared.env import MarketData, TradingEnv
from shared.ingest import parse_bars
from shared.model.checkpoint import load_checkpoint
from shared.model.checkpoint_root import resolve_checkpoint
from shared.model.inference import make_model_functions
from shared.model.networks import MuZeroNetwork
from shared.search import SearchConfig, search

REPO = Path(__file__).resolve().parents[1]
FULL_YEAR = REPO.parent / "shared" / "data" / "fx" / "GBPJPY" / "HISTDATA_COM_ASCII_GBPJPY_M1_2017.zip"
SAMPLE = REPO / "data" / "sample" / "HISTDATA_COM_ASCII_GBPJPY_M1_2017-01-sample.zip"


def load_bars() -> Bars:
    path = FULL_YEAR if FULL_YEAR.exists() else SAMPLE
    with zipfile.ZipFile(path) as archive:
        member = next(n for n in archive.namelist() if n.endswith(".csv"))
        parsed = parse_bars(archive.read(member), source=member)
    return Bars("GBPJPY", parsed.ts, parsed.open, parsed.high, parsed.low, parsed.close, parsed.volume)


def real_windows(count: int, seed: int) -> np.ndarray:
    bars = load_bars()
    ds = build_dataset(bars)
    market = MarketData(bars.instrument, bars.ts, bars.close, ds.features)
    env = TradingEnv(market)
    rng = np.random.default_rng(seed)
    env.reset(rng.choice(ds.session_starts, size=count, replace=False))
    for _ in range(rng.integers(20, 60)):
        legal = env.legal_actions()
        env.step(np.argmax(rng.random(legal.shape) * legal * np.array([8.0, 1.0, 1.0, 1.0]), axis=1))
    return env.observation().copy()


def main() -> dict[str, object]:
    parser = argparse.ArgumentParser()
    parser.add_argument("--candidate", required=True)
    parser.add_argument("--reference", default="torch_fast")
    parser.add_argument("--windows", type=int, default=2000)
    parser.add_argument("--simulations", type=int, default=25)
    parser.add_argument("--checkpoint", type=Path)
    args = parser.parse_args()
    if args.checkpoint:
        model = load_checkpoint(resolve_checkpoint(args.checkpoint)).model
        weights = str(args.checkpoint)
    else:
        torch.manual_seed(0)
        model = MuZeroNetwork().eval()
        weights = "random (seed 0)"
    windows = real_windows(args.windows, seed=11)
    config = SearchConfig(num_simulations=args.simulations)
    reference = search(make_model_functions(model, args.reference), windows, config)
    candidate_fns = make_model_functions(model, args.candidate, threads=1)
    # One window at a time: the candidate's small-batch kernels are what serving runs.
    actions = np.array(
        [search(candidate_fns, windows[i : i + 1], config).action[0] for i in range(len(windows))]
    )
    agree = float((actions == reference.action).mean())
    return {
        "bench": "search_agreement",
        "candidate": args.candidate,
        "reference": args.reference,
        "weights": weights,
        "windows": len(windows),
        "simulations": args.simulations,
        "decision_agreement": round(agree, 4),
        "meets_99_percent": agree >= 0.99,
    }


if __name__ == "__main__":
    print(json.dumps(main()))
