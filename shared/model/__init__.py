"""The six networks of CONTRACT section 6, the value support transform, and the model config."""
