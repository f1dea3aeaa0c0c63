"""The search trees of a batch of roots, held in preallocated arrays (one row per root).

Decision nodes are numbered 0..num_simulations per root (0 is the root; every simulation adds at
most one). A chance node is a (decision node, action) pair and lives in the ``chance_*`` arrays; its
children are decision nodes indexed by outcome.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

UNVISITED = -1


@dataclass
class Tree:
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
