"""One live closed bar and the feature builder's limits on it; the checks are ``shared.bar_checks``."""

from __future__ import annotations

from dataclasses import dataclass

from shared.bar_checks import MAX_PRICE_JUMP, bar_problem


@dataclass(frozen=True, slots=True)
class LiveBar:
    """One closed 1-minute bid bar; ``ts`` is its open time in epoch seconds UTC."""

    instrument: str
    ts: int
    open: float
    high: float
    low: float
    close: float
    volume: float = 0.0


@dataclass(frozen=True, slots=True)
class BarLimits:
    """How far a bar may be from this machine's clock and from the last accepted close."""

    max_age_seconds: float = 0.0  # a live bar closed longer ago than this is stale; 0: no limit
    max_jump: float = MAX_PRICE_JUMP  # |price / last close - 1| above this is a jump (within the lookback)


def validate_bar(
    bar: LiveBar,
    last_ts: int | None,
    *,
    last_close: float | None = None,
    now: float | None = None,
    live: bool = False,
    limits: BarLimits = BarLimits(),
) -> str | None:
    """``None`` if the bar may be used after the last accepted bar (``last_ts``, ``last_close``), else
    the reason (``shared.bar_checks.REJECT_REASONS``). ``now`` (epoch seconds) enables the clock
    checks; ``live`` the staleness check."""
    return bar_problem(
        bar.ts,
        bar.open,
        bar.high,
        bar.low,
        bar.close,
        last_ts=last_ts,
        last_close=last_close,
        now=now,
        max_age_seconds=limits.max_age_seconds if live else 0.0,
        max_jump=limits.max_jump,
    )
