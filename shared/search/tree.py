"""The search trees of a batch of roots in preallocated arrays, and the compiled loops over them.

Decision nodes are numbered 0..num_simulations per root (0 is the root; every simulation adds at
most one). A chance node is a (decision node, action) pair and lives in the ``chance_*`` arrays; its
children are decision nodes indexed by outcome.

The loops are numba kernels, one pass over the batch each, so a simulation's tree work costs
microseconds at batch 1 and stays small beside the network calls at batch 1024; all are nogil, so a
serving process's other threads run while they do. Each does the tree work between two model calls:
``select`` walks every root to where its simulation ends and packs the model calls' inputs into the
``Scratch``; ``first_outcomes`` picks the outcome each new chance node is expanded with; after the
recurrent call, ``expand_backup_select`` stores the outcome probabilities, adds the new nodes, backs
the values up and walks the next simulation's paths.
The trading rules come in as tables (``Rules``: ``legal[side + 1, action]`` and
``next_side[side + 1, action]``, from ``shared.trading.rules``), as mctx's search takes its
``invalid_actions`` from its caller: nothing here knows what the actions mean.

Three numba details shape this file:
- The kernels take ``SearchState.plain()`` (the tree, the scratch, the rules and the settings as
  plain tuples) and name the fields again inside (``Tree(*tree_arrays)``, free in compiled code):
  numba's dispatcher fingerprints a namedtuple argument by its class and field names on every call
  (4-5 us a call with the tree and the scratch), a plain tuple of the same arrays it types as fast
  as separate arguments.
- Every array argument costs about 0.1 us to unbox on every call, whether it is used or not, so
  the work after one recurrent call and before the next simulation's model calls is one dispatch
  (``expand_backup_select``): a batch-1 search makes 1.6 kernel calls per simulation, not 2.6.
- The namedtuples are defined in the kernels' file because numba's on-disk cache is keyed on that
  file alone: a field changed here recompiles the kernels, in another file it would not.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import numpy as np
from numba import njit

UNVISITED = -1


class Tree(NamedTuple):
    # Decision nodes: (B, N) and (B, N, A)
    node_visits: np.ndarray  # int32
    node_value_sum: np.ndarray  # float64: sum of backed-up returns through the node
    node_value: np.ndarray  # float32: the value head's estimate at expansion
    node_reward: np.ndarray  # float32: predicted reward on the edge into the node
    node_prior: np.ndarray  # float32 (B, N, A): policy softmax over the legal actions
    node_side: np.ndarray  # int8: position side (-1, 0, 1) that fixes the legal actions
    node_depth: np.ndarray  # int8: 0 at the root
    node_parent: np.ndarray  # int32
    node_parent_action: np.ndarray  # int8
    node_parent_outcome: np.ndarray  # int8
    node_count: np.ndarray  # int32 (B,): nodes allocated per root
    embeddings: np.ndarray  # float32 (B, N, H)
    # Chance nodes: (B, N, A) and (B, N, A, O)
    chance_visits: np.ndarray  # int32
    chance_value_sum: np.ndarray  # float64: sum of (reward + discount * value) below
    chance_expanded: np.ndarray  # bool: outcome probabilities known
    chance_probs: np.ndarray  # float32 (B, N, A, O)
    outcome_visits: np.ndarray  # int32 (B, N, A, O)
    child: np.ndarray  # int32 (B, N, A, O): decision node index or UNVISITED
    # Min-max normalisation of Q, per root
    q_min: np.ndarray  # float64 (B,)
    q_max: np.ndarray  # float64 (B,)

    @classmethod
    def allocate(cls, batch: int, num_nodes: int, hidden: int, n_actions: int, n_outcomes: int) -> Tree:
        b, n, a, o = batch, num_nodes, n_actions, n_outcomes
        return cls(
            node_visits=np.zeros((b, n), np.int32),
            node_value_sum=np.zeros((b, n), np.float64),
            node_value=np.zeros((b, n), np.float32),
            node_reward=np.zeros((b, n), np.float32),
            node_prior=np.zeros((b, n, a), np.float32),
            node_side=np.zeros((b, n), np.int8),
            node_depth=np.zeros((b, n), np.int8),
            node_parent=np.full((b, n), UNVISITED, np.int32),
            node_parent_action=np.full((b, n), UNVISITED, np.int8),
            node_parent_outcome=np.full((b, n), UNVISITED, np.int8),
            node_count=np.zeros(b, np.int32),
            embeddings=np.zeros((b, n, hidden), np.float32),
            chance_visits=np.zeros((b, n, a), np.int32),
            chance_value_sum=np.zeros((b, n, a), np.float64),
            chance_expanded=np.zeros((b, n, a), np.bool_),
            chance_probs=np.zeros((b, n, a, o), np.float32),
            outcome_visits=np.zeros((b, n, a, o), np.int32),
            child=np.full((b, n, a, o), UNVISITED, np.int32),
            q_min=np.full(b, np.inf),
            q_max=np.full(b, -np.inf),
        )

    @classmethod
    def from_roots(
        cls,
        num_nodes: int,
        embedding: np.ndarray,
        prior: np.ndarray,
        value: np.ndarray,
        side: np.ndarray,
        n_outcomes: int,
    ) -> Tree:
        """Trees holding their roots alone, visited once (mctx: ``instantiate_tree_from_root``)."""
        (batch, hidden), n_actions = embedding.shape, prior.shape[1]
        tree = cls.allocate(batch, num_nodes, hidden, n_actions, n_outcomes)
        tree.node_count[:] = 1
        tree.node_prior[:, 0] = prior
        tree.node_side[:, 0] = side
        tree.node_value[:, 0] = value
        tree.node_visits[:, 0] = 1
        tree.node_value_sum[:, 0] = value
        tree.embeddings[:, 0] = embedding
        return tree


class Scratch(NamedTuple):
    """Where each root's current simulation ended, and the packed inputs of the two model calls
    (their first ``n_chance`` and ``n_expand`` rows); rewritten by every simulation."""

    node: np.ndarray  # int64 (B,): the last node of the path
    action: np.ndarray  # int64 (B,): the action chosen there
    outcome: np.ndarray  # int64 (B,): the outcome chosen below it (a new node: the one to expand)
    chance_rows: np.ndarray  # int64 (B,): roots that reached a chance node never expanded
    chance_hidden: np.ndarray  # float32 (B, H)
    chance_actions: np.ndarray  # int64 (B,)
    expand_rows: np.ndarray  # int64 (B,): roots that expand a decision node
    expand_hidden: np.ndarray  # float32 (B, H)
    expand_actions: np.ndarray  # int64 (B,)
    expand_outcomes: np.ndarray  # int64 (B,)

    @classmethod
    def allocate(cls, batch: int, hidden: int) -> Scratch:
        def rows() -> np.ndarray:
            return np.zeros(batch, np.int64)

        def embeddings() -> np.ndarray:
            return np.zeros((batch, hidden), np.float32)

        return cls(
            node=rows(),
            action=rows(),
            outcome=rows(),
            chance_rows=rows(),
            chance_hidden=embeddings(),
            chance_actions=rows(),
            expand_rows=rows(),
            expand_hidden=embeddings(),
            expand_actions=rows(),
            expand_outcomes=rows(),
        )


class Rules(NamedTuple):
    """The rules the search needs, by side: row ``side + 1`` (short, flat, long), column the action."""

    legal: np.ndarray  # bool (3, A): the actions legal on that side
    next_side: np.ndarray  # int8 (3, A): the side after the action


class Params(NamedTuple):
    """The search settings the kernels read."""

    pb_c_init: float  # pUCT c1
    pb_c_base: float  # pUCT c2
    depth_limit: int  # decision levels below the root
    discount: float


class SearchState(NamedTuple):
    """What the kernels read and write: the trees, the scratch space, the rules and the settings."""

    tree: Tree
    scratch: Scratch
    rules: Rules
    params: Params

    def plain(self) -> tuple[tuple[object, ...], ...]:
        """The kernels' argument: the same arrays and numbers in plain tuples (the module says why)."""
        return tuple(tuple(part) for part in self)


