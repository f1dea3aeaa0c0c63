"""The trading rules, written once (``rules``): actions and sides, which action is legal where, what
it does to the position, which event it is, and the step rewards. The vectorised environment, the
search kernels, the live position and the broker gateway all read them from here."""
