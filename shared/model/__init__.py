"""The six networks of SPEC section 6, the value support transform, and the model config."""
