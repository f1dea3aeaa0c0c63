"""The fault suite's fixtures: the broker gateway's (a fresh ledger, a real Redis, a private stream,
the OANDA v20 stub), one definition shared with tests/services/broker_gateway."""

from __future__ import annotations

from tests.services.broker_gateway.conftest import (  # noqa: F401 - fixtures, found by name
    account,
    make_settings,
    oanda_stub,
    open_gateway,
    redis_client,
    stream,
)
