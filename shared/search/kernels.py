"""Compiled loops over the roots of a batch: selection, expansion bookkeeping and backup.

numba compiles these once; each is one pass over the batch, so a simulation's tree work costs
microseconds at batch 1 and stays small beside the network calls at batch 1024. All are nogil, so
a serving process's other threads (HTTP, the stream worker) run while they do.
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit

from shared.search.tree import UNVISITED
from shared.trading.rules import ENTRY_SIDE, EVENT, EVENT_CLOSE, LEGAL

# What a simulation found at the end of its path.
LEAF_NEW_CHANCE = 0  # the chosen (node, action) was never expanded: outcome probabilities first
LEAF_NEW_NODE = 1  # the chosen outcome has no child yet: the dynamics network expands it
LEAF_AT_DEPTH_LIMIT = 2  # an existing node at the depth limit: bootstrap from its value, no call

# The rulebook's tables (shared.trading.rules), read as compile-time constants. (numba's cache keys on
# this file: after a change of the rules, clear __pycache__ or touch this file.)


@njit(cache=True, nogil=True, inline="always")
def is_legal(side: int, action: int) -> bool:
    return LEGAL[2 * action + (side != 0)]


@njit(cache=True, nogil=True, inline="always")
def side_after(side: int, action: int) -> int:
    key = 2 * action + (side != 0)
    if not LEGAL[key]:
        return side
    if EVENT[key] == EVENT_CLOSE:
        return 0
    entry = ENTRY_SIDE[action]
    return side if entry == 0 else entry


@njit(cache=True, nogil=True, inline="always")
def _masked_softmax_row(logits: np.ndarray, side: int, out: np.ndarray) -> None:
    peak = -np.inf
    for a in range(logits.shape[0]):
        if is_legal(side, a) and logits[a] > peak:
            peak = logits[a]
    total = 0.0
    for a in range(logits.shape[0]):
        if is_legal(side, a):
            e = math.exp(logits[a] - peak)
            out[a] = e
            total += e
        else:
            out[a] = 0.0
    for a in range(logits.shape[0]):
        out[a] /= total


@njit(cache=True, nogil=True)
def masked_softmax(logits: np.ndarray, sides: np.ndarray, out: np.ndarray) -> None:
    """Softmax over each row's legal actions; illegal actions get probability 0."""
    for i in range(logits.shape[0]):
        _masked_softmax_row(logits[i], sides[i], out[i])


@njit(cache=True, nogil=True, inline="always")
def _normalised(q: float, q_min: float, q_max: float) -> float:
    if q_max > q_min:
        v = (q - q_min) / (q_max - q_min)
        return min(max(v, 0.0), 1.0)
    return 0.5


@njit(cache=True, nogil=True)
def select_action(
    b: int,
    node: int,
    node_visits: np.ndarray,
    node_value_sum: np.ndarray,
    node_prior: np.ndarray,
    node_side: np.ndarray,
    chance_visits: np.ndarray,
    chance_value_sum: np.ndarray,
    q_min: np.ndarray,
    q_max: np.ndarray,
    pb_c_init: float,
    pb_c_base: float,
) -> int:
    """pUCT over the legal actions with min-max normalised Q (unvisited actions: the node's value)."""
    parent_visits = node_visits[b, node]
    c = pb_c_init + math.log((parent_visits + pb_c_base + 1.0) / pb_c_base)
    explore = c * math.sqrt(parent_visits)
    node_q = node_value_sum[b, node] / max(parent_visits, 1)
    side = node_side[b, node]
    best_action = -1
    best_score = -np.inf
    for a in range(node_prior.shape[2]):
        if not is_legal(side, a):
            continue
        n = chance_visits[b, node, a]
        q = chance_value_sum[b, node, a] / n if n > 0 else node_q
        score = _normalised(q, q_min[b], q_max[b]) + node_prior[b, node, a] * explore / (1.0 + n)
        if score > best_score:
            best_score = score
            best_action = a
    return best_action


@njit(cache=True, nogil=True, inline="always")
def choose_outcome(probs: np.ndarray, visits: np.ndarray) -> int:
    """The outcome that most lacks visits relative to its probability: argmax p (N + 1) - n."""
    total = 0
    for o in range(visits.shape[0]):
        total += visits[o]
    best = 0
    best_deficit = -np.inf
    for o in range(visits.shape[0]):
        deficit = probs[o] * (total + 1) - visits[o]
        if deficit > best_deficit:
            best_deficit = deficit
            best = o
    return best


