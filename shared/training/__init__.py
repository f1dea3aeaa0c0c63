"""MuZero learning (CONTRACT section 8): batches from replay, the unrolled loss, the optimiser step."""
