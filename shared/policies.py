"""Baseline policies: always HOLD, uniform random legal action, a momentum rule, and the oracle.

A policy maps a batch of observations (n, 32, 15), their legal-action masks (n, 4) and the bar index
of each row to one action per row. Every service evaluates agents through this same interface.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol

import numpy as np

from shared.reward import Action
from shared.schema import N_MARKET
from shared.search import SearchConfig, search
from shared.synth import oracle_actions

if TYPE_CHECKING:
    from shared.model.inference import ModelFunctions

# Feature columns the momentum rule reads from the current (last) window row.
_POSITION_IN_RANGE = 0
_MOMENTUM_60 = 1
_SIDE = 9


class Policy(Protocol):
    name: str

    def act(self, observation: np.ndarray, legal: np.ndarray, bars: np.ndarray) -> np.ndarray: ...


class HoldPolicy:
    name = "hold"

    def act(self, observation: np.ndarray, legal: np.ndarray, bars: np.ndarray) -> np.ndarray:
        return np.zeros(len(legal), dtype=np.int64)


class RandomPolicy:
    """Uniformly random among the legal actions of each row; seeded, so runs repeat exactly."""

    name = "random"

    def __init__(self, seed: int = 0) -> None:
        self.rng = np.random.default_rng(seed)

    def act(self, observation: np.ndarray, legal: np.ndarray, bars: np.ndarray) -> np.ndarray:
        # Independent uniform keys, masked: the argmax is uniform over the legal actions.
        keys = self.rng.random(legal.shape) + legal
        return np.argmax(keys, axis=1)


class MomentumPolicy:
    """Trend following on the features: enter when the 60-bar momentum is near the top (bottom) of
    its 60-bar range and price is high (low) in its 60-bar range; exit when price crosses back
    through the middle of the range."""

    name = "momentum"

    def __init__(self, enter: float = 0.9, exit_level: float = 0.5) -> None:
        self.enter = enter
        self.exit_level = exit_level

    def act(self, observation: np.ndarray, legal: np.ndarray, bars: np.ndarray) -> np.ndarray:
        now = observation[:, -1, :]
        side = now[:, _SIDE]
        momentum = now[:, _MOMENTUM_60]
        in_range = now[:, _POSITION_IN_RANGE]
        actions = np.full(len(now), Action.HOLD, dtype=np.int64)
        flat = side == 0
        actions[flat & (momentum >= self.enter) & (in_range >= self.enter)] = Action.BUY
        actions[flat & (momentum <= 1 - self.enter) & (in_range <= 1 - self.enter)] = Action.SELL
        actions[(side > 0) & (in_range < self.exit_level)] = Action.CLOSE
        actions[(side < 0) & (in_range > self.exit_level)] = Action.CLOSE
        return actions


class OraclePolicy:
    """Knows the synthetic market's hidden regime at every bar: rides each trend from its onset.

    ``regime[b]`` (+1 up, -1 down, 0 none) drives the move from bar b to b+1.
    """

    name = "oracle"

    def __init__(self, regime: np.ndarray) -> None:
        self.regime = np.asarray(regime, dtype=np.int8)

    def act(self, observation: np.ndarray, legal: np.ndarray, bars: np.ndarray) -> np.ndarray:
        return oracle_actions(self.regime[bars], observation[:, -1, _SIDE].astype(np.int8))


BASELINES = ("hold", "random", "momentum")


class SearchPolicy:
    """The agent: the stochastic MCTS over a model, greedy by visits (the serving search)."""

    name = "muzero"

    def __init__(self, model: ModelFunctions, config: SearchConfig | None = None) -> None:
        self.model = model
        self.config = config or SearchConfig.serving()

    def act(self, observation: np.ndarray, legal: np.ndarray, bars: np.ndarray) -> np.ndarray:
        if not self.config.allow_entries and not observation[:, -1, N_MARKET].any():
            # A closed entry gate with every root flat: the search could only answer HOLD.
            return np.zeros(len(observation), dtype=np.int64)
        return search(self.model, observation, self.config).action