@njit(cache=True, nogil=True, inline="always")
def _named(state: tuple[tuple[object, ...], ...]) -> SearchState:
    tree_arrays, scratch_arrays, rule_arrays, param_values = state
    return SearchState(
        Tree(*tree_arrays), Scratch(*scratch_arrays), Rules(*rule_arrays), Params(*param_values)
    )


@njit(cache=True, nogil=True, inline="always")
def _masked_softmax_row(logits: np.ndarray, legal: np.ndarray, out: np.ndarray) -> None:
    """Softmax over the actions ``legal`` allows (one row of ``Rules.legal``); 0 elsewhere."""
    peak = -np.inf
    for a in range(logits.shape[0]):
        if legal[a] and logits[a] > peak:
            peak = logits[a]
    total = 0.0
    for a in range(logits.shape[0]):
        if legal[a]:
            e = math.exp(logits[a] - peak)
            out[a] = e
            total += e
        else:
            out[a] = 0.0
    for a in range(logits.shape[0]):
        out[a] /= total


@njit(cache=True, nogil=True)
def masked_softmax(logits: np.ndarray, sides: np.ndarray, legal: np.ndarray, out: np.ndarray) -> None:
    """Softmax over each row's legal actions (``legal[side + 1]``); illegal actions get 0."""
    for i in range(logits.shape[0]):
        _masked_softmax_row(logits[i], legal[sides[i] + 1], out[i])


