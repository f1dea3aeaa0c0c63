"""Training hyper-parameters (SPEC section 8); every default from the contract."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from shared.env import EnvConfig
from shared.search import SearchConfig


class TrainingConfig(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    batch_size: int = Field(64, ge=1)
    unroll_steps: int = Field(5, ge=1)  # K
    td_steps: int = Field(10, ge=1)  # n of the n-step value target
    discount: float = 0.997
    learning_rate: float = 0.002
    weight_decay: float = 1e-5
    gradient_clip: float = 1.0
    policy_weight: float = 0.25
    value_weight: float = 0.25
    reward_weight: float = 0.5
    outcome_weight: float = 1.0
    dynamics_gradient_scale: float = 0.5  # MuZero: halve the gradient through each recurrent step
    initial_temperature: float = 10.0
    final_temperature: float = 1.0
    temperature_decay_episodes: int = 50_000
    replay_capacity: int = 10_000
    replay_min_size: int = 100
    trade_quota: float = 0.30
    collect_simulations: int = 10
    validation_simulations: int = 25
    # The reward self-play learns from: "spec" (SPEC section 5) or "pips" (equity change per step,
    # opt-in; see shared.env.EnvConfig and docs/TRAINING.md).
    reward: Literal["spec", "pips"] = "spec"
    # Share of each batch unrolled from just before a BUY, SELL or CLOSE (ReplayBuffer.sample_positions);
    # 0 samples every stored step alike.
    event_share: float = Field(0.0, ge=0.0, le=1.0)
    pips_per_reward: float = Field(10.0, gt=0)
    # Share of self-play's in-position decisions that explore (noise, temperature); SPEC: all (1.0).
    explore_in_position: float = Field(1.0, ge=0.0, le=1.0)

    def env_config(self) -> EnvConfig:
        return EnvConfig(reward=self.reward, pips_per_reward=self.pips_per_reward)

    @classmethod
    def recipe(cls, name: str, **overrides: object) -> TrainingConfig:
        """A named set of defaults (``RECIPES``), then ``overrides``: ``recipe("pips", td_steps=10)``."""
        if name not in RECIPES:
            raise ValueError(f"unknown training recipe {name!r}; choose from {sorted(RECIPES)}")
        return cls(**{**RECIPES[name], **overrides})

    def collect_search(self, episodes: int) -> SearchConfig:
        """Self-play's search after this many episodes: noise, the scheduled temperature."""
        return SearchConfig(
            num_simulations=self.collect_simulations,
            add_noise=True,
            temperature=self.temperature(episodes),
            explore_in_position=self.explore_in_position,
        )

    def temperature(self, episodes: int) -> float:
        """Visit-count temperature: linear from initial to final over the decay episodes."""
        frac = min(max(episodes / self.temperature_decay_episodes, 0.0), 1.0)
        return self.initial_temperature + frac * (self.final_temperature - self.initial_temperature)


# Named training recipes: "spec" is the contract as written; "pips" is what learned the synthetic
# market's planted edge in a 25-minute run (docs/TRAINING.md, "The recipe that learns"): the
# equity-change reward, no policy loss (it collapses the representation), exploration of entries
# with greedy position management, and a temperature schedule sized for runs of tens of minutes.
RECIPES: dict[str, dict[str, object]] = {
    "spec": {},
    "pips": {
        "reward": "pips",
        "policy_weight": 0.0,
        "explore_in_position": 0.03,
        "initial_temperature": 1.0,
        "final_temperature": 0.25,
        "temperature_decay_episodes": 3000,
        "td_steps": 30,
        "event_share": 0.5,
    },
}
