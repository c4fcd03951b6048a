"""A robust Method 2: each budget's parabola on a window around its minimum, edges flagged, and
an interval on every budget's N_opt.

Open-Athena (arXiv 2603.22339) show that Approach 2 is biased by the grid: a parabola in log N
fitted over a wide grid that is not centred on the minimum moves its vertex toward the grid's
centre, because the true profile is not a parabola far from its minimum. So each budget's
parabola is fitted on a window around its minimum: the sizes within a factor `window_ratio` of
it, at least the `window_sizes` nearest (in log N). The window is centred on the lowest-loss
size, then once more on the vertex that first window gives. A budget whose lowest loss sits at
the smallest or largest size of its grid (or whose vertex falls outside its window) has no
located minimum: it is flagged `edge` ("low" or "high") and left out of the laws.

Each budget's interval comes from a residual bootstrap of its window: replicate losses are the
fitted parabola plus Gaussian noise of the measured noise floor (the spread across seeds, when
given), else of the parabolas' residual scatter pooled over the budgets. Resampling a
five-point window's points would often leave fewer than three distinct sizes. The laws'
intervals come from the same replicates, one vertex per budget per replicate.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from scalinglab.fitting.allocation import budget_groups, masked_loglog
from scalinglab.fitting.bootstrap import Bootstrap
from scalinglab.fitting.inputs import FitError, check_positive

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
    k_L: float  # the loss of the compute-optimal model, L_opt = k_L C^e_L, through the vertices
    e_L: float
    boot: Bootstrap | None  # replicates of a, k_n, b, k_d, k_L, e_L
    law_weights: tuple[float, ...] = ()  # each law budget's relative weight (1 without intervals)

    def n_opt(self, C):
        return self.k_n * np.asarray(C, float) ** self.a

    def d_opt(self, C):
        return self.k_d * np.asarray(C, float) ** self.b

    def loss_opt(self, C):
        return self.k_L * np.asarray(C, float) ** self.e_L

    @property
    def law_budgets(self) -> list[WindowBudget]:
        return [b for b in self.budgets if b.in_law]


def window_of(log_n: np.ndarray, centre: float, window_sizes: int,
              window_ratio: float) -> np.ndarray:
    """Boolean mask of the rows in the window around `centre` (a log N): the sizes within a factor
    `window_ratio` of it, widened to the `window_sizes` nearest when fewer (every row when
    window_sizes is 0 or covers them all; window_ratio 0: the count alone).

    A width in log N rather than a count alone, so that the sizes a refinement round adds make a
    budget's window denser, not narrower."""
    sizes = np.unique(log_n)
    if window_sizes == 0 or window_sizes >= len(sizes):
        return np.ones(len(log_n), bool)
    distance = np.abs(sizes - centre)
    # nearest first; a tie goes to the smaller size, the cheaper side to have trained
    order = np.lexsort((sizes, distance))
    chosen = set(sizes[order[:window_sizes]])
    if window_ratio > 0:
        chosen |= set(sizes[distance <= np.log(window_ratio) + 1e-9])
    return np.isin(log_n, list(chosen))


def _design(x: np.ndarray) -> np.ndarray:
    return np.column_stack([np.ones_like(x), x, x * x])


def _vertices(coef: np.ndarray) -> np.ndarray:
    """Vertex x of each row's c0 + c1 x + c2 x^2 (NaN where it curves down)."""
    c1, c2 = coef[..., 1], coef[..., 2]
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(c2 > 0, -c1 / (2 * c2), np.nan)


def _parabola(log_n, loss, noise, inside):
    x, y = log_n[inside], loss[inside]
    centre = x.mean()  # centring keeps the normal equations well posed
    w = np.ones_like(y) if noise is None else 1.0 / noise[inside]
    design = _design(x - centre)
    coef, *_ = np.linalg.lstsq(design * w[:, None], y * w, rcond=None)
    return x, y, centre, w, design, coef, float(_vertices(coef) + centre)


