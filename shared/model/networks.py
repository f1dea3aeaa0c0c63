"""The six networks of CONTRACT section 6 and the MuZero-style entry points that use them.

- initial inference: window -> hidden, policy logits, value logits
- recurrent inference: (hidden, action, outcome) -> next hidden, reward, policy logits, value logits
- outcome probabilities for (hidden, action): the chance nodes' distribution over UP/NEUTRAL/DOWN

Actions and outcomes enter as one-hot vectors (concatenated to the hidden state), exactly as
CONTRACT section 6 writes them; the fast inference path in ``shared.model.inference`` folds them into a
gather.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import nn
from torch.nn import functional as F

from shared.model.config import ModelConfig


class MLPResidualBlock(nn.Module):
    """Linear, LayerNorm, ReLU, Dropout, Linear, LayerNorm, add the input, ReLU."""

    def __init__(self, width: int, dropout: float) -> None:
        super().__init__()
        self.fc1 = nn.Linear(width, width)
        self.norm1 = nn.LayerNorm(width)
        self.dropout = nn.Dropout(dropout)
        self.fc2 = nn.Linear(width, width)
        self.norm2 = nn.LayerNorm(width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.dropout(F.relu(self.norm1(self.fc1(x))))
        return F.relu(x + self.norm2(self.fc2(y)))


def _blocks(count: int, width: int, dropout: float) -> nn.Sequential:
    return nn.Sequential(*(MLPResidualBlock(width, dropout) for _ in range(count)))


class CausalConv1d(nn.Module):
    """Conv1d over time that sees only the current and earlier steps (left padding)."""

    def __init__(self, c_in: int, c_out: int, kernel: int, dilation: int) -> None:
        super().__init__()
        self.pad = (kernel - 1) * dilation
        self.conv = nn.Conv1d(c_in, c_out, kernel, dilation=dilation)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(F.pad(x, (self.pad, 0)))


class RepresentationNetwork(nn.Module):
    """Causal TCN over the (32, 15) window, attention pooling over time, skip of the current row,
    residual blocks, then LayerNorm."""

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        channels = [cfg.n_features] + [cfg.tcn_channels] * len(cfg.tcn_dilations)
        self.convs = nn.ModuleList(
            CausalConv1d(c_in, c_out, cfg.tcn_kernel, d)
            for c_in, c_out, d in zip(channels[:-1], channels[1:], cfg.tcn_dilations, strict=True)
        )
        self.dropout = nn.Dropout(cfg.dropout)
        self.attention = nn.Linear(cfg.tcn_channels, 1)
        self.project = nn.Linear(cfg.tcn_channels + cfg.n_features, cfg.hidden)
        self.blocks = _blocks(cfg.representation_blocks, cfg.hidden, cfg.dropout)
        # The same normalisation as the dynamics' next hidden state, so the prediction heads and
        # the dynamics read one kind of state, whether it came from a window or from an unroll.
        self.norm = nn.LayerNorm(cfg.hidden)

    def forward(self, window: torch.Tensor) -> torch.Tensor:
        """window (B, 32, 15) -> hidden (B, H)."""
        x = window.transpose(1, 2)  # (B, C, T) for the convolutions
        for i, conv in enumerate(self.convs):
            y = self.dropout(F.relu(conv(x)))
            x = y if i == 0 else x + y  # residual once the channel count is fixed
        x = x.transpose(1, 2)  # (B, T, C)
        weights = torch.softmax(self.attention(x).squeeze(-1), dim=1)  # over the 32 steps
        pooled = torch.einsum("bt,btc->bc", weights, x)
        return self.norm(self.blocks(self.project(torch.cat([pooled, window[:, -1, :]], dim=1))))


class OutcomeNetwork(nn.Module):
    """[hidden, one-hot action] -> logits over UP, NEUTRAL, DOWN."""

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.project = nn.Linear(cfg.hidden + cfg.n_actions, cfg.hidden)
        self.blocks = _blocks(cfg.outcome_blocks, cfg.hidden, cfg.dropout)
        self.head = nn.Linear(cfg.hidden, cfg.n_outcomes)

    def forward(self, hidden_action: torch.Tensor) -> torch.Tensor:
        return self.head(self.blocks(self.project(hidden_action)))


class DynamicsNetwork(nn.Module):
    """[hidden, one-hot action, one-hot outcome] -> next hidden (Linear + LayerNorm), reward."""

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.project = nn.Linear(cfg.hidden + cfg.n_actions + cfg.n_outcomes, cfg.hidden)
        self.blocks = _blocks(cfg.dynamics_blocks, cfg.hidden, cfg.dropout)
        self.next_hidden = nn.Linear(cfg.hidden, cfg.hidden)
        self.next_norm = nn.LayerNorm(cfg.hidden)
        self.reward = nn.Linear(cfg.hidden, 1)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = self.blocks(self.project(x))
        return self.next_norm(self.next_hidden(x)), self.reward(x).squeeze(-1)


class HeadNetwork(nn.Module):
    """hidden -> ``n_blocks`` blocks -> ``Linear(hidden, outputs)``: the prediction heads."""

    def __init__(self, cfg: ModelConfig, n_blocks: int, outputs: int) -> None:
        super().__init__()
        self.blocks = _blocks(n_blocks, cfg.hidden, cfg.dropout)
        self.head = nn.Linear(cfg.hidden, outputs)

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        return self.head(self.blocks(hidden))


class PolicyNetwork(HeadNetwork):
    """Logits over the actions."""

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__(cfg, cfg.policy_blocks, cfg.n_actions)


class ValueNetwork(HeadNetwork):
    """Logits over the 601 atoms of the transformed value support."""

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__(cfg, cfg.value_blocks, cfg.n_atoms)


class AfterstateNetwork(nn.Module):
    """[hidden, one-hot action] -> afterstate (the state after acting, before the market moves)."""

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.project = nn.Linear(cfg.hidden + cfg.n_actions, cfg.hidden)
        self.blocks = _blocks(cfg.afterstate_blocks, cfg.hidden, cfg.dropout)
        self.norm = nn.LayerNorm(cfg.hidden)

    def forward(self, hidden_action: torch.Tensor) -> torch.Tensor:
        return self.norm(self.blocks(self.project(hidden_action)))


class InitialOutput(NamedTuple):
    hidden: torch.Tensor  # (B, H)
    policy_logits: torch.Tensor  # (B, A)
    value_logits: torch.Tensor  # (B, atoms)


class RecurrentOutput(NamedTuple):
    hidden: torch.Tensor
    reward: torch.Tensor  # (B,)
    policy_logits: torch.Tensor
    value_logits: torch.Tensor


class MuZeroNetwork(nn.Module):
    """The six networks together, with the MuZero entry points."""

    def __init__(self, cfg: ModelConfig | None = None) -> None:
        super().__init__()
        self.cfg = cfg or ModelConfig()
        self.representation = RepresentationNetwork(self.cfg)
        self.outcome = OutcomeNetwork(self.cfg)
        self.dynamics = DynamicsNetwork(self.cfg)
        self.policy = PolicyNetwork(self.cfg)
        self.value = ValueNetwork(self.cfg)
        self.afterstate = AfterstateNetwork(self.cfg)

    def _one_hot(self, index: torch.Tensor, size: int) -> torch.Tensor:
        return F.one_hot(index.long(), size).to(torch.float32)

    def initial_inference(self, window: torch.Tensor) -> InitialOutput:
        hidden = self.representation(window)
        return InitialOutput(hidden, self.policy(hidden), self.value(hidden))

    def outcome_logits(self, hidden: torch.Tensor, action: torch.Tensor) -> torch.Tensor:
        return self.outcome(torch.cat([hidden, self._one_hot(action, self.cfg.n_actions)], dim=1))

    def outcome_probabilities(self, hidden: torch.Tensor, action: torch.Tensor) -> torch.Tensor:
        return torch.softmax(self.outcome_logits(hidden, action), dim=-1)

    def recurrent_inference(
        self, hidden: torch.Tensor, action: torch.Tensor, outcome: torch.Tensor
    ) -> RecurrentOutput:
        x = torch.cat(
            [
                hidden,
                self._one_hot(action, self.cfg.n_actions),
                self._one_hot(outcome, self.cfg.n_outcomes),
            ],
            dim=1,
        )
        next_hidden, reward = self.dynamics(x)
        return RecurrentOutput(next_hidden, reward, self.policy(next_hidden), self.value(next_hidden))

    def afterstate_of(self, hidden: torch.Tensor, action: torch.Tensor) -> torch.Tensor:
        return self.afterstate(torch.cat([hidden, self._one_hot(action, self.cfg.n_actions)], dim=1))


def parameter_count(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def parameter_counts_by_network(model: MuZeroNetwork) -> dict[str, int]:
    return {
        name: parameter_count(getattr(model, name))
        for name in ("representation", "outcome", "dynamics", "policy", "value", "afterstate")
    }
