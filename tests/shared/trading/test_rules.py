"""The rulebook: each rule defined once (``shared.trading``), read by the environment, the search
kernels and the live position, the tables saying what CONTRACT section 5 says, and every user agreeing
with them."""

from __future__ import annotations

import importlib

import numpy as np
import pytest

import shared.env
import shared.position
import shared.reward
from shared.env import EnvConfig, MarketData, TradingEnv
from shared.instruments import DEFAULT_SPREAD_PIPS
from shared.position import PositionState
from shared.search import SearchConfig, search
from shared.search.search import RULES as SEARCH_RULES
from shared.search.tree import Rules, Tree, masked_softmax
from shared.trading import book, rewards, rules
from shared.trading.rules import (
    ENTRY_SIDE,
    EVENT,
    EVENT_CLOSE,
    EVENT_OPEN,
    INVALID_PENALTY,
    LEGAL,
    LEGAL_BY_SIDE,
    SIDE_AFTER,
    STEP_REWARD,
    Action,
    legal_actions,
    side_after,
    side_name,
    step_key,
)

SIDES = (-1, 0, 1)
# shared.search.search is also the name of the function the package exports.
SEARCH_MODULE = importlib.import_module("shared.search.search")


def test_every_part_reads_the_one_rulebook() -> None:
    assert shared.position.rules is rules
    for table in ("LEGAL", "EVENT", "ENTRY_SIDE", "INVALID_PENALTY", "step_key"):
        assert getattr(shared.env, table) is getattr(rules, table)
    for user in (shared.env, shared.position):
        assert user.mark_to_market is book.mark_to_market and user.open_positions is book.open_positions
        assert user.open_equity is book.open_equity and user.position_features is book.position_features
        assert user.amddp1_reward is rewards.amddp1_reward and user.equity_reward is rewards.equity_reward
    assert SEARCH_RULES.legal is LEGAL_BY_SIDE and SEARCH_RULES.next_side is SIDE_AFTER
    assert shared.reward.Action is Action and shared.reward.legal_actions is legal_actions
    assert shared.reward.amddp1 is rewards.amddp1 and shared.reward.reward_name is rewards.reward_name
    assert shared.env.EnvConfig().spread_pips == PositionState(pip=0.01).spread_pips == DEFAULT_SPREAD_PIPS
    for table in (LEGAL, EVENT, STEP_REWARD, INVALID_PENALTY, ENTRY_SIDE, LEGAL_BY_SIDE, SIDE_AFTER):
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
    assert ENTRY_SIDE.tolist() == [0, 1, -1, 0]
    assert legal_actions(np.array([0, 1, -1])).tolist() == [
        [True, True, True, False],
        [True, False, False, True],
        [True, False, False, True],
    ]
    # The search's view, by side (short, flat, long): legality, and the side each action leads to.
    assert LEGAL_BY_SIDE.tolist() == legal_actions(np.array(SIDES)).tolist()
    assert SIDE_AFTER.tolist() == [[-1, -1, -1, 0], [0, 1, -1, 0], [1, 1, 1, 0]]
    assert [side_name(s) for s in (1, 0, -1)] == ["long", "flat", "short"]


@pytest.mark.parametrize("side", SIDES)
def test_the_kernels_and_the_live_position_move_sides_as_the_rules_say(side: int) -> None:
    for action in Action:
        assert rules.is_legal(side, int(action)) == bool(LEGAL[step_key(int(action), side != 0)])
        assert LEGAL_BY_SIDE[side + 1, action] == LEGAL[step_key(int(action), side != 0)]
        state = PositionState(pip=0.01)
        if side:
            state.adopt(side, 150.0, 0, 60)
        state.mark(150.0, 1)
        state.apply(action, 150.0, 1, 120, False, reward="amddp1")
        assert state.side == side_after(side, int(action)), (side, action)