def _fit_budget(c, log_n, log_d, loss, noise, window_sizes, window_ratio):
    # centred first on the lowest point, then once more on the vertex that window gives: the
    # lowest point alone is as noisy as one run
    lowest = log_n[np.argmin(loss)]
    inside = window_of(log_n, lowest, window_sizes, window_ratio)
    fit = _parabola(log_n, loss, noise, inside)
    if np.isfinite(fit[-1]) and log_n.min() < fit[-1] < log_n.max():
        again = window_of(log_n, fit[-1], window_sizes, window_ratio)
        if not np.array_equal(again, inside):
            inside, fit = again, _parabola(log_n, loss, noise, again)
    x, y, centre, w, design, coef, vertex = fit
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
    sigma = float(np.mean(noise[inside])) if noise is not None else float("nan")
    return {
        "C": c, "vertex": float(vertex), "loss_opt": float(np.polyval(coef[::-1],
                                                                        vertex - centre)),
        "log_d_line": (float(slope), float(intercept)), "sizes": np.exp(sizes),
        "window": np.exp(np.unique(x)), "edge": edge, "reason": reason, "sigma": sigma,
        "curvature": float(coef[2]), "x": x - centre, "centre": centre, "design": design,
        "weights": w, "fitted": design @ coef, "dof": dof, "rss": float(residual @ residual),
    }


def fit_isoflop_window(C, N, loss, D, *, window_sizes: int = 5, window_ratio: float = 3.0,
                       noise=None, n_boot: int = 1000, seed: int = 0) -> WindowFit:
    """Method 2 on a window per budget, with a residual bootstrap of every budget and the laws.

    `noise`: the loss standard deviation of each point (the noise floor over the root of its
    seeds), or None to use the windows' residual scatter pooled over the budgets.
    `n_boot=0`: no intervals.
    """
    if window_ratio < 0 or 0 < window_ratio <= 1:
        raise FitError(f"window_ratio={window_ratio:g}: a factor above 1 (0: the count alone)")
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
                                None if noise is None else noise[rows], window_sizes,
                                window_ratio))
    # without a measured noise floor, one residual scatter pooled over the budgets: a 5-size
    # window alone has 2 degrees of freedom, too few to tell its own noise
    dof = sum(max(f["dof"], 0) for f in fits)
    pooled = math.sqrt(sum(f["rss"] for f in fits if f["dof"] > 0) / dof) if dof else 0.0
    for f in fits:
        if not np.isfinite(f["sigma"]):
            f["sigma"] = pooled
    in_law = [f for f in fits if not f["reason"]]
    if len(in_law) < MIN_LAW_BUDGETS:
        flagged = "; ".join(f"C={f['C']:.3g}: {f['reason']}" for f in fits if f["reason"])
        raise FitError(f"{len(in_law)} budget(s) with an interior minimum, a law needs "
                       f"{MIN_LAW_BUDGETS}" + (f" ({flagged})" if flagged else ""))
    boot, cis, weights = None, {}, np.ones(len(in_law))
    if n_boot > 0:
        boot, cis, weights = _bootstrap(fits, n_boot, seed)
    log_c = np.log([f["C"] for f in in_law])
    log_n_opt = np.array([f["vertex"] for f in in_law])
    log_d_opt = np.array([f["log_d_line"][1] + f["log_d_line"][0] * f["vertex"]
                          for f in in_law])
    log_l_opt = np.log([f["loss_opt"] for f in in_law])
    a, k_n, b, k_d, k_l, e_l = (float(v[0]) for v in _laws(
        log_c, log_n_opt[None], log_d_opt[None], log_l_opt[None], weights[None]))
    budgets = tuple(
        WindowBudget(
            C=f["C"], N_opt=float(np.exp(f["vertex"])),
            D_opt=float(np.exp(f["log_d_line"][1] + f["log_d_line"][0] * f["vertex"])),
            loss_opt=f["loss_opt"], sizes=tuple(float(s) for s in f["sizes"]),
            window=tuple(float(s) for s in f["window"]), edge=f["edge"], reason=f["reason"],
            sigma=f["sigma"], curvature=f["curvature"],
            N_opt_ci=cis.get(j) if np.isfinite(f["vertex"]) else None,
        )
        for j, f in enumerate(fits)
    )
    return WindowFit(budgets, a, k_n, b, k_d, k_l, e_l, boot, tuple(float(w) for w in weights))


