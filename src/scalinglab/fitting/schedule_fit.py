"""Fitting the schedule-aware loss laws of `scalinglab.fitting.schedule_law` (the Multi-Power
Law, Tissue et al.'s law) to training curves, and their bootstrap over curves.

Fits minimise the summed Huber loss (delta 1e-3) of log(predicted) - log(observed), as upstream
does, over every point of every training curve, with all parameters in log space (they are all
positive). The optimiser is scipy's trust-region least squares with `loss="huber"`, whose cost
0.5 f^2 rho((r/f)^2) with f = delta is exactly the Huber loss, on an analytic Jacobian: it
converges in tens of evaluations where L-BFGS-B on the scalar objective needs hundreds. Starts
come from a grid over the nonlinear parameters, with the linear ones (L0, A, B) solved by
non-negative least squares at each grid point (variable projection); the best few are refined.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from scalinglab.fitting.schedule_law import (
    FORMS,
    PARAM_NAMES,
    TISSUE_LAMBDA,
    Curve,
    annealing_area,
    forward_area,
    loss_drop,
    predict,
    prepare_drops,
)

HUBER_DELTA = 1e-3  # upstream's delta on log loss (arXiv 2503.12811, their src/config.py)
# bounds (fitted in log space): wide, only there to keep a wandering start, or a bootstrap
# resample of one or two curves that cannot pin B, C, beta, gamma, finite
PARAM_BOUNDS = {
    "L0": (1e-6, 1e4), "A": (1e-8, 1e8), "alpha": (1e-4, 5.0), "B": (1e-8, 1e10),
    "C": (1e-8, 1e8), "beta": (1e-4, 20.0), "gamma": (1e-4, 5.0),
}


class ScheduleFitError(ValueError):
    """The fit cannot be done with these curves (too few points, no finite start)."""


class _Model:
    """The training curves, precomputed once; residuals and Jacobian in log-parameter space."""

    def __init__(self, form: str, curves: list[Curve], lam: float):
        self.form, self.lam = form, lam
        self.names = PARAM_NAMES[form]
        self.curves = curves
        self.log_loss = [np.log(c.loss) for c in curves]
        self.s1 = [forward_area(c.lr, c.steps) for c in curves]
        self.ln_s1 = [np.log(s) for s in self.s1]
        if form == "mpl":
            self.drops = [prepare_drops(c.lr, c.steps) for c in curves]
        else:
            self.s2 = [annealing_area(c.lr, c.steps, lam) for c in curves]

    def curve_terms(self, i: int, theta: np.ndarray, jac: bool):
        """Predicted loss of curve i and d pred / d log(param)."""
        p = np.exp(theta)
        power = p[1] * np.exp(-p[2] * self.ln_s1[i])
        n = len(power)
        J = np.empty((n, len(p))) if jac else None
        if jac:
            J[:, 0] = p[0]
            J[:, 1] = power
            J[:, 2] = -p[2] * power * self.ln_s1[i]
        if self.form == "tissue":
            pred = p[0] + power - p[3] * self.s2[i]
            if jac:
                J[:, 3] = -p[3] * self.s2[i]
            return pred, J
        ld, J_ld = loss_drop(self.drops[i], p[3], p[4], p[5], p[6], jac)
        if jac:
            J[:, 3:] = J_ld
        return p[0] + power - ld, J

    def residuals(self, theta, counts, jac: bool):
        """log pred - log loss over every point of every curve, curve i repeated counts[i]
        times (a bootstrap resample), and the Jacobian in log-parameter space."""
        rs, js = [], []
        for i, c in enumerate(counts):
            if c == 0:
                continue
            pred, J = self.curve_terms(i, theta, jac)
            bad = ~(pred > 0)  # a wandering step can push the prediction below 0
            pred = np.where(bad, 1e-10, pred)
            r = np.log(pred) - self.log_loss[i]
            rs.append(np.tile(r, c))
            if jac:
                J = J / pred[:, None]
                J[bad] = 0.0
                js.append(np.tile(J, (c, 1)))
        r = np.concatenate(rs)
        return (r, np.concatenate(js)) if jac else r


def _huber_total(r: np.ndarray, delta: float) -> float:
    from scipy.special import huber

    return float(huber(delta, r).sum())


def _linear_starts(model: _Model, shape: dict, alphas, counts, delta: float) -> list:
    """At fixed nonlinear parameters the law is linear in (L0, A, B) (MPL) or (L0, A, C)
    (Tissue): solve those by NNLS on relative residuals for each alpha, and return each start's
    log-params and objective. `shape` holds the MPL's (C, beta, gamma), or nothing."""
    from scipy.optimize import nnls

    used = [i for i, c in enumerate(counts) if c]
    drop = {}
    for i in used:
        if model.form == "mpl":
            drop[i], _ = loss_drop(model.drops[i], 1.0, shape["C"], shape["beta"],
                                   shape["gamma"], jac=False)
        else:
            drop[i] = model.s2[i]
    starts = []
    for alpha in alphas:
        X = np.concatenate([
            np.tile(np.stack([np.ones_like(model.s1[i]), np.exp(-alpha * model.ln_s1[i]),
                              -drop[i]], axis=1) / model.curves[i].loss[:, None], (counts[i], 1))
            for i in used
        ])
        coef, _ = nnls(X, np.ones(len(X)))
        if not (coef[0] > 0 and coef[1] > 0):
            continue
        coef = np.maximum(coef, 1e-8)
        linear = "B" if model.form == "mpl" else "C"
        values = {"L0": coef[0], "A": coef[1], linear: coef[2], "alpha": alpha, **shape}
        theta = np.log([values[n] for n in model.names])
        ratio = X @ coef  # predicted / observed loss
        r = np.log(np.where(ratio > 0, ratio, 1e-10))
        starts.append((theta, _huber_total(r, delta)))
    return starts


