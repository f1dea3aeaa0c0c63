"""The broker_gateway service (built in a later issue)."""
