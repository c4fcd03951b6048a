"""Compute-optimal allocation N_opt = k_n C^a, D_opt = k_d C^b, shared by Methods 1 and 2.

A method finds one optimum per compute budget (`BudgetOptimum`); here are the budgets of a table
(`budget_labels`), the two power laws through the optima (`allocation_fit`) and their bootstrap
replicates, fitted for every replicate at once (`allocation_bootstrap`).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from scalinglab.fitting.bootstrap import Bootstrap
from scalinglab.fitting.inputs import FitError
from scalinglab.fitting.powerlaw import loglog_fit


@dataclass(frozen=True)
class BudgetOptimum:
    """The optimum found at one compute budget (a Method 2 budget or a Method 1 grid point)."""

    C: float
    N_opt: float
    D_opt: float
    loss_opt: float
    n_points: int
    inside_range: bool
    """False when the optimum lies at or beyond the smallest or largest N sampled."""

    @property
    def tokens_per_param(self) -> float:
        return self.D_opt / self.N_opt


@dataclass(frozen=True)
class DroppedBudget:
    C: float
    n_points: int
    reason: str


@dataclass(frozen=True)
class AllocationFit:
    """N_opt = k_n C^a and D_opt = k_d C^b, fitted over the kept budgets."""

    method: str
    a: float
    k_n: float
    b: float
    k_d: float
    budgets: tuple[BudgetOptimum, ...]
    dropped: tuple[DroppedBudget, ...]

    def n_opt(self, C):
        return self.k_n * np.asarray(C, float) ** self.a

    def d_opt(self, C):
        return self.k_d * np.asarray(C, float) ** self.b

    def tokens_per_param(self, C):
        return self.d_opt(C) / self.n_opt(C)


BUDGET_RTOL = 1e-6
"""Budgets closer than this (relative) are one budget: C = 6ND recomputed from a CSV's N and D
differs from the planned C in the last digits."""


def budget_labels(C, rtol: float = BUDGET_RTOL) -> tuple[np.ndarray, np.ndarray]:
    """(budget values, index of each row's budget), smallest budget first.

    A budget's value is the geometric mean of its rows' C (their common value when equal).
    """
    C = np.asarray(C, float)
    order = np.argsort(C, kind="stable")
    sorted_c = C[order]
    starts = np.r_[True, sorted_c[1:] > sorted_c[:-1] * (1 + rtol)]
    labels = np.empty(len(C), int)
    labels[order] = np.cumsum(starts) - 1
    values = np.exp(np.bincount(labels, np.log(C)) / np.bincount(labels))
    lowest = np.full(len(values), np.inf)
    np.minimum.at(lowest, labels, C)
    highest = np.zeros(len(values))
    np.maximum.at(highest, labels, C)
    values = np.where(lowest == highest, lowest, values)  # keep an exactly shared C exact
    return values, labels


def budget_groups(C) -> list[tuple[float, np.ndarray]]:
    """(budget, row indices) for each compute budget, smallest first."""
    values, labels = budget_labels(C)
    return [(float(v), np.flatnonzero(labels == k)) for k, v in enumerate(values)]


def allocation_fit(method, budgets, dropped) -> AllocationFit:
    if len(budgets) < 2:
        why = "; ".join(f"C={d.C:.3g}: {d.reason}" for d in dropped) or "only one budget given"
        raise FitError(f"{len(budgets)} usable compute budget(s), need at least 2 ({why})")
    cs = [o.C for o in budgets]
    k_n, a = loglog_fit(cs, [o.N_opt for o in budgets])
    k_d, b = loglog_fit(cs, [o.D_opt for o in budgets])
    return AllocationFit(method, a, k_n, b, k_d, tuple(budgets), tuple(dropped))


def masked_loglog(log_c, log_y, mask):
    """Slope and intercept of log y on log C per row, using only the masked budgets."""
    w = mask.astype(float)
    sw, sx, sy = w.sum(1), (w * log_c).sum(1), (w * log_y).sum(1)
    sxx, sxy = (w * log_c**2).sum(1), (w * log_c * log_y).sum(1)
    with np.errstate(invalid="ignore", divide="ignore"):
        slope = (sw * sxy - sx * sy) / (sw * sxx - sx**2)
    return slope, (sy - slope * sx) / sw


def allocation_bootstrap(log_c, log_n_opt, log_d_opt, ok, n_boot, seed) -> Bootstrap:
    keep = ok.sum(axis=1) >= 2
    log_n_opt, log_d_opt, ok = log_n_opt[keep], log_d_opt[keep], ok[keep]
    grid_c = np.broadcast_to(log_c, ok.shape)
    a, log_kn = masked_loglog(grid_c, np.where(ok, log_n_opt, 0.0), ok)
    b, log_kd = masked_loglog(grid_c, np.where(ok, log_d_opt, 0.0), ok)
    samples = np.column_stack([a, np.exp(log_kn), b, np.exp(log_kd)])
    return Bootstrap(("a", "k_n", "b", "k_d"), samples, n_boot, seed)


def allocation_samples_at(boot: Bootstrap, C: float) -> dict[str, np.ndarray]:
    """N_opt, D_opt and tokens per parameter at C from each replicate's power laws."""
    a, k_n, b, k_d = (boot.samples[:, boot.names.index(k)] for k in ("a", "k_n", "b", "k_d"))
    n_opt, d_opt = k_n * C**a, k_d * C**b
    return {"N_opt": n_opt, "D_opt": d_opt, "tokens_per_param": d_opt / n_opt}
