"""Search parameters (SPEC section 7)."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field


class SearchConfig(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    num_simulations: int = Field(25, ge=1)  # 25 when serving, 10 when collecting
    pb_c_init: float = 1.25  # c1
    pb_c_base: float = 19652.0  # c2
    depth_limit: int = Field(3, ge=1)  # decision levels below the root; the value head bootstraps there
    discount: float = 0.997
    dirichlet_alpha: float = 1.0
    dirichlet_fraction: float = 0.5
    add_noise: bool = False  # root Dirichlet noise: training only
    temperature: float = 0.0  # visit-count temperature; 0 picks the most visited action
    # Share of the roots holding a position that get the noise and the temperature (SPEC: all, 1.0);
    # the others act greedily. Flat roots always explore. Below 1, a held position is managed by the
    # policy being learned, with an exploratory decision every 1 / share bars instead of every bar
    # (docs/TRAINING.md, session 4).
    explore_in_position: float = Field(1.0, ge=0.0, le=1.0)

    @classmethod
    def serving(cls) -> SearchConfig:
        return cls(num_simulations=25, add_noise=False, temperature=0.0)

    @classmethod
    def collecting(cls, temperature: float) -> SearchConfig:
        return cls(num_simulations=10, add_noise=True, temperature=temperature)
