"""The rulebook: actions, sides and the tables every part of the system reads.

Each table is a flat array indexed by ``step_key(action, in_position) = 2 * action + in_position``
(the action 0..3, and 1 when a position is open): the vectorised environment gathers a whole batch
with one fancy index, the numba search kernels read one entry, the live position one row. The rules
(SPEC section 5):

- HOLD is always legal; BUY and SELL only when flat (they open a long or a short); CLOSE only in a
  position. An illegal action changes nothing and pays its penalty.
- The step reward of the ``amddp1`` reward: HOLD flat -0.05, HOLD in a position 0, an entry +1, an
  illegal entry -1, CLOSE when flat -0.5; a close adds AMDDP1 of the trade (``shared.reward``).
  The ``equity`` reward pays the same penalties for illegal actions and the equity change otherwise.
"""

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
# Plain ints for numba kernels and hot numpy comparisons (an IntEnum member is slow to compare with).
HOLD, BUY, SELL, CLOSE = (int(a) for a in Action)


class Side(IntEnum):
    SHORT = -1
    FLAT = 0
    LONG = 1


SIDE_NAMES: Final = {Side.LONG: "long", Side.SHORT: "short", Side.FLAT: "flat"}


def side_name(side: int) -> str:
    """ "long", "short" or "flat"."""
    return SIDE_NAMES[Side(int(np.sign(side)))]


# Step rewards of the amddp1 reward and the penalties of illegal actions (both rewards).
HOLD_FLAT_REWARD: Final = -0.05
HOLD_IN_POSITION_REWARD: Final = 0.0
OPEN_REWARD: Final = 1.0
OPEN_IN_POSITION_REWARD: Final = -1.0
CLOSE_FLAT_REWARD: Final = -0.5
REWARD_CLIP: Final = 3.0

EVENT_NONE, EVENT_OPEN, EVENT_CLOSE = 0, 1, 2


def step_key(action: int | np.ndarray, in_position: bool | np.ndarray) -> int | np.ndarray:
    """The index of (action, in a position) in every table below."""
    return action * 2 + in_position


def _table(values: dict[tuple[Action, bool], float | bool | int], dtype: type) -> np.ndarray:
    table = np.zeros(2 * N_ACTIONS, dtype=dtype)
    for (action, in_position), value in values.items():
        table[2 * action + int(in_position)] = value
    table.flags.writeable = False
    return table


LEGAL: Final = _table(
    {
        (Action.HOLD, False): True,
        (Action.HOLD, True): True,
        (Action.BUY, False): True,
        (Action.SELL, False): True,
        (Action.CLOSE, True): True,
    },
    bool,
)
EVENT: Final = _table(
    {(Action.BUY, False): EVENT_OPEN, (Action.SELL, False): EVENT_OPEN, (Action.CLOSE, True): EVENT_CLOSE},
    np.int8,
)
# The side an opening action opens (0 for the others).
ENTRY_SIDE: Final = np.array([0, Side.LONG, Side.SHORT, 0], dtype=np.int8)
ENTRY_SIDE.flags.writeable = False
STEP_REWARD: Final = _table(
    {
        (Action.HOLD, False): HOLD_FLAT_REWARD,
        (Action.HOLD, True): HOLD_IN_POSITION_REWARD,
        (Action.BUY, False): OPEN_REWARD,
        (Action.BUY, True): OPEN_IN_POSITION_REWARD,
        (Action.SELL, False): OPEN_REWARD,
        (Action.SELL, True): OPEN_IN_POSITION_REWARD,
        (Action.CLOSE, False): CLOSE_FLAT_REWARD,
        (Action.CLOSE, True): 0.0,  # AMDDP1 of the trade is added when it closes
    },
    np.float64,
)
INVALID_PENALTY: Final = _table(
    {
        (Action.BUY, True): OPEN_IN_POSITION_REWARD,
        (Action.SELL, True): OPEN_IN_POSITION_REWARD,
        (Action.CLOSE, False): CLOSE_FLAT_REWARD,
    },
    np.float64,
)


def legal_actions(side: np.ndarray) -> np.ndarray:
    """(n, 4) bool: which actions are legal for each side."""
    in_position = (np.asarray(side) != 0).astype(np.int64)
    return LEGAL[np.arange(N_ACTIONS) * 2 + in_position[:, None]]


def side_after(side: int, action: int) -> int:
    """The side after ``action`` from ``side`` (an illegal action changes nothing)."""
    if not LEGAL[2 * action + (side != 0)]:
        return side
    if EVENT[2 * action + (side != 0)] == EVENT_CLOSE:
        return 0
    return int(ENTRY_SIDE[action]) or side
