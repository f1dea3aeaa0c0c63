"""The numba kernels of the ``numba`` backend, by kind.

- ``primitives``: fastmath flags, LayerNorm rows, gathers, softmax, the value scalar, mat-vecs;
- ``per_row``: one dispatch runs the whole network row after row (best at one row);
- ``row_blocked``: one dispatch runs the whole network layer by layer over all rows, four at a time.

numba caches each compiled kernel beside its own file and checks only that file's time stamp: after
editing ``primitives.py`` or ``per_row.py``, touch the modules that call them (or clear __pycache__).
"""
