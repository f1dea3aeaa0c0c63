"""The fault suite's fixtures: the broker gateway's (a fresh ledger, a real Redis, a private stream,
the OANDA v20 stub) and the inference service's (a checkpoint root, private streams): one definition
each, shared with tests/services."""

from __future__ import annotations

from tests.services.broker_gateway.conftest import (  # noqa: F401 - fixtures, found by name
    account,
    make_settings,
    oanda_stub,
    open_gateway,
    stream,
)

# Redis with decoded replies (the inference tests' client), for the broker gateway's fixtures too.
from tests.services.inference.conftest import redis_client, root, streams  # noqa: F401
