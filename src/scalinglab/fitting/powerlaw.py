"""Power laws y = coef * x^exponent (`fit_power_law`, log-log least squares) and
y = offset + coef * x^exponent (`fit_power_law_offset`), with a pairs bootstrap.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.optimize import least_squares

from scalinglab.fitting.bootstrap import Bootstrap, one_blas_thread
from scalinglab.fitting.inputs import FitError, check_positive


def loglog_fit(x, y) -> tuple[float, float]:
    """(coef, exponent) of y = coef x^exponent by least squares on log y against log x."""
    lx, ly = np.log(np.asarray(x, float)), np.log(np.asarray(y, float))
    exponent, intercept = np.polyfit(lx, ly, 1)
    return float(np.exp(intercept)), float(exponent)


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
    n = check_positive(x=x, y=y)
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
    n = check_positive(x=x, y=y)
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
