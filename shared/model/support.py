"""MuZero's invertible value transform and two-hot categorical targets over an integer support."""

from __future__ import annotations

import torch

EPSILON = 0.001


def transform(x: torch.Tensor) -> torch.Tensor:
    """h(x) = sign(x) (sqrt(|x| + 1) - 1) + eps x."""
    return torch.sign(x) * (torch.sqrt(torch.abs(x) + 1.0) - 1.0) + EPSILON * x


def inverse_transform(y: torch.Tensor) -> torch.Tensor:
    """The exact inverse of ``transform``."""
    a = torch.abs(y)
    root = (torch.sqrt(1.0 + 4.0 * EPSILON * (a + 1.0 + EPSILON)) - 1.0) / (2.0 * EPSILON)
    return torch.sign(y) * (root * root - 1.0)


def two_hot(y: torch.Tensor, support_size: int) -> torch.Tensor:
    """(..., 2 * support_size + 1) probabilities on the two atoms around y (clipped to the support)."""
    y = torch.clamp(y, -support_size, support_size)
    low = torch.floor(y)
    high_weight = y - low
    index = (low + support_size).long()
    out = torch.zeros(*y.shape, 2 * support_size + 1, dtype=y.dtype, device=y.device)
    out.scatter_(-1, index.unsqueeze(-1), (1.0 - high_weight).unsqueeze(-1))
    upper = torch.clamp(index + 1, max=2 * support_size).unsqueeze(-1)
    out.scatter_add_(-1, upper, high_weight.unsqueeze(-1) * (index < 2 * support_size).unsqueeze(-1))
    return out


def scalar_to_target(value: torch.Tensor, support_size: int) -> torch.Tensor:
    """Scalar values -> two-hot targets of their transform."""
    return two_hot(transform(value), support_size)


def logits_to_scalar(logits: torch.Tensor, support_size: int) -> torch.Tensor:
    """Categorical logits over the transformed support -> scalar values."""
    support = torch.arange(-support_size, support_size + 1, dtype=logits.dtype, device=logits.device)
    expected = (torch.softmax(logits, dim=-1) * support).sum(-1)
    return inverse_transform(expected)
