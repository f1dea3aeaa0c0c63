"""Every inference backend gives the reference's numbers, so the search decides the same on any of them."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch

from shared.model.config import ModelConfig
from shared.model.inference import ModelFunctions, NumbaFunctions, TorchFunctions, make_model_functions
from shared.model.networks import MuZeroNetwork
from shared.model.support import logits_to_scalar, transform

FP32_BACKENDS = ("auto", "torch_fast", "torchscript", "onnx", "numba")
ATOL = 1e-4
# The value scalar is the inverse transform of an expectation over atoms -300..300, and the float32
# reference is itself ~1e-4 off in that expectation (2.5e-3 off a float64 computation at |value| ~ 600),
# so values are compared in the transformed space where the sum happens.
VALUE_ATOL_TRANSFORMED = 2e-4


@pytest.fixture(scope="module", params=FP32_BACKENDS)
def backend(request: pytest.FixtureRequest, model: MuZeroNetwork) -> ModelFunctions:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the legacy ONNX exporter's deprecation warnings
        return make_model_functions(model, request.param)


def _inputs(cfg: ModelConfig, rows: int, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    windows = rng.standard_normal((rows, cfg.window, cfg.n_features)).astype(np.float32)
    actions = rng.integers(0, cfg.n_actions, rows)
    outcomes = rng.integers(0, cfg.n_outcomes, rows)
    return windows, actions, outcomes


def _close(actual: np.ndarray, expected: np.ndarray) -> None:
    np.testing.assert_allclose(actual, expected, atol=ATOL, rtol=0)


def _close_values(actual: np.ndarray, expected: np.ndarray) -> None:
    to_support = transform(torch.from_numpy(actual.astype(np.float64))).numpy()
    expected_on_support = transform(torch.from_numpy(expected.astype(np.float64))).numpy()
    np.testing.assert_allclose(to_support, expected_on_support, atol=VALUE_ATOL_TRANSFORMED, rtol=0)


def _compare_with_reference(
    backend: ModelFunctions,
    reference: TorchFunctions,
    windows: np.ndarray,
    actions: np.ndarray,
    outcomes: np.ndarray,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, tuple[np.ndarray, ...]]:
    """initial, outcome_probs and recurrent of ``backend`` against the reference, within tolerance."""
    hidden, policy, value = backend.initial(windows)
    ref_hidden, ref_policy, ref_value = reference.initial(windows)
    _close(hidden, ref_hidden)
    _close(policy, ref_policy)
    _close_values(value, ref_value)

    # The backend continues from the reference's hidden state, so errors do not compound here.
    probs = backend.outcome_probs(ref_hidden, actions)
    _close(probs, reference.outcome_probs(ref_hidden, actions))

    outputs = backend.recurrent(ref_hidden, actions, outcomes)
    ref_outputs = reference.recurrent(ref_hidden, actions, outcomes)
    for actual, expected in zip(outputs[:3], ref_outputs[:3], strict=True):
        _close(actual, expected)
    _close_values(outputs[3], ref_outputs[3])
    return hidden, policy, value, probs, tuple(outputs)


# numba / auto: 1 takes the per-row fused kernels, 2-63 the row-blocked ones, 64+ (initial: 256+) the GEMM
# path (auto: torch_fast from 256).
@pytest.mark.parametrize("rows", [1, 2, 3, 100, 300])
def test_backend_matches_reference(
    backend: ModelFunctions, reference: TorchFunctions, model: MuZeroNetwork, rows: int
) -> None:
    cfg = model.cfg
    windows, actions, outcomes = _inputs(cfg, rows, seed=rows)

    hidden, policy, value, probs, outputs = _compare_with_reference(
        backend, reference, windows, actions, outcomes
    )
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, atol=1e-5)

    for array, shape in (
        (hidden, (rows, cfg.hidden)),
        (policy, (rows, cfg.n_actions)),
        (value, (rows,)),
        (probs, (rows, cfg.n_outcomes)),
        (outputs[0], (rows, cfg.hidden)),
        (outputs[1], (rows,)),
        (outputs[2], (rows, cfg.n_actions)),
        (outputs[3], (rows,)),
    ):
        assert array.shape == shape
        assert array.dtype == np.float32


# Every numba path forced to run at row counts that hit each remainder of the four-row blocks.
NUMBA_PATHS = {
    "per_row": {"small_batch_rows": 1000},
    "row_blocked": {"small_batch_rows": 0, "blocked_batch_rows": 1000, "blocked_initial_rows": 1000},
    "gemm": {"small_batch_rows": 0, "blocked_batch_rows": 0, "blocked_initial_rows": 0},
}


@pytest.fixture(scope="module", params=sorted(NUMBA_PATHS))
def numba_path(request: pytest.FixtureRequest, model: MuZeroNetwork) -> NumbaFunctions:
    return NumbaFunctions(model, 1, **NUMBA_PATHS[request.param])


@pytest.mark.parametrize("rows", [1, 2, 3, 4, 5, 6, 7, 12, 17, 33])
def test_numba_paths_match_reference(
    numba_path: NumbaFunctions, reference: TorchFunctions, model: MuZeroNetwork, rows: int
) -> None:
    cfg = model.cfg
    windows, _, _ = _inputs(cfg, rows, seed=100 + rows)
    # Every action and outcome in turn, so neighbouring rows of a block differ in both.
    actions = np.arange(rows) % cfg.n_actions
    outcomes = (np.arange(rows) * 2 + 1) % cfg.n_outcomes

    hidden, policy, value, probs, outputs = _compare_with_reference(
        numba_path, reference, windows, actions, outcomes
    )
    for array in (hidden, policy, value, probs, *outputs):
        assert array.shape[0] == rows
        assert array.dtype == np.float32


def test_outputs_are_not_overwritten_by_the_next_call(backend: ModelFunctions, model: MuZeroNetwork) -> None:
    """The search stores returned hidden states in its tree: later calls must not reuse them."""
    windows, actions, outcomes = _inputs(model.cfg, 8, seed=1)
    hidden = backend.initial(windows)[0]
    first = backend.recurrent(hidden, actions, outcomes)
    kept = [a.copy() for a in first]
    backend.recurrent(first[0], actions, outcomes)
    backend.initial(windows)
    for array, copy in zip(first, kept, strict=True):
        np.testing.assert_array_equal(array, copy)


def test_reference_value_is_logits_to_scalar(model: MuZeroNetwork, reference: TorchFunctions) -> None:
    windows, actions, outcomes = _inputs(model.cfg, 5, seed=2)
    eval_model = reference.model
    with torch.inference_mode():
        out = eval_model.initial_inference(torch.from_numpy(windows))
        expected = logits_to_scalar(out.value_logits, model.cfg.support_size).numpy()
        hidden = out.hidden
        rec = eval_model.recurrent_inference(hidden, torch.from_numpy(actions), torch.from_numpy(outcomes))
        expected_rec = logits_to_scalar(rec.value_logits, model.cfg.support_size).numpy()
    np.testing.assert_array_equal(reference.initial(windows)[2], expected)
    np.testing.assert_array_equal(reference.recurrent(hidden.numpy(), actions, outcomes)[3], expected_rec)


def test_weights_are_a_snapshot(model: MuZeroNetwork) -> None:
    """Building a backend neither changes the model's mode nor follows later weight updates."""
    trained = MuZeroNetwork(model.cfg)
    trained.load_state_dict(model.state_dict())
    trained.train()
    functions = make_model_functions(trained, "numba")
    windows, _, _ = _inputs(model.cfg, 2, seed=3)
    before = functions.initial(windows)[0]
    assert trained.training
    with torch.no_grad():
        for parameter in trained.parameters():
            parameter.add_(1.0)
    np.testing.assert_array_equal(functions.initial(windows)[0], before)


