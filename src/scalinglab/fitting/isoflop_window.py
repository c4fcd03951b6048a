"""A robust Method 2: each budget's parabola on a window around its minimum, edges flagged, and
an interval on every budget's N_opt.

Open-Athena (arXiv 2603.22339) show that Approach 2 is biased by the grid: a parabola in log N
fitted over a wide grid that is not centred on the minimum moves its vertex toward the grid's
centre, because the true profile is not a parabola far from its minimum. So each budget's
parabola is fitted on the `window_sizes` distinct sizes nearest (in log N) to its lowest-loss
size. A budget whose lowest loss sits at the smallest or largest size of its grid (or whose
vertex falls outside its window) has no located minimum: it is flagged `edge` ("low" or
"high") and left out of the N_opt(C) and D_opt(C) laws.

Each budget's interval comes from a residual bootstrap of its window: replicate losses are the
fitted parabola plus Gaussian noise of the measured noise floor (the spread across seeds, when
given), else of the parabola's own residual scatter. Resampling a five-point window's points
would often leave fewer than three distinct sizes. The laws' intervals come from the same
replicates, one vertex per budget per replicate.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from scalinglab.fitting.allocation import allocation_bootstrap, budget_groups
from scalinglab.fitting.bootstrap import Bootstrap
from scalinglab.fitting.inputs import FitError, check_positive
from scalinglab.fitting.powerlaw import loglog_fit

MIN_WINDOW = 3
MIN_LAW_BUDGETS = 3


@dataclass(frozen=True)
class WindowBudget:
    """One budget of a windowed Method 2 fit."""

    C: float
    N_opt: float  # the vertex (NaN without curvature)
    D_opt: float
    loss_opt: float
    sizes: tuple[float, ...]  # every N the budget was trained at
    window: tuple[float, ...]  # the N the parabola was fitted on
    edge: str | None  # "low" / "high": the minimum is not inside the grid; None: it is
    reason: str  # why the budget is left out of the laws ("" when it is in)
    sigma: float  # the loss noise its bootstrap drew
    curvature: float  # d2 loss / d(ln N)^2 / 2 of the parabola
    N_opt_ci: tuple[float, float] | None = None

    @property
    def in_law(self) -> bool:
        return not self.reason

    @property
    def tokens_per_param(self) -> float:
        return self.D_opt / self.N_opt


@dataclass(frozen=True)
class WindowFit:
    budgets: tuple[WindowBudget, ...]
    a: float
    k_n: float
    b: float
    k_d: float
    boot: Bootstrap | None

    def n_opt(self, C):
        return self.k_n * np.asarray(C, float) ** self.a

    def d_opt(self, C):
        return self.k_d * np.asarray(C, float) ** self.b

    @property
    def law_budgets(self) -> list[WindowBudget]:
        return [b for b in self.budgets if b.in_law]


def window_of(log_n: np.ndarray, loss: np.ndarray, window_sizes: int) -> np.ndarray:
    """Boolean mask of the rows in the window: the `window_sizes` distinct sizes nearest, in log
    N, to the lowest-loss row's size (every row when window_sizes is 0 or covers them all)."""
    sizes = np.unique(log_n)
    if window_sizes == 0 or window_sizes >= len(sizes):
        return np.ones(len(log_n), bool)
    best = log_n[np.argmin(loss)]
    # nearest first; a tie goes to the smaller size, the cheaper side to have trained
    order = np.lexsort((sizes, np.abs(sizes - best)))
    chosen = sizes[order[:window_sizes]]
    return np.isin(log_n, chosen)


def _design(x: np.ndarray) -> np.ndarray:
    return np.column_stack([np.ones_like(x), x, x * x])


def _vertices(coef: np.ndarray) -> np.ndarray:
    """Vertex x of each row's c0 + c1 x + c2 x^2 (NaN where it curves down)."""
    c1, c2 = coef[..., 1], coef[..., 2]
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(c2 > 0, -c1 / (2 * c2), np.nan)


def _fit_budget(c, log_n, log_d, loss, noise, window_sizes):
    inside = window_of(log_n, loss, window_sizes)
    x, y = log_n[inside], loss[inside]
    centre = x.mean()  # centring keeps the normal equations well posed
    weights = None if noise is None else 1.0 / noise[inside]
    design = _design(x - centre)
    w = np.ones_like(y) if weights is None else weights
    coef, *_ = np.linalg.lstsq(design * w[:, None], y * w, rcond=None)
    vertex = _vertices(coef) + centre
    slope, intercept = np.polyfit(log_n, log_d, 1)
    sizes = np.unique(log_n)
    best = log_n[np.argmin(loss)]
    edge, reason = None, ""
    if not coef[2] > 0:
        reason = f"no curvature in its window ({coef[2]:.3g})"
    elif best == sizes[0] or (np.isfinite(vertex) and vertex < x.min()):
        edge, reason = "low", "minimum at the smallest size of its grid"
    elif best == sizes[-1] or (np.isfinite(vertex) and vertex > x.max()):
        edge, reason = "high", "minimum at the largest size of its grid"
    residual = y - design @ coef
    dof = len(y) - 3
    sigma = (float(np.mean(noise[inside])) if noise is not None
             else float(np.sqrt(residual @ residual / dof)) if dof > 0 else float("nan"))
    return {
        "C": c, "vertex": float(vertex), "loss_opt": float(np.polyval(coef[::-1],
                                                                        vertex - centre)),
        "log_d_line": (float(slope), float(intercept)), "sizes": np.exp(sizes),
        "window": np.exp(np.unique(x)), "edge": edge, "reason": reason, "sigma": sigma,
        "curvature": float(coef[2]), "x": x - centre, "centre": centre, "design": design,
        "weights": w, "fitted": design @ coef, "dof": dof,
    }


