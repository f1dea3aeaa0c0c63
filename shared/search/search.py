"""``search``: batched stochastic MCTS over many roots, one batched model call per stage per simulation.

Each simulation: (1) a compiled pass walks every root's tree to where the simulation ends; (2) one
``outcome_probs`` call for the roots that reached a chance node never expanded; (3) one
``recurrent`` call for the roots that expand a decision node; (4) a compiled backup. Roots that
reached a node at the depth limit bootstrap from its stored value and need no call.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from shared.reward import N_ACTIONS, Action, legal_actions
from shared.schema import N_MARKET, OUTCOMES
from shared.search import kernels
from shared.search.config import SearchConfig
from shared.search.tree import Tree

if TYPE_CHECKING:
    from shared.model.inference import ModelFunctions

N_OUTCOMES = len(OUTCOMES)
SIDE_COLUMN = N_MARKET  # feature 9, position_side, of the window's last row


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
    batch = windows.shape[0]
    if rng is None and (config.add_noise or config.temperature > 0.0):
        rng = np.random.default_rng(0)
    sides = root_sides(windows)
    hidden, policy_logits, value = model.initial(windows)
    tree = Tree.allocate(batch, config.num_simulations + 1, hidden.shape[1], N_ACTIONS, N_OUTCOMES)

    prior = np.empty((batch, N_ACTIONS), np.float32)
    kernels.masked_softmax(np.asarray(policy_logits, np.float32), sides, prior)
    explore = np.ones(batch, bool)
    if config.explore_in_position < 1.0 and rng is not None:
        explore = (sides == 0) | (rng.random(batch) < config.explore_in_position)
    if config.add_noise:
        assert rng is not None
        prior = np.where(explore[:, None], _add_dirichlet_noise(prior, sides, config, rng), prior)
    tree.node_count[:] = 1
    tree.node_prior[:, 0] = prior
    tree.node_side[:, 0] = sides
    tree.node_value[:, 0] = value
    tree.node_visits[:, 0] = 1
    tree.node_value_sum[:, 0] = value
    tree.embeddings[:, 0] = hidden

    hidden_size = hidden.shape[1]
    kind = np.empty(batch, np.int64)
    node = np.zeros(batch, np.int64)
    action = np.zeros(batch, np.int64)
    outcome = np.zeros(batch, np.int64)
    # Packed inputs of the two model calls, rebuilt by every simulation's selection pass.
    chance_rows = np.empty(batch, np.int64)
    chance_hidden = np.empty((batch, hidden_size), np.float32)
    chance_actions = np.empty(batch, np.int64)
    expand_rows = np.empty(batch, np.int64)
    expand_hidden = np.empty((batch, hidden_size), np.float32)
    expand_actions = np.empty(batch, np.int64)
    expand_outcomes = np.empty(batch, np.int64)
    no_rows = np.empty((0, N_ACTIONS), np.float32)
    for _ in range(config.num_simulations):
        n_chance, n_expand = kernels.select(
            tree.node_visits,
            tree.node_value_sum,
            tree.node_prior,
            tree.node_side,
            tree.node_depth,
            tree.chance_visits,
            tree.chance_value_sum,
            tree.chance_expanded,
            tree.chance_probs,
            tree.outcome_visits,
            tree.child,
            tree.q_min,
            tree.q_max,
            tree.embeddings,
            config.pb_c_init,
            config.pb_c_base,
            config.depth_limit,
            kind,
            node,
            action,
            outcome,
            chance_rows,
            chance_hidden,
            chance_actions,
            expand_rows,
            expand_hidden,
            expand_actions,
            expand_outcomes,
        )
        if n_chance:
            probs = model.outcome_probs(chance_hidden[:n_chance], chance_actions[:n_chance])
            kernels.set_chance_probs(
                n_chance,
                chance_rows,
                np.asarray(probs, np.float32),
                node,
                action,
                tree.chance_expanded,
                tree.chance_probs,
                tree.outcome_visits,
                outcome,
                n_expand,
                expand_rows,
                expand_outcomes,
            )
        if n_expand:
            next_hidden, reward, logits, values = model.recurrent(
                expand_hidden[:n_expand], expand_actions[:n_expand], expand_outcomes[:n_expand]
            )
        else:
            next_hidden, reward, logits, values = chance_hidden[:0], no_rows[:, 0], no_rows, no_rows[:, 0]
        kernels.expand_and_backup(
            n_expand,
            expand_rows,
            np.asarray(next_hidden, np.float32),
            np.asarray(reward, np.float32),
            np.asarray(values, np.float32),
            np.asarray(logits, np.float32),
            node,
            action,
            outcome,
            config.discount,
            tree.node_count,
            tree.node_visits,
            tree.node_value_sum,
            tree.node_value,
            tree.node_reward,
            tree.node_prior,
            tree.node_side,
            tree.node_depth,
            tree.node_parent,
            tree.node_parent_action,
            tree.node_parent_outcome,
            tree.embeddings,
            tree.chance_visits,
            tree.chance_value_sum,
            tree.outcome_visits,
            tree.child,
            tree.q_min,
            tree.q_max,
        )

    visits = tree.chance_visits[:, 0, :].copy()
    chosen = _choose_actions(visits, tree.node_prior[:, 0], config.temperature, rng)
    if not explore.all():
        greedy = _choose_actions(visits, tree.node_prior[:, 0], 0.0, None)
        chosen = np.where(explore, chosen, greedy)
    rows = np.arange(batch)
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
        outcome_probs=tree.chance_probs[rows, 0, chosen].copy(),
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
    gamma = rng.gamma(config.dirichlet_alpha, size=prior.shape) * legal_actions(sides)
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
