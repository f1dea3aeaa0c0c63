"""The MuZero loss over K unrolled steps and one optimiser step (CONTRACT section 8)."""

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
    and outcomes; steps past a trajectory's end are masked out, unrolled steps weigh 1/K.

    Only the dynamics chain is sequential: the real outcome, not a predicted one, feeds each
    recurrent step. So the hidden states of all K + 1 steps are collected first, and the prediction
    and outcome networks then run once over all of them (larger, fewer matrix products; the same
    loss as calling them step by step).
    """
    support = model.cfg.support_size
    windows = torch.from_numpy(batch.windows)
    actions = torch.from_numpy(batch.actions)
    outcomes = torch.from_numpy(batch.outcomes)
    policy_t = torch.from_numpy(batch.target_policy)
    value_t = scalar_to_target(torch.from_numpy(batch.target_value), support)
    reward_t = torch.from_numpy(batch.target_reward)
    mask = torch.from_numpy(batch.mask)
    rows, k_steps = batch.actions.shape

    hidden = model.representation(windows)
    predicted = [hidden]  # states the prediction heads read: unscaled, as MuZero's unroll
    acting = []  # states the K actions were taken in: the scaled ones that feed each next step
    rewards = []
    for k in range(k_steps):
        x = torch.cat(
            [
                hidden,
                F.one_hot(actions[:, k], model.cfg.n_actions).to(hidden.dtype),
                F.one_hot(outcomes[:, k], model.cfg.n_outcomes).to(hidden.dtype),
            ],
            dim=1,
        )
        acting.append(hidden)
        next_hidden, reward = model.dynamics(x)
        rewards.append(reward)
        predicted.append(next_hidden)
        hidden = scale_gradient(next_hidden, cfg.dynamics_gradient_scale)
    # Step-major stacks: row k * rows + i is step k of sample i.
    all_hidden = torch.cat(predicted)  # ((K + 1) * B, H)
    acting_hidden = torch.cat(acting)  # (K * B, H)
    step_weight = torch.full((k_steps + 1,), 1.0 / k_steps)
    step_weight[0] = 1.0  # the initial inference counts fully, unrolled steps 1/K
    weights = (mask.T * step_weight[:, None]).reshape(-1)  # ((K + 1) * B,)
    acting_weights = (mask[:, :k_steps].T / k_steps).reshape(-1)

    policy_logits = model.policy(all_hidden)
    value_logits = model.value(all_hidden)
    policy_loss = _soft_cross_entropy(policy_logits, policy_t.transpose(0, 1).reshape(-1, 4)) * weights
    value_loss = (
        _soft_cross_entropy(value_logits, value_t.transpose(0, 1).reshape(-1, value_t.shape[-1])) * weights
    )
    outcome_logits = model.outcome_logits(acting_hidden, actions.T.reshape(-1))
    outcome_loss = F.cross_entropy(outcome_logits, outcomes.T.reshape(-1), reduction="none") * acting_weights
    reward_loss = (torch.cat(rewards) - reward_t.T.reshape(-1)) ** 2 * acting_weights
    parts = {
        "policy": policy_loss.sum() / rows,
        "value": value_loss.sum() / rows,
        "reward": reward_loss.sum() / rows,
        "outcome": outcome_loss.sum() / rows,
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
        # fused: one kernel over all parameters (measured 8 ms a step instead of 34 ms for the
        # default per-tensor loop on this CPU), the same update.
        self.optimizer = torch.optim.AdamW(
            model.parameters(), lr=cfg.learning_rate, weight_decay=cfg.weight_decay, fused=True
        )
        self.updates = 0

    def step(self, batch: TrainingBatch) -> LossParts:
        self.model.train()
        total, parts = muzero_loss(self.model, batch, self.cfg)
        self.optimizer.zero_grad(set_to_none=True)
        total.backward()
        norm = torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.cfg.gradient_clip, foreach=True)
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


def zero_output_heads(model: MuZeroNetwork) -> MuZeroNetwork:
    """Start value, reward, policy and outcome predictions neutral (value 0, reward 0, uniform).

    A randomly initialised 601-atom value head predicts values of about +-50 to +-90. The search
    backs those up into its root values, and n-step targets bootstrap from them (discount^10 keeps 97%),
    so a fresh run would learn its own initial noise instead of the returns. Zeroing the final layers
    is MuZero's usual start.
    """
    with torch.no_grad():
        for layer in (model.value.head, model.dynamics.reward, model.policy.head, model.outcome.head):
            layer.weight.zero_()
            layer.bias.zero_()
    return model
