"""No-edge discipline: the entry gate a checkpoint is served with, chosen on the validation split.

An agent must not pay the spread for nothing. At each validation the trainer runs the serving search
over the validation sessions with an entry margin: an entry is taken only when its searched Q beats
HOLD's by the margin (``shared.search.search.gate_entries``). The gate opens at the smallest margin
whose validation shows an edge (the 95% bootstrap interval of the expectancy lies above 0, over at
least ``min_trades`` trades). Where none does, the gate closes and the agent holds. The gate goes
into the checkpoint's manifest, and every consumer (``smz evaluate --checkpoint``, the inference
service) searches with it.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np

from shared.env import TRADE_COLUMNS, EnvConfig, MarketData, TradeLog
from shared.evaluation import EvaluationResult, evaluate_policy
from shared.metrics import TradeMetrics, trade_metrics
from shared.model.inference import ModelFunctions
from shared.policies import HoldPolicy, SearchPolicy
from shared.reward import N_ACTIONS
from shared.schema import N_MARKET
from shared.search import EntryGate, SearchConfig, search
from shared.search.search import gate_entries

# Candidate margins in reward units (equity reward: 1 = 10 pips): 0 enters whenever the search
# prefers an entry; the others ask for 1, 2 and 4 pips of searched advantage over holding.
GATE_MARGINS: tuple[float, ...] = (0.0, 0.1, 0.2, 0.4)


@dataclass(frozen=True)
class GateChoice:
    gate: EntryGate
    tried: dict[float, EvaluationResult]  # validation at each margin tried, in order
    result: EvaluationResult  # validation at the chosen gate (a closed gate: HOLD throughout)

    @property
    def metrics(self) -> TradeMetrics:
        return self.result.metrics

    def manifest_entry(self) -> dict[str, object]:
        """The manifest's ``serving`` section: the gate, and each margin's validation in brief."""
        return {
            "entry_gate": self.gate.model_dump(),
            "gate_validation": {
                f"{margin:g}": {
                    "trades": r.metrics.trades,
                    "expectancy_pips": round(r.metrics.expectancy_pips, 4),
                    "expectancy_ci95": [round(v, 4) for v in r.metrics.expectancy_ci95],
                    "pips_per_session": round(r.metrics.pips_per_session, 4),
                }
                for margin, r in self.tried.items()
            },
        }


def has_edge(metrics: TradeMetrics, min_trades: int) -> bool:
    """An edge is claimed only when the expectancy's 95% interval lies above 0 over enough trades."""
    return metrics.trades >= max(min_trades, 1) and metrics.expectancy_ci95[0] > 0.0


def choose_gate(
    model: ModelFunctions,
    market: MarketData,
    starts: np.ndarray,
    config: SearchConfig,
    min_trades: int,
    margins: tuple[float, ...] = GATE_MARGINS,
    env_config: EnvConfig | None = None,
) -> GateChoice:
    """Validate at the smallest margin; with an edge there, open the gate at it (one validation run, the
    usual case of a model that learned). Otherwise validate every other margin together, in one
    lockstep run, and open the gate at the smallest margin with an edge; where none has one, close it."""
    ordered = sorted(margins)
    first = evaluate_policy(
        market, starts, SearchPolicy(model, config.gated(EntryGate(margin=ordered[0]))), env_config
    )
    tried = {ordered[0]: first}
    if has_edge(first.metrics, min_trades):
        return GateChoice(EntryGate(margin=ordered[0]), tried, first)
    if len(ordered) > 1:
        tried.update(sweep_margins(model, market, starts, config, tuple(ordered[1:]), env_config))
    for margin in ordered[1:]:
        if has_edge(tried[margin].metrics, min_trades):
            return GateChoice(EntryGate(margin=margin), tried, tried[margin])
    # Closed: the agent holds throughout, which is exactly the HOLD baseline on these sessions.
    return GateChoice(
        EntryGate(allow_entries=False), tried, evaluate_policy(market, starts, HoldPolicy(), env_config)
    )


class _MarginSweepPolicy:
    """The serving search with one entry margin per row, counting each row's decisions."""

    name = "muzero"

    def __init__(self, model: ModelFunctions, config: SearchConfig, margins: np.ndarray) -> None:
        self.model = model
        self.config = config.model_copy(update={"entry_margin": None, "allow_entries": True})
        self.margins = margins
        self.counts = np.zeros((len(margins), N_ACTIONS), np.int64)
        self.flat_counts = np.zeros((len(margins), N_ACTIONS), np.int64)

    def act(self, observation: np.ndarray, legal: np.ndarray, bars: np.ndarray) -> np.ndarray:
        out = search(self.model, observation, self.config)
        actions = gate_entries(out.action, out.root_q, out.root_value, self.margins)
        rows = np.arange(len(actions))
        self.counts[rows, actions] += 1
        flat = observation[:, -1, N_MARKET] == 0
        self.flat_counts[rows[flat], actions[flat]] += 1
        return actions


def sweep_margins(
    model: ModelFunctions,
    market: MarketData,
    starts: np.ndarray,
    config: SearchConfig,
    margins: tuple[float, ...],
    env_config: EnvConfig | None = None,
) -> dict[float, EvaluationResult]:
    """Validation at several margins in one lockstep run of ``len(margins) * len(starts)`` sessions
    (a batch of all of them per search step), split back into one result per margin."""
    starts = np.asarray(starts, dtype=np.int64)
    n = len(starts)
    policy = _MarginSweepPolicy(model, config, np.repeat(np.asarray(margins, np.float64), n))
    whole = evaluate_policy(market, np.tile(starts, len(margins)), policy, env_config).trades
    results = {}
    for i, margin in enumerate(margins):
        mine = (whole.session >= i * n) & (whole.session < (i + 1) * n)
        trades = TradeLog(whole.instrument, *(getattr(whole, c)[mine] for c in TRADE_COLUMNS[1:]))
        trades = replace(trades, session=trades.session - i * n)
        counts = policy.counts[i * n : (i + 1) * n].sum(axis=0)
        flat_counts = policy.flat_counts[i * n : (i + 1) * n].sum(axis=0)
        metrics = trade_metrics(
            trades.pnl_pips, n, counts, trades.session, trades.side, flat_action_counts=flat_counts
        )
        results[margin] = EvaluationResult(metrics, trades, counts, flat_counts)
    return results
