"""The training loop: self-play rounds, learner updates, validation, checkpoints, resume.

One process for now: collection and learning alternate (``--workers`` > 1 is refused until the
two-process layout lands). Every checkpoint holds the model, the optimiser, the replay, the
counters and the RNG states, so a restart continues where the last complete checkpoint stopped.
"""

from __future__ import annotations

import shutil
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from rich.console import Console

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
from shared.evaluation import evaluate_policy
from shared.model.checkpoint import (
    list_checkpoints,
    load_checkpoint,
    read_pointer,
    resolve_checkpoint,
    save_checkpoint,
    write_pointer,
)
from shared.model.config import ModelConfig
from shared.model.inference import make_model_functions
from shared.model.networks import MuZeroNetwork
from shared.policies import SearchPolicy
from shared.replay import ReplayBuffer
from shared.search import SearchConfig
from shared.sessions import tile_sessions
from shared.store import Store
from shared.training.batch import make_batch
from shared.training.config import TrainingConfig
from shared.training.learner import Learner, zero_output_heads
from shared.training.selfplay import play_round

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


def save(run: TrainingRun, metrics: dict[str, float], validation_pnl: np.ndarray) -> Path:
    optimizer_bytes, optimizer_meta = optimizer_to_files(run.learner.optimizer)
    path = save_checkpoint(
        run.settings.out,
        run.model,
        version=f"step-{run.counters.updates:09d}-ep-{run.counters.episodes:07d}",
        training_step=run.counters.updates,
        metrics=metrics,
        extra_files={
            OPTIMIZER_TENSORS: optimizer_bytes,
            TRAINER_STATE: trainer_state_json(run.counters, run.rng, optimizer_meta),
            REPLAY_FILE: run.replay.to_bytes(),
            VALIDATION_TRADES: "\n".join(["pnl_pips", *(f"{p:.6f}" for p in validation_pnl)]).encode(),
        },
    )
    write_pointer(run.settings.out, "latest", path.name)
    _retain(run.settings.out)
    return path


def _retain(root: Path) -> None:
    """Keep the last two checkpoints plus whatever ``latest`` and ``best`` point at."""
    keep = {m.version for m in list_checkpoints(root)[-KEEP_LAST:]}
    keep |= {v for v in (read_pointer(root, "latest"), read_pointer(root, "best")) if v}
    for manifest in list_checkpoints(root):
        if manifest.version not in keep:
            shutil.rmtree(root / manifest.version, ignore_errors=True)


def validate(run: TrainingRun, market: MarketData, starts: np.ndarray) -> tuple[dict[str, float], np.ndarray]:
    run.model.eval()
    policy = SearchPolicy(
        make_model_functions(run.model, "auto", threads=run.settings.threads),
        SearchConfig(num_simulations=run.config.validation_simulations),
    )
    result = evaluate_policy(market, starts, policy)
    m = result.metrics
    shares = m.action_distribution
    return {
        "validation_expectancy_pips": m.expectancy_pips,
        "validation_win_rate": m.win_rate,
        "validation_sqn": m.sqn,
        "validation_trades": float(m.trades),
        "validation_max_action_share": max(shares.values()),
        **{f"validation_share_{k.lower()}": v for k, v in shares.items()},
    }, result.trades.pnl_pips


