"""The inference counters the policy-health alerts read: decisions, and decisions taken while flat."""

from __future__ import annotations

from services.inference.metrics import InferenceMetrics
from shared.reward import ACTIONS, Action


def value(m: InferenceMetrics, name: str, labels: dict[str, str]) -> float | None:
    return m.registry.get_sample_value(name, labels)


def test_flat_decisions_count_stream_decisions_without_a_position() -> None:
    m = InferenceMetrics()
    m.decision("GBPJPY", Action.BUY, "rest", flat=True)  # a REST query trades nothing: not counted
    assert value(m, "smz_inference_flat_decisions_total", {"instrument": "GBPJPY", "action": "BUY"}) is None
    m.decision("GBPJPY", Action.HOLD, "stream", flat=False)
    # The first stream decision of an instrument makes every action's series, at 0.
    for name in ACTIONS:
        assert value(m, "smz_inference_flat_decisions_total", {"instrument": "GBPJPY", "action": name}) == 0
    m.decision("GBPJPY", Action.BUY, "stream", flat=True)
    m.decision("GBPJPY", Action.HOLD, "stream", flat=True)
    m.decision("GBPJPY", Action.HOLD, "stream", flat=True)
    m.decision("GBPJPY", Action.CLOSE, "stream", flat=False)
    flat = {
        name: value(m, "smz_inference_flat_decisions_total", {"instrument": "GBPJPY", "action": name})
        for name in ACTIONS
    }
    assert flat == {"HOLD": 2.0, "BUY": 1.0, "SELL": 0.0, "CLOSE": 0.0}
    stream = {
        name: value(
            m, "smz_inference_decisions_total", {"instrument": "GBPJPY", "action": name, "source": "stream"}
        )
        for name in ("HOLD", "BUY", "CLOSE")
    }
    assert stream == {"HOLD": 3.0, "BUY": 1.0, "CLOSE": 1.0}
