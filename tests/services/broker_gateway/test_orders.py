"""Orders through the real gateway app: the backtest's arithmetic, idempotency across restarts,
ordering, refusals, session breaks and the positions published to Redis."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from contextlib import ExitStack
from dataclasses import asdict
from typing import Any

import numpy as np
import pytest
import redis

from services.broker_gateway.settings import GatewaySettings
from shared.bars import Bars
from shared.dataset import build_dataset
from shared.env import TRADE_LOG_FIELDS, EnvConfig, MarketData, TradingEnv
from shared.position import EXIT_SESSION_BREAK, PositionState
from shared.reward import REWARDS, Action
from shared.sessions import tile_sessions
from shared.wire import POSITIONS_STREAM, PositionMessage, position_key

HOLD, BUY, SELL, CLOSE = (int(a) for a in Action)
T0 = 1_704_189_600  # 2024-01-02 10:00 UTC
BARS = 120

Settings = Callable[..., GatewaySettings]


def log_row(instrument: str, trade: dict[str, Any]) -> dict[str, Any]:
    """An OrderResult's trade in the trade-log format of ``shared.env.TRADE_LOG_FIELDS``."""
    return {
        "instrument": instrument,
        **trade,
        "side": "long" if trade["side"] > 0 else "short",
    }


def decision_rewards(results: list[dict[str, Any]], bars: list[int]) -> dict[int, float]:
    """Each decision's reward by its bar, from the order results: the order's own ``reward``, or an
    entry of a later order's ``settled``; each reported exactly once."""
    rewards: dict[int, float] = {}
    for bar_ts, res in zip(bars, results, strict=True):
        for settled in res["settled"]:
            assert settled["bar_ts"] not in rewards and settled["bar_ts"] < bar_ts
            rewards[settled["bar_ts"]] = settled["reward"]
        if res["reward"] is not None:
            assert bar_ts not in rewards
            rewards[bar_ts] = res["reward"]
    return rewards


def _next_action(rng: np.random.Generator, legal: np.ndarray, step: int) -> int:
    """Mostly HOLD, sometimes an entry or a close, now and then an illegal action (which the gateway
    refuses); a position open at the last bar closes there."""
    if step == BARS - 2:
        return BUY if legal[BUY] else HOLD
    if step == BARS - 1:
        return HOLD
    if rng.random() < 0.04:
        return int(rng.choice(np.flatnonzero(~legal)))
    return int(np.argmax(rng.random(4) * [8, 1, 1, 1.5] + legal))


def _assert_ledger_is_the_backtest(
    gw: Any,
    env: TradingEnv,
    results: list[dict[str, Any]],
    bars: list[int],
    env_rewards: dict[int, float],
    reward: str,
) -> None:
    # Every decision's reward, bar for bar, exactly the environment's.
    assert decision_rewards(results, bars) == env_rewards
    served = gw.get("/v1/rewards", account=gw.account, limit=1000)
    assert [(r["bar_ts"], r["reward"], r["reward_kind"]) for r in served] == [
        (bar_ts, r, reward) for bar_ts, r in env_rewards.items()
    ]
    assert gw.get("/v1/rewards", account=gw.account, limit=2) == served[-2:]
    expected = env.trade_log().rows()
    assert len(expected) >= 5
    assert expected[-1]["exit_reason"] == "session_end"
    assert [log_row("GBPJPY", r["trade"]) for r in results if r["trade"]] == expected
    served = gw.get("/v1/trades", account=gw.account, limit=1000)
    assert [{k: t[k] for k in TRADE_LOG_FIELDS} for t in served] == expected
    assert {t["model_version"] for t in served} == {"v-test"}
    pnl = sum(t["pnl_pips"] for t in expected)
    assert gw.metric(
        "smz_gateway_realized_pnl_pips", instrument="GBPJPY", account=gw.account
    ) == pytest.approx(pnl)


