"""Method 2 (Hoffmann et al. 2203.15556, Approach 2): a parabola in log N per compute budget,
then the power laws N_opt(C) and D_opt(C) through the vertices.
"""

from __future__ import annotations

import numpy as np

from scalinglab.fitting.allocation import (
    AllocationFit,
    BudgetOptimum,
    DroppedBudget,
    allocation_bootstrap,
    allocation_fit,
    budget_groups,
)
from scalinglab.fitting.bootstrap import Bootstrap
from scalinglab.fitting.inputs import check_positive, default_d


def _parabola(log_n, loss):
    """(vertex log N, loss at vertex, curvature) of loss = c2 x^2 + c1 x + c0, x = log N."""
    c2, c1, c0 = np.polyfit(log_n, loss, 2)
    x = -c1 / (2 * c2) if c2 > 0 else np.nan
    return x, c0 + c1 * x + c2 * x * x, c2


def fit_isoflop(C, N, loss, D=None) -> AllocationFit:
    """Method 2 (Hoffmann et al. 2203.15556, Approach 2): a parabola in log N per budget.

    A budget with fewer than 3 points (or distinct sizes) or with non-positive curvature is
    dropped and listed. D_opt is read off the budget's own line of log D against log N at N_opt,
    which is exactly C/(6 N_opt) when C = 6ND and follows any other FLOP count otherwise.
    """
    D = default_d(C, N, D)
    check_positive(C=C, N=N, loss=loss, D=D)
    C, N, loss = (np.asarray(v, float) for v in (C, N, loss))
    budgets, dropped = [], []
    for c, rows in budget_groups(C):
        n_rows = len(rows)
        log_n = np.log(N[rows])
        if len(np.unique(log_n)) < 3:
            dropped.append(
                DroppedBudget(c, n_rows, f"fewer than 3 distinct model sizes ({n_rows} points)")
            )
            continue
        x, loss_opt, c2 = _parabola(log_n, loss[rows])
        if not c2 > 0:
            dropped.append(DroppedBudget(c, n_rows, f"non-positive curvature ({c2:.3g})"))
            continue
        slope, intercept = np.polyfit(log_n, np.log(D[rows]), 1)
        inside = bool(log_n.min() < x < log_n.max())
        budgets.append(
            BudgetOptimum(
                c,
                float(np.exp(x)),
                float(np.exp(intercept + slope * x)),
                float(loss_opt),
                n_rows,
                inside,
            )
        )
    return allocation_fit("isoflop", budgets, dropped)


def bootstrap_isoflop(C, N, loss, D=None, *, n_boot: int = 1000, seed: int = 0) -> Bootstrap:
    """Resample points within each budget and refit every parabola and both power laws.

    Vectorised over replicates (normal equations of the quadratic, batched). A budget that loses
    its curvature or its third distinct size in a replicate is left out of that replicate only.
    D_opt follows each budget's full-data log D-log N line.
    """
    D = default_d(C, N, D)
    check_positive(C=C, N=N, loss=loss, D=D)
    C, N, loss = (np.asarray(v, float) for v in (C, N, loss))
    rng = np.random.default_rng(seed)
    groups = budget_groups(C)
    log_c = np.log([c for c, _ in groups])
    log_n_opt = np.full((n_boot, len(groups)), np.nan)
    log_d_opt = np.full_like(log_n_opt, np.nan)
    for j, (_, rows) in enumerate(groups):
        idx = rng.integers(0, len(rows), size=(n_boot, len(rows)))
        if len(np.unique(np.log(N[rows]))) < 3:
            continue
        x = np.log(N[rows])[idx]
        y = loss[rows][idx]
        distinct = 1 + (np.diff(np.sort(x, axis=1), axis=1) > 0).sum(axis=1)
        slope, intercept = np.polyfit(np.log(N[rows]), np.log(np.asarray(D)[rows]), 1)
        xc = x - x.mean(axis=1, keepdims=True)  # centring keeps the normal equations well posed
        powers = np.stack([xc**k for k in range(5)], axis=2).sum(axis=1)  # (n_boot, 5)
        lhs = np.stack([powers[:, i : i + 3] for i in range(3)], axis=1)
        rhs = np.stack([(y * xc**k).sum(axis=1) for k in range(3)], axis=1)
        good = distinct >= 3
        coef = np.full((n_boot, 3), np.nan)
        coef[good] = np.linalg.solve(lhs[good], rhs[good][..., None])[..., 0]
        c1, c2 = coef[:, 1], coef[:, 2]
        with np.errstate(invalid="ignore", divide="ignore"):
            vertex = np.where(c2 > 0, -c1 / (2 * c2), np.nan) + x.mean(axis=1)
        log_n_opt[:, j] = vertex
        log_d_opt[:, j] = intercept + slope * vertex
    ok = np.isfinite(log_n_opt)
    return allocation_bootstrap(log_c, log_n_opt, log_d_opt, ok, n_boot, seed)
