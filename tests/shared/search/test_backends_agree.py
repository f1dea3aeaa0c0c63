"""The search decides the same whichever inference path runs the networks (real windows)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from shared.bars import Bars
from shared.dataset import build_dataset
from shared.env import MarketData, TradingEnv
from shared.model.inference import TorchFunctions, make_model_functions
from shared.model.networks import MuZeroNetwork
from shared.search import SearchConfig, search


def real_windows(bars: Bars, count: int, seed: int) -> np.ndarray:
    """Windows of the real sample at random bars, with flat, long and short positions."""
    ds = build_dataset(bars)
    market = MarketData(bars.instrument, bars.ts, bars.close, ds.features)
    env = TradingEnv(market)
    rng = np.random.default_rng(seed)
    env.reset(rng.choice(ds.session_starts, size=count, replace=False))
    for _ in range(40):  # random entries and exits so a share of the rows hold positions
        legal = env.legal_actions()
        keys = rng.random(legal.shape) * legal * np.array([8.0, 1.0, 1.0, 1.0])
        env.step(np.argmax(keys, axis=1))
    return env.observation().copy()


@pytest.fixture(scope="module")
def model() -> MuZeroNetwork:
    torch.manual_seed(0)
    return MuZeroNetwork().eval()


@pytest.fixture(scope="module")
def windows(gbpjpy_sample: Bars) -> np.ndarray:
    w = real_windows(gbpjpy_sample, 48, seed=5)
    sides = w[:, -1, 9]
    assert (sides == 0).any() and (sides != 0).any()
    return w


def test_fast_paths_decide_like_the_torch_reference(model: MuZeroNetwork, windows: np.ndarray) -> None:
    config = SearchConfig(num_simulations=25)
    reference = search(TorchFunctions(model), windows, config)
    fast = make_model_functions(model, backend="auto")
    batched = search(fast, windows, config)
    assert np.array_equal(batched.action, reference.action)
    assert np.array_equal(batched.visit_counts, reference.visit_counts)
    np.testing.assert_allclose(batched.root_value, reference.root_value, rtol=1e-4, atol=1e-3)
    for b in range(0, len(windows), 6):  # batch 1 runs the fused per-row kernels
        single = search(fast, windows[b : b + 1], config)
        assert single.action[0] == reference.action[b]
        assert single.visit_counts[0].tolist() == reference.visit_counts[b].tolist()
