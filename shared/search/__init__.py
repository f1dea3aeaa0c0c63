"""Batched stochastic MCTS (CONTRACT section 7): many roots in lockstep, trees in preallocated arrays.

The search only sees the model through ``shared.model.inference.ModelFunctions`` (numpy in and out),
as DeepMind's mctx separates its search from the model functions it calls.
"""

from shared.search.config import EntryGate, SearchConfig
from shared.search.search import SearchOutput, search

__all__ = ["EntryGate", "SearchConfig", "SearchOutput", "search"]
