"""Self-play beside the learner (``--workers`` 2 or more, or ``--ray``): collection overlaps learning.

One actor, ``SelfPlayActor``, plays a round with the newest weights it was given; the two pools that
run actors feed the learner through the same small protocol, ``RoundSource``. Here, the single-host
pool: processes that copy the newest weights from a model in shared memory at the start of each round
and send their rounds to the learner over a queue. The Ray pool is ``services/trainer/ray_pool.py``.
"""

from __future__ import annotations

import multiprocessing
import queue as queue_module
import time
from collections.abc import Mapping
from dataclasses import dataclass
from multiprocessing.context import SpawnContext
from multiprocessing.sharedctypes import Synchronized
from multiprocessing.synchronize import Event, Lock
from typing import Protocol

import numpy as np
import torch
import torch.multiprocessing as mp

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


class RoundSource(Protocol):
    """Self-play as the learner sees it: rounds come in, weights go out."""

    def publish(self, model: MuZeroNetwork, updates: int) -> None:
        """Make ``model``'s weights (after ``updates`` learner updates) the ones the next rounds play."""

    def next_round(self, episodes: int, timeout: float) -> CollectedRound | None:
        """A whole round, or None if none arrived within ``timeout`` seconds; ``episodes`` is the run's
        count so far (the collecting temperature and search follow it)."""

    def close(self) -> None:
        """Stop every actor."""


@dataclass(frozen=True)
class SelfPlayData:
    """What an actor reads: the market, the outcome of every bar and the training sessions' starts."""

    market: MarketData
    outcomes: np.ndarray
    train_starts: np.ndarray

    @classmethod
    def load(cls, settings: TrainerSettings) -> SelfPlayData:
        with Store(settings.db, read_only=True) as store:
            dataset = store.load_dataset(settings.instrument)
        market = MarketData(settings.instrument, dataset.bars.ts, dataset.bars.close, dataset.features)
        return cls(market, dataset.outcome, dataset.starts_of("train"))


class SelfPlayActor:
    """Plays one round at a time with the newest weights it has loaded: the loop body of every actor."""

    def __init__(
        self,
        settings: TrainerSettings,
        config: TrainingConfig,
        data: SelfPlayData,
        model: MuZeroNetwork,
        rng: np.random.Generator,
        threads: int = 1,
    ) -> None:
        self.settings, self.config, self.data, self.rng = settings, config, data, rng
        self.model, self.threads = model, threads
        self.weights_step = -2  # below any published version, so the first weights load

    def load(self, state: Mapping[str, torch.Tensor | np.ndarray], weights_step: int) -> None:
        """Take the learner's weights (tensors or numpy arrays) unless they are the ones loaded."""
        if weights_step == self.weights_step:
            return
        with torch.no_grad():
            for name, tensor in self.model.state_dict().items():
                value = state[name]
                if isinstance(value, torch.Tensor):
                    tensor.copy_(value)
                else:  # a read-only array of Ray's object store: copied in, never wrapped as a tensor
                    tensor.numpy()[...] = value
        self.weights_step = weights_step

    def play(self, episodes: int) -> CollectedRound:
        """One round of ``sessions_per_round`` sessions, at the temperature of ``episodes``."""
        self.model.eval()
        collector = make_model_functions(self.model, "auto", threads=self.threads)
        temperature = self.config.temperature(episodes)
        began = time.monotonic()
        round_ = play_round(
            collector,
            self.data.market,
            self.data.outcomes,
            self.rng.choice(self.data.train_starts, size=self.settings.sessions_per_round),
            self.config.collect_search(episodes),
            self.rng,
            self.config.env_config(),
        )
        return CollectedRound(round_, temperature, time.monotonic() - began, self.weights_step)


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

    def pull(self, actor: SelfPlayActor) -> None:
        """Copy the published weights into ``actor`` if newer than the ones it has."""
        if self.version.value == actor.weights_step:  # an int read: no lock needed
            return
        with self.lock:
            actor.load(self.model.state_dict(), int(self.version.value))


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
    rng = np.random.default_rng([settings.seed, actor_id, int(episodes.value)])
    model = MuZeroNetwork(weights.model.cfg)
    actor = SelfPlayActor(settings, config, SelfPlayData.load(settings), model, rng)
    parent = multiprocessing.parent_process()

    def running() -> bool:
        # A learner killed without its cleanup (SIGKILL) must not leave actors playing forever.
        return not stop.is_set() and (parent is None or parent.is_alive())

    while running():
        weights.pull(actor)
        collected = actor.play(int(episodes.value))
        while running():
            try:
                rounds.put(collected, timeout=0.5)
                break
            except queue_module.Full:
                continue


class ProcessPool:
    """``settings.workers - 1`` self-play processes on this host (``--workers``)."""

    def __init__(
        self, settings: TrainerSettings, config: TrainingConfig, model: MuZeroNetwork, episodes: int
    ) -> None:
        ctx = mp.get_context("spawn")
        self.weights = SharedWeights(model, ctx)
        self.episodes: Synchronized[int] = ctx.Value("q", episodes)  # type: ignore[assignment]
        self.rounds: mp.Queue[CollectedRound] = ctx.Queue(maxsize=settings.workers)
        self.stop = ctx.Event()
        self.actors = [
            ctx.Process(
                target=run_actor,
                args=(i, settings, config, self.weights, self.episodes, self.rounds, self.stop),
                name=f"smz-selfplay-{i}",
                daemon=True,
            )
            for i in range(settings.workers - 1)
        ]
        for actor in self.actors:
            actor.start()

    def publish(self, model: MuZeroNetwork, updates: int) -> None:
        self.weights.publish(model, updates)

    def next_round(self, episodes: int, timeout: float) -> CollectedRound | None:
        self.episodes.value = episodes
        if not all(actor.is_alive() for actor in self.actors):
            raise RuntimeError("a self-play process died; see its error above")
        try:
            return self.rounds.get(timeout=timeout)
        except queue_module.Empty:
            return None

    def close(self) -> None:
        self.stop.set()
        for actor in self.actors:
            actor.join(timeout=30)
            if actor.is_alive():
                actor.terminate()
        self.rounds.cancel_join_thread()
