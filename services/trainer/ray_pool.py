"""Self-play on Ray (``smz train --ray [ADDRESS]``): ``--actors`` Ray actors, one CPU each, on this
machine or across a cluster, feeding the learner in the driver.

The market and sessions go into the object store once (numpy arrays, which every actor on a node maps
without copying); the learner's weights go in as numpy arrays every ``publish_every`` updates and are
handed to actors by reference. Each actor call plays one round and returns it whole; the driver keeps
one call in flight per actor. An actor that dies (a node lost, a SIGKILL) loses the round it was
playing, never part of it: Ray restarts the actor (``max_restarts``) and the driver calls it again.
"""

from __future__ import annotations

import os
import socket
import time
from typing import Any

import numpy as np
import torch
from rich.console import Console

from services.trainer.actor import CollectedRound, SelfPlayActor, SelfPlayData
from services.trainer.settings import TrainerSettings
from services.trainer.state import Counters, append_history
from shared.env import MarketData
from shared.model.config import ModelConfig
from shared.model.networks import MuZeroNetwork
from shared.training.config import TrainingConfig

try:
    import ray
    from ray.exceptions import ActorDiedError, RayActorError
except ImportError:  # the optional extra is not installed
    ray = None

# A local Ray (``--ray`` without an address) stays small: the object store holds one market and a
# few weight versions.
LOCAL_OBJECT_STORE_BYTES = 200_000_000
RETRY_SECONDS = 1.0  # between calls to an actor Ray is restarting


def require_ray() -> None:
    if ray is None:
        raise LookupError("--ray needs Ray, the ray extra: pip install -e '.[ray]'")


def connect(address: str, actors: int) -> None:
    """Join the cluster at ``address`` ("auto": the one the environment names, RAY_ADDRESS or a
    ``ray start`` on this machine), or start a local Ray of ``actors`` CPUs for "local"."""
    if ray.is_initialized():
        return
    if address == "local":
        ray.init(
            num_cpus=actors,
            object_store_memory=LOCAL_OBJECT_STORE_BYTES,
            include_dashboard=False,
            log_to_driver=True,
        )
    else:
        try:
            ray.init(address=address, log_to_driver=True)
        except ConnectionError as exc:
            raise LookupError(f"cannot join the Ray cluster at {address}: {exc}") from exc


def data_arrays(data: SelfPlayData) -> tuple[Any, ...]:
    """The arrays of ``data``, the market's padded rows rather than its features: what actors map."""
    m = data.market
    return (m.instrument, m.ts, m.close, m.rows, data.outcomes, data.train_starts)


def _data_from(arrays: tuple[Any, ...]) -> SelfPlayData:
    instrument, ts, close, rows, outcomes, train_starts = arrays
    return SelfPlayData(MarketData(instrument, ts, close, rows), outcomes, train_starts)


class RayActor:
    """One Ray actor: a ``SelfPlayActor`` over the object store's arrays, one thread."""

    def __init__(
        self,
        actor_id: int,
        settings: TrainerSettings,
        config: TrainingConfig,
        model_config: ModelConfig,
        arrays: tuple[Any, ...],
        episodes: int,
    ) -> None:
        torch.set_num_threads(1)
        data = _data_from(arrays)
        # A restarted actor draws other sessions than the one it replaces: the pid enters the seed.
        rng = np.random.default_rng([settings.seed, actor_id, episodes, os.getpid()])
        self.actor = SelfPlayActor(settings, config, data, MuZeroNetwork(model_config), rng)

    def play(self, weights: tuple[int, dict[str, np.ndarray]], episodes: int) -> tuple[str, CollectedRound]:
        """One round with ``weights`` (their learner step and arrays), and where it was played."""
        step, state = weights
        self.actor.load(state, step)
        node = ray.get_runtime_context().get_node_id()[:8]
        return f"{socket.gethostname()} (node {node}) pid {os.getpid()}", self.actor.play(episodes)


