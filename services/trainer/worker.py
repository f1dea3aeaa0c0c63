"""The training loop: self-play rounds, learner updates, validation, checkpoints, resume.

With ``--workers 1`` collection and learning alternate in one process; with more, self-play runs
in ``workers - 1`` processes beside the learner (``services/trainer/actor.py``), and with ``--ray`` in
``--actors`` Ray actors, on this machine or a cluster (``services/trainer/ray_pool.py``).
Every checkpoint holds the model, the optimiser, the replay, the
counters and the RNG states, so a restart continues where the last complete checkpoint stopped.
"""

from __future__ import annotations

import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from rich.console import Console

from services.trainer.actor import ProcessPool, RoundSource, SelfPlayActor, SelfPlayData
from services.trainer.board import TrainingBoard
from services.trainer.metrics import TrainerMetrics
from services.trainer.settings import TrainerSettings
from services.trainer.state import (
    OPTIMIZER_TENSORS,
    REPLAY_FILE,
    TRAINER_STATE,
    VALIDATION_TRADES,
    Counters,
    append_history,
    optimizer_from_files,
    optimizer_to_files,
    restore_trainer_state,
    trainer_state_json,
)
from shared.env import MarketData
from shared.metrics import validation_metrics
from shared.model.checkpoint import load_checkpoint, save_checkpoint
from shared.model.checkpoint_root import list_checkpoints, read_pointer, resolve_checkpoint, write_pointer
from shared.model.config import ModelConfig
from shared.model.inference import make_model_functions
from shared.model.networks import MuZeroNetwork
from shared.replay import ReplayBuffer
from shared.search import SearchConfig
from shared.sessions import tile_sessions
from shared.store import Store
from shared.training.batch import make_batch
from shared.training.config import TrainingConfig
from shared.training.gate import GateChoice, choose_gate
from shared.training.learner import Learner, LossParts, zero_output_heads
from shared.training.selfplay import SelfPlayRound

KEEP_LAST = 2


@dataclass
class TrainingRun:
    settings: TrainerSettings
    config: TrainingConfig
    model: MuZeroNetwork
    learner: Learner
    replay: ReplayBuffer
    counters: Counters
    rng: np.random.Generator


def _new_run(
    settings: TrainerSettings, config: TrainingConfig, model_config: ModelConfig | None
) -> TrainingRun:
    torch.manual_seed(settings.seed)
    model = zero_output_heads(MuZeroNetwork(model_config))
    replay = ReplayBuffer(config.replay_capacity, config.trade_quota, config.replay_min_size, settings.seed)
    return TrainingRun(
        settings,
        config,
        model,
        Learner(model, config),
        replay,
        Counters(),
        np.random.default_rng(settings.seed),
    )


def resume_or_start(
    settings: TrainerSettings,
    config: TrainingConfig,
    console: Console,
    model_config: ModelConfig | None = None,
) -> TrainingRun:
    """Continue from the latest complete checkpoint in ``settings.out``, or start afresh."""
    if not list_checkpoints(settings.out):
        return _new_run(settings, config, model_config)
    path = resolve_checkpoint(settings.out, "latest")
    loaded = load_checkpoint(path)
    run = _new_run(settings, config, loaded.model.cfg)
    run.model.load_state_dict(loaded.model.state_dict())
    state_bytes = (path / TRAINER_STATE).read_bytes()
    run.counters, optimizer_meta = restore_trainer_state(state_bytes, run.rng)
    optimizer_from_files(run.learner.optimizer, (path / OPTIMIZER_TENSORS).read_bytes(), optimizer_meta)
    run.learner.updates = run.counters.updates
    run.replay = ReplayBuffer.from_bytes(
        (path / REPLAY_FILE).read_bytes(), seed=settings.seed + run.counters.episodes
    )
    console.print(
        f"resumed from {path.name}: {run.counters.episodes} episodes, {run.counters.updates} updates, "
        f"{len(run.replay)} trajectories in replay"
    )
    return run


