"""What each reward asks for, on the synthetic market where the best trades are known.

A learner maximises its reward, so the reward must rank policies the way the metrics do. The seed's
``amddp1`` reward (+1 per entry, -0.05 per flat bar, AMDDP1 at the close) ranks a policy that enters with the
hidden trend and takes the first profit far above the oracle that rides each trend, although it earns
almost nothing per trade. The opt-in ``pips`` reward (equity change per step) ranks the oracle first.
docs/TRAINING.md gives the numbers on the 200,000-bar market.
"""

from __future__ import annotations

import numpy as np

from shared.env import EnvConfig, MarketData, TradingEnv
from shared.metrics import trade_metrics
from shared.reward import Action
from shared.synth import oracle_actions

SIDE, PNL = 9, 10  # position_side and position_pips (tanh(p / 100)) of the window's current row


def take_first_profit(regime: np.ndarray):  # type: ignore[no-untyped-def]
    """The oracle's entries, but CLOSE as soon as the open trade is in profit after the spread."""

    def act(obs: np.ndarray, bars: np.ndarray) -> np.ndarray:
        side = obs[:, -1, SIDE].astype(np.int8)
        actions = oracle_actions(regime[bars], side)
        actions[(side != 0) & (obs[:, -1, PNL] > 0)] = Action.CLOSE
        return actions

    return act


def ride_the_trend(regime: np.ndarray):  # type: ignore[no-untyped-def]
    def act(obs: np.ndarray, bars: np.ndarray) -> np.ndarray:
        return oracle_actions(regime[bars], obs[:, -1, SIDE].astype(np.int8))

    return act


def play(market: MarketData, starts: np.ndarray, act, reward: str) -> tuple[float, float]:  # type: ignore[no-untyped-def]
    """(mean reward per session, expectancy in pips per trade)."""
    env = TradingEnv(market, EnvConfig(reward=reward))  # type: ignore[arg-type]
    obs = env.reset(starts)
    total = np.zeros(len(starts))
    done = np.zeros(len(starts), bool)
    while not done.all():
        result = env.step(act(obs, env.bar.copy()))
        total += result.reward
        obs, done = result.observation, result.done
    trades = env.trade_log()
    metrics = trade_metrics(trades.pnl_pips, len(starts), env.action_counts, trade_sessions=trades.session)
    return float(total.mean()), metrics.expectancy_pips


def test_the_spec_reward_prefers_tiny_profits_and_the_pips_reward_the_oracle(
    synthetic: tuple[MarketData, np.ndarray, np.ndarray],
) -> None:
    market, starts, regime = synthetic
    oracle_spec, oracle_pips_per_trade = play(market, starts, ride_the_trend(regime), "amddp1")
    scalp_spec, scalp_pips_per_trade = play(market, starts, take_first_profit(regime), "amddp1")
    oracle_pips, _ = play(market, starts, ride_the_trend(regime), "equity")
    scalp_pips, _ = play(market, starts, take_first_profit(regime), "equity")
    # The metrics: the oracle earns over 20 pips a trade, the scalper about nothing.
    assert oracle_pips_per_trade > 20 and abs(scalp_pips_per_trade) < 2
    # The seed's amddp1 reward: the scalper earns far more per session than the oracle, which loses reward.
    assert oracle_spec < 0 < scalp_spec and scalp_spec > oracle_spec + 10
    # The pips reward agrees with the metrics.
    assert oracle_pips > scalp_pips + 3 and oracle_pips > 0