def run_training(
    settings: TrainerSettings, config: TrainingConfig | None = None, model_config: ModelConfig | None = None
) -> dict[str, object]:
    if settings.workers != 1:
        raise ValueError(
            "--workers above 1 is not available yet: collection and learning alternate in one process"
        )
    if settings.minutes is None and settings.episodes is None:
        raise ValueError("give --minutes or --episodes")
    config = config or TrainingConfig()
    console = Console()
    torch.set_num_threads(settings.threads)
    with Store(settings.db, read_only=True) as store:
        dataset = store.load_dataset(settings.instrument)
    market = MarketData(settings.instrument, dataset.bars.ts, dataset.bars.close, dataset.features)
    train_starts = dataset.starts_of("train")
    validation_starts = tile_sessions(dataset.starts_of("validation"))[: settings.validation_sessions]
    if len(train_starts) == 0 or len(validation_starts) == 0:
        raise LookupError(f"{settings.instrument} needs sessions in both the train and validation splits")
    run = resume_or_start(settings, config, console, model_config)
    metrics_out = TrainerMetrics()
    metrics_out.serve(settings.metrics_port, settings.metrics_host)
    began = time.monotonic()
    target_episodes = (run.counters.episodes + settings.episodes) if settings.episodes else None
    last_validated = run.counters.episodes
    metrics: dict[str, float] = {}

    def done() -> bool:
        if target_episodes is not None and run.counters.episodes >= target_episodes:
            return True
        return settings.minutes is not None and time.monotonic() - began >= settings.minutes * 60

    while not done():
        run.model.eval()
        collector = make_model_functions(run.model, "auto", threads=settings.threads)
        temperature = config.temperature(run.counters.episodes)
        collect_began = time.monotonic()
        round_ = play_round(
            collector,
            market,
            dataset.outcome,
            run.rng.choice(train_starts, size=settings.sessions_per_round),
            SearchConfig(num_simulations=config.collect_simulations, add_noise=True, temperature=temperature),
            run.rng,
        )
        collect_seconds = time.monotonic() - collect_began
        for trajectory in round_.trajectories:
            run.replay.add(trajectory)
        run.counters.episodes += len(round_.trajectories)
        run.counters.bar_steps += round_.bar_steps
        losses = []
        learn_began = time.monotonic()
        if run.replay.ready:
            for _ in range(settings.updates_per_round):
                batch = make_batch(
                    run.replay,
                    market,
                    config.batch_size,
                    config.unroll_steps,
                    config.td_steps,
                    config.discount,
                )
                losses.append(run.learner.step(batch))
            run.counters.updates = run.learner.updates
        learn_seconds = time.monotonic() - learn_began
        shares = round_.action_counts / max(round_.action_counts.sum(), 1)
        metrics_out.episodes.inc(len(round_.trajectories))
        metrics_out.updates.inc(len(losses))
        metrics_out.bar_steps.inc(round_.bar_steps)
        metrics_out.bar_steps_per_s.set(round_.bar_steps / max(collect_seconds, 1e-9))
        if losses:
            metrics_out.updates_per_s.set(len(losses) / max(learn_seconds, 1e-9))
        metrics_out.record_losses(losses)
        metrics_out.record_actions(shares.tolist())
        metrics_out.buffer_size.set(len(run.replay))
        metrics_out.buffer_trade_share.set(run.replay.trade_share())
        metrics_out.temperature.set(temperature)
        append_history(
            settings.out,
            {
                "kind": "round",
                "episodes": run.counters.episodes,
                "updates": run.counters.updates,
                "temperature": temperature,
                "trades": round_.trades,
                "selfplay_expectancy_pips": float(round_.trade_pnl.mean()) if len(round_.trade_pnl) else 0.0,
                "action_shares": shares.tolist(),
                **{
                    f"loss_{c}": float(np.mean([getattr(x, c) for x in losses]))
                    for c in ("total", "policy", "value", "reward", "outcome")
                    if losses
                },
            },
        )
        loss_text = f"loss {np.mean([x.total for x in losses]):.3f}" if losses else "filling replay"
        console.print(
            f"ep {run.counters.episodes:>6} upd {run.counters.updates:>6} T {temperature:4.1f} "
            f"trades {round_.trades:>5} exp {round_.trade_pnl.mean() if len(round_.trade_pnl) else 0:6.2f} "
            f"actions {np.round(shares, 2)} {loss_text} replay {len(run.replay)} "
            f"({run.replay.trade_share():.0%} with trades)"
        )
        if run.counters.episodes - last_validated >= settings.validate_every or done():
            last_validated = run.counters.episodes
            metrics, validation_pnl = validate(run, market, validation_starts)
            metrics_out.record_validation(metrics)
            good = metrics["validation_trades"] >= settings.min_validation_trades
            best = run.counters.best_expectancy
            is_best = good and (best is None or metrics["validation_expectancy_pips"] > best)
            if is_best:
                run.counters.best_expectancy = metrics["validation_expectancy_pips"]
            # The saved counters already know whether this one is best.
            path = save(run, metrics, validation_pnl)
            if is_best:
                run.counters.best_version = path.name
                write_pointer(settings.out, "best", path.name)
            append_history(
                settings.out,
                {"kind": "validation", "episodes": run.counters.episodes, "version": path.name, **metrics},
            )
            console.print(
                f"validation: expectancy {metrics['validation_expectancy_pips']:.2f} pips over "
                f"{int(metrics['validation_trades'])} trades, max action share "
                f"{metrics['validation_max_action_share']:.0%}; saved {path.name}"
            )
    return {"episodes": run.counters.episodes, "updates": run.counters.updates, **metrics}