def save(run: TrainingRun, metrics: dict[str, float], choice: GateChoice) -> Path:
    optimizer_bytes, optimizer_meta = optimizer_to_files(run.learner.optimizer)
    validation_pnl = choice.result.trades.pnl_pips
    path = save_checkpoint(
        run.settings.out,
        run.model,
        version=f"step-{run.counters.updates:09d}-ep-{run.counters.episodes:07d}",
        training_step=run.counters.updates,
        metrics=metrics,
        extra_files={
            OPTIMIZER_TENSORS: optimizer_bytes,
            TRAINER_STATE: trainer_state_json(run.counters, run.rng, optimizer_meta, run.config.model_dump()),
            REPLAY_FILE: run.replay.to_bytes(),
            VALIDATION_TRADES: "\n".join(["pnl_pips", *(f"{p:.6f}" for p in validation_pnl)]).encode(),
        },
        training=training_record(run),
        serving=choice.manifest_entry(),
    )
    write_pointer(run.settings.out, "latest", path.name)
    _retain(run.settings.out)
    return path


def training_record(run: TrainingRun) -> dict[str, object]:
    """The manifest's ``training`` section: every training setting and what the run was trained on."""
    settings = run.settings
    return {
        **run.config.model_dump(mode="json"),
        "instrument": settings.instrument,
        "sessions_per_round": settings.sessions_per_round,
        "updates_per_round": settings.updates_per_round,
        "workers": settings.workers,
        "seed": settings.seed,
        "validation_sessions": settings.validation_sessions,
        "min_validation_trades": settings.min_validation_trades,
        "episodes": run.counters.episodes,
        "updates": run.counters.updates,
    }


def _retain(root: Path) -> None:
    """Keep the last two checkpoints plus whatever ``latest`` and ``best`` point at."""
    keep = {m.version for m in list_checkpoints(root)[-KEEP_LAST:]}
    keep |= {v for v in (read_pointer(root, "latest"), read_pointer(root, "best")) if v}
    for manifest in list_checkpoints(root):
        if manifest.version not in keep:
            shutil.rmtree(root / manifest.version, ignore_errors=True)


def validate(run: TrainingRun, market: MarketData, starts: np.ndarray) -> tuple[dict[str, float], GateChoice]:
    """The serving search on the validation sessions, with the entry gate it earns (shared.training.gate):
    the metrics are those of the agent as it will be served."""
    run.model.eval()
    choice = choose_gate(
        make_model_functions(run.model, "auto", threads=run.settings.threads),
        market,
        starts,
        SearchConfig(num_simulations=run.config.validation_simulations),
        run.settings.min_validation_trades,
        env_config=run.config.env_config(),
    )
    metrics = validation_metrics(choice.metrics)
    metrics["validation_entry_margin"] = choice.gate.margin if choice.gate.allow_entries else -1.0
    return metrics, choice


