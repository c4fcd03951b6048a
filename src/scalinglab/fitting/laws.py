"""Scaling-law fits: Chinchilla Methods 1-3 and power laws, each with seeded bootstrap intervals.

Pure numpy/scipy: every function takes plain arrays and returns a small frozen dataclass. The CLI
(`scalinglab fit ...`), the workflow's fit rules and the paper figures all call these.

- Method 3 (`fit_parametric`): L(N, D) = E + A/N^alpha + B/D^beta, fitted as Epoch AI refitted
  Chinchilla (arXiv 2404.10102): Huber loss on log L - LSE(log A - alpha log N, log B - beta log D,
  log E), summed over points, L-BFGS-B from the best starts of Hoffmann et al.'s grid (2203.15556,
  App. D.2). `fit_parametric_varpro` is the variable-projection variant beside it.
- Method 2 (`fit_isoflop`): a parabola in log N per compute budget, then power laws in C.
- Method 1 (`fit_envelope`): the lower envelope of training curves on a log-spaced FLOP grid.
- Power laws (`fit_power_law`, `fit_power_law_offset`): y = coef * x^exponent (+ offset).
"""

from __future__ import annotations

import functools
import itertools
import os
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass

import numpy as np
from scipy.optimize import least_squares, minimize, nnls
from scipy.special import huber as _scipy_huber
from threadpoolctl import ThreadpoolController

FLOPS_PER_PARAM_TOKEN = 6.0
"""C = 6ND: forward plus backward FLOPs per parameter per token (Kaplan et al., 2001.08361 §2.1)."""

PARAM_NAMES = ("E", "A", "B", "alpha", "beta")

# Tolerances far below scipy's defaults: with delta = 1e-3 the summed Huber objective is ~1e-3
# and its gradient ~1e-4, so the default pgtol (1e-5) stops L-BFGS-B at (or near) its start.
_LBFGS_OPTIONS = {"gtol": 1e-12, "ftol": 1e-15, "maxiter": 2000}


class FitError(ValueError):
    """The data cannot support the fit (too few points or budgets, no curvature)."""


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


# --------------------------------------------------------------------------------------------
# Method 3: parametric L(N, D)


@dataclass(frozen=True, eq=False)
class ParametricFit:
    """L(N, D) = E + A/N^alpha + B/D^beta, and the optimizer's account of how it got there."""

    E: float
    A: float
    B: float
    alpha: float
    beta: float
    objective: float
    n_points: int
    huber_delta: float
    fixed: tuple[str, ...] = ()
    method: str = "huber-lbfgs"

    @property
    def a(self) -> float:
        """N_opt ∝ C^a with a = beta / (alpha + beta) (Hoffmann et al. 2203.15556, eq. 4)."""
        return self.beta / (self.alpha + self.beta)

    @property
    def b(self) -> float:
        return self.alpha / (self.alpha + self.beta)

    def params(self) -> dict[str, float]:
        return {name: float(getattr(self, name)) for name in PARAM_NAMES}

    def loss(self, N, D):
        N, D = np.asarray(N, float), np.asarray(D, float)
        return self.E + self.A / N**self.alpha + self.B / D**self.beta

    def compute_optimal(self, C, flops_per_param_token: float = FLOPS_PER_PARAM_TOKEN):
        """(N_opt, D_opt) minimizing L under C = k N D, in closed form (2203.15556, eq. 4)."""
        return compute_optimal(self.params(), C, flops_per_param_token)


def compute_optimal(params: dict[str, float], C, flops_per_param_token: float = 6.0):
    """N_opt = G (C/k)^a, D_opt = (C/k)^b / G, G = (alpha A / (beta B))^(1/(alpha+beta))."""
    alpha, beta = params["alpha"], params["beta"]
    g = (alpha * params["A"] / (beta * params["B"])) ** (1.0 / (alpha + beta))
    units = np.asarray(C, float) / flops_per_param_token
    return g * units ** (beta / (alpha + beta)), units ** (alpha / (alpha + beta)) / g


def huber(r: np.ndarray, delta: float) -> np.ndarray:
    """0.5 r^2 inside |r| <= delta, delta (|r| - delta/2) outside: `scipy.special.huber`, with
    the residual first."""
    return _scipy_huber(delta, r)


