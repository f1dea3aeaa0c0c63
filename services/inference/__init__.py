"""The inference service: the serving search over live windows, over HTTP and from the Redis stream
(docs/SERVING.md)."""