class _Trainer:
    """The learner's side of a run: replay, updates, metrics, validation and checkpoints."""

    def __init__(self, run: TrainingRun, market: MarketData, validation_starts: np.ndarray) -> None:
        self.run = run
        self.market = market
        self.validation_starts = validation_starts
        self.console = Console()
        self.metrics_out = TrainerMetrics()
        counters = run.counters
        self.metrics_out.resume(counters.episodes, counters.updates, counters.bar_steps)
        self.metrics: dict[str, float] = {}
        self.last_validated = run.counters.episodes
        self.board = TrainingBoard(run.settings.out, run.counters.episodes)
        self._learn_seconds = 0.0  # the learner's time since the last round was logged

    def record(self, record: dict[str, object]) -> None:
        """One history line and the same scalars as TensorBoard events."""
        append_history(self.run.settings.out, record)
        self.board.write(record)

    def add_round(
        self, round_: SelfPlayRound, temperature: float, collect_seconds: float, weights_step: int
    ) -> None:
        run = self.run
        for trajectory in round_.trajectories:
            run.replay.add(trajectory)
        run.counters.episodes += len(round_.trajectories)
        run.counters.bar_steps += round_.bar_steps
        m = self.metrics_out
        m.episodes.inc(len(round_.trajectories))
        m.bar_steps.inc(round_.bar_steps)
        m.bar_steps_per_s.set(round_.bar_steps / max(collect_seconds, 1e-9))
        shares = round_.action_counts / max(round_.action_counts.sum(), 1)
        m.record_actions(shares.tolist())
        m.buffer_size.set(len(run.replay))
        m.buffer_trade_share.set(run.replay.trade_share())
        m.temperature.set(temperature)
        self._round_shares = shares
        self._round = (round_, temperature, weights_step)
        self._round_bar_steps_per_s = round_.bar_steps / max(collect_seconds, 1e-9)

    def learn(self, updates: int) -> list[LossParts]:
        run = self.run
        if not run.replay.ready or updates <= 0:
            return []
        began = time.monotonic()
        losses = []
        for _ in range(updates):
            batch = make_batch(
                run.replay,
                self.market,
                run.config.batch_size,
                run.config.unroll_steps,
                run.config.td_steps,
                run.config.discount,
                run.config.event_share,
            )
            losses.append(run.learner.step(batch))
        run.counters.updates = run.learner.updates
        seconds = time.monotonic() - began
        self._learn_seconds += seconds
        self.metrics_out.updates.inc(len(losses))
        self.metrics_out.updates_per_s.set(len(losses) / max(seconds, 1e-9))
        return losses

    def log_round(self, losses: list[LossParts]) -> None:
        """One history line and one terminal line for the round last added."""
        run = self.run
        round_, temperature, weights_step = self._round
        shares = self._round_shares
        self.metrics_out.record_losses(losses)
        speed = {"selfplay_bar_steps_per_second": self._round_bar_steps_per_s}
        if losses:
            speed["updates_per_second"] = len(losses) / max(self._learn_seconds, 1e-9)
        self._learn_seconds = 0.0
        self.record(
            {
                "kind": "round",
                "episodes": run.counters.episodes,
                "updates": run.counters.updates,
                "temperature": temperature,
                "selfplay_weights_step": weights_step,
                "trades": round_.trades,
                "selfplay_expectancy_pips": float(round_.trade_pnl.mean()) if len(round_.trade_pnl) else 0.0,
                "action_shares": shares.tolist(),
                "replay_trajectories": len(run.replay),
                "replay_trade_share": run.replay.trade_share(),
                **speed,
                **{
                    f"loss_{c}": float(np.mean([getattr(x, c) for x in losses]))
                    for c in ("total", "policy", "value", "reward", "outcome")
                    if losses
                },
            },
        )
        loss_text = f"loss {np.mean([x.total for x in losses]):.3f}" if losses else "filling replay"
        self.console.print(
            f"ep {run.counters.episodes:>6} upd {run.counters.updates:>6} T {temperature:4.1f} "
            f"trades {round_.trades:>5} exp {round_.trade_pnl.mean() if len(round_.trade_pnl) else 0:6.2f} "
            f"actions {np.round(shares, 2)} {loss_text} replay {len(run.replay)} "
            f"({run.replay.trade_share():.0%} with trades)"
        )

    def validation_due(self) -> bool:
        return self.run.counters.episodes - self.last_validated >= self.run.settings.validate_every

    def validate_and_save(self) -> None:
        run, settings = self.run, self.run.settings
        self.last_validated = run.counters.episodes
        metrics, choice = validate(run, self.market, self.validation_starts)
        self.metrics = metrics
        self.metrics_out.record_validation(metrics)
        # Best = most validation pips per session as served (the gate applied); a closed gate scores 0,
        # so any checkpoint with an edge beats every one without, and among those the latest wins.
        score = choice.metrics.pips_per_session
        best = run.counters.best_score
        is_best = best is None or score > best or (score == best == 0.0)
        if is_best:
            run.counters.best_score = score
        # The saved counters already know whether this one is best.
        path = save(run, metrics, choice)
        if is_best:
            run.counters.best_version = path.name
            write_pointer(settings.out, "best", path.name)
        self.record(
            {
                "kind": "validation",
                "episodes": run.counters.episodes,
                "updates": run.counters.updates,
                "version": path.name,
                **metrics,
            },
        )
        m = choice.metrics
        gate = f"entry margin {choice.gate.margin:g}" if choice.gate.allow_entries else "no edge: gate closed"
        self.console.print(
            f"validation: {m.expectancy_pips:+.2f} pips/trade (95% CI {m.expectancy_ci95[0]:+.2f} "
            f"{m.expectancy_ci95[1]:+.2f}) over {m.trades} trades, {m.pips_per_session:+.2f} pips/session, "
            f"{m.health}; {gate}; saved {path.name}{' (best)' if is_best else ''}"
        )

    def summary(self) -> dict[str, object]:
        return {"episodes": self.run.counters.episodes, "updates": self.run.counters.updates, **self.metrics}


