"""The rulebook: actions, sides and the tables every part of the system reads.

Each table is a flat array indexed by ``step_key(action, in_position) = 2 * action + in_position``
(the action 0..3, and 1 when a position is open): the vectorised environment gathers a whole batch
with one fancy index, the live position reads one row. The search reads the same rules arranged by
side (``LEGAL_BY_SIDE``, ``SIDE_AFTER``: row ``side + 1``), passed to its kernels as tables. The rules
(CONTRACT section 5):

- HOLD is always legal; BUY and SELL only when flat (they open a long or a short); CLOSE only in a
  position. An illegal action changes nothing and pays its step reward as a penalty.
- The step reward of the ``amddp1`` reward: HOLD flat -0.05, HOLD in a position 0, an entry +1, an
  illegal entry -1, CLOSE when flat -0.5; a close adds AMDDP1 of the trade (``shared.trading.rewards``).
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


def _table(dtype: type, *pairs: tuple[object, object]) -> np.ndarray:
    """A read-only table from one (flat, in a position) pair per action, in ``Action`` order."""
    table = np.array(pairs, dtype=dtype).reshape(2 * N_ACTIONS)  # row-major: 2 * action + in_position
    table.flags.writeable = False
    return table


# One (flat, in a position) pair per action: HOLD, BUY, SELL, CLOSE.
LEGAL: Final = _table(bool, (True, True), (True, False), (True, False), (False, True))
EVENT: Final = _table(
    np.int8,
    (EVENT_NONE, EVENT_NONE),
    (EVENT_OPEN, EVENT_NONE),
    (EVENT_OPEN, EVENT_NONE),
    (EVENT_NONE, EVENT_CLOSE),
)
STEP_REWARD: Final = _table(
    np.float64,
    (HOLD_FLAT_REWARD, HOLD_IN_POSITION_REWARD),
    (OPEN_REWARD, OPEN_IN_POSITION_REWARD),
    (OPEN_REWARD, OPEN_IN_POSITION_REWARD),
    (CLOSE_FLAT_REWARD, 0.0),  # a close adds AMDDP1 of the trade
)
# An illegal action pays its step reward as a penalty under both rewards; a legal one pays none.
INVALID_PENALTY: Final = np.where(LEGAL, 0.0, STEP_REWARD)
INVALID_PENALTY.flags.writeable = False
# The side an opening action opens (0 for the others), by action.
ENTRY_SIDE: Final = np.array([0, Side.LONG, Side.SHORT, 0], dtype=np.int8)
ENTRY_SIDE.flags.writeable = False


def step_key(action: int | np.ndarray, in_position: bool | np.ndarray) -> int | np.ndarray:
    """The index of (action, in a position) in the tables above."""
    return action * 2 + in_position


def legal_actions(side: np.ndarray) -> np.ndarray:
    """(n, 4) bool: which actions are legal for each side."""
    in_position = (np.asarray(side) != 0).astype(np.int64)
    return LEGAL[step_key(np.arange(N_ACTIONS), in_position[:, None])]


def _next_side(side: int, action: int) -> int:
    key = step_key(action, side != 0)
    if not LEGAL[key]:
        return side  # an illegal action changes nothing
    if EVENT[key] == EVENT_CLOSE:
        return 0
    if EVENT[key] == EVENT_OPEN:
        return int(ENTRY_SIDE[action])
    return side


# The rules by side, as the search reads them: row ``side + 1`` (short, flat, long), column the action.
LEGAL_BY_SIDE: Final = legal_actions(np.array([Side.SHORT, Side.FLAT, Side.LONG]))
SIDE_AFTER: Final = np.array(
    [[_next_side(side, action) for action in Action] for side in (Side.SHORT, Side.FLAT, Side.LONG)],
    dtype=np.int8,
)
LEGAL_BY_SIDE.flags.writeable = SIDE_AFTER.flags.writeable = False


def is_legal(side: int, action: int) -> bool:
    return bool(LEGAL_BY_SIDE[side + 1, action])


def side_after(side: int, action: int) -> int:
    """The side after ``action`` from ``side`` (an illegal action changes nothing)."""
    return int(SIDE_AFTER[side + 1, action])