def parametric_objective(theta, log_n, log_d, log_loss, delta):
    """Summed Huber loss and its gradient at theta = (log A, log B, log E, alpha, beta).

    Summed, not averaged: the mean divides the gradient by n and L-BFGS-B stops early (Epoch).
    """
    log_a, log_b, log_e, alpha, beta = theta
    t1 = log_a - alpha * log_n
    t2 = log_b - beta * log_d
    top = np.maximum(np.maximum(t1, t2), log_e)
    w1, w2, w3 = np.exp(t1 - top), np.exp(t2 - top), np.exp(log_e - top)
    total = w1 + w2 + w3
    r = top + np.log(total) - log_loss
    g = np.clip(r, -delta, delta) / total  # dHuber/dr times 1/sum, shared by every term
    grad = np.array([g @ w1, g @ w2, g @ w3, -(g * w1) @ log_n, -(g * w2) @ log_d])
    return float(huber(r, delta).sum()), grad


def _grid_objective(starts, log_n, log_d, log_loss, delta) -> np.ndarray:
    t1 = starts[:, 0:1] - starts[:, 3:4] * log_n
    t2 = starts[:, 1:2] - starts[:, 4:5] * log_d
    pred = np.logaddexp(np.logaddexp(t1, t2), starts[:, 2:3])
    return huber(pred - log_loss, delta).sum(axis=1)


def hoffmann_grid() -> np.ndarray:
    """Starting points of Hoffmann et al. (2203.15556, App. D.2), as (log A, log B, log E, α, β)."""
    ab = np.arange(0.0, 30.0, 5.0)
    e = np.arange(-1.0, 1.5, 0.5)
    exps = np.arange(0.0, 2.5, 0.5)
    return np.array(list(itertools.product(ab, ab, e, exps, exps)), float)


def _fixed_vector(fix_alpha, fix_beta) -> tuple[np.ndarray, np.ndarray]:
    """(mask of free entries of theta, theta template holding the fixed values)."""
    free = np.ones(5, bool)
    template = np.zeros(5)
    for idx, value in ((3, fix_alpha), (4, fix_beta)):
        if value is not None:
            free[idx] = False
            template[idx] = value
    return free, template


def _minimize_from(x0, free, template, log_n, log_d, log_loss, delta):
    def fun(x):
        theta = template.copy()
        theta[free] = x
        value, grad = parametric_objective(theta, log_n, log_d, log_loss, delta)
        return value, grad[free]

    res = minimize(fun, x0[free], jac=True, method="L-BFGS-B", options=_LBFGS_OPTIONS)
    theta = template.copy()
    theta[free] = res.x
    return float(res.fun), theta


def _theta_to_fit(theta, objective, n, delta, fixed, method="huber-lbfgs") -> ParametricFit:
    log_a, log_b, log_e, alpha, beta = (float(x) for x in theta)
    return ParametricFit(
        E=float(np.exp(log_e)),
        A=float(np.exp(log_a)),
        B=float(np.exp(log_b)),
        alpha=alpha,
        beta=beta,
        objective=objective,
        n_points=n,
        huber_delta=delta,
        fixed=fixed,
        method=method,
    )


def _check_positive(**arrays) -> int:
    n = None
    for name, values in arrays.items():
        values = np.asarray(values, float)
        if values.ndim != 1 or not np.all(np.isfinite(values)) or np.any(values <= 0):
            raise FitError(f"{name} must be a 1-d array of finite positive numbers")
        if n is not None and len(values) != n:
            raise FitError(f"{name} has {len(values)} values, expected {n}")
        n = len(values)
    return n


