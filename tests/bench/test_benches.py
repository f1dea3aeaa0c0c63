"""The benchmarks still run against the current code (small sizes; the numbers are not checked)."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import ModuleType

BENCH = Path(__file__).resolve().parents[2] / "bench"


def load(name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(f"bench_{name}", BENCH / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_env_bench_runs() -> None:
    result = load("env").main(sessions=8, episodes=1, repeats=1)
    assert result["bench"] == "env" and result["bar_steps_per_run"] == 8 * 360
    assert result["bar_steps_per_s"] > 0


def test_alternate_compares_medians_of_each_side() -> None:
    compare = load("alternate").compare
    runs = {
        "old": [{"rate": 100.0, "only_old": 1.0}, {"rate": 120.0, "only_old": 1.0}, {"rate": 90.0}],
        "new": [{"rate": 110.0}, {"rate": 130.0}, {"rate": 99.0}],
    }
    runs["old"][2]["only_old"] = 1.0
    table = compare(runs)
    assert list(table) == ["rate"]  # only the fields both sides report
    assert table["rate"]["old"] == [100.0, 120.0, 90.0] and table["rate"]["new_over_old"] == 1.1