# Lower precision: only loosely close (their decisions must be checked through the search). Measured
# worst differences on these random weights: fp16 ~1e-3 on hidden and logits, int8 ~2e-2.
LOW_PRECISION_ATOL = {"numba_fp16": 1e-2, "numba_int8": 0.1}


@pytest.mark.parametrize("name", sorted(LOW_PRECISION_ATOL))
@pytest.mark.parametrize("rows", [1, 2])
def test_low_precision_backends_stay_near(
    model: MuZeroNetwork, reference: TorchFunctions, name: str, rows: int
) -> None:
    functions = make_model_functions(model, name)
    atol = LOW_PRECISION_ATOL[name]
    windows, actions, outcomes = _inputs(model.cfg, rows, seed=4)
    hidden, policy, value = functions.initial(windows)
    ref_hidden, ref_policy, ref_value = reference.initial(windows)
    np.testing.assert_allclose(hidden, ref_hidden, atol=atol)
    np.testing.assert_allclose(policy, ref_policy, atol=atol)
    assert np.isfinite(value).all() and value.shape == ref_value.shape
    probs = functions.outcome_probs(ref_hidden, actions)
    np.testing.assert_allclose(probs, reference.outcome_probs(ref_hidden, actions), atol=atol / 5)
    next_hidden, reward, policy, _ = functions.recurrent(ref_hidden, actions, outcomes)
    ref_next, ref_reward, ref_policy, _ = reference.recurrent(ref_hidden, actions, outcomes)
    np.testing.assert_allclose(next_hidden, ref_next, atol=atol)
    np.testing.assert_allclose(reward, ref_reward, atol=atol)
    np.testing.assert_allclose(policy, ref_policy, atol=atol)


def test_unknown_backend_is_rejected(model: MuZeroNetwork) -> None:
    with pytest.raises(ValueError, match="unknown backend"):
        make_model_functions(model, "tensorrt")
