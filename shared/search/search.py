"""``search``: batched stochastic MCTS over many roots, one batched model call per stage per simulation.

Each simulation: (1) ``select`` walks every root's tree to where the simulation ends; (2) one
``outcome_probs`` call for the roots that reached a chance node never expanded; (3) one
``recurrent`` call for the roots that expand a decision node; (4) the expansion and the backup.
Roots that reached a node at the depth limit bootstrap from its stored value and need no call. The
compiled steps live with the tree (``shared.search.tree``); the trading rules are the rulebook's
tables (``shared.trading.rules``), passed to them as mctx passes ``invalid_actions``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from shared.schema import N_MARKET, OUTCOMES
from shared.search.config import SearchConfig
from shared.search.tree import (
    Params,
    Rules,
    Scratch,
    SearchState,
    Tree,
    expand_backup_select,
    first_outcomes,
    masked_softmax,
    select,
)
from shared.trading.rules import LEGAL_BY_SIDE, N_ACTIONS, SIDE_AFTER, Action

if TYPE_CHECKING:
    from shared.model.inference import ModelFunctions

N_OUTCOMES = len(OUTCOMES)
SIDE_COLUMN = N_MARKET  # feature 9, position_side, of the window's last row
RULES = Rules(legal=LEGAL_BY_SIDE, next_side=SIDE_AFTER)
# The model outputs of a simulation that makes no outcome call, or no recurrent call.
_NO_PROBS = np.empty((0, N_OUTCOMES), np.float32)
_NO_ROWS = np.empty((0, N_ACTIONS), np.float32)


@dataclass(frozen=True)
class SearchOutput:
    action: np.ndarray  # (B,) int64 chosen action
    visit_counts: np.ndarray  # (B, A) int32 root visits per action (sum = num_simulations)
    visit_policy: np.ndarray  # (B, A) float32 visit distribution (the policy target)
    root_value: np.ndarray  # (B,) float32 mean backed-up value at the root
    root_q: np.ndarray  # (B, A) float32 searched Q of each root action (NaN where never visited)
    outcome_probs: np.ndarray  # (B, 3) float32 outcome probabilities of the chosen action
    tree: Tree


def root_sides(windows: np.ndarray) -> np.ndarray:
    """Position side of each root from feature 9 of its window's current row."""
    raw = windows[:, -1, SIDE_COLUMN]
    if not np.all((raw == -1.0) | (raw == 0.0) | (raw == 1.0)):
        raise ValueError("position_side (feature 9 of the last window row) must be exactly -1, 0 or 1")
    return raw.astype(np.int8)


def search(
    model: ModelFunctions,
    windows: np.ndarray,
    config: SearchConfig,
    rng: np.random.Generator | None = None,
) -> SearchOutput:
    """Search from every window of the batch (B, 32, 15) and choose one action per root.

    ``rng`` drives the root noise and the temperature sampling; a fixed seed gives a fixed result.
    """
    windows = np.ascontiguousarray(windows, dtype=np.float32)
    if rng is None and (config.add_noise or config.temperature > 0.0):
        rng = np.random.default_rng(0)
    sides = root_sides(windows)
    hidden, policy_logits, value = model.initial(windows)
    explore = _exploring_roots(sides, config, rng)
    prior = _root_prior(np.asarray(policy_logits, np.float32), sides, explore, config, rng)
    tree = Tree.from_roots(config.num_simulations + 1, hidden, prior, value, sides, N_OUTCOMES)
    scratch = Scratch.allocate(len(windows), hidden.shape[1])
    params = Params(config.pb_c_init, config.pb_c_base, config.depth_limit, config.discount)
    # The kernels take plain tuples (shared.search.tree says why).
    state, scratch_arrays = SearchState(tree, scratch, RULES, params).plain(), tuple(scratch)
    n_chance, n_expand = select(state)
    for simulation in range(1, config.num_simulations + 1):
        probs = _NO_PROBS
        if n_chance:
            probs = model.outcome_probs(scratch.chance_hidden[:n_chance], scratch.chance_actions[:n_chance])
            probs = np.asarray(probs, np.float32)
            first_outcomes(scratch_arrays, probs, n_expand)
        recurrent = _recurrent(model, scratch, n_expand)
        # Expansion and backup, and the next simulation's selection: one compiled call.
        more = simulation < config.num_simulations
        n_chance, n_expand = expand_backup_select(state, probs, recurrent, more)
    return _choose(tree, explore, config, rng)


def _exploring_roots(sides: np.ndarray, config: SearchConfig, rng: np.random.Generator | None) -> np.ndarray:
    """The roots that get the noise and the temperature: all, or the flat ones and a share of the
    others (``explore_in_position``)."""
    if config.explore_in_position < 1.0 and rng is not None:
        return (sides == 0) | (rng.random(len(sides)) < config.explore_in_position)
    return np.ones(len(sides), bool)