class RayPool:
    """``settings.actors`` Ray actors; the driver (this process) is the learner."""

    def __init__(
        self,
        settings: TrainerSettings,
        config: TrainingConfig,
        model: MuZeroNetwork,
        data: SelfPlayData,
        counters: Counters,
    ) -> None:
        require_ray()
        if settings.ray is None:
            raise ValueError("RayPool needs settings.ray: an address, auto or local")
        self.owns_ray = not ray.is_initialized()  # then this run shuts it down at the end
        connect(settings.ray, settings.actors)
        self.settings, self.console = settings, Console()
        # Once: every actor maps the same arrays, and a restarted actor is built from them again.
        self.arrays = arrays = ray.put(data_arrays(data))
        remote = ray.remote(num_cpus=1, max_restarts=settings.max_restarts, max_task_retries=0)(RayActor)
        self.actors = [
            remote.options(name=f"smz-selfplay-{i}-{os.getpid()}").remote(
                i, settings, config, model.cfg, arrays, counters.episodes
            )
            for i in range(settings.actors)
        ]
        self.restarting: set[int] = set()  # lost a round, not back yet
        self.retry_at: dict[int, float] = {}  # when to call a restarting actor again
        self.gone: set[int] = set()  # out of restarts
        self.where: dict[int, str] = {}
        self.weights: Any = None
        self.in_flight: dict[Any, int] = {}  # the pending call of each live actor

    def publish(self, model: MuZeroNetwork, updates: int) -> None:
        state = {name: t.detach().cpu().numpy().copy() for name, t in model.state_dict().items()}
        self.weights = ray.put((updates, state))

    def _call(self, i: int, episodes: int) -> None:
        self.in_flight[self.actors[i].play.remote(self.weights, episodes)] = i

    def next_round(self, episodes: int, timeout: float) -> CollectedRound | None:
        calling = set(self.in_flight.values())
        now = time.monotonic()
        for i in range(len(self.actors)):
            if i not in calling and i not in self.gone and self.retry_at.get(i, 0.0) <= now:
                self._call(i, episodes)
        if not self.in_flight:
            if len(self.gone) == len(self.actors):
                raise RuntimeError("every Ray self-play actor is gone (restarted max_restarts times)")
            time.sleep(timeout)  # all of them restarting
            return None
        ready, _ = ray.wait(list(self.in_flight), num_returns=1, timeout=timeout)
        if not ready:
            return None
        i = self.in_flight.pop(ready[0])
        try:
            where, collected = ray.get(ready[0])
        except RayActorError as exc:
            self._failed(i, episodes, exc)
            return None
        self.restarting.discard(i)
        if self.where.get(i) != where:
            self.where[i] = where
            self.console.print(f"self-play actor {i} on {where}", soft_wrap=True)
        # Its next round starts now, at the episode count this round brings the run to.
        self._call(i, episodes + len(collected.round.trajectories))
        return collected

    def _failed(self, i: int, episodes: int, exc: RayActorError) -> None:
        """A call failed: the round is dropped whole. The actor is restarting (it is called again in a
        moment: calls fail until it is back) or, once out of restarts, gone."""
        if isinstance(exc, ActorDiedError):
            self.gone.add(i)
        elif i in self.restarting:  # a call made while it was still restarting: no round was lost
            self.retry_at[i] = time.monotonic() + RETRY_SECONDS
            return
        else:
            self.restarting.add(i)
            self.retry_at[i] = time.monotonic() + RETRY_SECONDS
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        restarting = i not in self.gone
        self.console.print(
            f"self-play actor {i} lost its round ({reason}); "
            + ("Ray restarts it" if restarting else "it is out of restarts, going on without it"),
            soft_wrap=True,
        )
        append_history(
            self.settings.out,
            {"kind": "actor_lost", "actor": i, "episodes": episodes, "restarting": restarting},
        )

    def close(self) -> None:
        for actor in self.actors:
            ray.kill(actor, no_restart=True)
        self.in_flight.clear()
        if self.owns_ray:
            ray.shutdown()
