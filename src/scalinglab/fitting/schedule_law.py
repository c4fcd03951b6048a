"""Loss-curve laws that take the learning-rate schedule as input: the Multi-Power Law and
Tissue et al.'s annealing law. Pure functions on numpy arrays (numpy, scipy only).

A curve is the LR at every optimizer step 0..T (`lr[i]` is the LR of step i) and the loss at
some evaluation steps t (1 <= t <= T). Both laws are sums over the LR trace:

    S1(t)   = sum_{i=1..t} lr[i]                      (the "forward area")
    S_k(t)  = sum_{i=k..t} lr[i]

Multi-Power Law (Luo et al., ICLR 2025, arXiv 2503.12811), 7 parameters:

    L(t)  = L0 + A * S1(t)^-alpha - LD(t)
    LD(t) = B * sum_{k=1..t} (lr[k-1] - lr[k]) * G(lr[k]^-gamma * S_k(t)),
    G(x)  = 1 - (C x + 1)^-beta

Tissue et al. 2024 (arXiv 2408.11029), 4 parameters and a fixed decay factor lambda:

    L(t)  = L0 + A * S1(t)^-alpha - C * S2(t),
    S2(t) = sum_{i=1..t} m_i,   m_i = lambda * m_{i-1} + (lr[i-1] - lr[i]),   m_0 = 0

Only steps where the LR changes add to LD, so the MPL is evaluated on the (evaluation step x
change point) matrix, in row blocks, never on all (t, k) pairs. The LR is used in the units
given (upstream's parameters are for raw LRs such as 3e-4). A warmup is part of the trace: its
rising LR makes lr[k-1] - lr[k] negative, as in upstream's own fits.

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

FORMS = ("mpl", "tissue")
PARAM_NAMES = {
    "mpl": ("L0", "A", "alpha", "B", "C", "beta", "gamma"),
    "tissue": ("L0", "A", "alpha", "C"),
}
FORMULAS = {
    "mpl": "L(t) = L0 + A*S1(t)^-alpha - B*sum_k (lr[k-1]-lr[k])*"
    "(1-(C*lr[k]^-gamma*S_k(t)+1)^-beta)",
    "tissue": "L(t) = L0 + A*S1(t)^-alpha - C*S2(t), S2 = sum_i m_i, m_i = lambda*m_{i-1} + "
    "(lr[i-1]-lr[i])",
}
HUBER_DELTA = 1e-3  # upstream's delta on log loss (arXiv 2503.12811, their src/config.py)
TISSUE_LAMBDA = 0.999  # Tissue et al.'s recommended decay factor; held fixed, not fitted
BLOCK_ENTRIES = 1 << 16  # (rows x change points) per block: 512 kB arrays stay in cache
# An LR of exactly 0 would make lr^-gamma infinite; it is taken as this fraction of the peak
# (its S_k(t) is then 0 until the LR rises again, so G = 0 and the choice does not matter).
ZERO_LR_FLOOR = 1e-12
# bounds (fitted in log space): wide, only there to keep a wandering start, or a bootstrap
# resample of one or two curves that cannot pin B, C, beta, gamma, finite
PARAM_BOUNDS = {
    "L0": (1e-6, 1e4), "A": (1e-8, 1e8), "alpha": (1e-4, 5.0), "B": (1e-8, 1e10),
    "C": (1e-8, 1e8), "beta": (1e-4, 20.0), "gamma": (1e-4, 5.0),
}


class ScheduleFitError(ValueError):
    """The fit cannot be done with these curves (too few points, no finite start)."""


@dataclass(frozen=True)
class Curve:
    """One run: its LR at every step 0..T and (for fitting) its loss at evaluation steps."""

    lr: np.ndarray
    steps: np.ndarray
    loss: np.ndarray | None = None
    name: str = ""

    def __post_init__(self):
        lr = np.asarray(self.lr, float)
        steps = np.asarray(self.steps, np.int64)
        object.__setattr__(self, "lr", lr)
        object.__setattr__(self, "steps", steps)
        if self.loss is not None:
            object.__setattr__(self, "loss", np.asarray(self.loss, float))
        if lr.ndim != 1 or len(lr) < 2 or not np.all(np.isfinite(lr)) or np.any(lr < 0):
            raise ValueError(f"{self.name}: lr must be a finite, non-negative 1-D trace")
        if steps.ndim != 1 or len(steps) == 0 or np.any(np.diff(steps) <= 0):
            raise ValueError(f"{self.name}: evaluation steps must be strictly increasing")
        if steps[0] < 1 or steps[-1] >= len(lr):
            raise ValueError(f"{self.name}: evaluation steps must lie in 1..{len(lr) - 1}")
        if self.loss is not None and self.loss.shape != steps.shape:
            raise ValueError(f"{self.name}: {len(self.loss)} losses for {len(steps)} steps")


def forward_area(lr: np.ndarray, steps: np.ndarray) -> np.ndarray:
    """S1(t) = sum of lr over steps 1..t, at each t in `steps`."""
    cum = np.cumsum(lr)
    return cum[steps] - lr[0]


def annealing_area(lr: np.ndarray, steps: np.ndarray, lam: float = TISSUE_LAMBDA) -> np.ndarray:
    """Tissue et al.'s S2(t) = sum_{i<=t} m_i, m_i = lam m_{i-1} + (lr[i-1] - lr[i])."""
    from scipy.signal import lfilter

    gaps = -np.diff(lr)  # gaps[i-1] = lr[i-1] - lr[i], i = 1..T
    m = lfilter([1.0], [1.0, -lam], gaps)  # the momentum recurrence as a one-pole filter
    s2 = np.concatenate([[0.0], np.cumsum(m)])
    return s2[steps]