@pytest.mark.parametrize("reward", REWARDS)
def test_a_session_of_orders_reproduces_the_backtest_exactly(
    gbpjpy_sample: Bars,
    make_settings: Settings,
    open_gateway: Any,
    redis_client: redis.Redis,
    reward: str,
) -> None:
    ds = build_dataset(gbpjpy_sample)
    market = MarketData("GBPJPY", ds.bars.ts, ds.bars.close, ds.features)
    starts = tile_sessions(np.sort(np.concatenate([ds.starts_of(s) for s in ("train", "validation")])))
    start = int(starts[3])
    # A third of a session keeps the test fast; the gateway only knows a session's end by last_bar.
    env = TradingEnv(market, EnvConfig(session_bars=BARS, reward=reward))
    env.reset(np.array([start]))
    rng = np.random.default_rng(11)
    session_id = str(int(market.ts[start]))
    settings = make_settings()
    results, bars, env_rewards, invalid, restarted_at = [], [], {}, 0, None
    with ExitStack() as running:
        gw = running.enter_context(open_gateway(settings))
        for step in range(BARS):
            legal = env.legal_actions()[0]
            action = _next_action(rng, legal, step)
            invalid += not legal[action]
            bar = start + step
            bar_ts = int(market.ts[bar])
            out = env.step(np.array([action]))
            res = gw.order(
                f"{gw.account}:GBPJPY:{bar_ts}",
                bar_ts,
                float(market.close[bar]),
                action,
                session_id=session_id,
                step=step,
                last_bar=step == BARS - 1,
                model_version="v-test",
                published_at=time.time(),
                reward=reward,
            )
            env_rewards[bar_ts] = float(out.reward[0])
            assert res["valid"] == bool(out.valid[0]), step
            # Only an equity reward with a position left open waits, for the next bar's order.
            assert (res["reward"] is None) == (reward == "equity" and int(env.side[0]) != 0), step
            pending = bool(results) and results[-1]["reward"] is None
            assert [s["bar_ts"] for s in res["settled"]] == ([bars[-1]] if pending else []), step
            # The last bar's HOLD closes the position opened just before: a fill.
            filled = action != HOLD or step == BARS - 1
            assert res["status"] == ("refused" if not legal[action] else "filled" if filled else "held"), step
            # The published position, marked at the next bar, is exactly the next window's position
            # columns: what the feature builder builds them from.
            message = PositionMessage.model_validate_json(
                redis_client.get(position_key(gw.account, "GBPJPY"))
            )
            assert message.as_of_bar_ts == bar_ts and message.session_id == session_id
            if step < BARS - 1:
                marked = PositionState.from_dict(message.state).marked(float(market.close[bar + 1]), step + 1)
                assert np.array_equal(marked.features(), out.observation[0, -1, 9:]), step
            results.append(res)
            bars.append(bar_ts)
            if restarted_at is None and step >= BARS // 3 and res["position_side"]:
                # A restart between two bars with a position open: a pending reward is in the ledger.
                running.close()
                gw = running.enter_context(open_gateway(settings))
                restarted_at = step
                pending_bar = bar_ts if reward == "equity" else None
                assert gw.position()["reward_pending_bar_ts"] == pending_bar

        assert restarted_at is not None and env.side[0] == 0
        _assert_ledger_is_the_backtest(gw, env, results, bars, env_rewards, reward)
        assert invalid >= 3
        # The latency histogram starts afresh with the process.
        assert gw.metric("smz_gateway_bar_to_order_seconds_count") == BARS - restarted_at - 1
        assert gw.position()["side"] == 0 and gw.position()["reward_pending_bar_ts"] is None