def run_training(
    settings: TrainerSettings, config: TrainingConfig | None = None, model_config: ModelConfig | None = None
) -> dict[str, object]:
    """Train until the budget (``--minutes`` or ``--episodes``) is spent; validate and save at the end."""
    if settings.minutes is None and settings.episodes is None:
        raise ValueError("give --minutes or --episodes")
    config = config or TrainingConfig()
    # Self-play processes share this host's cores; Ray actors have CPUs of their own (on a cluster the
    # head gives them none), so the learner keeps its threads.
    torch.set_num_threads(1 if settings.workers > 1 else settings.threads)
    with Store(settings.db, read_only=True) as store:
        dataset = store.load_dataset(settings.instrument)
    market = MarketData(settings.instrument, dataset.bars.ts, dataset.bars.close, dataset.features)
    train_starts = dataset.starts_of("train")
    validation_starts = tile_sessions(dataset.starts_of("validation"))[: settings.validation_sessions]
    if len(train_starts) == 0 or len(validation_starts) == 0:
        raise LookupError(f"{settings.instrument} needs sessions in both the train and validation splits")
    trainer = _Trainer(resume_or_start(settings, config, Console(), model_config), market, validation_starts)
    trainer.metrics_out.serve(settings.metrics_port, settings.metrics_host)
    began = time.monotonic()
    counters = trainer.run.counters
    target_episodes = (counters.episodes + settings.episodes) if settings.episodes else None

    def done() -> bool:
        if target_episodes is not None and counters.episodes >= target_episodes:
            return True
        return settings.minutes is not None and time.monotonic() - began >= settings.minutes * 60

    try:
        if settings.workers == 1 and settings.ray is None:
            _alternate(trainer, dataset.outcome, train_starts, done)
        else:
            source = _round_source(trainer.run, market, dataset.outcome, train_starts)
            try:
                _overlap(trainer, done, source)
            finally:
                source.close()
        if counters.episodes != trainer.last_validated or not trainer.metrics:
            trainer.validate_and_save()
    finally:
        trainer.board.close()
    return trainer.summary()


def _round_source(
    run: TrainingRun, market: MarketData, outcomes: np.ndarray, train_starts: np.ndarray
) -> RoundSource:
    """Ray actors with ``--ray``, else ``workers - 1`` processes on this host."""
    settings = run.settings
    if settings.ray is None:
        return ProcessPool(settings, run.config, run.model, run.counters.episodes)
    from services.trainer.ray_pool import RayPool  # Ray is an optional extra

    data = SelfPlayData(market, outcomes, train_starts)
    return RayPool(settings, run.config, run.model, data, run.counters)


def _alternate(
    trainer: _Trainer, outcomes: np.ndarray, train_starts: np.ndarray, done: Callable[[], bool]
) -> None:
    """One process: a self-play round with the latest weights, then the learner's updates."""
    run, settings = trainer.run, trainer.run.settings
    data = SelfPlayData(trainer.market, outcomes, train_starts)
    actor = SelfPlayActor(settings, run.config, data, run.model, run.rng, threads=settings.threads)
    while not done():
        actor.weights_step = run.counters.updates  # it plays with the learner's own model
        collected = actor.play(run.counters.episodes)
        trainer.add_round(collected.round, collected.temperature, collected.seconds, collected.weights_step)
        trainer.log_round(trainer.learn(settings.updates_per_round))
        if trainer.validation_due() and not done():
            trainer.validate_and_save()


def _overlap(trainer: _Trainer, done: Callable[[], bool], source: RoundSource) -> None:
    """Self-play actors (processes on this host or Ray actors) feed the learner in this process. The
    learner keeps the single-process ratio of updates per episode (it takes a round only once the
    previous round's updates are done, so a slow learner holds self-play back instead of falling
    behind) and publishes its weights every ``publish_every`` updates."""
    run, settings = trainer.run, trainer.run.settings
    source.publish(run.model, run.counters.updates)
    per_episode = settings.updates_per_round / settings.sessions_per_round
    budget = 0.0  # updates owed for the episodes received so far
    since_publish = 0
    round_losses: list[LossParts] | None = None  # the updates owed for the last round received
    while True:
        if budget >= 1:
            losses = trainer.learn(min(int(budget), settings.publish_every - since_publish))
            budget -= len(losses)
            since_publish += len(losses)
            if round_losses is not None:
                round_losses.extend(losses)
            if since_publish >= settings.publish_every:
                source.publish(run.model, run.counters.updates)
                since_publish = 0
            continue
        # The last round's updates are done: log it, validate if due, then take the next one.
        if round_losses is not None:
            trainer.log_round(round_losses)
            round_losses = None
            if trainer.validation_due() and not done():
                trainer.validate_and_save()
        if done():
            break
        collected = source.next_round(run.counters.episodes, timeout=0.5)
        if collected is None:
            continue
        trainer.add_round(collected.round, collected.temperature, collected.seconds, collected.weights_step)
        round_losses = []
        if run.replay.ready:
            budget += per_episode * len(collected.round.trajectories)
