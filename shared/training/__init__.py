"""MuZero learning (SPEC section 8): batches from replay, the unrolled loss, the optimiser step."""