@njit(cache=True, nogil=True, inline="always")
def _normalised(q: float, q_min: float, q_max: float) -> float:
    if q_max > q_min:
        v = (q - q_min) / (q_max - q_min)
        return min(max(v, 0.0), 1.0)
    return 0.5


@njit(cache=True, nogil=True, inline="always")
def select_action(tree: Tree, legal: np.ndarray, params: Params, b: int, node: int) -> int:
    """pUCT over the legal actions with min-max normalised Q (unvisited actions: the node's value)."""
    parent_visits = tree.node_visits[b, node]
    c = params.pb_c_init + math.log((parent_visits + params.pb_c_base + 1.0) / params.pb_c_base)
    explore = c * math.sqrt(parent_visits)
    node_q = tree.node_value_sum[b, node] / max(parent_visits, 1)
    allowed = legal[tree.node_side[b, node] + 1]
    best_action = -1
    best_score = -np.inf
    for a in range(allowed.shape[0]):
        if not allowed[a]:
            continue
        n = tree.chance_visits[b, node, a]
        q = tree.chance_value_sum[b, node, a] / n if n > 0 else node_q
        prior = tree.node_prior[b, node, a]
        score = _normalised(q, tree.q_min[b], tree.q_max[b]) + prior * explore / (1.0 + n)
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


@njit(cache=True, nogil=True, inline="always")
def _select(tree: Tree, scratch: Scratch, rules: Rules, params: Params) -> tuple[int, int]:
    n_chance = n_expand = 0
    for b in range(tree.node_visits.shape[0]):
        node = 0
        at_depth_limit = False
        while True:
            scratch.node[b] = node
            if tree.node_depth[b, node] >= params.depth_limit:
                at_depth_limit = True  # bootstraps from the node's value: no model call
                break
            a = select_action(tree, rules.legal, params, b, node)
            scratch.action[b] = a
            if not tree.chance_expanded[b, node, a]:
                scratch.chance_rows[n_chance] = b
                scratch.chance_hidden[n_chance] = tree.embeddings[b, node]
                scratch.chance_actions[n_chance] = a
                n_chance += 1
                break
            o = choose_outcome(tree.chance_probs[b, node, a], tree.outcome_visits[b, node, a])
            nxt = tree.child[b, node, a, o]
            if nxt == UNVISITED:
                scratch.outcome[b] = o
                break
            node = nxt
        if not at_depth_limit:
            scratch.expand_rows[n_expand] = b
            scratch.expand_hidden[n_expand] = tree.embeddings[b, node]
            scratch.expand_actions[n_expand] = scratch.action[b]
            scratch.expand_outcomes[n_expand] = scratch.outcome[b]  # a new chance node's: set later
            n_expand += 1
    return n_chance, n_expand


@njit(cache=True, nogil=True)
def select(state: tuple[tuple[object, ...], ...]) -> tuple[int, int]:
    """Walk every root's tree to where this simulation ends (a chance node never expanded, a
    decision node not yet there, or the depth limit), and pack the model inputs.

    Returns (n_chance, n_expand): the first rows of the scratch's ``chance_*`` arrays are the inputs
    of the outcome call, the first rows of its ``expand_*`` arrays those of the recurrent call (the
    outcomes of new chance nodes are filled in by ``first_outcomes``).
    """
    tree, scratch, rules, params = _named(state)
    return _select(tree, scratch, rules, params)