START_ALPHAS = (0.2, 0.4, 0.6)
# the MPL's (C, beta, gamma) grid; upstream's fits land near C = 2, beta = 0.6, gamma = 0.64
START_SHAPES = [{"C": C, "beta": b, "gamma": g}
                for C in (0.5, 2.0, 8.0) for b in (0.3, 0.6) for g in (0.4, 0.7)]


@dataclass(frozen=True)
class ScheduleFit:
    """A fitted law: named parameters, the objective at the optimum, what it was fitted on."""

    form: str
    params: dict
    objective: float  # summed Huber (delta) of log-loss residuals at the optimum
    n_points: int
    n_curves: int
    huber_delta: float
    n_starts: int
    fixed: dict  # parameters held, not fitted (Tissue's lambda)
    theta: np.ndarray = field(repr=False)  # log params, the start of every bootstrap refit

    def predict(self, lr, steps) -> np.ndarray:
        lam = self.fixed.get("lambda", TISSUE_LAMBDA)
        return predict(self.form, self.params, lr, steps, lam=lam)


def _refine(model: _Model, theta0, counts, delta: float):
    from scipy.optimize import least_squares

    lo = np.log([PARAM_BOUNDS[n][0] for n in model.names])
    hi = np.log([PARAM_BOUNDS[n][1] for n in model.names])
    theta0 = np.clip(theta0, lo + 1e-9, hi - 1e-9)
    cache = {}

    def terms(theta):
        key = theta.tobytes()
        if key not in cache:
            cache.clear()
            cache[key] = model.residuals(theta, counts, jac=True)
        return cache[key]

    res = least_squares(
        lambda t: terms(t)[0], theta0, jac=lambda t: terms(t)[1], bounds=(lo, hi),
        loss="huber", f_scale=delta, x_scale="jac", xtol=1e-12, ftol=1e-12, gtol=1e-12,
        max_nfev=500,
    )
    return res.x, _huber_total(res.fun, delta), res


def _prepare(curves: list[Curve], form: str, lam: float) -> _Model:
    if form not in FORMS:
        raise ValueError(f"unknown form {form!r}; choose from {', '.join(FORMS)}")
    if not curves:
        raise ScheduleFitError("no training curves")
    for c in curves:
        if c.loss is None or not np.all(c.loss > 0):
            raise ScheduleFitError(f"{c.name}: a training curve needs positive losses")
        if not forward_area(c.lr, c.steps[:1])[0] > 0:
            raise ScheduleFitError(f"{c.name}: the LR sum is 0 at its first evaluation step")
    _require_points(sum(len(c.steps) for c in curves), form)
    return _Model(form, curves, lam)


def _require_points(n: int, form: str, without: str = "") -> None:
    """More points than `form` has parameters, or the fit is not determined (scipy's trf would
    return one anyway)."""
    if n <= len(PARAM_NAMES[form]):
        raise ScheduleFitError(f"{n} points for {len(PARAM_NAMES[form])} parameters{without}")


