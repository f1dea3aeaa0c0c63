"""The feature_builder service (built in a later issue)."""
