"""Prometheus metrics of the trainer (exposed on ``--metrics-port``; 0 turns the endpoint off)."""

from __future__ import annotations

import warnings

from prometheus_client import CollectorRegistry, Counter, Gauge, start_http_server

from shared.reward import ACTIONS
from shared.training.learner import LossParts


class TrainerMetrics:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        r = self.registry
        self.loss = Gauge(
            "smz_trainer_loss", "Mean loss of the last round, by component", ["component"], registry=r
        )
        self.episodes = Counter("smz_trainer_episodes", "Self-play episodes (sessions) collected", registry=r)
        self.updates = Counter("smz_trainer_updates", "Learner updates", registry=r)
        self.bar_steps = Counter("smz_trainer_selfplay_bar_steps", "Self-play bar-steps", registry=r)
        self.updates_per_s = Gauge("smz_trainer_updates_per_second", "Learner updates per second", registry=r)
        self.bar_steps_per_s = Gauge(
            "smz_trainer_selfplay_bar_steps_per_second", "Self-play bar-steps per second", registry=r
        )
        self.buffer_size = Gauge("smz_trainer_replay_trajectories", "Trajectories in replay", registry=r)
        self.buffer_trade_share = Gauge(
            "smz_trainer_replay_trade_share", "Share of replay trajectories with a trade", registry=r
        )
        self.temperature = Gauge(
            "smz_trainer_temperature", "Visit-count temperature of self-play", registry=r
        )
        self.action_share = Gauge(
            "smz_trainer_selfplay_action_share",
            "Share of each action in the last round",
            ["action"],
            registry=r,
        )
        self.validation = Gauge(
            "smz_trainer_validation", "Validation metrics of the latest checkpoint", ["metric"], registry=r
        )

    def serve(self, port: int, host: str) -> bool:
        """Start the endpoint; a busy port (another trainer, say) costs the metrics, not the run."""
        if not port:
            return False
        try:
            start_http_server(port, addr=host, registry=self.registry)
        except OSError as exc:
            warnings.warn(f"trainer metrics not served: {host}:{port}: {exc}", stacklevel=2)
            return False
        return True

    def record_losses(self, losses: list[LossParts]) -> None:
        if not losses:
            return
        for component in ("total", "policy", "value", "reward", "outcome"):
            self.loss.labels(component).set(sum(getattr(x, component) for x in losses) / len(losses))

    def record_actions(self, shares: list[float]) -> None:
        for name, share in zip(ACTIONS, shares, strict=True):
            self.action_share.labels(name).set(share)

    def record_validation(self, metrics: dict[str, float]) -> None:
        for name, value in metrics.items():
            self.validation.labels(name.removeprefix("validation_")).set(value)
