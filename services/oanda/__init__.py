"""The OANDA v20 adapter: one package for both services that talk to OANDA.

- ``instruments``: our instrument names <-> OANDA's (one mapper for data and execution);
- ``http``: the HTTP client both use (bearer token, RFC 3339 times, timeouts);
- ``data``: closed M1 bid candles (the feature builder's live feed);
- ``execution``: market orders, closeouts, open positions and order lookups (the broker gateway's).

One gateway trades one OANDA account: OANDA nets positions per account.
"""
