"""The rulebook: each rule defined once, read by the environment, the search kernels and the live
position from the same tables, and the tables saying what SPEC section 5 says."""

from __future__ import annotations

import numpy as np
import pytest

import shared.env
import shared.position
import shared.reward
from shared.instruments import DEFAULT_SPREAD_PIPS
from shared.position import PositionState
from shared.search.search import RULES as SEARCH_RULES
from shared.trading import rules
from shared.trading.rules import (
    EVENT,
    EVENT_CLOSE,
    EVENT_OPEN,
    INVALID_PENALTY,
    LEGAL,
    STEP_REWARD,
    Action,
    legal_actions,
    side_after,
    side_name,
    step_key,
)


def test_every_part_reads_the_one_rulebook() -> None:
    assert shared.env.LEGAL is LEGAL and shared.env.EVENT is EVENT and shared.env.STEP_REWARD is STEP_REWARD
    assert shared.env.INVALID_PENALTY is INVALID_PENALTY and shared.position.LEGAL is LEGAL
    assert SEARCH_RULES.legal is rules.LEGAL_BY_SIDE and SEARCH_RULES.next_side is rules.SIDE_AFTER
    assert shared.reward.Action is Action and shared.reward.legal_actions is legal_actions
    assert shared.env.EnvConfig().spread_pips == PositionState(pip=0.01).spread_pips == DEFAULT_SPREAD_PIPS
    for table in (LEGAL, EVENT, STEP_REWARD, INVALID_PENALTY, rules.ENTRY_SIDE, *SEARCH_RULES):
        assert not table.flags.writeable


def test_the_tables_say_what_the_contract_says() -> None:
    flat, held = False, True
    assert [bool(LEGAL[step_key(a, flat)]) for a in Action] == [True, True, True, False]
    assert [bool(LEGAL[step_key(a, held)]) for a in Action] == [True, False, False, True]
    assert [int(EVENT[step_key(a, flat)]) for a in Action] == [0, EVENT_OPEN, EVENT_OPEN, 0]
    assert [int(EVENT[step_key(a, held)]) for a in Action] == [0, 0, 0, EVENT_CLOSE]
    assert [float(STEP_REWARD[step_key(a, flat)]) for a in Action] == [-0.05, 1.0, 1.0, -0.5]
    assert [float(STEP_REWARD[step_key(a, held)]) for a in Action] == [0.0, -1.0, -1.0, 0.0]
    assert [float(INVALID_PENALTY[step_key(a, flat)]) for a in Action] == [0.0, 0.0, 0.0, -0.5]
    assert [float(INVALID_PENALTY[step_key(a, held)]) for a in Action] == [0.0, -1.0, -1.0, 0.0]
    assert legal_actions(np.array([0, 1, -1])).tolist() == [
        [True, True, True, False],
        [True, False, False, True],
        [True, False, False, True],
    ]
    assert [side_name(s) for s in (1, 0, -1)] == ["long", "flat", "short"]


@pytest.mark.parametrize("side", [-1, 0, 1])
def test_the_kernels_and_the_live_position_move_sides_as_the_rules_say(side: int) -> None:
    for action in Action:
        assert rules.is_legal(side, int(action)) == bool(LEGAL[step_key(int(action), side != 0)])
        assert rules.LEGAL_BY_SIDE[side + 1, action] == LEGAL[step_key(int(action), side != 0)]
        state = PositionState(pip=0.01)
        if side:
            state.adopt(side, 150.0, 0, 60)
        state.mark(150.0, 1)
        state.apply(action, 150.0, 1, 120, False, reward="amddp1")
        assert state.side == side_after(side, int(action)), (side, action)
