"""The entry gate (no-edge discipline): the search's gate and its choice on validation sessions."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from shared.bars import Bars
from shared.dataset import build_dataset
from shared.env import MarketData
from shared.evaluation import evaluate_policy
from shared.model.config import ModelConfig
from shared.model.inference import make_model_functions
from shared.model.networks import MuZeroNetwork
from shared.policies import SearchPolicy
from shared.reward import Action
from shared.search import EntryGate, SearchConfig, search
from shared.search.search import gate_entries
from shared.sessions import tile_sessions
from shared.training.gate import GATE_MARGINS, choose_gate, has_edge, sweep_margins

HOLD, BUY, SELL, CLOSE = (int(a) for a in Action)
NAN = np.nan


def test_gate_entries_needs_the_margin_over_hold() -> None:
    chosen = np.array([BUY, SELL, BUY, CLOSE, HOLD, SELL])
    q = np.array(
        [
            [0.00, 0.25, 0.10, NAN],  # BUY beats HOLD by 0.25
            [0.00, 0.10, 0.15, NAN],  # SELL beats HOLD by 0.15
            [NAN, 0.05, 0.00, NAN],  # HOLD never visited: the root's value (0.0) stands for it
            [0.30, NAN, NAN, 0.40],  # in a position: a CLOSE is never gated
            [0.20, 0.10, 0.00, NAN],
            [0.50, 0.10, 0.45, NAN],  # SELL below HOLD
        ],
        np.float32,
    )
    root_value = np.zeros(6, np.float32)
    assert gate_entries(chosen, q, root_value, 0.0).tolist() == [BUY, SELL, BUY, CLOSE, HOLD, HOLD]
    assert gate_entries(chosen, q, root_value, 0.2).tolist() == [BUY, HOLD, HOLD, CLOSE, HOLD, HOLD]
    assert gate_entries(chosen, q, root_value, 0.1, allow_entries=False).tolist() == [HOLD] * 3 + [
        CLOSE,
        HOLD,
        HOLD,
    ]
    # One margin per row.
    margins = np.array([0.3, 0.1, 0.0, 0.0, 0.0, 0.0])
    assert gate_entries(chosen, q, root_value, margins).tolist() == [HOLD, SELL, BUY, CLOSE, HOLD, HOLD]


@pytest.fixture(scope="module")
def sample_market(gbpjpy_sample: Bars) -> tuple[MarketData, np.ndarray]:
    ds = build_dataset(gbpjpy_sample)
    market = MarketData("GBPJPY", ds.bars.ts, ds.bars.close, ds.features)
    return market, tile_sessions(ds.starts_of("validation"))[:4]


def test_the_served_search_applies_the_gate(sample_market: tuple[MarketData, np.ndarray]) -> None:
    market, starts = sample_market
    torch.manual_seed(5)
    fns = make_model_functions(MuZeroNetwork(ModelConfig(hidden=64, tcn_channels=16)).eval(), "auto")
    windows = market.windows[starts - 31].reshape(len(starts), 32, 15)
    windows = np.repeat(windows, 8, axis=0)  # 32 flat roots
    free = search(fns, windows, SearchConfig())
    assert free.root_q.shape == (32, 4) and np.isnan(free.root_q[:, CLOSE]).all()  # CLOSE illegal when flat
    closed_config = SearchConfig().gated(EntryGate(allow_entries=False))
    closed = search(fns, windows, closed_config)
    assert (closed.action == HOLD).all()
    # The backtest's agent skips a search that could only answer HOLD, with the same actions.
    assert np.array_equal(
        SearchPolicy(fns, closed_config).act(windows, np.ones((32, 4), bool), starts), closed.action
    )
    # The gate changes the action only, never the search itself.
    np.testing.assert_array_equal(closed.visit_counts, free.visit_counts)
    huge = search(fns, windows, SearchConfig().gated(EntryGate(margin=1e9)))
    assert (huge.action == HOLD).all()
    assert SearchConfig().gated(None) == SearchConfig()


def test_without_an_edge_the_gate_closes_and_the_agent_holds(
    sample_market: tuple[MarketData, np.ndarray],
) -> None:
    """A random network trades on real bars (and loses the spread); validation shows no edge at any
    margin, so the chosen gate is closed and the validation result is HOLD's: no trade at all."""
    market, starts = sample_market
    torch.manual_seed(3)
    model = MuZeroNetwork(ModelConfig(hidden=64, tcn_channels=16)).eval()
    fns = make_model_functions(model, "auto")
    choice = choose_gate(fns, market, starts, SearchConfig(num_simulations=8), min_trades=10)
    assert list(choice.tried) == sorted(GATE_MARGINS)  # every margin was tried
    assert choice.tried[0.0].metrics.trades > 0  # the ungated agent does trade
    assert not any(has_edge(r.metrics, 10) for r in choice.tried.values())
    assert choice.gate == EntryGate(allow_entries=False)
    assert choice.metrics.trades == 0 and choice.metrics.pips_per_session == 0.0
    entry = choice.manifest_entry()
    assert entry["entry_gate"] == {"margin": 0.0, "allow_entries": False}
    assert set(entry["gate_validation"]) == {f"{m:g}" for m in GATE_MARGINS}  # type: ignore[arg-type]
    assert EntryGate.from_manifest(entry) == choice.gate
    assert EntryGate.from_manifest({}) is None  # a manifest without a gate serves ungated


def test_a_sweep_in_one_batch_equals_each_margin_alone(sample_market: tuple[MarketData, np.ndarray]) -> None:
    market, starts = sample_market
    torch.manual_seed(3)
    fns = make_model_functions(MuZeroNetwork(ModelConfig(hidden=64, tcn_channels=16)).eval(), "auto")
    config = SearchConfig(num_simulations=8)
    swept = sweep_margins(fns, market, starts, config, (0.1, 0.4))
    for margin, result in swept.items():
        alone = evaluate_policy(market, starts, SearchPolicy(fns, config.gated(EntryGate(margin=margin))))
        assert result.trades.rows() == alone.trades.rows(), margin
        assert np.array_equal(result.trades.session, alone.trades.session)
        assert np.array_equal(result.action_counts, alone.action_counts)
        assert np.array_equal(result.flat_action_counts, alone.flat_action_counts)
        assert result.metrics == alone.metrics
    assert swept[0.1].metrics.trades > 0
