"""The HTTP API over a real uvicorn server: decisions equal the offline search, batching, 422s, 503s,
hot swap under load."""

from __future__ import annotations

import asyncio
import json
import threading
import time
from pathlib import Path

import httpx
import numpy as np
import pytest

from services.inference.app import InferenceService, create_app
from services.inference.settings import InferenceSettings
from shared.model.checkpoint import WEIGHTS_FILE, load_checkpoint
from shared.model.checkpoint_root import write_pointer
from shared.model.inference import make_model_functions
from shared.schema import SCHEMA_HASH
from shared.search import SearchConfig, SearchOutput, search
from tests.services.inference.helpers import make_window, save_version, serving, wait_until

# A fresh clone compiles the numba kernels during the first model's warm-up (cached afterwards).
READY_SECONDS = 120


def settings_for(root: Path, **overrides: object) -> InferenceSettings:
    return InferenceSettings(checkpoint_dir=root, stream_enabled=False, **overrides)


def offline_search(checkpoint: Path, windows: np.ndarray) -> SearchOutput:
    """What ``smz evaluate --checkpoint`` runs (services/jobs/evaluate.py checkpoint_policy)."""
    fns = make_model_functions(load_checkpoint(checkpoint).model, "auto", threads=1)
    return search(fns, windows, SearchConfig(num_simulations=25))


def body(window: np.ndarray, instrument: str = "GBPJPY") -> dict[str, object]:
    return {"instrument": instrument, "window": window.tolist()}


def assert_same_decision(decision: dict[str, object], out: SearchOutput, i: int) -> None:
    assert decision["action"] == int(out.action[i])
    assert decision["visit_policy"] == pytest.approx(out.visit_policy[i].tolist(), abs=1e-6)
    assert decision["root_value"] == pytest.approx(float(out.root_value[i]), rel=1e-4, abs=1e-4)
    assert decision["outcome_probabilities"] == pytest.approx(out.outcome_probs[i].tolist(), abs=1e-5)


def test_a_decision_is_the_offline_search_of_the_served_checkpoint(root: Path) -> None:
    service = InferenceService(settings_for(root))
    rng = np.random.default_rng(0)
    windows = np.stack([make_window(rng, side) for side in (0, 1, -1)])
    with serving(create_app(service.settings, service)) as url, httpx.Client(base_url=url) as client:
        assert service.store.wait_ready(READY_SECONDS)
        for i, window in enumerate(windows):
            response = client.post("/v1/decisions", json=body(window))
            assert response.status_code == 200, response.text
            decision = response.json()
            assert_same_decision(decision, offline_search(root / "v1", window[None]), 0)
            assert decision["model_version"] == "v1" and decision["instrument"] == "GBPJPY"
            # v1's manifest has no training section: the seed's reward, which its orders carry.
            assert (decision["reward"], decision["pips_per_reward"]) == ("amddp1", 10.0)
            assert decision["action_name"] == ("HOLD", "BUY", "SELL", "CLOSE")[decision["action"]]
            assert decision["search_ms"] > 0
            if i:  # in a position: BUY and SELL are illegal and never chosen
                assert decision["action"] in (0, 3)

        info = client.get("/v1/model").json()
        assert info["version"] == "v1" and info["config"]["hidden"] == 32
        assert (info["reward"], info["pips_per_reward"], info["training"]) == ("amddp1", 10.0, {})
        assert info["search"]["num_simulations"] == 25 and info["search"]["backend"] == "auto"
        assert info["search"]["add_noise"] is False and info["search"]["temperature"] == 0.0
        metrics = client.get("/metrics").text
        assert "smz_inference_decisions_total{action=" in metrics and 'source="rest"' in metrics
        assert 'smz_inference_model_info{version="v1"} 1.0' in metrics
        assert "smz_inference_request_seconds_count 3.0" in metrics
        assert client.get("/docs").status_code == 200


def test_concurrent_requests_share_a_search_and_each_gets_its_own_answer(root: Path) -> None:
    # One search thread: with two, the second takes part of the burst as its own batch.
    service = InferenceService(settings_for(root, batch_wait_ms=100, search_workers=1))
    rng = np.random.default_rng(1)
    windows = np.stack([make_window(rng, (0, 1, -1)[i % 3]) for i in range(8)])
    instruments = [f"PAIR{i}" for i in range(8)]

    async def burst(url: str) -> list[httpx.Response]:
        async with httpx.AsyncClient(base_url=url) as client:
            return await asyncio.gather(
                *(
                    client.post("/v1/decisions", json=body(w, n))
                    for w, n in zip(windows, instruments, strict=True)
                )
            )

    with serving(create_app(service.settings, service)) as url:
        assert service.store.wait_ready(READY_SECONDS)
        responses = asyncio.run(burst(url))
    registry = service.metrics.registry
    searches = registry.get_sample_value("smz_inference_batch_size_count")
    assert registry.get_sample_value("smz_inference_batch_size_sum") == 8
    assert searches is not None and searches <= 3, f"{searches} searches for 8 concurrent requests"
    for i, response in enumerate(responses):
        assert response.status_code == 200, response.text
        assert response.json()["instrument"] == instruments[i]
        assert_same_decision(response.json(), offline_search(root / "v1", windows[i : i + 1]), 0)


