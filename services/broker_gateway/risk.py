"""Pre-trade risk checks on new entries (BUY/SELL while flat); closes are never refused."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

DAY_SECONDS = 86_400
BAR_SECONDS = 60  # a bar's timestamp is its open time; it closes a minute later

# The ``reason`` label values of smz_gateway_risk_refusals_total, in the order they are checked.
RISK_REASONS = ("halted", "daily_loss", "stale_bar")


def utc_day_start(ts: int) -> int:
    """Epoch seconds of 00:00 UTC of the day holding ``ts``."""
    return ts - ts % DAY_SECONDS


@dataclass(frozen=True)
class RiskRefusal:
    code: str  # one of RISK_REASONS
    message: str  # for the order's reason


@dataclass
class RiskLimits:
    """The kill switch and the limits; ``check_entry`` says whether an entry may go ahead."""

    max_daily_loss_pips: float = 0.0  # 0: off
    stale_bar_seconds: float = 0.0  # 0: off
    halted: bool = False

    def check_entry(self, bar_ts: int, now: float, day_pnl: Callable[[int], float]) -> RiskRefusal | None:
        """``day_pnl(day_start)``: P&L in pips of the account's trades closed in that UTC day (only
        called when the daily limit is on)."""
        if self.halted:
            return RiskRefusal("halted", "entry refused: trading is halted (POST /v1/resume to resume)")
        if self.max_daily_loss_pips > 0:
            pnl = day_pnl(utc_day_start(bar_ts))
            if pnl <= -self.max_daily_loss_pips:
                return RiskRefusal(
                    "daily_loss",
                    f"entry refused: daily loss limit reached ({pnl:.1f} pips today, "
                    f"limit -{self.max_daily_loss_pips:g}); entries resume on the next UTC day",
                )
        if self.stale_bar_seconds > 0:
            age = now - (bar_ts + BAR_SECONDS)
            if age > self.stale_bar_seconds:
                return RiskRefusal(
                    "stale_bar",
                    f"entry refused: stale bar, closed {age:.0f} s ago (limit {self.stale_bar_seconds:g} s)",
                )
        return None