def test_idempotency_survives_a_restart(
    make_settings: Settings, open_gateway: Any, redis_client: redis.Redis
) -> None:
    settings = make_settings()
    with open_gateway(settings) as gw:
        first = gw.order("k-open", T0, 150.00, BUY, model_version="v1")
        assert first["status"] == "filled" and first["position_side"] == 1 and not first["duplicate"]
        assert gw.order("k-open", T0, 150.00, BUY) == {**first, "duplicate": True}
        hold = gw.order("k-hold", T0 + 60, 150.07, HOLD, step=1)
        before = gw.position()
        assert before["side"] == 1 and before["entry_price"] == 150.00
        assert before["reward_pending_bar_ts"] == T0 + 60
        published = redis_client.xlen(settings.shared.positions_stream)
        assert published == 3  # two orders, and the duplicate published the position again

    with open_gateway(settings) as gw:
        assert gw.position() == before
        assert redis_client.xlen(settings.shared.positions_stream) == published + 1  # restored, republished
        assert gw.order("k-open", T0, 150.00, BUY) == {**first, "duplicate": True}
        # The same key with another action is still the same bar's order: the first decision stands.
        assert gw.order("k-hold", T0 + 60, 150.07, CLOSE, step=1) == {**hold, "duplicate": True}
        closed = gw.order("k-close", T0 + 120, 150.12, CLOSE, step=2)
        assert gw.order("k-close", T0 + 120, 150.12, CLOSE, step=2) == {**closed, "duplicate": True}
        assert len(gw.get("/v1/trades", account=gw.account)) == 1
        rewards = gw.get("/v1/rewards", account=gw.account)
        assert [(r["bar_ts"], r["settled_by"]) for r in rewards] == [
            (T0, "k-hold"),
            (T0 + 60, "k-close"),
            (T0 + 120, "k-close"),
        ]

    # The same bars through the state machine directly: the restart changed nothing, rewards included
    # (the equity reward of the BUY and of the HOLD was settled by the next bar's order, across it).
    state = PositionState(pip=0.01)
    state.new_session()
    outcomes = []
    for step, (close, action) in enumerate([(150.00, BUY), (150.07, HOLD), (150.12, CLOSE)]):
        state.mark(close, step)
        outcomes.append(state.apply(action, close, step, T0 + 60 * step, False, "equity"))
    outcome = outcomes[-1]
    assert outcome.trade is not None
    assert closed["trade"] == asdict(outcome.trade) and closed["reward"] == outcome.reward == 0.0
    assert first["reward"] is None and first["settled"] == []
    assert outcomes[1].settled is not None and outcome.settled is not None
    assert hold["settled"] == [{"bar_ts": T0, "reward": outcomes[1].settled.reward}]
    assert closed["settled"] == [{"bar_ts": T0 + 60, "reward": outcome.settled.reward}]
    assert closed["trade"]["pnl_pips"] == pytest.approx(8.0)

    with open_gateway(settings) as gw:  # the cumulative metrics come back from the ledger
        per_account = {"instrument": "GBPJPY", "account": gw.account}
        assert gw.metric("smz_gateway_realized_pnl_pips", **per_account) == outcome.trade.pnl_pips
        assert gw.metric("smz_gateway_trades_total", **per_account, result="win") == 1
        # The win rate (wins over trades) is 1: no loss.
        assert gw.metric("smz_gateway_trades_total", **per_account, result="loss") == 0
        assert gw.metric("smz_gateway_gross_profit_pips_total", **per_account) == outcome.trade.pnl_pips
        assert gw.metric("smz_gateway_gross_loss_pips_total", **per_account) == 0
        assert gw.metric("smz_gateway_orders_total", instrument="GBPJPY", action="BUY", status="filled") == 1
        assert gw.metric("smz_gateway_trade_pnl_pips_count", **per_account) == 1
        (trade,) = gw.get("/v1/trades", instrument="GBPJPY")
        assert trade["model_version"] == "v1" and trade["exit_reason"] == "close"


