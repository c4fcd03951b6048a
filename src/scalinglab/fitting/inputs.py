"""What the Chinchilla-method fits share about their input: the error raised on data that
cannot support a fit, the check every fit makes of its arrays, and the FLOP convention C = 6ND
that gives D when a table has only C and N.
"""

from __future__ import annotations

import numpy as np

FLOPS_PER_PARAM_TOKEN = 6.0
"""C = 6ND: forward plus backward FLOPs per parameter per token (Kaplan et al., 2001.08361 §2.1)."""


class FitError(ValueError):
    """The data cannot support the fit (too few points or budgets, no curvature)."""


def check_positive(**arrays) -> int:
    """The common length of the named arrays; `FitError` naming the first that is not 1-d,
    finite and positive, or whose length differs."""
    n = None
    for name, values in arrays.items():
        values = np.asarray(values, float)
        if values.ndim != 1 or not np.all(np.isfinite(values)) or np.any(values <= 0):
            raise FitError(f"{name} must be a 1-d array of finite positive numbers")
        if n is not None and len(values) != n:
            raise FitError(f"{name} has {len(values)} values, expected {n}")
        n = len(values)
    return n


def default_d(C, N, D):
    """D as given, or C/(6N) when it is None."""
    C, N = np.asarray(C, float), np.asarray(N, float)
    return C / (FLOPS_PER_PARAM_TOKEN * N) if D is None else np.asarray(D, float)
