"""The MuZero loss over K unrolled steps and one optimiser step (SPEC section 8)."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch.nn import functional as F

from shared.model.networks import MuZeroNetwork
from shared.model.support import scalar_to_target
from shared.training.batch import TrainingBatch
from shared.training.config import TrainingConfig


def scale_gradient(x: torch.Tensor, scale: float) -> torch.Tensor:
    """Identity forward; the backward gradient is multiplied by ``scale``."""
    return x * scale + x.detach() * (1.0 - scale)


@dataclass(frozen=True)
class LossParts:
    total: float
    policy: float
    value: float
    reward: float
    outcome: float
    gradient_norm: float


def _soft_cross_entropy(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    return -(target * F.log_softmax(logits, dim=-1)).sum(-1)


def muzero_loss(
    model: MuZeroNetwork, batch: TrainingBatch, cfg: TrainingConfig
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Weighted sum of policy, value, reward and outcome losses, unrolled along the real actions
    and outcomes; steps past a trajectory's end are masked out, unrolled steps weigh 1/K."""
    support = model.cfg.support_size
    windows = torch.from_numpy(batch.windows)
    actions = torch.from_numpy(batch.actions)
    outcomes = torch.from_numpy(batch.outcomes)
    policy_t = torch.from_numpy(batch.target_policy)
    value_t = scalar_to_target(torch.from_numpy(batch.target_value), support)
    reward_t = torch.from_numpy(batch.target_reward)
    mask = torch.from_numpy(batch.mask)
    k_steps = batch.actions.shape[1]

    initial = model.initial_inference(windows)
    hidden = initial.hidden
    policy_loss = _soft_cross_entropy(initial.policy_logits, policy_t[:, 0]) * mask[:, 0]
    value_loss = _soft_cross_entropy(initial.value_logits, value_t[:, 0]) * mask[:, 0]
    reward_loss = torch.zeros_like(policy_loss)
    outcome_loss = torch.zeros_like(policy_loss)
    for k in range(k_steps):
        step_mask = mask[:, k]  # reward and outcome of the action taken at t+k
        next_mask = mask[:, k + 1]
        outcome_logits = model.outcome_logits(hidden, actions[:, k])
        outcome_loss = (
            outcome_loss
            + F.cross_entropy(outcome_logits, outcomes[:, k], reduction="none") * step_mask / k_steps
        )
        step = model.recurrent_inference(hidden, actions[:, k], outcomes[:, k])
        reward_loss = reward_loss + (step.reward - reward_t[:, k]) ** 2 * step_mask / k_steps
        policy_loss = (
            policy_loss + _soft_cross_entropy(step.policy_logits, policy_t[:, k + 1]) * next_mask / k_steps
        )
        value_loss = (
            value_loss + _soft_cross_entropy(step.value_logits, value_t[:, k + 1]) * next_mask / k_steps
        )
        hidden = scale_gradient(step.hidden, cfg.dynamics_gradient_scale)
    parts = {
        "policy": policy_loss.mean(),
        "value": value_loss.mean(),
        "reward": reward_loss.mean(),
        "outcome": outcome_loss.mean(),
    }
    total = (
        cfg.policy_weight * parts["policy"]
        + cfg.value_weight * parts["value"]
        + cfg.reward_weight * parts["reward"]
        + cfg.outcome_weight * parts["outcome"]
    )
    return total, parts


class Learner:
    """AdamW with gradient clipping over ``muzero_loss``."""

    def __init__(self, model: MuZeroNetwork, cfg: TrainingConfig) -> None:
        self.model = model
        self.cfg = cfg
        self.optimizer = torch.optim.AdamW(
            model.parameters(), lr=cfg.learning_rate, weight_decay=cfg.weight_decay
        )
        self.updates = 0

    def step(self, batch: TrainingBatch) -> LossParts:
        self.model.train()
        total, parts = muzero_loss(self.model, batch, self.cfg)
        self.optimizer.zero_grad(set_to_none=True)
        total.backward()
        norm = torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.cfg.gradient_clip)
        self.optimizer.step()
        self.updates += 1
        return LossParts(
            total=total.item(),
            policy=parts["policy"].item(),
            value=parts["value"].item(),
            reward=parts["reward"].item(),
            outcome=parts["outcome"].item(),
            gradient_norm=norm.item(),
        )