def test_out_of_order_and_reused_keys_are_refused(make_settings: Settings, open_gateway: Any) -> None:
    with open_gateway(make_settings()) as gw:
        gw.order("k1", T0, 150.00, BUY)
        same_bar = gw.order("k2", T0, 150.00, CLOSE, step=1, expect=409)
        assert "out of order" in same_bar["detail"] and "stale or replayed" in same_bar["detail"]
        assert "out of order" in gw.order("k3", T0 - 60, 150.00, CLOSE, step=1, expect=409)["detail"]
        reused = gw.order("k1", T0 + 60, 150.00, CLOSE, step=1, expect=409)
        assert "already used for another order" in reused["detail"]
        assert gw.position()["side"] == 1 and gw.position()["as_of_bar_ts"] == T0
        # Refused keys were not stored: k2 on a new bar is a new order.
        assert gw.order("k2", T0 + 60, 150.10, CLOSE, step=1)["status"] == "filled"
        assert (
            gw.metric("smz_gateway_orders_total", instrument="GBPJPY", action="CLOSE", status="out_of_order")
            == 2
        )


@pytest.mark.parametrize("reward", REWARDS)
def test_invalid_actions_are_refused_and_change_nothing(
    make_settings: Settings, open_gateway: Any, reward: str
) -> None:
    with open_gateway(make_settings()) as gw:
        flat_close = gw.order("k1", T0, 150.00, CLOSE, reward=reward)
        assert (flat_close["status"], flat_close["valid"], flat_close["reward"]) == ("refused", False, -0.5)
        assert "CLOSE refused" in flat_close["reason"] and "flat" in flat_close["reason"]
        gw.order("k2", T0 + 60, 150.00, BUY, step=1, reward=reward)
        for step, action in ((2, BUY), (3, SELL)):
            res = gw.order(f"k{step + 1}", T0 + 60 * step, 150.05, action, step=step, reward=reward)
            assert (res["status"], res["valid"], res["position_side"]) == ("refused", False, 1)
            if reward == "amddp1":
                assert res["reward"] == -1.0
            else:  # the penalty, plus the equity's change to the next bar's mark (the same close)
                assert res["reward"] is None
                if step == 3:
                    assert res["settled"] == [{"bar_ts": T0 + 120, "reward": -1.0}]
            assert (
                f"{Action(action).name} refused" in res["reason"] and "already long GBPJPY" in res["reason"]
            )
        after = gw.position()
        assert (after["side"], after["entry_price"], after["entry_ts"]) == (1, 150.00, T0 + 60)
        assert after["bars_since_entry"] == 2  # marked at each bar all the same
        assert gw.get("/v1/trades", account=gw.account) == []


def test_validation_errors_are_422(make_settings: Settings, open_gateway: Any) -> None:
    with open_gateway(make_settings()) as gw:
        good = {"idempotency_key": "k", "account": gw.account, "instrument": "GBPJPY", "bar_ts": T0}
        good |= {"close": 150.0, "action": 0, "session_id": "s1", "step": 0}
        bads = ({"action": 7}, {"close": -1.0}, {"instrument": "gbp/jpy"}, {"kind": "market"}, {"x": 1})
        for bad in (*bads, {"reward": "sharpe"}, {"pips_per_reward": 0}):
            response = gw.post("/v1/orders", {**good, **bad})
            assert response.status_code == 422, bad
            assert response.json()["detail"][0]["loc"][:2] == ["body", next(iter(bad))]
        missing = {k: v for k, v in good.items() if k != "bar_ts"}
        assert gw.post("/v1/orders", missing).status_code == 422
        negative = gw.post(
            "/v1/orders", {**good, "step": -1}
        )  # a decision's step is its bar's in the session
        assert negative.status_code == 422 and "step" in negative.text
        assert gw.get("/v1/positions", account=gw.account) == []


