"""Prometheus metrics of the trainer (exposed on ``--metrics-port``; 0 turns the endpoint off).

One gauge per validation metric, each in its own unit (pips, trades, ratios 0-1), instead of one gauge
with a ``metric`` label mixing them. The counters continue a resumed run's counts.
"""

from __future__ import annotations

import warnings

from prometheus_client import CollectorRegistry, Counter, Gauge, start_http_server

from shared.reward import ACTIONS
from shared.training.learner import LossParts

LOSS_COMPONENTS = ("policy", "value", "reward", "outcome")
ACTION_SHARE_PREFIX = "share_"  # shared.metrics.validation_metrics: share_<action> for each action
# Validation key (``shared.metrics.validation_metrics`` and services.trainer.worker.validate, without
# the ``validation_`` prefix) -> its gauge's name and help.
VALIDATION_GAUGES: dict[str, tuple[str, str]] = {
    "expectancy_pips": ("expectancy_pips", "Mean P&L per closed trade after spread, pips"),
    "expectancy_ci95_low": (
        "expectancy_ci95_low_pips",
        "Low end of the expectancy's 95% bootstrap interval, pips",
    ),
    "expectancy_ci95_high": (
        "expectancy_ci95_high_pips",
        "High end of the expectancy's 95% bootstrap interval, pips",
    ),
    "edge": ("edge", "1 when the expectancy's 95% interval lies above 0, else 0"),
    "pips_per_session": ("pips_per_session", "Total P&L over the sessions played, pips per session"),
    "total_pips": ("pnl_pips", "Total P&L of the closed trades, pips"),
    "trades": ("trades", "Closed trades"),
    "win_rate": ("win_ratio", "Share of the closed trades with P&L > 0 (0-1)"),
    "sqn": ("sqn", "System quality number: sqrt(trades) * mean / standard deviation of the trade P&L"),
    "trades_per_session": ("trades_per_session", "Closed trades per session played"),
    "sessions_with_trade_share": ("sessions_with_trade_ratio", "Share of the sessions with a trade (0-1)"),
    "long_entry_share": ("long_entry_ratio", "Share of the entries that were long (0-1)"),
    "flat_hold_share": ("flat_hold_ratio", "HOLD among the decisions taken while flat (0-1)"),
    "healthy": ("healthy", "1 when the policy's health is 'healthy', else 0"),
    "entry_margin": ("entry_margin", "The entry gate's margin in reward units; -1 when the gate is closed"),
}


class TrainerMetrics:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        self._define_learning_metrics(self.registry)
        self._define_selfplay_metrics(self.registry)
        self._define_validation_metrics(self.registry)

    def _define_learning_metrics(self, r: CollectorRegistry) -> None:
        self.loss = Gauge(
            "smz_trainer_loss", "Mean loss of the last round, by component", ["component"], registry=r
        )
        self.weighted_loss = Gauge(
            "smz_trainer_weighted_loss",
            "Mean of the loss the learner minimises in the last round: the components weighted by the "
            "training config's *_weight",
            registry=r,
        )
        self.updates = Counter(
            "smz_trainer_updates", "Learner updates (a resumed run goes on counting)", registry=r
        )
        self.updates_per_s = Gauge("smz_trainer_updates_per_second", "Learner updates per second", registry=r)
        self.buffer_size = Gauge("smz_trainer_replay_trajectories", "Trajectories in replay", registry=r)
        self.buffer_trade_share = Gauge(
            "smz_trainer_replay_trade_ratio",
            "Share of the replay's trajectories with a trade (0-1)",
            registry=r,
        )

    def _define_selfplay_metrics(self, r: CollectorRegistry) -> None:
        self.episodes = Counter(
            "smz_trainer_episodes",
            "Self-play episodes (sessions) collected (a resumed run goes on counting)",
            registry=r,
        )
        self.bar_steps = Counter(
            "smz_trainer_selfplay_bar_steps",
            "Self-play bar-steps (a resumed run goes on counting)",
            registry=r,
        )
        self.bar_steps_per_s = Gauge(
            "smz_trainer_selfplay_bar_steps_per_second", "Self-play bar-steps per second", registry=r
        )
        self.temperature = Gauge(
            "smz_trainer_temperature", "Visit-count temperature of self-play", registry=r
        )
        self.action_share = Gauge(
            "smz_trainer_selfplay_action_ratio",
            "Share of each action among the last round's decisions (0-1)",
            ["action"],
            registry=r,
        )

    def _define_validation_metrics(self, r: CollectorRegistry) -> None:
        self.validation = {
            key: Gauge(
                f"smz_trainer_validation_{name}", f"Latest checkpoint's validation: {help_}", registry=r
            )
            for key, (name, help_) in VALIDATION_GAUGES.items()
        }
        self.validation_action_share = Gauge(
            "smz_trainer_validation_action_ratio",
            "Latest checkpoint's validation: share of each action among all decisions (0-1)",
            ["action"],
            registry=r,
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

    def resume(self, episodes: int, updates: int, bar_steps: int) -> None:
        """Start the counters at a resumed run's counts (a Counter cannot be set: one ``inc`` each)."""
        self.episodes.inc(episodes)
        self.updates.inc(updates)
        self.bar_steps.inc(bar_steps)

    def record_losses(self, losses: list[LossParts]) -> None:
        if not losses:
            return
        for component in LOSS_COMPONENTS:
            self.loss.labels(component).set(sum(getattr(x, component) for x in losses) / len(losses))
        self.weighted_loss.set(sum(x.total for x in losses) / len(losses))

    def record_actions(self, shares: list[float]) -> None:
        for name, share in zip(ACTIONS, shares, strict=True):
            self.action_share.labels(name).set(share)

    def record_validation(self, metrics: dict[str, float]) -> None:
        """Set the gauges from a validation's ``{validation_<key>: value}``."""
        for name, value in metrics.items():
            key = name.removeprefix("validation_")
            if key.startswith(ACTION_SHARE_PREFIX) and key[len(ACTION_SHARE_PREFIX) :].upper() in ACTIONS:
                self.validation_action_share.labels(key[len(ACTION_SHARE_PREFIX) :].upper()).set(value)
            elif key in self.validation:
                self.validation[key].set(value)
            else:
                warnings.warn(
                    f"validation metric {name!r} has no gauge (services/trainer/metrics.py)", stacklevel=2
                )