class UniformModel:
    """Model functions that prefer nothing: every action and outcome is as likely as the next."""

    def initial(self, windows: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        m = len(windows)
        return np.zeros((m, 8), np.float32), np.zeros((m, 4), np.float32), np.zeros(m, np.float32)

    def outcome_probs(self, hidden: np.ndarray, actions: np.ndarray) -> np.ndarray:
        return np.full((len(hidden), 3), 1 / 3, np.float32)

    def recurrent(
        self, hidden: np.ndarray, actions: np.ndarray, outcomes: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        m = len(hidden)
        return hidden, np.zeros(m, np.float32), np.zeros((m, 4), np.float32), np.zeros(m, np.float32)


def searched_tree(sides: np.ndarray) -> Tree:
    windows = np.zeros((len(sides), 32, 15), np.float32)
    windows[:, :, 9] = sides[:, None]
    return search(UniformModel(), windows, SearchConfig(num_simulations=40, depth_limit=3)).tree  # type: ignore[arg-type]


def assert_tree_follows(tree: Tree, table: Rules) -> None:
    """Every node's prior is zero exactly on the actions ``table`` makes illegal on its side, and
    every child's side is the one ``table`` says its parent's action leads to."""
    expanded = 0
    for b in range(tree.node_count.shape[0]):
        for n in range(int(tree.node_count[b])):
            side = int(tree.node_side[b, n])
            assert ((tree.node_prior[b, n] > 0) == table.legal[side + 1]).all(), (b, n, side)
            if n:
                parent, action = tree.node_parent[b, n], tree.node_parent_action[b, n]
                assert side == table.next_side[int(tree.node_side[b, parent]) + 1, action], (b, n)
                expanded += 1
    assert expanded > 50


def test_the_search_kernels_follow_the_tables_they_are_given(monkeypatch: pytest.MonkeyPatch) -> None:
    sides = np.array([-1, 0, 1, 0], np.int8)
    assert_tree_follows(searched_tree(sides), Rules(LEGAL_BY_SIDE, SIDE_AFTER))
    # The kernels read no trading rule of their own: other tables, another game.
    other = Rules(
        legal=np.array([[True, False, True, True], [True, True, False, False], [False, True, True, True]]),
        next_side=np.array([[0, 1, -1, -1], [1, -1, 0, 0], [-1, 0, 1, 1]], np.int8),
    )
    for table in other:
        table.flags.writeable = False  # as the rulebook's: the kernels are compiled for read-only tables
    monkeypatch.setattr(SEARCH_MODULE, "RULES", other)
    assert_tree_follows(searched_tree(sides), other)
    prior = np.empty((3, 4), np.float32)
    masked_softmax(np.zeros((3, 4), np.float32), np.array([-1, 0, 1], np.int8), other.legal, prior)
    assert (prior > 0).tolist() == other.legal.tolist()


def walk_market() -> MarketData:
    """A market that moves by a few pips a bar, up and down."""
    n = 200
    close = 150.0 + 0.01 * np.cumsum(np.tile([7.0, -3.0, 5.0, -11.0, 2.0], n // 5))
    ts = 1_500_000_000 + 60 * np.arange(n, dtype=np.int64)
    return MarketData("GBPJPY", ts, close, np.zeros((n, 9)))


@pytest.mark.parametrize("reward", rewards.REWARDS)
@pytest.mark.parametrize("side", SIDES)
def test_the_live_position_is_one_row_of_the_environment(reward: str, side: int) -> None:
    """Every action from every side, under both rewards: the live position (one row) and the
    environment (arrays) pay the same rewards and reach the same state, bit for bit."""
    market, start = walk_market(), 40
    entry = {-1: Action.SELL, 0: Action.HOLD, 1: Action.BUY}[side]
    for action in Action:
        env = TradingEnv(market, EnvConfig(reward=reward, session_bars=3))
        observation = env.reset(np.array([start]))
        state = PositionState(pip=market.pip)
        paid_env, paid_live = {}, {}
        for step, taken in enumerate((entry, action, Action.HOLD)):  # the last bar closes what is open
            bar = start + step
            state.mark(float(market.close[bar]), step)
            assert np.array_equal(state.features(), observation[0, -1, 9:]), (action, step)
            if state.side:  # the same mark, bit for bit
                trackers = [state.pnl, state.bars_since_entry, state.dd, state.min_dd, state.acc_dd]
                assert trackers == env.trackers[:, 0].tolist() and state.peak == env.book.peak[0]
            result = env.step(np.array([taken]))
            out = state.apply(taken, float(market.close[bar]), step, int(market.ts[bar]), step == 2, reward)
            assert out.valid == bool(result.valid[0]) and state.side == int(env.side[0]), (action, step)
            paid_env[step] = float(result.reward[0])
            if out.settled is not None:
                paid_live[out.settled.step] = out.settled.reward
            if out.reward is not None:
                paid_live[step] = out.reward
            observation = result.observation
        assert paid_live == paid_env, (action, paid_live, paid_env)
