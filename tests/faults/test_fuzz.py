"""Property-based fuzz of both live APIs from their own OpenAPI schemas (schemathesis): schema-valid
and schema-violating requests, a bounded number per operation, against the real apps served by
uvicorn. No answer may be a server error, and no request that violates the schema may be accepted.

Examples are derandomized (the same every run, so CI cannot flake) and kept in no database. Query
parameters are judged by the server-error check and by tests/faults/test_inputs.py, not by the
negative-data check: on the wire a query value is always a string, and a one-element array that
schemathesis calls a type violation (``?account=false``) is indistinguishable from the string."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import negative_data_rejection

from services.broker_gateway.app import create_app as gateway_app
from services.broker_gateway.settings import GatewaySettings
from services.inference.app import InferenceService
from services.inference.app import create_app as inference_app
from services.inference.settings import InferenceSettings
from services.settings import SharedSettings
from tests.services.inference.helpers import save_version, serving

GATEWAY_TOKEN = "fuzz-gateway-token"
ADMIN_TOKEN = "fuzz-admin-token"
EXAMPLES = settings(
    max_examples=100,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[
        HealthCheck.too_slow,
        HealthCheck.filter_too_much,
        HealthCheck.function_scoped_fixture,
    ],
)
CHECKS = [not_a_server_error, negative_data_rejection]


def checks_for(case: schemathesis.Case) -> list[object]:
    """Both checks for a request with a body; the server-error check alone for query-only requests."""
    return CHECKS if case.method in ("POST", "PUT", "PATCH") else [not_a_server_error]


def _gateway_settings(ledger: Path) -> GatewaySettings:
    tag = uuid.uuid4().hex[:10]
    return GatewaySettings(
        shared=SharedSettings(gateway_token=GATEWAY_TOKEN, positions_stream=f"test:fuzz:{tag}:positions"),
        admin_token=ADMIN_TOKEN,
        ledger_db=ledger,
    )


# The schemas are the apps' own, built without starting them (no ledger or model is opened).
GATEWAY_SCHEMA = schemathesis.openapi.from_dict(
    gateway_app(_gateway_settings(Path("unused.duckdb"))).openapi()
)
INFERENCE_SCHEMA = schemathesis.openapi.from_dict(
    inference_app(InferenceSettings(stream_enabled=False)).openapi()
)


@pytest.fixture(scope="module")
def gateway_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    ledger = tmp_path_factory.mktemp("fuzz-gateway") / "ledger.duckdb"
    with serving(gateway_app(_gateway_settings(ledger))) as url:
        yield url


@pytest.fixture(scope="module")
def inference_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    root = tmp_path_factory.mktemp("fuzz-inference")
    save_version(root, "v1", seed=1)
    settings_ = InferenceSettings(checkpoint_dir=root, stream_enabled=False, max_body_bytes=65_536)
    service = InferenceService(settings_)
    with serving(inference_app(settings_, service)) as url:
        assert service.store.wait_ready(60)
        yield url


@pytest.mark.slow
@GATEWAY_SCHEMA.parametrize()
@EXAMPLES
def test_the_gateway_api(case: schemathesis.Case, gateway_url: str) -> None:
    token = (
        ADMIN_TOKEN if case.path in ("/v1/halt", "/v1/resume") and case.method == "POST" else GATEWAY_TOKEN
    )
    headers = {"Authorization": f"Bearer {token}"}
    case.call_and_validate(base_url=gateway_url, headers=headers, checks=checks_for(case))


@pytest.mark.slow
@INFERENCE_SCHEMA.parametrize()
@EXAMPLES
def test_the_inference_api(case: schemathesis.Case, inference_url: str) -> None:
    case.call_and_validate(base_url=inference_url, checks=checks_for(case))