def fit_schedule_law(
    curves: list[Curve],
    form: str = "mpl",
    *,
    huber_delta: float = HUBER_DELTA,
    lam: float = TISSUE_LAMBDA,
    n_refine: int = 3,
) -> ScheduleFit:
    """Fit the law to the training curves (every point of every curve, summed Huber)."""
    model = _prepare(curves, form, lam)
    counts = [1] * len(curves)
    shapes = START_SHAPES if form == "mpl" else [{}]
    starts = [s for shape in shapes
              for s in _linear_starts(model, shape, START_ALPHAS, counts, huber_delta)
              if np.isfinite(s[1])]
    if not starts:
        raise ScheduleFitError("no start gave a finite objective")
    starts.sort(key=lambda s: s[1])
    best = None
    for theta0, _ in starts[:n_refine]:
        theta, obj, _ = _refine(model, theta0, counts, huber_delta)
        if np.isfinite(obj) and (best is None or obj < best[1]):
            best = (theta, obj)
    if best is None:
        raise ScheduleFitError("no refined start converged to a finite objective")
    theta, obj = best
    return ScheduleFit(
        form=form,
        params={n: float(v) for n, v in zip(model.names, np.exp(theta), strict=True)},
        objective=obj,
        n_points=sum(len(c.steps) for c in curves),
        n_curves=len(curves),
        huber_delta=huber_delta,
        n_starts=len(starts),
        fixed={"lambda": lam} if form == "tissue" else {},
        theta=theta,
    )


def refit_without(curves: list[Curve], fit: ScheduleFit, left_out: int) -> ScheduleFit:
    """`fit` (of `curves`) refitted without curve `left_out`, from `fit`'s optimum, as every
    bootstrap refit starts: a leave-one-out error. (When that refit runs out of evaluations,
    the other curves are fitted from the grid of starts instead.) The grid of starts every
    time would cost about 17x as much (88 s against 5 s over the default study's 109
    branches); on those, the two give the same prediction for the median branch (to 1e-9) and
    median errors of 0.453% (grid) and 0.467% (this)."""
    if not 0 <= left_out < len(curves):
        raise IndexError(f"curve {left_out} of {len(curves)}")
    if len(curves) < 3:
        raise ScheduleFitError("leaving a curve out needs at least three")
    kept = sum(len(c.steps) for i, c in enumerate(curves) if i != left_out)
    _require_points(kept, fit.form, without=f" without curve {left_out}")
    lam = fit.fixed.get("lambda", TISSUE_LAMBDA)
    model = _prepare(curves, fit.form, lam)
    counts = [0 if i == left_out else 1 for i in range(len(curves))]
    theta, obj, res = _refine(model, fit.theta, counts, fit.huber_delta)
    if not np.isfinite(obj) or res.status <= 0:  # out of evaluations: from the grid of starts
        others = curves[:left_out] + curves[left_out + 1:]
        return fit_schedule_law(others, fit.form, huber_delta=fit.huber_delta, lam=lam)
    return ScheduleFit(
        form=fit.form,
        params={n: float(v) for n, v in zip(model.names, np.exp(theta), strict=True)},
        objective=obj,
        n_points=kept,
        n_curves=len(curves) - 1,
        huber_delta=fit.huber_delta,
        n_starts=1,
        fixed=fit.fixed,
        theta=theta,
    )


@dataclass(frozen=True)
class ScheduleBootstrap:
    """Refits on curves resampled with replacement (the curve, not the point, is the unit:
    points along one curve are strongly correlated)."""

    names: tuple
    samples: np.ndarray  # (n_ok, n_params)
    n_requested: int
    n_failed: int
    n_distinct: int  # distinct resamples (multisets of curves), each fitted once
    seed: int

    def intervals(self, level: float = 0.95) -> dict:
        lo, hi = 50 * (1 - level), 50 * (1 + level)
        return {
            n: [float(np.percentile(self.samples[:, j], lo)),
                float(np.percentile(self.samples[:, j], hi))]
            for j, n in enumerate(self.names)
        }


def bootstrap_schedule_law(
    curves: list[Curve], fit: ScheduleFit, *, n_boot: int, seed: int = 0
) -> ScheduleBootstrap:
    """Resample the training curves with replacement n_boot times and refit from `fit`.

    A resample is a multiset of curves, and the fit depends on nothing else, so each distinct
    multiset is fitted once (three curves give only 10): n_boot = 1000 costs no more than 10.
    """
    model = _prepare(curves, fit.form, fit.fixed.get("lambda", TISSUE_LAMBDA))
    rng = np.random.default_rng(seed)
    n = len(curves)
    done: dict[tuple, np.ndarray | None] = {}
    rows, failed = [], 0
    for _ in range(n_boot):
        counts = tuple(np.bincount(rng.integers(0, n, n), minlength=n).tolist())
        if counts not in done:
            try:
                theta, obj, res = _refine(model, fit.theta, counts, fit.huber_delta)
                done[counts] = np.exp(theta) if np.isfinite(obj) and res.status > 0 else None
            except (ValueError, FloatingPointError, np.linalg.LinAlgError):
                done[counts] = None
        if done[counts] is None:
            failed += 1
        else:
            rows.append(done[counts])
    samples = np.array(rows) if rows else np.empty((0, len(model.names)))
    return ScheduleBootstrap(
        names=model.names, samples=samples, n_requested=n_boot, n_failed=failed,
        n_distinct=len(done), seed=seed,
    )
