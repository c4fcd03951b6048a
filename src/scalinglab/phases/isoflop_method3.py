"""Method 3 of the IsoFLOP phase's analysis: L(N, D) = E + A/N^alpha + B/D^beta on every trained
branch (every seed), by the Huber fitter and by variable projection, each with a bootstrap, and its
compute-optimal point at a budget along the study's own D = C / f(N); with the interval and band
helpers `phases.isoflop_fit` shares."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from scalinglab.config import SizeConfig, StudyConfig
from scalinglab.errors import UserError
from scalinglab.fitting.inputs import FitError
from scalinglab.fitting.parametric import (
    PARAM_NAMES,
    ParametricFit,
    bootstrap_parametric,
    bootstrap_parametric_varpro,
    fit_parametric,
    fit_parametric_varpro,
)
from scalinglab.model.flops import model_counts
from scalinglab.phases import study

LEVEL = [2.5, 97.5]

def finished(runs: pd.DataFrame) -> pd.DataFrame:
    """The runs with a loss that did not diverge (the fits' points)."""
    ok = runs["loss"].notna()
    if "diverged" in runs.columns:
        ok &= ~runs["diverged"].astype(str).str.lower().isin(("true", "1"))
    return runs[ok]


def interval(samples) -> list[float] | None:
    samples = np.asarray(samples, float)
    samples = samples[np.isfinite(samples)]
    if len(samples) < 10:
        return None
    return [float(x) for x in np.percentile(samples, LEVEL)]


def band_grid(budgets) -> np.ndarray:
    """The compute grid the figures draw the laws' 95% bands on: the budgets and a factor 2
    beyond them."""
    return np.geomspace(min(budgets) / 2, max(budgets) * 2, 25)


def band(grid, samples_at: list[dict]) -> dict:
    """{C, N_opt, D_opt}: at each C of `grid`, the 95% interval of N_opt and D_opt over the
    replicates (`samples_at[i]`: the replicates' values at grid[i])."""
    out = {"C": [float(c) for c in grid]}
    for key in ("N_opt", "D_opt"):
        out[key] = [interval(s[key]) for s in samples_at]
    return out


# -- Method 3 on the study's own runs --------------------------------------------------------------
class FlopsPerToken:
    """FLOPs per token as a smooth function of N, through the study's trained sizes.

    The study counts FLOPs from the model (attention and the head included), not as 6N, so a
    compute-optimal point of L(N, D) at a budget C lies on D = C / f(N). f comes from the sizes'
    exact counts, as a quadratic in log N (linear with two sizes), extended beyond them.
    """

    def __init__(self, cfg: StudyConfig, runs: pd.DataFrame):
        shapes = runs[["n_layer", "n_embd", "n_head"]].drop_duplicates()
        counts = [model_counts(study.gpt_config(cfg, SizeConfig(*map(int, row))),
                               cfg.flops.convention) for row in shapes.to_numpy()]
        log_n = np.log([c.N for c in counts])
        log_f = np.log([c.flops_per_token for c in counts])
        degree = min(2, len(np.unique(log_n)) - 1)
        self.coef = np.polyfit(log_n, log_f, degree) if degree > 0 else np.array([log_f[0]])
        self.log_n_range = (float(log_n.min()), float(log_n.max()))

    def __call__(self, n):
        return np.exp(np.polyval(self.coef, np.log(n)))


def optimum_on_grid(params: dict, C: float, fpt: FlopsPerToken, *, points: int = 400) -> dict:
    """N_opt, D_opt, tokens per parameter and the loss at budget C: the minimum of
    L(N, C/f(N)) over a log-N grid two e-folds beyond the trained sizes, refined by a parabola
    through the grid's three lowest neighbours. params may hold arrays (bootstrap replicates)."""
    low, high = fpt.log_n_range
    x = np.linspace(low - 2.0, high + 2.0, points)
    p = {k: np.asarray(params[k], float)[..., None] for k in PARAM_NAMES}

    def loss_at(log_n):
        n = np.exp(log_n)
        return p["E"] + p["A"] / n ** p["alpha"] + p["B"] / (C / fpt(n)) ** p["beta"]

    grid = loss_at(x)
    best = np.clip(np.argmin(grid, axis=-1), 1, points - 2)[..., None]
    y0, y1, y2 = (np.take_along_axis(grid, best + k, axis=-1)[..., 0] for k in (-1, 0, 1))
    step = x[1] - x[0]
    with np.errstate(invalid="ignore", divide="ignore"):
        shift = np.where(y0 - 2 * y1 + y2 > 0, 0.5 * step * (y0 - y2) / (y0 - 2 * y1 + y2), 0.0)
    log_n_opt = x[best[..., 0]] + np.clip(shift, -step, step)
    n_opt = np.exp(log_n_opt)
    d_opt = C / fpt(n_opt)
    return {"N_opt": n_opt, "D_opt": d_opt, "tokens_per_param": d_opt / n_opt,
            "loss": loss_at(log_n_opt[..., None])[..., 0]}


def _samples_of(boot) -> dict:
    return {k: boot.samples[:, boot.names.index(k)] for k in (*PARAM_NAMES, "a")}


def _parametric_entry(fit: ParametricFit, boot, fpt, centre: float, budgets: list) -> dict:
    top = max(budgets)
    at_centre = optimum_on_grid(fit.params(), centre, fpt)
    at_top = optimum_on_grid(fit.params(), top, fpt)
    entry = {
        "method": fit.method, **fit.params(), "a": fit.a, "b": fit.b,
        "objective": fit.objective, "n_points": fit.n_points,
        "huber_delta": None if math.isnan(fit.huber_delta) else fit.huber_delta,
        "tokens_per_param": float(at_centre["tokens_per_param"]),
        "tokens_per_param_at_largest": float(at_top["tokens_per_param"]),
        "N_opt_at_largest": float(at_top["N_opt"]),
        "loss_opt_at_largest": float(at_top["loss"]),
        "ci": None,
    }
    if boot is not None and len(boot.samples) >= 10:
        samples = _samples_of(boot)
        entry["ci"] = {k: interval(samples[k]) for k in (*PARAM_NAMES, "a")}
        entry["ci"]["tokens_per_param"] = interval(
            optimum_on_grid(samples, centre, fpt)["tokens_per_param"])
        entry["ci"]["tokens_per_param_at_largest"] = interval(
            optimum_on_grid(samples, top, fpt)["tokens_per_param"])
        grid = band_grid(budgets)
        entry["band"] = band(grid, [optimum_on_grid(samples, c, fpt) for c in grid])
        entry["bootstrap"] = {"n": boot.n_requested, "n_failed": boot.n_failed,
                              "seed": boot.seed, "level": 0.95,
                              "kind": "trained branches resampled with replacement, each refit "
                                      "warm-started at the full-data optimum"}
    return entry


def huber_delta_of(noise: dict) -> float:
    """The Huber scale in log loss: the relative noise floor (a residual within the seed spread
    counts as noise, beyond it as an outlier), never below the Chinchilla refit's 1e-3."""
    return max(1e-3, noise["relative_sigma"] or 0.0)


def method3(cfg: StudyConfig, runs: pd.DataFrame, noise: dict, centre: float, budgets: list,
            n_boot: int, seed: int) -> dict:
    """L(N, D) = E + A/N^alpha + B/D^beta on every trained branch (every seed), by the Huber
    fitter from its grid of starts and by variable projection, each with a bootstrap."""
    ok = finished(runs)
    N, D, loss = (ok[c].to_numpy(float) for c in ("N", "D", "loss"))
    fpt = FlopsPerToken(cfg, ok)
    delta = huber_delta_of(noise)
    out = {"form": "L(N, D) = E + A/N^alpha + B/D^beta", "n_points": len(ok),
           "a_note": "a = beta / (alpha + beta); tokens per parameter: the minimum of L(N, D) "
                     "along the budget's D = C / f(N), f the study's FLOPs per token"}
    try:
        huber = fit_parametric(N, D, loss, huber_delta=delta)
        varpro = fit_parametric_varpro(N, D, loss)
    except FitError as err:
        raise UserError(f"isoflop fit, Method 3: {err}") from None
    boots = (None, None)
    if n_boot > 0:
        boots = (bootstrap_parametric(N, D, loss, huber, n_boot=n_boot, seed=seed, workers=1),
                 bootstrap_parametric_varpro(N, D, loss, varpro, n_boot=n_boot, seed=seed))
    out["huber"] = _parametric_entry(huber, boots[0], fpt, centre, budgets)
    out["varpro"] = _parametric_entry(varpro, boots[1], fpt, centre, budgets)
    laws = {}
    for name, fit in (("huber", huber), ("varpro", varpro)):
        grid = band_grid(budgets)
        at = [optimum_on_grid(fit.params(), c, fpt) for c in grid]
        laws[name] = {"C": [float(c) for c in grid],
                      "N_opt": [float(o["N_opt"]) for o in at],
                      "D_opt": [float(o["D_opt"]) for o in at]}
        out[name]["optima"] = laws[name]
    return out