def _root_prior(
    policy_logits: np.ndarray,
    sides: np.ndarray,
    explore: np.ndarray,
    config: SearchConfig,
    rng: np.random.Generator | None,
) -> np.ndarray:
    """The policy over each root's legal actions, with Dirichlet noise on the exploring roots."""
    prior = np.empty(policy_logits.shape, np.float32)
    masked_softmax(policy_logits, sides, RULES.legal, prior)
    if config.add_noise:
        assert rng is not None
        prior = np.where(explore[:, None], _add_dirichlet_noise(prior, sides, config, rng), prior)
    return prior


def _recurrent(model: ModelFunctions, scratch: Scratch, n_expand: int) -> tuple[np.ndarray, ...]:
    """(next hidden, reward, policy logits, value) of the first ``n_expand`` scratch rows."""
    if not n_expand:
        return scratch.expand_hidden[:0], _NO_ROWS[:, 0], _NO_ROWS, _NO_ROWS[:, 0]
    next_hidden, reward, logits, values = model.recurrent(
        scratch.expand_hidden[:n_expand],
        scratch.expand_actions[:n_expand],
        scratch.expand_outcomes[:n_expand],
    )
    f32 = np.float32
    return (
        np.asarray(next_hidden, f32),
        np.asarray(reward, f32),
        np.asarray(logits, f32),
        np.asarray(values, f32),
    )


def _choose(
    tree: Tree, explore: np.ndarray, config: SearchConfig, rng: np.random.Generator | None
) -> SearchOutput:
    """One action per root from its visit counts (temperature on the exploring roots, the entry gate)."""
    visits = tree.chance_visits[:, 0, :].copy()
    chosen = _choose_actions(visits, tree.node_prior[:, 0], config.temperature, rng)
    if not explore.all():
        greedy = _choose_actions(visits, tree.node_prior[:, 0], 0.0, None)
        chosen = np.where(explore, chosen, greedy)
    policy = (visits / visits.sum(axis=1, keepdims=True)).astype(np.float32)
    root_value = (tree.node_value_sum[:, 0] / tree.node_visits[:, 0]).astype(np.float32)
    with np.errstate(invalid="ignore", divide="ignore"):
        q = np.where(visits > 0, tree.chance_value_sum[:, 0, :] / visits, np.nan).astype(np.float32)
    if config.entry_margin is not None or not config.allow_entries:
        chosen = gate_entries(chosen, q, root_value, config.entry_margin or 0.0, config.allow_entries)
    return SearchOutput(
        action=chosen,
        visit_counts=visits,
        visit_policy=policy,
        root_value=root_value,
        root_q=q,
        outcome_probs=tree.chance_probs[np.arange(len(chosen)), 0, chosen].copy(),
        tree=tree,
    )


def gate_entries(
    chosen: np.ndarray,
    q: np.ndarray,
    root_value: np.ndarray,
    margin: float | np.ndarray,
    allow_entries: bool | np.ndarray = True,
) -> np.ndarray:
    """HOLD instead of a BUY or SELL whose searched Q does not beat HOLD's by ``margin`` (reward
    units), and instead of any entry where ``allow_entries`` is off. Both may be given per root. A HOLD
    the search never visited counts at the root's value."""
    entering = (chosen == Action.BUY) | (chosen == Action.SELL)
    if not entering.any():
        return chosen
    rows = np.arange(len(chosen))
    q_hold = np.where(np.isnan(q[:, Action.HOLD]), root_value, q[:, Action.HOLD])
    enough = q[rows, chosen] - q_hold >= margin
    blocked = entering & ~(enough & allow_entries)
    return np.where(blocked, int(Action.HOLD), chosen).astype(np.int64)


def _add_dirichlet_noise(
    prior: np.ndarray, sides: np.ndarray, config: SearchConfig, rng: np.random.Generator
) -> np.ndarray:
    """Mix Dirichlet(alpha) noise over each root's legal actions into its prior."""
    gamma = rng.gamma(config.dirichlet_alpha, size=prior.shape) * RULES.legal[sides + 1]
    noise = gamma / gamma.sum(axis=1, keepdims=True)
    f = config.dirichlet_fraction
    return ((1.0 - f) * prior + f * noise).astype(np.float32)


def _choose_actions(
    visits: np.ndarray, prior: np.ndarray, temperature: float, rng: np.random.Generator | None
) -> np.ndarray:
    if temperature <= 0.0 or rng is None:
        # Most visits; ties go to the higher prior, then the lower action index.
        return np.argmax(visits + 0.5 * prior, axis=1).astype(np.int64)
    weights = np.where(visits > 0, visits.astype(np.float64) ** (1.0 / temperature), 0.0)
    weights /= weights.sum(axis=1, keepdims=True)
    cumulative = np.cumsum(weights, axis=1)
    draws = rng.random((len(visits), 1))
    return np.minimum((draws > cumulative).sum(axis=1), visits.shape[1] - 1).astype(np.int64)
