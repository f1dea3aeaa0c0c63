"""The trainer service (built in a later issue)."""
