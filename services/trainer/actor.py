"""Self-play in its own process (``--workers`` 2 or more): collection overlaps learning.

The learner publishes its weights to a model in shared memory every few dozen updates; each actor
copies the newest published weights at the start of a round, plays one round of sessions with the
batched search and sends the trajectories to the learner over a queue.
"""

from __future__ import annotations

import multiprocessing
import queue as queue_module
import time
from dataclasses import dataclass
from multiprocessing.context import SpawnContext
from multiprocessing.sharedctypes import Synchronized
from multiprocessing.synchronize import Event, Lock

import numpy as np
import torch

from services.trainer.settings import TrainerSettings
from shared.env import MarketData
from shared.model.inference import make_model_functions
from shared.model.networks import MuZeroNetwork
from shared.store import Store
from shared.training.config import TrainingConfig
from shared.training.selfplay import SelfPlayRound, play_round


@dataclass(frozen=True)
class CollectedRound:
    """What an actor sends the learner after each round."""

    round: SelfPlayRound
    temperature: float
    seconds: float
    weights_step: int  # learner updates behind the weights that played the round


class SharedWeights:
    """A model in shared memory, versioned by the learner's update count: one writer, many readers."""

    def __init__(self, model: MuZeroNetwork, ctx: SpawnContext) -> None:
        self.model = MuZeroNetwork(model.cfg)
        self.model.load_state_dict(model.state_dict())
        self.model.share_memory()
        self.version: Synchronized[int] = ctx.Value("q", -1)  # type: ignore[assignment]
        self.lock: Lock = ctx.Lock()

    def publish(self, model: MuZeroNetwork, updates: int) -> None:
        with self.lock, torch.no_grad():
            shared = self.model.state_dict()
            for name, tensor in model.state_dict().items():
                shared[name].copy_(tensor)
            self.version.value = updates

    def pull(self, model: MuZeroNetwork, seen: int) -> int:
        """Copy the published weights into ``model`` if newer than ``seen``; return their version."""
        if self.version.value == seen:  # an int read: no lock needed
            return seen
        with self.lock:
            model.load_state_dict(self.model.state_dict())
            return int(self.version.value)


def run_actor(
    actor_id: int,
    settings: TrainerSettings,
    config: TrainingConfig,
    weights: SharedWeights,
    episodes: Synchronized[int],
    rounds: queue_module.Queue[CollectedRound],
    stop: Event,
) -> None:
    """Play rounds until ``stop`` is set (the target of each actor process)."""
    torch.set_num_threads(1)
    with Store(settings.db, read_only=True) as store:
        dataset = store.load_dataset(settings.instrument)
    market = MarketData(settings.instrument, dataset.bars.ts, dataset.bars.close, dataset.features)
    train_starts = dataset.starts_of("train")
    rng = np.random.default_rng([settings.seed, actor_id, int(episodes.value)])
    model = MuZeroNetwork(weights.model.cfg)
    model.eval()
    seen = -2  # below any published version, so the first pull copies
    parent = multiprocessing.parent_process()

    def running() -> bool:
        # A learner killed without its cleanup (SIGKILL) must not leave actors playing forever.
        return not stop.is_set() and (parent is None or parent.is_alive())

    while running():
        seen = weights.pull(model, seen)
        collector = make_model_functions(model, "auto", threads=1)
        temperature = config.temperature(int(episodes.value))
        began = time.monotonic()
        round_ = play_round(
            collector,
            market,
            dataset.outcome,
            rng.choice(train_starts, size=settings.sessions_per_round),
            config.collect_search(int(episodes.value)),
            rng,
            config.env_config(),
        )
        collected = CollectedRound(round_, temperature, time.monotonic() - began, seen)
        while running():
            try:
                rounds.put(collected, timeout=0.5)
                break
            except queue_module.Full:
                continue
