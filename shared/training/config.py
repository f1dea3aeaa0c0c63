"""Training hyper-parameters (docs/CONTRACT.md, section 8) and the named recipes."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from shared.env import EnvConfig
from shared.reward import reward_name
from shared.search import SearchConfig


class TrainingConfig(BaseModel):
    """Every default is the recipe that learns (docs/TRAINING.md); ``recipe("seed")`` gives the seed's."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    batch_size: int = Field(64, ge=1)
    unroll_steps: int = Field(5, ge=1)  # K
    td_steps: int = Field(30, ge=1)  # n of the n-step value target (seed: 10)
    discount: float = 0.997
    learning_rate: float = 0.002
    weight_decay: float = 1e-5
    gradient_clip: float = 1.0
    # No policy loss by default: with it the representation collapsed (docs/TRAINING.md); the search
    # then chooses by its Q values, which the value, reward, outcome and dynamics losses train.
    policy_weight: float = 0.0  # seed: 0.25
    value_weight: float = 0.25
    reward_weight: float = 0.5
    outcome_weight: float = 1.0
    dynamics_gradient_scale: float = 0.5  # MuZero: halve the gradient through each recurrent step
    initial_temperature: float = 1.0  # seed: 10
    final_temperature: float = 0.25  # seed: 1
    temperature_decay_episodes: int = 3000  # seed: 50,000
    replay_capacity: int = 10_000
    replay_min_size: int = 100
    trade_quota: float = 0.30
    collect_simulations: int = 10
    validation_simulations: int = 25
    # The reward self-play learns from (shared.reward): "equity" or the seed's "amddp1".
    reward: Literal["equity", "amddp1"] = "equity"
    # Share of each batch unrolled from just before a BUY, SELL or CLOSE (ReplayBuffer.sample_positions);
    # 0 samples every stored step alike (seed: 0).
    event_share: float = Field(0.5, ge=0.0, le=1.0)
    pips_per_reward: float = Field(10.0, gt=0)
    # Share of self-play's in-position decisions that explore (noise, temperature); the rest act
    # greedily, so a held position is managed by the policy being learned (seed: all, 1.0).
    explore_in_position: float = Field(0.03, ge=0.0, le=1.0)

    @field_validator("reward", mode="before")
    @classmethod
    def _reward_name(cls, value: object) -> object:
        return reward_name(value) if isinstance(value, str) else value

    def env_config(self) -> EnvConfig:
        return EnvConfig(reward=self.reward, pips_per_reward=self.pips_per_reward)

    @classmethod
    def recipe(cls, name: str, **overrides: object) -> TrainingConfig:
        """A named set of defaults (``RECIPES``), then ``overrides``: ``recipe("seed", td_steps=12)``."""
        name = _LEGACY_RECIPE_NAMES.get(name, name)
        if name not in RECIPES:
            raise ValueError(f"unknown training recipe {name!r}; choose from {', '.join(RECIPES)}")
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


# Named training recipes. "equity" (the default, every TrainingConfig default) is what learns the
# synthetic market's planted edge on seeds it was never tuned on: the equity reward, no policy loss,
# exploration of entries with greedy position management, a temperature schedule sized for runs of
# tens of minutes. "seed" is the original design's values, kept for comparison; measured, it does not
# learn (docs/TRAINING.md).
DEFAULT_RECIPE = "equity"
RECIPES: dict[str, dict[str, object]] = {
    "equity": {},
    "seed": {
        "reward": "amddp1",
        "policy_weight": 0.25,
        "explore_in_position": 1.0,
        "initial_temperature": 10.0,
        "final_temperature": 1.0,
        "temperature_decay_episodes": 50_000,
        "td_steps": 10,
        "event_share": 0.0,
    },
}
_LEGACY_RECIPE_NAMES = {"pips": "equity", "spec": "seed"}