def test_session_breaks_close_the_position(
    make_settings: Settings, open_gateway: Any, caplog: pytest.LogCaptureFixture
) -> None:
    with open_gateway(make_settings()) as gw:
        gw.order("k1", T0, 150.00, BUY)
        held = gw.order("k2", T0 + 60, 150.05, HOLD, step=1)
        assert held["settled"] == [{"bar_ts": T0, "reward": pytest.approx(0.1)}]  # flat to +1 pip
        # A gap over 10 minutes broke the session: the position closes at the first bar after it.
        t_break = T0 + 60 + 15 * 60
        res = gw.order("k3", t_break, 149.90, kind="session_break", step=-1)
        assert res["status"] == "filled" and res["position_side"] == 0
        # The HOLD's equity reward is settled by the close: +1 to -14 pips. A break decides nothing.
        assert res["reward"] is None and res["settled"] == [
            {"bar_ts": T0 + 60, "reward": pytest.approx(-1.5)}
        ]
        trade = res["trade"]
        assert trade["exit_reason"] == EXIT_SESSION_BREAK and trade["bars_held"] == 2
        assert trade["exit_ts"] == t_break and trade["pnl_pips"] == pytest.approx(-14.0)
        flat = gw.order("k4", t_break + 60, 149.95, kind="session_break", step=-1)
        assert flat["status"] == "held" and flat["trade"] is None

        # A position somehow still open when a new session starts is closed first, with a warning.
        gw.order("k5", t_break + 120, 150.00, SELL, session_id="s2", step=0)
        with caplog.at_level(logging.WARNING, logger="services.broker_gateway"):
            res = gw.order("k6", t_break + 180, 149.80, BUY, session_id="s3", step=0)
        assert "still open at the start of session s3" in caplog.text
        assert res["status"] == "filled" and res["position_side"] == 1
        assert res["trade"]["exit_reason"] == EXIT_SESSION_BREAK and res["trade"][
            "pnl_pips"
        ] == pytest.approx(16.0)
        # The SELL's pending reward is settled by that close (flat to +16 pips); the BUY's waits.
        assert res["settled"] == [{"bar_ts": t_break + 120, "reward": pytest.approx(1.6)}]
        assert res["reward"] is None
        reasons = [t["exit_reason"] for t in gw.get("/v1/trades", account=gw.account)]
        assert reasons == [EXIT_SESSION_BREAK, EXIT_SESSION_BREAK]
        assert gw.position()["entry_price"] == 149.80 and gw.position()["session_id"] == "s3"


def test_each_order_publishes_the_position_to_redis(
    make_settings: Settings, open_gateway: Any, redis_client: redis.Redis, account: str
) -> None:
    settings = make_settings(positions_stream=POSITIONS_STREAM)  # the real stream, cleaned up after

    def ours() -> list[tuple[bytes, PositionMessage]]:
        entries = redis_client.xrevrange(POSITIONS_STREAM, count=500)
        messages = [(i, PositionMessage.model_validate_json(f[b"data"])) for i, f in entries]
        return [(i, m) for i, m in reversed(messages) if m.account == account]

    try:
        with open_gateway(settings) as gw:
            for step, (close, action) in enumerate([(150.00, BUY), (150.10, HOLD), (150.20, CLOSE)]):
                gw.order(f"k{step}", T0 + 60 * step, close, action, step=step)
                key_message = PositionMessage.model_validate_json(
                    redis_client.get(position_key(gw.account, "GBPJPY"))
                )
                stream_message = ours()[-1][1]
                assert key_message == stream_message
                assert key_message.as_of_bar_ts == T0 + 60 * step and key_message.instrument == "GBPJPY"
                assert key_message.state["marked_step"] == step
                assert key_message.state["side"] == (0 if action == CLOSE else 1)
            # A duplicate (how a lost position message shows) publishes the current position again.
            assert gw.order("k2", T0 + 120, 150.20, CLOSE, step=2)["duplicate"]
            assert len(ours()) == 4 and ours()[-1][1] == ours()[-2][1]
            state = PositionState.from_dict(ours()[-1][1].state)
            assert state.pnl == pytest.approx(16.0) and state.side == 0
    finally:
        ids = [i for i, _ in ours()]
        if ids:
            redis_client.xdel(POSITIONS_STREAM, *ids)