@njit(cache=True, nogil=True)
def first_outcomes(scratch_arrays: tuple[np.ndarray, ...], probs: np.ndarray, n_expand: int) -> None:
    """The outcome each new chance node (the rows of the outcome call, ``probs``) is expanded with,
    packed into the recurrent call's inputs. ``expand_backup_select`` stores the probabilities."""
    scratch = Scratch(*scratch_arrays)
    no_visits = np.zeros(probs.shape[1], np.int32)  # a chance node never expanded was never visited
    for i in range(probs.shape[0]):
        scratch.outcome[scratch.chance_rows[i]] = choose_outcome(probs[i], no_visits)
    for i in range(n_expand):
        scratch.expand_outcomes[i] = scratch.outcome[scratch.expand_rows[i]]


@njit(cache=True, nogil=True, inline="always")
def _store_chance_probs(tree: Tree, scratch: Scratch, probs: np.ndarray) -> None:
    for i in range(probs.shape[0]):
        b = scratch.chance_rows[i]
        node, a = scratch.node[b], scratch.action[b]
        tree.chance_expanded[b, node, a] = True
        tree.chance_probs[b, node, a] = probs[i]


@njit(cache=True, nogil=True, inline="always")
def _expand(tree: Tree, scratch: Scratch, rules: Rules, recurrent: tuple[np.ndarray, ...]) -> np.ndarray:
    """Add the expanded nodes (prior: policy softmax over the actions legal on the node's side);
    returns each root's leaf, the node its value is backed up from."""
    next_hidden, rewards, policy_logits, values = recurrent
    leaf = scratch.node.copy()  # depth-limit leaves bootstrap from the node they reached
    for i in range(values.shape[0]):
        b = scratch.expand_rows[i]
        p, a, o = scratch.node[b], scratch.action[b], scratch.outcome[b]
        n = tree.node_count[b]
        tree.node_count[b] = n + 1
        tree.node_value[b, n] = values[i]
        tree.node_reward[b, n] = rewards[i]
        side = rules.next_side[tree.node_side[b, p] + 1, a]
        tree.node_side[b, n] = side
        _masked_softmax_row(policy_logits[i], rules.legal[side + 1], tree.node_prior[b, n])
        tree.node_depth[b, n] = tree.node_depth[b, p] + 1
        tree.node_parent[b, n] = p
        tree.node_parent_action[b, n] = a
        tree.node_parent_outcome[b, n] = o
        tree.embeddings[b, n] = next_hidden[i]
        tree.child[b, p, a, o] = n
        leaf[b] = n
    return leaf


@njit(cache=True, nogil=True, inline="always")
def _backup(tree: Tree, leaf: np.ndarray, discount: float) -> None:
    """Back every root's leaf value up to its root: G = r + discount * G along the path."""
    for b in range(leaf.shape[0]):
        node = leaf[b]
        ret = float(tree.node_value[b, node])
        tree.node_visits[b, node] += 1
        tree.node_value_sum[b, node] += ret
        while node != 0:
            parent = tree.node_parent[b, node]
            a = tree.node_parent_action[b, node]
            ret = tree.node_reward[b, node] + discount * ret
            tree.chance_visits[b, parent, a] += 1
            tree.chance_value_sum[b, parent, a] += ret
            tree.outcome_visits[b, parent, a, tree.node_parent_outcome[b, node]] += 1
            q = tree.chance_value_sum[b, parent, a] / tree.chance_visits[b, parent, a]
            if q < tree.q_min[b]:
                tree.q_min[b] = q
            if q > tree.q_max[b]:
                tree.q_max[b] = q
            tree.node_visits[b, parent] += 1
            tree.node_value_sum[b, parent] += ret
            node = parent


@njit(cache=True, nogil=True)
def expand_backup_select(
    state: tuple[tuple[object, ...], ...],
    chance_probs: np.ndarray,
    recurrent: tuple[np.ndarray, ...],
    select_next: bool,
) -> tuple[int, int]:
    """Store the outcome call's answers (``chance_probs``, a row per new chance node), add the nodes
    the recurrent call computed (``recurrent``: next hidden, reward, policy logits and value, a row
    per expanded node), back every root's simulation up, then, if ``select_next``, ``select`` the
    next simulation (its counts; (0, 0) otherwise)."""
    tree, scratch, rules, params = _named(state)
    _store_chance_probs(tree, scratch, chance_probs)
    _backup(tree, _expand(tree, scratch, rules, recurrent), params.discount)
    if not select_next:
        return 0, 0
    return _select(tree, scratch, rules, params)