@one_blas_thread
def fit_parametric(
    N,
    D,
    loss,
    *,
    huber_delta: float = 1e-3,
    fix_alpha: float | None = None,
    fix_beta: float | None = None,
    n_starts: int | None = 64,
) -> ParametricFit:
    """Method 3. L-BFGS-B runs from the `n_starts` grid points with the lowest objective.

    All 4,500 grid starts (`n_starts=None`) take about a minute on 2 busy cores and find the
    same optimum on Epoch's 240 points as the best 10 grid points do; 64 keeps a wide margin
    at ~0.7 s. Starts are ranked by the objective evaluated at every grid point (vectorised).
    """
    n = _check_positive(N=N, D=D, loss=loss)
    free, template = _fixed_vector(fix_alpha, fix_beta)
    if n <= free.sum():
        raise FitError(f"{n} points cannot determine {free.sum()} free parameters")
    log_n, log_d, log_loss = np.log(N), np.log(D), np.log(loss)
    starts = hoffmann_grid()
    starts[:, ~free] = template[~free]
    starts = np.unique(starts, axis=0)
    if n_starts is not None and n_starts < len(starts):
        values = _grid_objective(starts, log_n, log_d, log_loss, huber_delta)
        starts = starts[np.argsort(values, kind="stable")[:n_starts]]
    best = (np.inf, None)
    for x0 in starts:
        value, theta = _minimize_from(x0, free, template, log_n, log_d, log_loss, huber_delta)
        if value < best[0]:
            best = (value, theta)
    fixed = tuple(name for name, f in zip(("alpha", "beta"), free[3:], strict=True) if not f)
    return _theta_to_fit(best[1], best[0], n, huber_delta, fixed)


def _fit_to_theta(fit: ParametricFit) -> np.ndarray:
    return np.array([np.log(fit.A), np.log(fit.B), np.log(fit.E), fit.alpha, fit.beta])


@one_blas_thread
def _bootstrap_chunk(args):
    log_n, log_d, log_loss, indices, x0, free, template, delta = args
    out = np.empty((len(indices), 5))
    for row, idx in enumerate(indices):
        _, out[row] = _minimize_from(
            x0, free, template, log_n[idx], log_d[idx], log_loss[idx], delta
        )
    return out