# --------------------------------------------------------------------------------------------
# The Multi-Power Law's loss drop, on the (evaluation step x change point) matrix


@dataclass(frozen=True)
class _Drops:
    """A curve's LR change points k (the only steps that add to LD) and its row blocks.

    S_k(t) = cum[t] - cum[k-1] is rebuilt block by block in scratch memory, so that memory
    stays O(evaluations + change points) for curves of any length.
    """

    gap: np.ndarray  # lr[k-1] - lr[k] at the change points k
    eta: np.ndarray  # lr[k], floored above zero
    cum_t: np.ndarray  # cum[t] at the evaluation steps t
    cum_k: np.ndarray  # cum[k-1] at the change points k
    blocks: list  # (row slice, number of change points used by those rows)


def _drops(lr: np.ndarray, steps: np.ndarray) -> _Drops:
    """Rows are grouped so that (rows x change points at or before their last step) stays
    under BLOCK_ENTRIES. Within a block some k exceed a row's t; there cum[t] - cum[k-1] <= 0
    exactly (a cumulative sum of non-negative numbers never decreases), clipped to 0, and
    S = 0 gives G = 0: those entries add nothing."""
    k = np.flatnonzero(lr[1:] != lr[:-1]) + 1  # steps where the LR changes; no other adds to LD
    floor = ZERO_LR_FLOOR * max(float(lr.max()), np.finfo(float).tiny)
    cum = np.cumsum(lr)
    n_k = np.searchsorted(k, steps, side="right")  # change points at or before each t
    budget = BLOCK_ENTRIES  # read at call time, so that a test can make blocks tiny
    blocks, i = [], 0
    while i < len(steps):
        j = i + 1
        while j < len(steps) and (j + 1 - i) * n_k[j] <= budget:
            j += 1
        blocks.append((slice(i, j), int(n_k[j - 1])))
        i = j
    return _Drops(gap=lr[k - 1] - lr[k], eta=np.maximum(lr[k], floor), cum_t=cum[steps],
                  cum_k=cum[k - 1], blocks=blocks)


def _rowdot(a: np.ndarray, w: np.ndarray) -> np.ndarray:
    """a @ w for a (rows x n) block, by einsum: @ goes to multi-threaded BLAS, which on a
    shared machine waits up to 8x longer for its threads than it computes."""
    return np.einsum("ij,j->i", a, w)


