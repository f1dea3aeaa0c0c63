"""Rewards of SPEC section 5: the action table and AMDDP1 of a closed trade."""

from __future__ import annotations

from enum import IntEnum
from typing import Final

import numpy as np


class Action(IntEnum):
    HOLD = 0
    BUY = 1
    SELL = 2
    CLOSE = 3


ACTIONS: Final = tuple(a.name for a in Action)
N_ACTIONS: Final = len(Action)

HOLD_FLAT_REWARD: Final = -0.05
HOLD_IN_POSITION_REWARD: Final = 0.0
OPEN_REWARD: Final = 1.0
OPEN_IN_POSITION_REWARD: Final = -1.0
CLOSE_FLAT_REWARD: Final = -0.5
REWARD_CLIP: Final = 3.0


def amddp1(pnl_pips: np.ndarray | float) -> np.ndarray:
    """Asymmetric reward of a closed trade's P&L in pips after spread (vectorised)."""
    p = np.asarray(pnl_pips, dtype=np.float64)
    a = -p
    gain = np.where(
        p < 10.0,
        1.0 + 0.05 * p,
        np.where(p < 30.0, 1.5 + 0.025 * (p - 10.0), 2.0 + np.tanh((p - 30.0) / 50.0)),
    )
    loss = np.where(
        a < 10.0,
        -1.0 - 0.1 * a,
        np.where(a < 30.0, -2.0 - 0.05 * (a - 10.0), -3.0 - np.tanh((a - 30.0) / 30.0)),
    )
    return np.where(p > 0.0, gain, loss)


def legal_actions(side: np.ndarray) -> np.ndarray:
    """(n, 4) bool: HOLD always; BUY and SELL only when flat; CLOSE only in a position."""
    side = np.asarray(side)
    flat = side == 0
    legal = np.empty((len(side), N_ACTIONS), dtype=bool)
    legal[:, Action.HOLD] = True
    legal[:, Action.BUY] = flat
    legal[:, Action.SELL] = flat
    legal[:, Action.CLOSE] = ~flat
    return legal
