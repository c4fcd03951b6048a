"""What every bootstrap here shares: the replicates and their percentile intervals
(`Bootstrap`), BLAS held to one thread while a fit runs, and how many worker processes a
resampling is worth. The resampling itself is each method's own (points, budgets or runs).
"""

from __future__ import annotations

import functools
import os
from dataclasses import dataclass

import numpy as np
from threadpoolctl import ThreadpoolController


@functools.cache
def _blas_controller() -> ThreadpoolController:
    # Made once, at the first fit (numpy's and scipy's BLAS are loaded by then): inspecting the
    # loaded libraries costs ~1.5 ms, a limit on a made controller ~0.03 ms, and the bootstrap
    # enters it once per replicate.
    return ThreadpoolController()


def one_blas_thread(fn):
    """Run `fn` with BLAS on one thread (threadpoolctl), then restore the previous setting.

    L-BFGS-B's step calls BLAS on 5-vectors; OpenBLAS's thread pool made each step ~25x slower
    (1.7 ms instead of 0.07 ms) on a busy 2-core machine.
    """

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        with _blas_controller().limit(limits=1, user_api="blas"):
            return fn(*args, **kwargs)

    return wrapper


@dataclass(frozen=True, eq=False)
class Bootstrap:
    """Bootstrap replicates of named estimates; `samples` is (n_ok, len(names))."""

    names: tuple[str, ...]
    samples: np.ndarray
    n_requested: int
    seed: int

    @property
    def n_failed(self) -> int:
        return self.n_requested - len(self.samples)

    def interval(self, name: str, level: float = 0.95) -> tuple[float, float]:
        """Percentile interval of one estimate."""
        column = self.samples[:, self.names.index(name)]
        column = column[np.isfinite(column)]
        if len(column) == 0:
            return (float("nan"), float("nan"))
        tail = 50.0 * (1.0 - level)
        low, high = np.percentile(column, [tail, 100.0 - tail])
        return (float(low), float(high))

    def intervals(self, level: float = 0.95) -> dict[str, list[float]]:
        return {name: list(self.interval(name, level)) for name in self.names}


def default_workers(n_tasks: int, min_per_worker: int = 100) -> int:
    """Processes worth starting: one per core, none when the work would not cover the start-up."""
    return max(1, min(os.cpu_count() or 1, n_tasks // min_per_worker))
