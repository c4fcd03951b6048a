"""How far the loss law can be carried: a backtest of its extrapolation, and the error it adds to
a prediction.

The bootstrap interval of L_opt(C) = k_L C^e_L holds the noise of the fitted budgets, not the
error of the power-law form itself, and that error grows with the distance extrapolated: the
10x validation run of the default study landed 1.85% below its prediction, outside a +-0.7%
bootstrap interval (docs/measured.md). The study can measure that error on its own budgets
before it spends anything: fit the law on the budgets up to a cut, predict the largest budget's
own optimum, and repeat for every cut that leaves a law (at least three budgets with an interior
minimum). Each cut is an extrapolation by C_top / C_cut that the study has actually checked,
as DeepSeek and Marin checked their laws on held-out larger runs before trusting them.

A cut's error depends on its geometry as well as its distance: a straight line fitted to a bent
frontier over a wider window misses it by more at the same distance. So the cuts' errors are not
carried over as they are. `systematic_error` fits them with one curvature of ln L against ln C
(and one offset, the noise of the largest budget's optimum that every cut shares) and carries
that curvature to the recipe's own fit window and distance. It is conservative where the
frontier bends less at larger budgets, as L = E + A/C^c does while E is over half the loss (the
default study: E 3.44 of 3.7-4.5), and short where it bends more. `predicted_range` adds it and
one run's seed noise to the bootstrap interval in quadrature, side by side."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
from scipy.stats import t as student_t

from scalinglab.fitting.inputs import FitError
from scalinglab.fitting.isoflop_window import WindowFit, fit_isoflop_window

NOTE = ("fit on the budgets up to `fit_up_to`, predict the largest budget's own optimum; "
        "loss_error = predicted / observed - 1")


def backtest(full: WindowFit, points: pd.DataFrame, noise, window: dict, *, n_boot: int = 200,
             seed: int = 0) -> list[dict]:
    """One row per cut, the nearest first: the law fitted on the budgets up to the cut, as the
    recipe's fit is (weighed by the budgets' bootstrap intervals, `n_boot` replicates), against
    the largest law budget's own optimum (its parabola's vertex), with the cut's own 95%
    interval of the prediction and whether the optimum fell inside it. The cuts are the law's
    budgets: a budget left out of the law (its minimum at an edge) would repeat the cut below
    it. `full` is the fit on every budget, `noise` the per-point standard errors of `points`
    (or None), `window` the window options."""
    law = sorted(full.law_budgets, key=lambda b: b.C)
    top = law[-1]
    sigma = None if noise is None else np.asarray(noise, float)
    rows = []
    for cut in reversed(law[:-1]):
        held = (points["C"] <= cut.C * (1 + 1e-6)).to_numpy()
        try:
            fit = fit_isoflop_window(points["C"][held], points["N"][held], points["loss"][held],
                                     points["D"][held], **window,
                                     noise=None if sigma is None else sigma[held],
                                     n_boot=n_boot, seed=seed)
        except FitError:
            break  # fewer budgets than a law needs: every nearer cut has been tried
        except (np.linalg.LinAlgError, ValueError):
            continue  # a degenerate refit: the backtest is advice, it must not stop the fit
        loss, n_opt = float(fit.loss_opt(top.C)), float(fit.n_opt(top.C))
        row = {"fit_up_to": cut.C, "ratio": top.C / cut.C,
               "fitted_budgets": len(fit.law_budgets),
               "fit_from": min(b.C for b in fit.law_budgets), "loss_opt": loss,
               "loss_error": loss / top.loss_opt - 1, "N_opt": n_opt,
               "N_opt_error": n_opt / top.N_opt - 1}
        if fit.boot is not None:
            k_l, e_l = (fit.boot.samples[:, fit.boot.names.index(k)] for k in ("k_L", "e_L"))
            values = k_l * top.C**e_l
            values = values[np.isfinite(values)]
            if values.size:
                low, high = np.percentile(values, [2.5, 97.5])
                row["loss_opt_ci"] = [float(low), float(high)]
                row["inside_ci"] = bool(low <= top.loss_opt <= high)
        rows.append(row)
    return rows


def summary(full: WindowFit, points: pd.DataFrame, noise, window: dict, *, n_boot: int = 200,
            seed: int = 0) -> dict:
    """The backtest as `compute_optimal.json` stores it."""
    top = max(full.law_budgets, key=lambda b: b.C)
    rows = backtest(full, points, noise, window, n_boot=n_boot, seed=seed)
    checked = [r["inside_ci"] for r in rows if "inside_ci" in r]
    return {"C": top.C, "observed": {"loss_opt": top.loss_opt, "N_opt": top.N_opt},
            "rows": rows, "bootstrap_coverage": (sum(checked) / len(checked)) if checked
            else None, "note": NOTE}


def bend(window: float, distance: float) -> float:
    """The error, per unit curvature, of a straight line fitted by least squares to a parabola
    over a `window` and read `distance` past its end (both in ln C): with ln L = kappa x^2 / 2
    on [-w/2, w/2], the line is flat at kappa w^2 / 24 and misses ln L at w/2 + h by
    kappa ((w/2 + h)^2 - w^2 / 12) / 2. An approximation of the study's fit: the line through
    the continuum, unweighted, where the law runs through a few budgets weighed by their
    intervals (the discrete miss is 1% smaller at 15 budgets, 6% at 3)."""
    return ((window / 2 + distance) ** 2 - window**2 / 12) / 2


def systematic_error(rows: list[dict], ratio: float, window: float) -> dict:
    """The relative error the power law makes, read `ratio` past a fit `window` wide (ln C), as
    the backtest measured it: each cut's error is `offset + kappa * bend(its window, its
    distance)`, the offset being the noise of the largest budget's own optimum, which every cut
    shares, and kappa the frontier's curvature in ln L against ln C. The value is
    (|kappa| + t se) * bend(window, ln ratio), t Student's 97.5% quantile: the curvature's upper
    95% bound carried to the recipe's own geometry, whose fit is wider and whose extrapolation is
    longer than any cut's (the cuts are few, and nested, so the bound is rough)."""
    usable = [r for r in rows if "fit_from" in r]
    if len(usable) < 3:
        return {"value": None, "basis": f"{len(usable)} backtest cut(s): a curvature and an "
                "offset need at least 3 (a law of at least 6 budgets)"}
    g = np.array([bend(math.log(r["fit_up_to"] / r["fit_from"]), math.log(r["ratio"]))
                  for r in usable])
    err = -np.log1p([r["loss_error"] for r in usable])  # ln observed - ln predicted
    design = np.column_stack([np.ones_like(g), g])
    coef, *_ = np.linalg.lstsq(design, err, rcond=None)
    dof = len(err) - 2
    cov = (float(np.sum((err - design @ coef) ** 2)) / dof * np.linalg.inv(design.T @ design)
           if dof > 0 else np.full((2, 2), np.inf))
    kappa, se = float(coef[1]), float(math.sqrt(cov[1, 1]))
    # below the largest budget (ratio < 1) the miss inside the window, which may be negative
    reach = abs(bend(window, math.log(ratio)))
    quantile = float(student_t.ppf(0.975, dof)) if dof > 0 else math.inf
    value = math.expm1((abs(kappa) + quantile * se) * reach)
    return {"value": value, "curvature": kappa, "curvature_se": se,
            "offset": float(coef[0]), "n_cuts": len(usable),
            "basis": f"95% bound on the curvature ({kappa:.2g} +- {se:.2g}, ln L vs ln C, from "
            f"{len(usable)} backtest cuts; their shared offset {100 * coef[0]:+.2g}%), carried "
            f"to a fit {window / math.log(10):.2g} decades wide read {ratio:.3g}x past its end"}


def predicted_range(predicted: float, ci: list[float], error: float | None,
                    sigma: float | None = None) -> list[float]:
    """Where one run trained at the recipe should land, at 95%: the bootstrap interval `ci` of
    `predicted` widened, each side in quadrature, by the law's relative `error` and by 1.96
    `sigma`, sigma the seed-to-seed spread of one run's final loss (the noise floor): the
    interval is the law's, a run is one draw around it. Without an interval (no bootstrap),
    the error and the noise alone."""
    low, high = ci
    spread = math.hypot((error or 0.0) * predicted, 1.96 * (sigma or 0.0))
    if not all(map(math.isfinite, (low, high))):
        return [predicted - spread, predicted + spread] if spread > 0 else [low, high]
    return [predicted - math.hypot(predicted - low, spread),
            predicted + math.hypot(high - predicted, spread)]


def range_check(recipe: dict, actual: float) -> dict:
    """`validation.json`'s check of a run against the recipe's range, when the recipe has one
    (a recipe made before the backtest existed has only its bootstrap interval)."""
    if "predicted_loss_range" not in recipe:
        return {}
    low, high = recipe["predicted_loss_range"]
    inside = bool(low <= actual <= high) if math.isfinite(low) and math.isfinite(high) else None
    return {"predicted_loss_range": [low, high], "inside_range": inside,
            "extrapolation_error": recipe["extrapolation_error"]}
