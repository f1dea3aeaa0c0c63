"""One config for every size in the model (CONTRACT section 6); stored in every checkpoint manifest."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict

from shared.reward import N_ACTIONS
from shared.schema import N_FEATURES, OUTCOMES, WINDOW


class ModelConfig(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    window: int = WINDOW
    n_features: int = N_FEATURES
    tcn_channels: int = 48
    tcn_kernel: int = 3
    tcn_dilations: tuple[int, ...] = (1, 2, 4)
    dropout: float = 0.1
    hidden: int = 256
    representation_blocks: int = 3
    outcome_blocks: int = 2
    dynamics_blocks: int = 3
    policy_blocks: int = 2
    value_blocks: int = 3
    afterstate_blocks: int = 2
    n_actions: int = N_ACTIONS
    n_outcomes: int = len(OUTCOMES)
    support_size: int = 300  # value atoms -support..support

    @property
    def n_atoms(self) -> int:
        return 2 * self.support_size + 1