def _laws(log_c, log_n, log_d, log_l, weights) -> tuple:
    """(a, k_n, b, k_d, k_L, e_L): weighted least squares in logs of N_opt, D_opt and L_opt on C."""
    grid = np.broadcast_to(log_c, np.shape(log_n))
    a, log_kn = masked_loglog(grid, log_n, weights)
    b, log_kd = masked_loglog(grid, log_d, weights)
    e_l, log_kl = masked_loglog(grid, log_l, weights)
    with np.errstate(over="ignore"):
        return a, np.exp(log_kn), b, np.exp(log_kd), np.exp(log_kl), e_l


def _bootstrap(fits: list[dict], n_boot: int, seed: int) -> tuple[Bootstrap, dict, np.ndarray]:
    """Replicates of every budget's vertex (and its loss), and of the laws through them.

    Returns the laws' Bootstrap (a, k_n, b, k_d, k_L, e_L), each budget's N_opt interval
    {budget index: (low, high)} and the law budgets' weights. A budget's weight in the laws is
    the inverse variance of its log vertex (from its interval's width, robust to the few
    replicates whose parabola goes flat and throws the vertex far), so a barely curved budget
    cannot swing the laws. A replicate keeps a budget only where its parabola still curves up;
    one left with fewer than two such budgets is dropped.
    """
    rng = np.random.default_rng(seed)
    vertices = np.full((n_boot, len(fits)), np.nan)
    losses = np.full((n_boot, len(fits)), np.nan)
    cis = {}
    for j, f in enumerate(fits):
        draws = f["fitted"] + f["sigma"] * rng.standard_normal((n_boot, len(f["fitted"])))
        w = f["weights"]
        coef = (draws * w) @ np.linalg.pinv(f["design"] * w[:, None]).T
        x = _vertices(coef)
        vertices[:, j] = x + f["centre"]
        losses[:, j] = coef[:, 0] + coef[:, 1] * x + coef[:, 2] * x * x
        finite = vertices[:, j][np.isfinite(vertices[:, j])]
        if len(finite) >= 10:
            cis[j] = tuple(float(v) for v in np.exp(np.percentile(finite, [2.5, 97.5])))
    law = [j for j, f in enumerate(fits) if not f["reason"]]
    spread = np.array([np.log(cis[j][1] / cis[j][0]) / (2 * 1.96) if j in cis else np.inf
                       for j in law])
    weights = 1.0 / np.maximum(spread, 1e-6) ** 2
    weights = weights / weights.max() if weights.max() > 0 else np.ones(len(law))
    log_n = vertices[:, law]
    slopes = np.array([fits[j]["log_d_line"][0] for j in law])
    intercepts = np.array([fits[j]["log_d_line"][1] for j in law])
    with np.errstate(invalid="ignore"):
        log_l = np.log(losses[:, law])
    ok = np.isfinite(log_n) & np.isfinite(log_l)
    keep = ok.sum(axis=1) >= 2
    log_n, log_l, ok = log_n[keep], log_l[keep], ok[keep]
    zero = lambda v: np.where(ok, v, 0.0)  # noqa: E731 - masked-out cells must stay finite
    log_c = np.log([fits[j]["C"] for j in law])
    laws = _laws(log_c, zero(log_n), zero(intercepts + slopes * log_n), zero(log_l),
                 ok * weights)
    samples = np.column_stack(laws)
    return Bootstrap(("a", "k_n", "b", "k_d", "k_L", "e_L"), samples, n_boot, seed), cis, weights
