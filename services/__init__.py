"""The micro-muzero services: I/O at the edges around the pure core in ``shared``."""
