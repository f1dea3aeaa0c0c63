"""The two rewards (docs/CONTRACT.md, section 5): their names, AMDDP1 and the reward of a step.

Two rewards, one per training run, recorded in the checkpoint's manifest:
- ``equity`` (the default): the change of the account's equity over the step (realised plus open P&L
  after spread, the spread paid when the position opens) in units of 10 pips, plus the penalties of
  invalid actions. A trade's rewards add up to its P&L / 10, so its optimum is the best trader's.
- ``amddp1`` (the seed's, kept for comparison): the step reward of the action (the rulebook's table)
  plus AMDDP1 of a closed trade, clipped to [-3, 3]. Its optimum is a scalper that takes the first
  fraction of a pip.

Both step rewards are written over arrays, a row per session: the vectorised environment calls them
with all its rows, the live position (``shared.position``) with one.
"""

from __future__ import annotations

from typing import Final

import numpy as np

from shared.trading.rules import REWARD_CLIP, STEP_REWARD

REWARDS: Final = ("equity", "amddp1")
DEFAULT_REWARD: Final = "equity"
# Names written by earlier releases (trainer.json of older checkpoints, old command lines).
_LEGACY_REWARD_NAMES: Final = {"pips": "equity", "spec": "amddp1"}


def reward_name(name: str) -> str:
    """The reward called ``name`` (earlier releases' names accepted); a ValueError says the choices."""
    name = _LEGACY_REWARD_NAMES.get(name, name)
    if name not in REWARDS:
        raise ValueError(f"unknown reward {name!r}; choose {' or '.join(REWARDS)}")
    return name


# AMDDP1 magnitude is piecewise linear in |p| up to 30 pips, then a tanh tail:
#   gains  (p > 0):  1 + 0.05 p (p < 10);  1.5 + 0.025 (p - 10) (p < 30);  2 + tanh((p - 30) / 50)
#   losses (a = -p): -1 - 0.1 a (a < 10);  -2 - 0.05 (a - 10) (a < 30);  -3 - tanh((a - 30) / 30)
_KNOTS = np.array([0.0, 10.0, 30.0])
_GAIN_AT_KNOTS = np.array([1.0, 1.5, 2.0])
_LOSS_AT_KNOTS = np.array([1.0, 2.0, 3.0])
_TAIL_START = 30.0
_GAIN_TAIL_SCALE = 50.0
_LOSS_TAIL_SCALE = 30.0


def amddp1(pnl_pips: np.ndarray | float) -> np.ndarray:
    """Asymmetric reward of a closed trade's P&L in pips after spread (CONTRACT section 5), vectorised.

    p <= 0 counts as a loss (AMDDP1(0) = -1).
    """
    p = np.asarray(pnl_pips, dtype=np.float64)
    gain = p > 0.0
    a = np.abs(p)
    magnitude = np.where(gain, np.interp(a, _KNOTS, _GAIN_AT_KNOTS), np.interp(a, _KNOTS, _LOSS_AT_KNOTS))
    magnitude += np.tanh(
        np.maximum(a - _TAIL_START, 0.0) / np.where(gain, _GAIN_TAIL_SCALE, _LOSS_TAIL_SCALE)
    )
    return np.where(gain, magnitude, -magnitude)


def amddp1_reward(
    key: np.ndarray, closed: np.ndarray, closed_pnl: np.ndarray, clip: float = REWARD_CLIP
) -> np.ndarray:
    """The ``amddp1`` reward of a step, a row per ``key`` (``step_key`` of the action taken): its step
    reward, plus AMDDP1 of the trade each row of ``closed`` closed at the step (P&L ``closed_pnl``; at
    most one a row, since a close leaves the row flat), clipped to +-``clip`` when a trade closed."""
    reward = STEP_REWARD[key]  # a new array: fancy indexing copies
    if len(closed):
        reward[closed] += amddp1(closed_pnl)
        np.minimum(reward, clip, out=reward)
        np.maximum(reward, -clip, out=reward)
    return reward


def equity_reward(
    penalty: np.ndarray | float,
    equity_before: np.ndarray | float,
    realised: np.ndarray | float,
    open_after: np.ndarray | float,
    pips_per_reward: float,
) -> np.ndarray | float:
    """The ``equity`` reward of a step: the penalty of an illegal action (``INVALID_PENALTY``) plus the
    change of the equity, in units of ``pips_per_reward``. The equity before is the open P&L at the
    step's mark; after, the P&L the step realised plus the open P&L at the next bar's mark."""
    return penalty + ((realised + open_after) - equity_before) / pips_per_reward