def _loss_drop(drops: _Drops, B, C, beta, gamma, jac: bool):
    """LD(t) at each evaluation step and, with `jac`, d(-LD)/d(log B, log C, log beta, log gamma).

    With cx = C lr_k^-gamma S, u = 1 + cx, e = u^-beta and q = e cx / u:
      LD = B sum d (1 - e);  dLD/dlogB = LD;  dLD/dlogC = B beta sum d q;
      dLD/dlogbeta = B beta sum d e ln u;  dLD/dloggamma = -B beta gamma sum d q ln lr_k.
    """
    n_rows = len(drops.cum_t)
    ld = np.zeros(n_rows)
    parts = np.zeros((n_rows, 3)) if jac else None
    scale = C * drops.eta ** (-gamma)
    gap_lneta = drops.gap * np.log(drops.eta)
    scratch = np.empty((4, 0))  # arrays reused by every block: 3x faster than allocating
    for rows, n in drops.blocks:
        if n == 0:
            continue
        size = (rows.stop - rows.start) * n
        if scratch.shape[1] < size:
            scratch = np.empty((4, max(size, BLOCK_ENTRIES)))
        cx, lnu, e, t = (a[:size].reshape(-1, n) for a in scratch)
        np.subtract(drops.cum_t[rows, None], drops.cum_k[None, :n], out=cx)  # S_k(t)
        np.maximum(cx, 0.0, out=cx)
        cx *= scale[:n]
        d = drops.gap[:n]
        np.log1p(cx, out=lnu)
        np.multiply(lnu, -beta, out=e)
        np.exp(e, out=e)
        ld[rows] = d.sum() - _rowdot(e, d)
        if jac:
            np.multiply(e, lnu, out=t)
            parts[rows, 0] = _rowdot(t, d)
            np.add(cx, 1.0, out=t)  # q = e cx / (1 + cx)
            np.divide(cx, t, out=t)
            t *= e
            parts[rows, 1] = _rowdot(t, d)
            parts[rows, 2] = _rowdot(t, gap_lneta[:n])
    ld *= B
    if not jac:
        return ld, None
    J = np.empty((n_rows, 4))
    J[:, 0] = -ld
    J[:, 1] = -B * beta * parts[:, 1]
    J[:, 2] = -B * beta * parts[:, 0]
    J[:, 3] = B * beta * gamma * parts[:, 2]
    return ld, J


def predict(form: str, params: dict, lr, steps, *, lam: float = TISSUE_LAMBDA) -> np.ndarray:
    """The law's loss at `steps` of the LR trace `lr` (lr[i] = LR of step i, i = 0..T)."""
    curve = Curve(lr=lr, steps=steps)
    p = _check_params(form, params)
    s1 = forward_area(curve.lr, curve.steps)
    power = p["L0"] + p["A"] * s1 ** (-p["alpha"])
    if form == "tissue":
        return power - p["C"] * annealing_area(curve.lr, curve.steps, lam)
    drops = _drops(curve.lr, curve.steps)
    ld, _ = _loss_drop(drops, p["B"], p["C"], p["beta"], p["gamma"], jac=False)
    return power - ld


def _check_params(form: str, params: dict) -> dict:
    if form not in FORMS:
        raise ValueError(f"unknown form {form!r}; choose from {', '.join(FORMS)}")
    missing = [n for n in PARAM_NAMES[form] if n not in params]
    if missing:
        raise ValueError(f"{form}: missing parameter(s) {', '.join(missing)}")
    return {n: float(params[n]) for n in PARAM_NAMES[form]}


def relative_errors(pred: np.ndarray, loss: np.ndarray) -> tuple[float, float]:
    """(mean |pred - loss| / loss over the points, the same at the last point)."""
    rel = np.abs(pred - loss) / loss
    return float(rel.mean()), float(rel[-1])


# --------------------------------------------------------------------------------------------
# Fitting


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
            self.drops = [_drops(c.lr, c.steps) for c in curves]
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
        ld, J_ld = _loss_drop(self.drops[i], p[3], p[4], p[5], p[6], jac)
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
            drop[i], _ = _loss_drop(model.drops[i], 1.0, shape["C"], shape["beta"],
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
    n = sum(len(c.steps) for c in curves)
    if n <= len(PARAM_NAMES[form]):
        raise ScheduleFitError(f"{n} points for {len(PARAM_NAMES[form])} parameters")
    return _Model(form, curves, lam)


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