@njit(cache=True, nogil=True)
def select(
    node_visits: np.ndarray,
    node_value_sum: np.ndarray,
    node_prior: np.ndarray,
    node_side: np.ndarray,
    node_depth: np.ndarray,
    chance_visits: np.ndarray,
    chance_value_sum: np.ndarray,
    chance_expanded: np.ndarray,
    chance_probs: np.ndarray,
    outcome_visits: np.ndarray,
    child: np.ndarray,
    q_min: np.ndarray,
    q_max: np.ndarray,
    embeddings: np.ndarray,
    pb_c_init: float,
    pb_c_base: float,
    depth_limit: int,
    kind: np.ndarray,
    node_out: np.ndarray,
    action_out: np.ndarray,
    outcome_out: np.ndarray,
    chance_rows: np.ndarray,
    chance_hidden: np.ndarray,
    chance_actions: np.ndarray,
    expand_rows: np.ndarray,
    expand_hidden: np.ndarray,
    expand_actions: np.ndarray,
    expand_outcomes: np.ndarray,
) -> tuple[int, int]:
    """Walk every root's tree to where this simulation ends, and pack the model inputs.

    Returns (n_chance, n_expand): the first rows of the ``chance_*`` buffers are the inputs of the
    outcome call, the first rows of the ``expand_*`` buffers those of the recurrent call (their
    outcomes for new chance nodes are filled in by ``set_chance_probs``).
    """
    n_chance = 0
    n_expand = 0
    for b in range(node_visits.shape[0]):
        node = 0
        while True:
            if node_depth[b, node] >= depth_limit:
                kind[b] = LEAF_AT_DEPTH_LIMIT
                node_out[b] = node
                break
            a = select_action(
                b,
                node,
                node_visits,
                node_value_sum,
                node_prior,
                node_side,
                chance_visits,
                chance_value_sum,
                q_min,
                q_max,
                pb_c_init,
                pb_c_base,
            )
            node_out[b] = node
            action_out[b] = a
            if not chance_expanded[b, node, a]:
                kind[b] = LEAF_NEW_CHANCE
                chance_rows[n_chance] = b
                chance_hidden[n_chance] = embeddings[b, node]
                chance_actions[n_chance] = a
                n_chance += 1
                break
            o = choose_outcome(chance_probs[b, node, a], outcome_visits[b, node, a])
            nxt = child[b, node, a, o]
            if nxt == UNVISITED:
                kind[b] = LEAF_NEW_NODE
                outcome_out[b] = o
                break
            node = nxt
        if kind[b] != LEAF_AT_DEPTH_LIMIT:
            expand_rows[n_expand] = b
            expand_hidden[n_expand] = embeddings[b, node_out[b]]
            expand_actions[n_expand] = action_out[b]
            expand_outcomes[n_expand] = outcome_out[b]  # stale for new chance nodes: set below
            n_expand += 1
    return n_chance, n_expand


@njit(cache=True, nogil=True)
def set_chance_probs(
    n_chance: int,
    chance_rows: np.ndarray,
    probs: np.ndarray,
    node_out: np.ndarray,
    action_out: np.ndarray,
    chance_expanded: np.ndarray,
    chance_probs: np.ndarray,
    outcome_visits: np.ndarray,
    outcome_out: np.ndarray,
    n_expand: int,
    expand_rows: np.ndarray,
    expand_outcomes: np.ndarray,
) -> None:
    """Store new chance nodes' outcome probabilities and pick each one's first outcome."""
    for i in range(n_chance):
        b = chance_rows[i]
        node, a = node_out[b], action_out[b]
        chance_expanded[b, node, a] = True
        for o in range(probs.shape[1]):
            chance_probs[b, node, a, o] = probs[i, o]
        outcome_out[b] = choose_outcome(chance_probs[b, node, a], outcome_visits[b, node, a])
    for i in range(n_expand):
        expand_outcomes[i] = outcome_out[expand_rows[i]]


@njit(cache=True, nogil=True)
def expand_and_backup(
    n_expand: int,
    expand_rows: np.ndarray,
    next_hidden: np.ndarray,
    rewards: np.ndarray,
    values: np.ndarray,
    policy_logits: np.ndarray,
    node_out: np.ndarray,
    action_out: np.ndarray,
    outcome_out: np.ndarray,
    discount: float,
    node_count: np.ndarray,
    node_visits: np.ndarray,
    node_value_sum: np.ndarray,
    node_value: np.ndarray,
    node_reward: np.ndarray,
    node_prior: np.ndarray,
    node_side: np.ndarray,
    node_depth: np.ndarray,
    node_parent: np.ndarray,
    node_parent_action: np.ndarray,
    node_parent_outcome: np.ndarray,
    embeddings: np.ndarray,
    chance_visits: np.ndarray,
    chance_value_sum: np.ndarray,
    outcome_visits: np.ndarray,
    child: np.ndarray,
    q_min: np.ndarray,
    q_max: np.ndarray,
) -> None:
    """Add the expanded nodes (prior = policy softmax over the actions legal for the node's side),
    then back every root's leaf value up to its root: G = r + discount * G along the path."""
    leaf = node_out.copy()  # depth-limit leaves bootstrap from the node they reached
    for i in range(n_expand):
        b = expand_rows[i]
        p, a, o = node_out[b], action_out[b], outcome_out[b]
        n = node_count[b]
        node_count[b] = n + 1
        node_value[b, n] = values[i]
        node_reward[b, n] = rewards[i]
        side = side_after(node_side[b, p], a)
        node_side[b, n] = side
        _masked_softmax_row(policy_logits[i], side, node_prior[b, n])
        node_depth[b, n] = node_depth[b, p] + 1
        node_parent[b, n] = p
        node_parent_action[b, n] = a
        node_parent_outcome[b, n] = o
        embeddings[b, n] = next_hidden[i]
        child[b, p, a, o] = n
        leaf[b] = n
    for b in range(leaf.shape[0]):
        node = leaf[b]
        ret = float(node_value[b, node])
        node_visits[b, node] += 1
        node_value_sum[b, node] += ret
        while node != 0:
            parent = node_parent[b, node]
            a = node_parent_action[b, node]
            ret = node_reward[b, node] + discount * ret
            chance_visits[b, parent, a] += 1
            chance_value_sum[b, parent, a] += ret
            outcome_visits[b, parent, a, node_parent_outcome[b, node]] += 1
            q = chance_value_sum[b, parent, a] / chance_visits[b, parent, a]
            if q < q_min[b]:
                q_min[b] = q
            if q > q_max[b]:
                q_max[b] = q
            node_visits[b, parent] += 1
            node_value_sum[b, parent] += ret
            node = parent
