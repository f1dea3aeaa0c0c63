"""The feature builder: closed 1-minute bars in, (32, 15) observation windows out on a Redis stream.

See docs/FEATURE_BUILDER.md. Modules: ``settings`` (env ``SMZ_FEATURE_BUILDER_*``), ``sources`` (DuckDB
and file replay, the OANDA v20 practice feed), ``validation`` (bar checks), ``builder`` (features,
sessions, positions, windows), ``redis_io`` (the Redis adapters), ``metrics`` and ``main``.
"""
