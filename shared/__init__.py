"""The micro-muzero core: pure computation shared by every service, plus the DuckDB store."""