def test_the_batcher_serves_threads_too(root: Path) -> None:
    service = InferenceService(settings_for(root, batch_wait_ms=50, search_workers=1))
    service.start()
    try:
        assert service.store.wait_ready(READY_SECONDS)
        rng = np.random.default_rng(2)
        windows = [make_window(rng) for _ in range(4)]
        futures = [service.batcher.submit("GBPJPY", w) for w in windows]
        decisions = [f.result(10) for f in futures]
    finally:
        service.stop()
    assert service.metrics.registry.get_sample_value("smz_inference_batch_size_count") == 1
    reference = offline_search(root / "v1", np.stack(windows))
    for i, decision in enumerate(decisions):
        assert_same_decision(decision.model_dump(), reference, i)


def test_two_search_workers_each_search_with_their_own_functions(root: Path) -> None:
    service = InferenceService(settings_for(root, search_workers=2))
    calls: list[tuple[str, int]] = []
    real_search = service.batcher.search_fn

    def recording_search(functions: object, windows: np.ndarray, config: object) -> SearchOutput:
        calls.append((threading.current_thread().name, id(functions)))
        time.sleep(0.05)  # long enough that the other thread takes the next request meanwhile
        return real_search(functions, windows, config)

    service.batcher.search_fn = recording_search
    service.start()
    try:
        assert service.store.wait_ready(READY_SECONDS)
        model = service.store.require()
        assert len(model.functions) == 2 and model.functions[0] is not model.functions[1]
        rng = np.random.default_rng(4)
        windows = [make_window(rng, (0, 1, -1)[i % 3]) for i in range(6)]
        decisions = []
        for w in windows:  # one at a time, a little apart: batches of one, both threads busy
            decisions.append(service.batcher.submit("GBPJPY", w))
            time.sleep(0.02)
        decisions = [f.result(10) for f in decisions]
    finally:
        service.stop()
    functions_of = {name: fid for name, fid in calls}
    assert set(functions_of) == {"inference-search-0", "inference-search-1"}, calls
    assert functions_of["inference-search-0"] == id(model.functions[0])
    assert functions_of["inference-search-1"] == id(model.functions[1])
    for decision, window in zip(decisions, windows, strict=True):
        assert_same_decision(decision.model_dump(), offline_search(root / "v1", window[None]), 0)
    assert not service.batcher._threads  # both stopped


def _raw_window(cell: str) -> str:
    rows = [["0.0"] * 15 for _ in range(32)]
    rows[5][2] = cell
    return "[" + ",".join("[" + ",".join(r) + "]" for r in rows) + "]"


@pytest.mark.parametrize(
    ("payload", "expected"),
    [
        ({"instrument": "GBPJPY", "window": [[0.0] * 15] * 31}, "window must be 32 rows x 15 columns"),
        ({"instrument": "GBPJPY", "window": [[0.0] * 14] * 32}, "window must be 32 rows x 15 columns"),
        ('{"instrument": "GBPJPY", "window": ' + _raw_window("NaN") + "}", "non-finite number at row 5"),
        ('{"instrument": "GBPJPY", "window": ' + _raw_window("Infinity") + "}", "non-finite number"),
        ('{"instrument": "GBPJPY", "window": ' + _raw_window("-Infinity") + "}", "non-finite number"),
        ('{"instrument": "GBPJPY", "window": ' + _raw_window("1e999") + "}", "non-finite number"),
        ("position_side_2", "position_side (column 9) must be -1, 0 or 1"),
        ("flat_with_pnl", "a flat position (column 9 = 0) must have columns 10-14 all 0"),
        ("position_changes", "position columns 9-14 must be the same on every row"),
        ({"instrument": "GBPJPY", "window": [[0.0] * 15] * 32, "schema_hash": "abc"}, "feature schema 'abc'"),
        ({"instrument": "gbp/jpy", "window": [[0.0] * 15] * 32}, "instrument"),
        ({"instrument": "GBPJPY"}, "window"),
        ("not json at all", "JSON decode error"),
    ],
)
def test_bad_requests_get_422_saying_what_is_wrong(
    root: Path, payload: object, expected: str, app_client: httpx.Client
) -> None:
    if payload == "position_side_2":
        window = np.zeros((32, 15))
        window[:, 9] = 2.0
        payload = {"instrument": "GBPJPY", "window": window.tolist()}
    elif payload == "flat_with_pnl":
        window = np.zeros((32, 15))
        window[:, 10] = 0.3
        payload = {"instrument": "GBPJPY", "window": window.tolist()}
    elif payload == "position_changes":
        window = np.zeros((32, 15))
        window[-1, 9:] = [1, 0.1, 0.1, 0, 0, 0]
        payload = {"instrument": "GBPJPY", "window": window.tolist()}
    content = payload if isinstance(payload, str) else json.dumps(payload)
    response = app_client.post("/v1/decisions", content=content, headers={"content-type": "application/json"})
    assert response.status_code == 422, response.text
    assert expected in response.json()["message"], response.json()