def default_workers(n_tasks: int, min_per_worker: int = 100) -> int:
    """Processes worth starting: one per core, none when the work would not cover the start-up."""
    return max(1, min(os.cpu_count() or 1, n_tasks // min_per_worker))


def bootstrap_parametric(
    N,
    D,
    loss,
    fit: ParametricFit,
    *,
    n_boot: int = 1000,
    seed: int = 0,
    workers: int | None = None,
) -> Bootstrap:
    """Resample points with replacement; each refit starts from the full-data optimum.

    The warm start replaces the grid: a resample's optimum lies near the full-data one, and one
    L-BFGS-B run costs ~10 ms against ~0.5 s for 64 starts. Indices are drawn up front from one
    seeded generator, so the result does not depend on the number of worker processes.
    """
    n = _check_positive(N=N, D=D, loss=loss)
    indices = np.random.default_rng(seed).integers(0, n, size=(n_boot, n))
    free, template = _fixed_vector(
        fit.alpha if "alpha" in fit.fixed else None, fit.beta if "beta" in fit.fixed else None
    )
    common = (np.log(N), np.log(D), np.log(loss))
    x0 = _fit_to_theta(fit)
    workers = default_workers(n_boot) if workers is None else max(1, workers)
    chunks = [c for c in np.array_split(indices, workers) if len(c)]
    tasks = [(*common, c, x0, free, template, fit.huber_delta) for c in chunks]
    if workers == 1:
        thetas = np.vstack([_bootstrap_chunk(t) for t in tasks])
    else:
        with ProcessPoolExecutor(max_workers=workers) as pool:
            thetas = np.vstack(list(pool.map(_bootstrap_chunk, tasks)))
    thetas = thetas[np.all(np.isfinite(thetas), axis=1)]
    alpha, beta = thetas[:, 3], thetas[:, 4]
    samples = np.column_stack(
        [
            np.exp(thetas[:, 2]),
            np.exp(thetas[:, 0]),
            np.exp(thetas[:, 1]),
            alpha,
            beta,
            beta / (alpha + beta),
            alpha / (alpha + beta),
        ]
    )
    return Bootstrap((*PARAM_NAMES, "a", "b"), samples, n_boot, seed)


def compute_optimal_samples(boot: Bootstrap, C: float) -> dict[str, np.ndarray]:
    """N_opt, D_opt, tokens per parameter and loss at C for every bootstrap replicate."""
    params = {name: boot.samples[:, boot.names.index(name)] for name in PARAM_NAMES}
    n_opt, d_opt = compute_optimal(params, C)
    loss = (
        params["E"] + params["A"] / n_opt ** params["alpha"] + params["B"] / d_opt ** params["beta"]
    )
    return {"N_opt": n_opt, "D_opt": d_opt, "tokens_per_param": d_opt / n_opt, "loss": loss}


@one_blas_thread
def fit_parametric_varpro(
    N, D, loss, *, fix_alpha: float | None = None, fix_beta: float | None = None
) -> ParametricFit:
    """Method 3 by variable projection: for fixed (alpha, beta) the model is linear in (E, A, B).

    Open-Athena found the direct 5-parameter fit badly conditioned (A and B trade off against E
    and the exponents). Here (E, A, B) >= 0 come from non-negative least squares on relative
    residuals (L_hat - L)/L, close to the log residual, and only (alpha, beta) are searched: a
    grid, then Nelder-Mead. `objective` is the summed squared relative residual, not Huber.
    """
    n = _check_positive(N=N, D=D, loss=loss)
    if n <= 5 - (fix_alpha is not None) - (fix_beta is not None):
        raise FitError(f"{n} points are too few for the variable-projection fit")
    N, D, loss = (np.asarray(v, float) for v in (N, D, loss))
    # Dividing N and D by their geometric means keeps the design columns near 1 for any exponent.
    n_ref, d_ref = np.exp(np.mean(np.log(N))), np.exp(np.mean(np.log(D)))
    x_n, x_d = N / n_ref, D / d_ref

    def project(exps):
        alpha = fix_alpha if fix_alpha is not None else exps[0]
        beta = fix_beta if fix_beta is not None else exps[-1]
        design = np.column_stack([np.ones(n), x_n**-alpha, x_d**-beta]) / loss[:, None]
        coefs, rnorm = nnls(design, np.ones(n))
        return rnorm**2, coefs, alpha, beta

    grid = np.arange(0.05, 1.51, 0.05)
    axes = [grid] * ((fix_alpha is None) + (fix_beta is None))
    if axes:
        candidates = [np.array(p) for p in itertools.product(*axes)]
        start = min(candidates, key=lambda p: project(p)[0])
        res = minimize(
            lambda p: project(p)[0],
            start,
            method="Nelder-Mead",
            options={"xatol": 1e-8, "fatol": 1e-14, "maxiter": 4000},
        )
        exps = res.x
    else:
        exps = np.array([])
    rss, (e, a, b), alpha, beta = project(exps)
    fixed = tuple(k for k, v in (("alpha", fix_alpha), ("beta", fix_beta)) if v is not None)
    return ParametricFit(
        E=float(e),
        A=float(a * n_ref**alpha),
        B=float(b * d_ref**beta),
        alpha=float(alpha),
        beta=float(beta),
        objective=float(rss),
        n_points=n,
        huber_delta=float("nan"),
        fixed=fixed,
        method="varpro-nnls",
    )


# --------------------------------------------------------------------------------------------
# Methods 1 and 2: compute-optimal allocation N_opt = k_n C^a, D_opt = k_d C^b


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


def loglog_fit(x, y) -> tuple[float, float]:
    """(coef, exponent) of y = coef x^exponent by least squares on log y against log x."""
    lx, ly = np.log(np.asarray(x, float)), np.log(np.asarray(y, float))
    exponent, intercept = np.polyfit(lx, ly, 1)
    return float(np.exp(intercept)), float(exponent)


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


def _budget_groups(C) -> list[tuple[float, np.ndarray]]:
    """(budget, row indices) for each compute budget, smallest first."""
    values, labels = budget_labels(C)
    return [(float(v), np.flatnonzero(labels == k)) for k, v in enumerate(values)]


def _parabola(log_n, loss):
    """(vertex log N, loss at vertex, curvature) of loss = c2 x^2 + c1 x + c0, x = log N."""
    c2, c1, c0 = np.polyfit(log_n, loss, 2)
    x = -c1 / (2 * c2) if c2 > 0 else np.nan
    return x, c0 + c1 * x + c2 * x * x, c2


def _finish_allocation(method, budgets, dropped) -> AllocationFit:
    if len(budgets) < 2:
        why = "; ".join(f"C={d.C:.3g}: {d.reason}" for d in dropped) or "only one budget given"
        raise FitError(f"{len(budgets)} usable compute budget(s), need at least 2 ({why})")
    cs = [o.C for o in budgets]
    k_n, a = loglog_fit(cs, [o.N_opt for o in budgets])
    k_d, b = loglog_fit(cs, [o.D_opt for o in budgets])
    return AllocationFit(method, a, k_n, b, k_d, tuple(budgets), tuple(dropped))


def _default_d(C, N, D):
    C, N = np.asarray(C, float), np.asarray(N, float)
    return C / (FLOPS_PER_PARAM_TOKEN * N) if D is None else np.asarray(D, float)


def fit_isoflop(C, N, loss, D=None) -> AllocationFit:
    """Method 2 (Hoffmann et al. 2203.15556, Approach 2): a parabola in log N per budget.

    A budget with fewer than 3 points (or distinct sizes) or with non-positive curvature is
    dropped and listed. D_opt is read off the budget's own line of log D against log N at N_opt,
    which is exactly C/(6 N_opt) when C = 6ND and follows any other FLOP count otherwise.
    """
    D = _default_d(C, N, D)
    _check_positive(C=C, N=N, loss=loss, D=D)
    C, N, loss = (np.asarray(v, float) for v in (C, N, loss))
    budgets, dropped = [], []
    for c, rows in _budget_groups(C):
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
    return _finish_allocation("isoflop", budgets, dropped)


def _masked_loglog(log_c, log_y, mask):
    """Slope and intercept of log y on log C per row, using only the masked budgets."""
    w = mask.astype(float)
    sw, sx, sy = w.sum(1), (w * log_c).sum(1), (w * log_y).sum(1)
    sxx, sxy = (w * log_c**2).sum(1), (w * log_c * log_y).sum(1)
    with np.errstate(invalid="ignore", divide="ignore"):
        slope = (sw * sxy - sx * sy) / (sw * sxx - sx**2)
    return slope, (sy - slope * sx) / sw


def _allocation_samples(log_c, log_n_opt, log_d_opt, ok, n_boot, seed) -> Bootstrap:
    keep = ok.sum(axis=1) >= 2
    log_n_opt, log_d_opt, ok = log_n_opt[keep], log_d_opt[keep], ok[keep]
    grid_c = np.broadcast_to(log_c, ok.shape)
    a, log_kn = _masked_loglog(grid_c, np.where(ok, log_n_opt, 0.0), ok)
    b, log_kd = _masked_loglog(grid_c, np.where(ok, log_d_opt, 0.0), ok)
    samples = np.column_stack([a, np.exp(log_kn), b, np.exp(log_kd)])
    return Bootstrap(("a", "k_n", "b", "k_d"), samples, n_boot, seed)


def allocation_samples_at(boot: Bootstrap, C: float) -> dict[str, np.ndarray]:
    """N_opt, D_opt and tokens per parameter at C from each replicate's power laws."""
    a, k_n, b, k_d = (boot.samples[:, boot.names.index(k)] for k in ("a", "k_n", "b", "k_d"))
    n_opt, d_opt = k_n * C**a, k_d * C**b
    return {"N_opt": n_opt, "D_opt": d_opt, "tokens_per_param": d_opt / n_opt}


def bootstrap_isoflop(C, N, loss, D=None, *, n_boot: int = 1000, seed: int = 0) -> Bootstrap:
    """Resample points within each budget and refit every parabola and both power laws.

    Vectorised over replicates (normal equations of the quadratic, batched). A budget that loses
    its curvature or its third distinct size in a replicate is left out of that replicate only.
    D_opt follows each budget's full-data log D-log N line.
    """
    D = _default_d(C, N, D)
    _check_positive(C=C, N=N, loss=loss, D=D)
    C, N, loss = (np.asarray(v, float) for v in (C, N, loss))
    rng = np.random.default_rng(seed)
    groups = _budget_groups(C)
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
    return _allocation_samples(log_c, log_n_opt, log_d_opt, ok, n_boot, seed)


# --------------------------------------------------------------------------------------------
# Method 1: lower envelope


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
    D = _default_d(C, N, D)
    _check_positive(C=C, N=N, loss=loss, D=D)
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
    return _finish_allocation("envelope", budgets, dropped)


def bootstrap_envelope(
    run, C, N, loss, D=None, *, grid_points: int = 50, n_boot: int = 200, seed: int = 0
) -> Bootstrap:
    """Resample whole runs with replacement (within each budget for final-point data)."""
    D = _default_d(C, N, D)
    _check_positive(C=C, N=N, loss=loss, D=D)
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
    return _allocation_samples(
        np.log(table.grid), log_n_opt, log_d_opt, np.isfinite(log_n_opt), n_boot, seed
    )


# --------------------------------------------------------------------------------------------
# Power laws


@dataclass(frozen=True)
class PowerLawFit:
    """y = coef * x^exponent, plus `offset` when fitted with one; `rss` in the fit's own space."""

    coef: float
    exponent: float
    n_points: int
    rss: float
    offset: float | None = None

    def predict(self, x):
        y = self.coef * np.asarray(x, float) ** self.exponent
        return y if self.offset is None else self.offset + y


def fit_power_law(x, y) -> PowerLawFit:
    """Least squares on log y against log x; `rss` is the residual sum of squares in log y."""
    n = _check_positive(x=x, y=y)
    if n < 3:
        raise FitError(f"{n} points are too few for a power law (need 3)")
    coef, exponent = loglog_fit(x, y)
    resid = np.log(y) - np.log(coef) - exponent * np.log(x)
    return PowerLawFit(coef, exponent, n, float(resid @ resid))


@one_blas_thread
def fit_power_law_offset(
    x, y, *, exponent_grid=None, start: PowerLawFit | None = None
) -> PowerLawFit:
    """y = offset + coef x^exponent, least squares on relative residuals (y_hat - y)/y.

    For a fixed exponent the model is linear in (offset, coef), so a grid over the exponent with
    a linear solve at each point gives the starts; least_squares then refines all three from the
    best three (or from `start` alone: the bootstrap's warm start). x is scaled by its geometric
    mean so x^exponent stays near 1 for any exponent.
    """
    n = _check_positive(x=x, y=y)
    if n < 4:
        raise FitError(f"{n} points are too few for a power law with offset (need 4)")
    x, y = np.asarray(x, float), np.asarray(y, float)
    x_ref = float(np.exp(np.mean(np.log(x))))
    z = x / x_ref
    grid = np.linspace(-3, 3, 121) if exponent_grid is None else np.asarray(exponent_grid)
    grid = grid[grid != 0]

    def linear(k):
        design = np.column_stack([np.ones(n), z**k]) / y[:, None]
        sol, *_ = np.linalg.lstsq(design, np.ones(n), rcond=None)
        r = design @ sol - 1.0
        return float(r @ r), sol

    def resid(p):
        return (p[0] + p[1] * z ** p[2]) / y - 1.0

    if start is None:
        scores = [linear(k)[0] for k in grid]
        starts = [(*linear(k)[1], k) for k in grid[np.argsort(scores)[:3]]]
    else:
        starts = [(start.offset, start.coef * x_ref**start.exponent, start.exponent)]
    best = None
    for p0 in starts:
        res = least_squares(resid, p0, xtol=1e-14, ftol=1e-14, gtol=1e-14)
        if best is None or res.cost < best.cost:
            best = res
    offset, coef, exponent = best.x
    return PowerLawFit(
        float(coef * x_ref**-exponent), float(exponent), n, float(2 * best.cost), float(offset)
    )


@one_blas_thread
def bootstrap_power_law(x, y, *, offset: bool = False, n_boot: int = 1000, seed: int = 0):
    """Pairs bootstrap: resample (x, y) points with replacement and refit."""
    x, y = np.asarray(x, float), np.asarray(y, float)
    full = fit_power_law_offset(x, y) if offset else None
    rng = np.random.default_rng(seed)
    indices = rng.integers(0, len(x), size=(n_boot, len(x)))
    rows = []
    for idx in indices:
        if len(np.unique(x[idx])) < (3 if offset else 2):
            continue
        if offset:
            f = fit_power_law_offset(x[idx], y[idx], start=full)
            rows.append((f.coef, f.exponent, f.offset))
        else:
            rows.append(loglog_fit(x[idx], y[idx]))
    names = ("coef", "exponent", "offset") if offset else ("coef", "exponent")
    return Bootstrap(names, np.array(rows, float).reshape(-1, len(names)), n_boot, seed)
