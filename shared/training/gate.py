"""No-edge discipline: the entry gate a checkpoint is served with, chosen on the validation split.

An agent must not pay the spread for nothing. At each validation the trainer runs the serving search
over the validation sessions with an entry margin: an entry is taken only when its searched Q beats
HOLD's by the margin (``shared.search.search.gate_entries``). Margins are tried from the smallest up;
the gate opens at the first whose validation shows an edge (the 95% bootstrap interval of the
expectancy lies above 0, over at least ``min_trades`` trades). Where none does, the gate closes and
the agent holds. The gate goes into the checkpoint's manifest,
and every consumer (``smz evaluate --checkpoint``, the inference service) searches with it.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from shared.env import EnvConfig, MarketData
from shared.evaluation import EvaluationResult, evaluate_policy
from shared.metrics import TradeMetrics
from shared.model.inference import ModelFunctions
from shared.policies import HoldPolicy, SearchPolicy
from shared.search import EntryGate, SearchConfig

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
    """Validate at each margin in increasing order and open the gate at the first that shows an edge
    (so a model with an edge costs one validation, as before); where none does, close it."""
    tried: dict[float, EvaluationResult] = {}
    for margin in sorted(margins):
        policy = SearchPolicy(model, config.gated(EntryGate(margin=margin)))
        result = evaluate_policy(market, starts, policy, env_config)
        tried[margin] = result
        if has_edge(result.metrics, min_trades):
            return GateChoice(EntryGate(margin=margin), tried, result)
    # Closed: the agent holds throughout, which is exactly the HOLD baseline on these sessions.
    return GateChoice(
        EntryGate(allow_entries=False), tried, evaluate_policy(market, starts, HoldPolicy(), env_config)
    )