def fit_isoflop_window(C, N, loss, D, *, window_sizes: int = 5, noise=None, n_boot: int = 1000,
                       seed: int = 0) -> WindowFit:
    """Method 2 on a window per budget, with a residual bootstrap of every budget and the laws.

    `noise`: the loss standard deviation of each point (the noise floor over the root of its
    seeds), or None to use each window's residual scatter (a window of exactly 3 sizes has
    none: it borrows the budgets' pooled scatter). `n_boot=0`: no intervals.
    """
    if window_sizes != 0 and window_sizes < MIN_WINDOW:
        raise FitError(f"window_sizes={window_sizes}: a parabola needs at least {MIN_WINDOW} "
                       "sizes (0: every size)")
    check_positive(C=C, N=N, loss=loss, D=D)
    C, N, loss, D = (np.asarray(v, float) for v in (C, N, loss, D))
    noise = None if noise is None else np.broadcast_to(np.asarray(noise, float), C.shape)
    fits = []
    for c, rows in budget_groups(C):
        if len(np.unique(N[rows])) < MIN_WINDOW:
            continue  # too few sizes to locate anything; reported as absent
        fits.append(_fit_budget(c, np.log(N[rows]), np.log(D[rows]), loss[rows],
                                None if noise is None else noise[rows], window_sizes))
    pooled = [f["sigma"] for f in fits if np.isfinite(f["sigma"]) and f["dof"] > 0]
    for f in fits:
        if not np.isfinite(f["sigma"]):
            f["sigma"] = float(np.sqrt(np.mean(np.square(pooled)))) if pooled else 0.0
    in_law = [f for f in fits if not f["reason"]]
    if len(in_law) < MIN_LAW_BUDGETS:
        flagged = "; ".join(f"C={f['C']:.3g}: {f['reason']}" for f in fits if f["reason"])
        raise FitError(f"{len(in_law)} budget(s) with an interior minimum, a law needs "
                       f"{MIN_LAW_BUDGETS}" + (f" ({flagged})" if flagged else ""))
    log_c = np.log([f["C"] for f in in_law])
    log_n_opt = np.array([f["vertex"] for f in in_law])
    log_d_opt = np.array([f["log_d_line"][1] + f["log_d_line"][0] * f["vertex"]
                          for f in in_law])
    k_n, a = loglog_fit(np.exp(log_c), np.exp(log_n_opt))
    k_d, b = loglog_fit(np.exp(log_c), np.exp(log_d_opt))
    boot, cis = None, {}
    if n_boot > 0:
        rng = np.random.default_rng(seed)
        vertices = np.full((n_boot, len(fits)), np.nan)
        for j, f in enumerate(fits):
            draws = f["fitted"] + f["sigma"] * rng.standard_normal((n_boot, len(f["fitted"])))
            w = f["weights"]
            pinv = np.linalg.pinv(f["design"] * w[:, None])
            coef = (draws * w) @ pinv.T
            vertices[:, j] = _vertices(coef) + f["centre"]
            finite = vertices[:, j][np.isfinite(vertices[:, j])]
            if len(finite) >= 10:
                cis[j] = tuple(float(v) for v in np.exp(np.percentile(finite, [2.5, 97.5])))
        law = [j for j, f in enumerate(fits) if not f["reason"]]
        v = vertices[:, law]
        slopes = np.array([fits[j]["log_d_line"][0] for j in law])
        intercepts = np.array([fits[j]["log_d_line"][1] for j in law])
        boot = allocation_bootstrap(log_c, v, intercepts + slopes * v, np.isfinite(v),
                                    n_boot, seed)
    budgets = tuple(
        WindowBudget(
            C=f["C"], N_opt=float(np.exp(f["vertex"])),
            D_opt=float(np.exp(f["log_d_line"][1] + f["log_d_line"][0] * f["vertex"])),
            loss_opt=f["loss_opt"], sizes=tuple(float(s) for s in f["sizes"]),
            window=tuple(float(s) for s in f["window"]), edge=f["edge"], reason=f["reason"],
            sigma=f["sigma"], curvature=f["curvature"], N_opt_ci=cis.get(j),
        )
        for j, f in enumerate(fits)
    )
    return WindowFit(budgets, a, k_n, b, k_d, boot)
