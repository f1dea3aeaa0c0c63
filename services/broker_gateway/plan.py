"""One order's plan: what it does to the position and at the broker, computed on copies.

The position's arithmetic is ``shared.position.PositionState``'s (the backtest's, bit for bit). The
planner applies the order to a copy of the gateway's record, makes the broker calls the outcome
implies (through ``Gateway._call_broker``, which journals each one), and returns the new record, the
result, the trades and the fills; the gateway commits them (ledger first, then memory, then Redis). A
broker refusal leaves the position as it was; an unknown outcome too, and halts the instrument.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from services.broker_gateway.brokers import BrokerError, Fill, OutcomeUnknownError
from services.broker_gateway.ledger import FillRecord, PositionRecord, TradeRecord
from services.broker_gateway.risk import RiskRefusal
from shared.env import EXIT_SESSION_END
from shared.position import EXIT_SESSION_BREAK, ClosedTrade, PositionState, Settlement, StepOutcome
from shared.reward import Action
from shared.trading.rules import side_name
from shared.wire import OrderRequest, OrderResult, SettledReward

if TYPE_CHECKING:
    from services.broker_gateway.engine import Gateway

logger = logging.getLogger(__name__)

_ENTRIES = (Action.BUY, Action.SELL)


def utc(ts: int) -> str:
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%d %H:%M UTC")


@dataclass
class OrderPlan:
    """What an order did, ready to commit."""

    position: PositionRecord
    result: OrderResult
    trades: list[TradeRecord]
    fills: list[FillRecord]
    unknown: bool = False  # a broker call's outcome is unknown: reconcile after the order


def trade_record(work: PositionRecord, trade: ClosedTrade, exit_fill: Fill) -> TradeRecord:
    return TradeRecord(
        trade=trade,
        model_version=work.entry_model_version,
        session_id=work.session_id,
        broker_entry_price=work.broker_entry_price,
        broker_exit_price=exit_fill.price,
        broker_trade_id=work.broker_trade_id or exit_fill.trade_id,
    )


def describe(instrument: str, state: PositionState) -> str:
    if state.side:
        return (
            f"already {side_name(state.side)} {instrument} "
            f"(entered {utc(state.entry_ts)} at {state.entry_price})"
        )
    return f"no open {instrument} position (flat)"


class OrderPlanner:
    """Plans one order of ``gateway`` on a copy of ``current``; ``replay``: an order the broker
    executed before the process stopped (no risk checks)."""

    def __init__(self, gateway: Gateway, req: OrderRequest, current: PositionRecord, replay: bool = False):
        self.gw, self.req, self.current, self.replay = gateway, req, current, replay
        self.key = req.idempotency_key
        self.work = current.copy()
        self.work.last_bar_ts, self.work.last_close = req.bar_ts, req.close
        self.trades: list[TradeRecord] = []
        self.fills: list[FillRecord] = []
        self.settled: list[Settlement] = []  # earlier decisions' rewards this order completed

    def plan(self) -> OrderPlan:
        if self.req.kind == "session_break":
            return self._session_break()
        # A new session (or one the gateway has not seen start) begins flat.
        if self.req.step == 0 or self.req.session_id != self.current.session_id:
            stopped = self._start_session()
            if stopped is not None:
                return stopped
        return self._decide()

    # ------------------------------------------------------------------ results
    def _result(
        self,
        status: str,
        reason: str,
        state: PositionState,
        reward: float | None = None,
        valid: bool = True,
        now_settled: Settlement | None = None,
    ) -> OrderResult:
        done = [*self.settled, now_settled] if now_settled is not None else self.settled
        return OrderResult(
            idempotency_key=self.key,
            status=status,  # type: ignore[arg-type]
            action=self.req.action,
            valid=valid,
            reason=reason,
            reward=reward,
            settled=[SettledReward(bar_ts=s.ts, reward=s.reward) for s in done],
            trade=self.trades[-1].trade if self.trades else None,
            position_side=state.side,
        )

    def _done(self, position: PositionRecord, result: OrderResult, unknown: bool = False) -> OrderPlan:
        return OrderPlan(position, result, self.trades, self.fills, unknown)

    def _refused(self, reason: str, base: PositionRecord) -> OrderPlan:
        # Nothing (more) executed at the broker: the position stays as ``base`` (not even marked, so a
        # pending reward stays pending); the refused decision did nothing and earns 0.
        req = self.req
        self.gw.metrics.broker_errors.inc()
        logger.error("%s/%s order %s refused: %s", req.account, req.instrument, self.key, reason)
        base.last_bar_ts, base.last_close = req.bar_ts, req.close
        reward = 0.0 if req.kind == "decision" else None
        return self._done(base, self._result("refused", reason, base.state, reward))

    def _unknown(self, exc: OutcomeUnknownError, base: PositionRecord, what: str) -> OrderPlan:
        # The broker may have executed: the ledger keeps ``base`` for now, the instrument's entries
        # halt, and reconciliation (right after this order) makes the ledger the broker's.
        self.gw.metrics.unknown_outcomes.inc()
        self.gw.reconciler.set_instrument_halt(self.req.instrument, f"{what}: {exc}")
        plan = self._refused(
            f"{what}: outcome unknown at the broker ({exc}); entries halted, reconciling", base
        )
        plan.unknown = True
        return plan

    # ------------------------------------------------------------------ steps
    def _session_break(self) -> OrderPlan:
        work = self.work
        if not work.state.side:
            return self._done(work, self._result("held", "session break: no open position", work.state))
        try:
            self._forced_close(EXIT_SESSION_BREAK, self.key)
        except BrokerError as exc:
            return self._refused(f"session-break close refused by the broker: {exc}", self.current.copy())
        except OutcomeUnknownError as exc:
            return self._unknown(exc, self.current.copy(), "session-break close")
        return self._done(work, self._result("filled", "position closed: session break", work.state))

    def _start_session(self) -> OrderPlan | None:
        """Close a position left open by the last session, then start this one flat; a plan when the
        broker would not close it (the order stops there), else None."""
        req, work = self.req, self.work
        if work.state.side:
            logger.warning(
                "%s/%s: a %s position is still open at the start of session %s; closing it (%s)",
                req.account,
                req.instrument,
                side_name(work.state.side),
                req.session_id,
                EXIT_SESSION_BREAK,
            )
            try:
                self._forced_close(EXIT_SESSION_BREAK, f"{self.key}:{EXIT_SESSION_BREAK}")
            except BrokerError as exc:
                return self._refused(
                    f"closing the previous session's position was refused: {exc}", self.current.copy()
                )
            except OutcomeUnknownError as exc:
                return self._unknown(exc, self.current.copy(), "closing the previous session's position")
        work.state.new_session()
        work.session_id = req.session_id
        self.gw._configure(work)
        return None

    def _entry_risk(self, action: Action) -> RiskRefusal | None:
        """Why an entry is refused (instrument halt, kill switch, limits), or None."""
        req = self.req
        if action not in _ENTRIES or self.work.state.side or self.replay:
            return None
        halt = self.gw.reconciler.halts.get(req.instrument)
        if halt is not None:
            return RiskRefusal(
                "instrument_halted", f"entry refused: {req.instrument} halted until reconciled ({halt})"
            )
        return self.gw.risk.check_entry(
            req.bar_ts,
            time.time(),
            lambda start, end: self.gw._day_pnl(req.account, start, end, self.trades),
        )

    def _decide(self) -> OrderPlan:
        req, work = self.req, self.work
        action = Action(req.action)
        risk = self._entry_risk(action)
        if risk is not None:
            action = Action.HOLD  # the state machine sees a HOLD; the order is refused
        marked = replace(work.state)
        marked.mark(req.close, req.step)  # settles the previous decision's pending reward, if any
        state = replace(marked)
        outcome = state.apply(
            action, req.close, req.step, req.bar_ts, req.last_bar, req.reward, req.pips_per_reward
        )
        opening = action in _ENTRIES and outcome.valid
        closing = action == Action.CLOSE and outcome.valid
        session_end = outcome.trade is not None and outcome.trade.exit_reason == EXIT_SESSION_END
        side = 1 if action == Action.BUY else -1
        before = work.copy()
        opened = False
        try:
            if opening:
                fill = self.gw._call_broker("open", req, self.key, side)
                self.fills.append(FillRecord(self.key, "open", side, req.close, fill))
                opened = True
                work.entry_model_version = req.model_version
                work.broker_entry_price, work.broker_trade_id = fill.price, fill.trade_id
            if (closing or session_end) and outcome.trade is not None:
                client_id = self.key if closing else f"{self.key}:{EXIT_SESSION_END}"
                fill = self.gw._call_broker("close", req, client_id, outcome.trade.side)
                self.fills.append(FillRecord(client_id, "close", outcome.trade.side, req.close, fill))
                self.trades.append(trade_record(work, outcome.trade, fill))
        except (BrokerError, OutcomeUnknownError) as exc:
            if not opened:
                if isinstance(exc, OutcomeUnknownError):
                    return self._unknown(exc, before, action.name)
                return self._refused(f"{action.name} refused by the broker: {exc}", before)
            return self._entry_without_session_end(exc, action, marked)
        work.state = state
        if not state.side:
            work.entry_model_version, work.broker_entry_price, work.broker_trade_id = "", None, ""
        return self._done(work, self._status(action, risk, outcome, marked, opening, closing, session_end))

    def _entry_without_session_end(
        self, exc: BrokerError | OutcomeUnknownError, action: Action, marked: PositionState
    ) -> OrderPlan:
        """The entry filled but the session-end close did not: the position stays open (it is closed
        at the next session's start), exactly as the broker holds it."""
        req, work = self.req, self.work
        unknown = isinstance(exc, OutcomeUnknownError)
        if unknown:
            self.gw.metrics.unknown_outcomes.inc()
            self.gw.reconciler.set_instrument_halt(req.instrument, f"session-end close: {exc}")
        self.gw.metrics.broker_errors.inc()
        state = replace(marked)
        outcome = state.apply(action, req.close, req.step, req.bar_ts, False, req.reward, req.pips_per_reward)
        work.state = state
        reason = f"{action.name} filled, but the broker refused the session-end close ({exc}); position open"
        logger.error("%s/%s order %s: %s", req.account, req.instrument, self.key, reason)
        result = self._result("filled", reason, state, outcome.reward, now_settled=outcome.settled)
        return self._done(work, result, unknown=unknown)

    def _status(
        self,
        action: Action,
        risk: RiskRefusal | None,
        outcome: StepOutcome,
        marked: PositionState,
        opening: bool,
        closing: bool,
        session_end: bool,
    ) -> OrderResult:
        req = self.req
        if risk is not None:
            self.gw.metrics.risk_refusals.labels(risk.code).inc()
            status, reason = "refused", risk.message
        elif not outcome.valid:
            status, reason = "refused", f"{action.name} refused: {describe(req.instrument, marked)}"
        elif opening:
            status, reason = "filled", f"opened {side_name(1 if action == Action.BUY else -1)} at {req.close}"
        elif closing:
            status, reason = "filled", f"closed at {req.close}"
        elif session_end:
            status, reason = "filled", "position closed at the session end"
        else:
            status, reason = "held", ""
        if session_end and (opening or status == "refused"):
            reason += "; position closed at the session end"
        return self._result(status, reason, self.work.state, outcome.reward, outcome.valid, outcome.settled)

    def _forced_close(self, reason: str, client_id: str) -> None:
        """Close the position at the bar's close outside a decision (session break); the mark of that
        close settles the last decision's pending reward (added to ``settled``)."""
        req, work = self.req, self.work
        state = replace(work.state)
        # The state's own step bookkeeping: the bar after its last mark.
        trade = state.close(req.close, state.marked_step + 1, req.bar_ts, reason)
        fill = self.gw._call_broker("close", req, client_id, trade.side)
        self.fills.append(FillRecord(client_id, "close", trade.side, req.close, fill))
        self.trades.append(trade_record(work, trade, fill))
        done = state.take_settled()
        if done is not None:
            self.settled.append(done)
        work.state = state
        work.entry_model_version, work.broker_entry_price, work.broker_trade_id = "", None, ""
