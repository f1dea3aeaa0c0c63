"""The names the rest of the code base imports about actions and rewards, from the rulebook
(``shared.trading``): the rules are defined in ``shared.trading.rules``, the rewards in
``shared.trading.rewards``; nothing is defined here."""

from __future__ import annotations

from shared.trading.rewards import DEFAULT_REWARD, REWARDS, amddp1, reward_name
from shared.trading.rules import (
    ACTIONS,
    N_ACTIONS,
    Action,
    legal_actions,
)

__all__ = [
    "ACTIONS",
    "DEFAULT_REWARD",
    "N_ACTIONS",
    "REWARDS",
    "Action",
    "amddp1",
    "legal_actions",
    "reward_name",
]
