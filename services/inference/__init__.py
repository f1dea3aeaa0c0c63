"""The inference service (built in a later issue)."""
