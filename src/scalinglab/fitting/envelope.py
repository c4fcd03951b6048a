"""Method 1 (Hoffmann et al. 2203.15556, Approach 1): the lower envelope of training curves on a
log-spaced FLOP grid, then the power laws N_opt(C) and D_opt(C) through its minima.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from scalinglab.fitting.allocation import (
    AllocationFit,
    BudgetOptimum,
    DroppedBudget,
    allocation_bootstrap,
    allocation_fit,
    budget_labels,
)
from scalinglab.fitting.bootstrap import Bootstrap
from scalinglab.fitting.inputs import check_positive, default_d


@dataclass(frozen=True, eq=False)
class _EnvelopeTable:
    """Loss (and log D) of every run at every grid budget; NaN where the run does not reach it."""

    grid: np.ndarray
    loss: np.ndarray  # (runs, grid)
    log_d: np.ndarray  # (runs, grid)
    n: np.ndarray  # (runs,)
    single_point: bool


def _envelope_table(run, C, N, loss, D, grid_points) -> _EnvelopeTable:
    run = np.asarray(run)
    C, N, loss, D = (np.asarray(v, float) for v in (C, N, loss, D))
    names, inverse = np.unique(run, return_inverse=True)
    counts = np.bincount(inverse)
    sizes = np.array([N[inverse == k][0] for k in range(len(names))])
    if counts.max() == 1:
        # Final losses only: the grid is the set of budgets and each run sits on one of them.
        grid, column = budget_labels(C)
        table = np.full((len(names), len(grid)), np.nan)
        log_d = np.full_like(table, np.nan)
        table[inverse, column] = loss
        log_d[inverse, column] = np.log(D)
        return _EnvelopeTable(grid, table, log_d, sizes, True)
    grid = np.geomspace(C.min(), C.max(), grid_points)
    table = np.full((len(names), grid_points), np.nan)
    log_d = np.full_like(table, np.nan)
    for k in range(len(names)):
        rows = np.flatnonzero(inverse == k)
        rows = rows[np.argsort(C[rows], kind="stable")]
        lc = np.log(C[rows])
        reach = (grid >= C[rows].min() * (1 - 1e-12)) & (grid <= C[rows].max() * (1 + 1e-12))
        table[k, reach] = np.interp(np.log(grid[reach]), lc, loss[rows])
        log_d[k, reach] = np.interp(np.log(grid[reach]), lc, np.log(D[rows]))
    return _EnvelopeTable(grid, table, log_d, sizes, False)


def _envelope_optima(table: _EnvelopeTable, chosen: np.ndarray):
    """Argmin over the `chosen` runs at each grid budget; (best run, number of runs covering)."""
    losses = np.where(chosen[:, None], table.loss, np.nan)
    covering = np.isfinite(losses).sum(axis=0)
    best = np.argmin(np.where(np.isfinite(losses), losses, np.inf), axis=0)
    return best, covering


def fit_envelope(run, C, N, loss, D=None, *, grid_points: int = 50) -> AllocationFit:
    """Method 1 (2203.15556, Approach 1): at each budget of a log-spaced grid, the best run.

    Runs are curves (several rows per run, loss interpolated linearly in log C) or single final
    points; when every run has one point the grid is the distinct budgets. A budget reached by
    fewer than 2 runs has no minimum to speak of and is dropped.
    """
    D = default_d(C, N, D)
    check_positive(C=C, N=N, loss=loss, D=D)
    table = _envelope_table(run, C, N, loss, D, grid_points)
    best, covering = _envelope_optima(table, np.ones(len(table.n), bool))
    budgets, dropped = [], []
    for j, c in enumerate(table.grid):
        if covering[j] < 2:
            reason = "reached by only one run" if covering[j] == 1 else "reached by no run"
            dropped.append(DroppedBudget(float(c), int(covering[j]), reason))
            continue
        k = best[j]
        present = np.isfinite(table.loss[:, j])
        sizes = table.n[present]
        inside = bool(sizes.min() < table.n[k] < sizes.max())
        budgets.append(
            BudgetOptimum(
                float(c),
                float(table.n[k]),
                float(np.exp(table.log_d[k, j])),
                float(table.loss[k, j]),
                int(covering[j]),
                inside,
            )
        )
    return allocation_fit("envelope", budgets, dropped)


def bootstrap_envelope(
    run, C, N, loss, D=None, *, grid_points: int = 50, n_boot: int = 200, seed: int = 0
) -> Bootstrap:
    """Resample whole runs with replacement (within each budget for final-point data)."""
    D = default_d(C, N, D)
    check_positive(C=C, N=N, loss=loss, D=D)
    table = _envelope_table(run, C, N, loss, D, grid_points)
    rng = np.random.default_rng(seed)
    n_runs, n_grid = table.loss.shape
    if table.single_point:
        home = np.argmax(np.isfinite(table.loss), axis=1)  # each run's budget
        members = [np.flatnonzero(home == j) for j in range(n_grid)]
    log_n_opt = np.full((n_boot, n_grid), np.nan)
    log_d_opt = np.full_like(log_n_opt, np.nan)
    for i in range(n_boot):
        chosen = np.zeros(n_runs, bool)
        if table.single_point:
            for rows in members:
                chosen[rng.choice(rows, size=len(rows))] = True
        else:
            chosen[rng.integers(0, n_runs, size=n_runs)] = True
        best, covering = _envelope_optima(table, chosen)
        ok = covering >= 2
        log_n_opt[i, ok] = np.log(table.n[best[ok]])
        log_d_opt[i, ok] = table.log_d[best[ok], np.flatnonzero(ok)]
    return allocation_bootstrap(
        np.log(table.grid), log_n_opt, log_d_opt, np.isfinite(log_n_opt), n_boot, seed
    )