@pytest.fixture(scope="module")
def app_client(tmp_path_factory: pytest.TempPathFactory) -> object:
    checkpoints = tmp_path_factory.mktemp("app") / "checkpoints"
    save_version(checkpoints, "v1", seed=1)
    service = InferenceService(settings_for(checkpoints))
    with serving(create_app(service.settings, service)) as url, httpx.Client(base_url=url) as client:
        assert service.store.wait_ready(READY_SECONDS)
        yield client


def test_the_default_schema_hash_is_accepted(app_client: httpx.Client) -> None:
    window = make_window(np.random.default_rng(3))
    response = app_client.post("/v1/decisions", json={**body(window), "schema_hash": SCHEMA_HASH})
    assert response.status_code == 200, response.text


def test_503_and_not_ready_until_a_model_is_loaded(tmp_path: Path) -> None:
    root = tmp_path / "checkpoints"
    service = InferenceService(settings_for(root, reload_seconds=0.05))
    window = make_window(np.random.default_rng(4))
    with serving(create_app(service.settings, service)) as url, httpx.Client(base_url=url) as client:
        assert client.get("/healthz").status_code == 200
        ready = client.get("/readyz")
        assert ready.status_code == 503 and ready.json()["ready"] is False
        assert "no checkpoint" in ready.json()["reason"]
        response = client.post("/v1/decisions", json=body(window))
        assert response.status_code == 503 and "no verified model" in response.json()["detail"]
        assert client.get("/v1/model").status_code == 503
        save_version(root, "v1", seed=1)
        wait_until(lambda: client.get("/readyz").status_code == 200, what="readiness")
        assert client.get("/readyz").json()["model_version"] == "v1"
        assert client.post("/v1/decisions", json=body(window)).status_code == 200


def test_hot_swap_under_load_fails_no_request(root: Path) -> None:
    service = InferenceService(settings_for(root, reload_seconds=0.05))
    window = make_window(np.random.default_rng(5))
    versions: list[str] = []
    statuses: list[int] = []
    done = threading.Event()

    def hammer(url: str) -> None:
        with httpx.Client(base_url=url) as client:
            while not done.is_set():
                response = client.post("/v1/decisions", json=body(window))
                statuses.append(response.status_code)
                if response.status_code == 200:
                    versions.append(response.json()["model_version"])

    with serving(create_app(service.settings, service)) as url:
        assert service.store.wait_ready(READY_SECONDS)
        threads = [threading.Thread(target=hammer, args=(url,)) for _ in range(3)]
        for thread in threads:
            thread.start()
        wait_until(lambda: len(versions) > 20, what="requests on v1")
        # A broken checkpoint first: refused, v1 keeps serving.
        broken = save_version(root, "v2", seed=2, point=False)
        (broken / WEIGHTS_FILE).write_bytes(b"\0" * (broken / WEIGHTS_FILE).stat().st_size)
        write_pointer(root, "latest", "v2")
        wait_until(lambda: service.store.last_error is not None, what="the broken checkpoint's refusal")
        served_before = len(versions)
        wait_until(lambda: len(versions) > served_before + 20, what="requests after the refusal")
        save_version(root, "v3", seed=3, step=3)
        wait_until(lambda: versions[-1] == "v3", what="the swap to v3")
        served_after = len(versions)
        wait_until(lambda: len(versions) > served_after + 20, what="requests on v3")
        done.set()
        for thread in threads:
            thread.join(10)
    assert set(statuses) == {200}
    assert "v2" not in versions
    first_v3 = versions.index("v3")
    assert set(versions[:first_v3]) == {"v1"}
    assert versions[first_v3:].count("v1") <= 3  # in-flight requests finish on the old model
    failures = service.metrics.registry.get_sample_value("smz_inference_model_load_failures_total")
    assert failures == 1
