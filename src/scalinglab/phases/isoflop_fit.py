"""The IsoFLOP phase's analysis: `results/fits/isoflop.json` from runs.csv and the round plans.

What a user decides with, in one file:
- **Method 2** on a window around each budget's minimum (`isoflop.window_ratio`,
  `window_sizes`), each
  budget's N_opt with its own interval, a budget whose minimum sits at an edge flagged and left
  out of the laws (top-level keys, as `fit isoflop` writes them, so every reader stays as it was);
- **Method 3**, L(N, D) = E + A/N^alpha + B/D^beta on every trained branch, by the Huber fitter
  and by variable projection, a = beta/(alpha + beta) and tokens per parameter next to Method 2's,
  and whether the methods agree within their intervals;
- the **noise floor**: the spread of the seed repeats, which weighs every fit;
- the **compute**: FLOPs trained against an equivalent grid of independent runs;
- the **leave-largest-out** prediction of the largest budget from the others;
- the **rounds**: which round added which runs.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from scalinglab.config import SizeConfig, StudyConfig
from scalinglab.errors import UserError
from scalinglab.fitting.allocation import allocation_samples_at
from scalinglab.fitting.inputs import FitError
from scalinglab.fitting.isoflop_window import WindowFit, fit_isoflop_window
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
from scalinglab.phases.runs import phase_flops

LEVEL = [2.5, 97.5]


def finished(runs: pd.DataFrame) -> pd.DataFrame:
    """The runs with a loss that did not diverge (the fits' points)."""
    ok = runs["loss"].notna()
    if "diverged" in runs.columns:
        ok &= ~runs["diverged"].astype(str).str.lower().isin(("true", "1"))
    return runs[ok]


def fit_points(runs: pd.DataFrame) -> pd.DataFrame:
    """One point per (budget, size): the mean loss over its seeds, with `n_seeds`.

    Runs that diverged or lack a loss are left out; the seed repeats of a point are averaged so
    that a repeated point does not count as several sizes in a parabola.
    """
    ok = finished(runs)
    if ok.empty:
        raise UserError("runs table: no finished run with a loss to fit")
    agg = {"D": ("D", "mean"), "loss": ("loss", "mean"), "n_seeds": ("loss", "size")}
    agg |= {col: (col, "first") for col in ("n_layer", "n_embd", "n_head") if col in ok}
    if "round" in ok:
        agg["round"] = ("round", "min")
    points = ok.groupby(["C", "N"], as_index=False).agg(**agg)
    return points.sort_values(["C", "N"]).reset_index(drop=True)


def noise_floor(runs: pd.DataFrame) -> dict:
    """The seed-to-seed spread of the final loss at the repeated points.

    `sigma` pools the variance of every point trained with two or more seeds (ddof 1); each
    point's own spread is listed. None when nothing was repeated.
    """
    groups = finished(runs).groupby(["C", "N"])["loss"]
    repeated = [(c_n, g) for c_n, g in groups if len(g) >= 2]
    if not repeated:
        return {"sigma": None, "relative_sigma": None, "points": []}
    variances = [float(np.var(g, ddof=1)) for _, g in repeated]
    dof = [len(g) - 1 for _, g in repeated]
    sigma = math.sqrt(float(np.average(variances, weights=dof)))
    mean_loss = float(np.mean([g.mean() for _, g in repeated]))
    return {
        "sigma": sigma,
        "relative_sigma": sigma / mean_loss,
        "points": [{"C": float(c), "N": int(n), "n_seeds": len(g), "mean": float(g.mean()),
                    "std": float(np.std(g, ddof=1))} for (c, n), g in repeated],
    }


def point_noise(points: pd.DataFrame, sigma: float | None) -> np.ndarray | None:
    """Each averaged point's standard error: the pooled sigma over the root of its seeds."""
    if sigma is None:
        return None
    return sigma / np.sqrt(points["n_seeds"].to_numpy(float))


def compute_block(plans: list[pd.DataFrame], batch_tokens: int) -> dict:
    """FLOPs trained (stable runs to their last branch point plus every decay) against the
    equivalent grid of independent runs (every trained branch as its own run from scratch)."""
    trained_flops = independent = 0.0
    by_round = []
    for r, plan in enumerate(plans):
        rows = study.trained_runs(plan) if len(plan) else plan
        if rows.empty:
            continue
        trained = phase_flops(plan.assign(batch_tokens=batch_tokens))["total"]
        equivalent = float(rows["C_actual"].sum())
        trained_flops += trained
        independent += equivalent
        by_round.append({"round": r, "series": int(rows["series_id"].nunique()),
                         "branches": len(rows), "trained_flops": trained,
                         "independent_flops": equivalent})
    return {
        "trained_flops": trained_flops,
        "independent_flops": independent,
        "compute_saving_ratio": independent / trained_flops if trained_flops else None,
        "by_round": by_round,
        "note": "independent_flops: every trained (size, budget) point as its own run from "
                "scratch; trained_flops: the stable runs to their last branch point plus "
                "every decay branch",
    }


def rounds_block(runs: pd.DataFrame) -> list[dict]:
    out = []
    for r, rows in runs.groupby("round"):
        out.append({"round": int(r), "runs": len(rows),
                    "seeds": sorted(int(s) for s in rows["seed"].unique()),
                    "sizes": sorted({study.size_label_of(row) for row in rows.itertuples()})})
    return out


def interval(samples) -> list[float] | None:
    samples = np.asarray(samples, float)
    samples = samples[np.isfinite(samples)]
    if len(samples) < 10:
        return None
    return [float(x) for x in np.percentile(samples, LEVEL)]


def agree(first, second) -> bool | None:
    """Two intervals agree when they overlap; None when either is missing."""
    if not first or not second:
        return None
    return bool(first[0] <= second[1] and second[0] <= first[1])


def centre_budget(budgets) -> float:
    """The geometric centre of the budgets: where a fitted law's interval is narrowest."""
    return float(np.exp(np.mean(np.log(np.asarray(budgets, float)))))


def _budget_entry(b) -> dict:
    return {
        "C": b.C, "N_opt": b.N_opt, "D_opt": b.D_opt, "loss_opt": b.loss_opt,
        "tokens_per_param": b.tokens_per_param, "N_opt_ci": list(b.N_opt_ci) if b.N_opt_ci
        else None, "edge": b.edge, "in_law": b.in_law, "reason": b.reason,
        "sizes": [int(round(s)) for s in b.sizes], "window": [int(round(s)) for s in b.window],
        "n_points": len(b.sizes), "inside_range": b.edge is None, "sigma": b.sigma,
    }


def window_fit(points: pd.DataFrame, noise, window: dict, n_boot: int, seed: int) -> WindowFit:
    """`fit_isoflop_window` on the averaged points; `window`: {window_sizes, window_ratio}."""
    try:
        return fit_isoflop_window(points["C"], points["N"], points["loss"], points["D"],
                                  **window, noise=noise, n_boot=n_boot, seed=seed)
    except FitError as err:
        raise UserError(f"isoflop fit (isoflop.window_sizes={window['window_sizes']}, "
                        f"window_ratio={window['window_ratio']:g}): {err}") from None


def window_of_config(cfg: StudyConfig) -> dict:
    return {"window_sizes": cfg.isoflop.window_sizes, "window_ratio": cfg.isoflop.window_ratio}


def method2(points: pd.DataFrame, noise, window: dict, n_boot: int, seed: int) -> dict:
    """Method 2 on a window per budget: top-level keys of isoflop.json, as `fit isoflop`'s."""
    fit = window_fit(points, noise, window, n_boot, seed)
    law = [b.C for b in fit.law_budgets]
    centre, top = centre_budget(law), max(law)
    result = {
        "method": "isoflop-window",
        "a": fit.a, "k_n": fit.k_n, "b": fit.b, "k_d": fit.k_d,
        "laws": "N_opt = k_n * C^a; D_opt = k_d * C^b",
        **window,
        "tokens_per_param": float(fit.d_opt(centre) / fit.n_opt(centre)),
        "tokens_per_param_at_C": centre,
        "tokens_per_param_note": "D_opt/N_opt from the fitted laws at the geometric centre of "
                                 "the budgets in the law, where its interval is narrowest",
        "tokens_per_param_at_largest": float(fit.d_opt(top) / fit.n_opt(top)),
        "loss_law": {"k_L": fit.k_L, "e_L": fit.e_L, "form": "L_opt = k_L * C^e_L"},
        "budgets": [_budget_entry(b) for b in fit.budgets],
        "n_law_budgets": len(law),
        "ci": None,
    }
    if fit.boot is not None:
        ci = fit.boot.intervals()
        result["ci"] = {k: ci[k] for k in ("a", "b", "k_n", "k_d")}
        result["loss_law"]["ci"] = {k: ci[k] for k in ("k_L", "e_L")}
        for name, at in (("tokens_per_param", centre), ("tokens_per_param_at_largest", top)):
            result["ci"][name] = interval(allocation_samples_at(fit.boot, at)["tokens_per_param"])
        result["bootstrap"] = {"n": fit.boot.n_requested, "n_failed": fit.boot.n_failed,
                               "seed": seed, "level": 0.95,
                               "kind": "residual: each window's parabola plus noise of the "
                                       "noise floor (or its residual scatter)"}
        grid = band_grid(law)
        result["band"] = band(grid, [allocation_samples_at(fit.boot, c) for c in grid])
    return result


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


# -- agreement and the leave-largest-out prediction ------------------------------------------------
def agreement(m2: dict, m3: dict) -> dict:
    """Whether Method 2 and each Method 3 fit agree on a and tokens per parameter: their 95%
    intervals overlap."""
    out = {}
    for name in ("huber", "varpro"):
        fit = m3[name]
        ci2, ci3 = m2.get("ci") or {}, fit.get("ci") or {}
        out[name] = {
            key: {"method2": m2[key], "method3": fit[key], "method2_ci": ci2.get(key),
                  "method3_ci": ci3.get(key), "agree": agree(ci2.get(key), ci3.get(key))}
            for key in ("a", "tokens_per_param")
        }
    return out


def _observed_largest(budget: dict, points: pd.DataFrame) -> dict:
    """The largest budget's own optimum: its parabola's vertex, or its lowest point when its
    minimum sits at an edge."""
    if budget["in_law"]:
        return {"N_opt": budget["N_opt"], "loss_opt": budget["loss_opt"],
                "source": "the budget's own parabola vertex"}
    rows = points[np.isclose(points["C"], budget["C"], rtol=1e-6)]
    best = rows.loc[rows["loss"].idxmin()]
    return {"N_opt": float(best["N"]), "loss_opt": float(best["loss"]),
            "source": f"the budget's lowest point ({budget['reason']})"}


def leave_largest_out(cfg: StudyConfig, runs: pd.DataFrame, points: pd.DataFrame, noise: dict,
                      m2_full: dict, window: dict, n_boot: int, seed: int) -> dict:
    """Fit on every budget but the largest, predict the largest budget's optimal loss and N_opt,
    and compare with its own optimum (Method 2: the laws N_opt(C) and L_opt(C); Method 3: the
    minimum of L(N, D) at that budget)."""
    top = max(b["C"] for b in m2_full["budgets"])
    observed = _observed_largest(next(b for b in m2_full["budgets"] if b["C"] == top), points)
    held_in = points[~np.isclose(points["C"], top, rtol=1e-6)]
    out = {"C": top, "observed": observed}

    def errors(n_pred, loss_pred, loss_ci=None) -> dict:
        entry = {"N_opt": float(n_pred), "loss_opt": float(loss_pred),
                 "N_opt_error": float(n_pred / observed["N_opt"] - 1),
                 "loss_error": float(loss_pred / observed["loss_opt"] - 1)}
        if loss_ci:
            entry["loss_opt_ci"] = loss_ci
        return entry

    try:
        fit = fit_isoflop_window(held_in["C"], held_in["N"], held_in["loss"], held_in["D"],
                                 **window, noise=point_noise(held_in, noise["sigma"]),
                                 n_boot=n_boot, seed=seed)
    except FitError as err:
        out["method2"] = {"error": str(err)}
    else:
        ci = None
        if fit.boot is not None:
            k_l = fit.boot.samples[:, fit.boot.names.index("k_L")]
            e_l = fit.boot.samples[:, fit.boot.names.index("e_L")]
            ci = interval(k_l * top**e_l)
        out["method2"] = errors(fit.n_opt(top), fit.loss_opt(top), ci)
        out["method2"]["fitted_budgets"] = len(fit.law_budgets)
    ok = finished(runs)
    ok = ok[~np.isclose(ok["C"], top, rtol=1e-6)]
    try:
        huber = fit_parametric(*(ok[c].to_numpy(float) for c in ("N", "D", "loss")),
                               huber_delta=huber_delta_of(noise))
    except FitError as err:
        out["method3"] = {"error": str(err)}
    else:
        best = optimum_on_grid(huber.params(), top, FlopsPerToken(cfg, runs))
        out["method3"] = errors(best["N_opt"], best["loss"])
    out["note"] = ("errors are predicted / observed - 1; the fits see no run of the largest "
                   "budget")
    return out


def analyse(cfg: StudyConfig, runs: pd.DataFrame, plans: list[pd.DataFrame], *,
            n_boot: int = 1000, seed: int = 0) -> dict:
    """The content of results/fits/isoflop.json (and of each round's fit.json)."""
    for col in ("C", "N", "D", "loss", "diverged", "seed", "round", "n_layer", "n_embd"):
        if col not in runs.columns:
            raise UserError(f"runs.csv: no column {col!r} (made by an older scalinglab? rerun "
                            "isoflop collect)")
    window = window_of_config(cfg)
    points = fit_points(runs)
    noise = noise_floor(runs)
    sigmas = point_noise(points, noise["sigma"])
    result = method2(points, sigmas, window, n_boot, seed)
    law = [b["C"] for b in result["budgets"] if b["in_law"]]
    centre = centre_budget(law)
    result["noise"] = {**noise, "used_as": "Method 2: each point's weight and bootstrap noise "
                       "(sigma / sqrt(seeds)); Method 3: the Huber scale (relative sigma)"}
    budgets = [b["C"] for b in result["budgets"]]
    result["method3"] = method3(cfg, runs, noise, centre, budgets, n_boot, seed)
    result["agreement"] = agreement(result, result["method3"])
    result["leave_largest_out"] = leave_largest_out(cfg, runs, points, noise, result, window,
                                                    n_boot, seed)
    result["compute"] = compute_block(plans, study.batch_tokens(cfg))
    result["compute_saving_ratio"] = result["compute"]["compute_saving_ratio"]
    result["rounds"] = rounds_block(runs)
    result["points"] = points.to_dict(orient="records")
    return result
