"""Pre-trade risk checks on new entries (BUY/SELL while flat); closes are never refused."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

DAY_SECONDS = 86_400
BAR_SECONDS = 60  # a bar's timestamp is its open time; it closes a minute later

# The ``reason`` label values of smz_gateway_risk_refusals_total, in the order they are checked.
RISK_REASONS = ("halted", "instrument_halted", "daily_loss", "stale_bar")


def utc_day_start(ts: int) -> int:
    """Epoch seconds of 00:00 UTC of the day holding ``ts``."""
    return ts - ts % DAY_SECONDS


@dataclass(frozen=True)
class TradingDay:
    """Where one trading day ends and the next begins: a local time in a zone (FX: 17:00 New York,
    which moves with daylight saving time, so a day can last 23 or 25 hours)."""

    boundary: str = "17:00"  # HH:MM
    zone: str = "America/New_York"

    def bounds(self, ts: int) -> tuple[int, int]:
        """Epoch seconds [start, end) of the trading day holding ``ts``."""
        tz = ZoneInfo(self.zone)
        hour, minute = (int(p) for p in self.boundary.split(":"))
        local = datetime.fromtimestamp(ts, UTC).astimezone(tz)
        start = local.replace(hour=hour, minute=minute, second=0, microsecond=0)
        if start > local:
            start = (start - timedelta(days=1)).replace(hour=hour, minute=minute)
        # Naive date arithmetic then localisation: the next day's boundary at its own UTC offset.
        end_naive = start.replace(tzinfo=None) + timedelta(days=1)
        end = end_naive.replace(tzinfo=tz)
        start = start.replace(tzinfo=None).replace(tzinfo=tz)
        return int(start.timestamp()), int(end.timestamp())


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
    day: TradingDay = field(default_factory=TradingDay)

    def check_entry(
        self, bar_ts: int, now: float, day_pnl: Callable[[int, int], float]
    ) -> RiskRefusal | None:
        """``day_pnl(start, end)``: P&L in pips of the account's trading day [start, end), realised
        and unrealised (only called when the daily limit is on)."""
        if self.halted:
            return RiskRefusal("halted", "entry refused: trading is halted (POST /v1/resume to resume)")
        if self.max_daily_loss_pips > 0:
            start, end = self.day.bounds(bar_ts)
            pnl = day_pnl(start, end)
            if pnl <= -self.max_daily_loss_pips:
                return RiskRefusal(
                    "daily_loss",
                    f"entry refused: daily loss limit reached ({pnl:.1f} pips this trading day, open "
                    f"positions included; limit -{self.max_daily_loss_pips:g}); entries resume after "
                    f"{self.day.boundary} {self.day.zone}",
                )
        if self.stale_bar_seconds > 0:
            age = now - (bar_ts + BAR_SECONDS)
            if age > self.stale_bar_seconds:
                return RiskRefusal(
                    "stale_bar",
                    f"entry refused: stale bar, closed {age:.0f} s ago (limit {self.stale_bar_seconds:g} s)",
                )
        return None
