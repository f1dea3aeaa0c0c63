"""Batch jobs behind the ``smz`` CLI: ingest, features, synthetic data, evaluation."""
