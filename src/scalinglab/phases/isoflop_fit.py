"""The IsoFLOP phase's analysis: `results/fits/isoflop.json` from runs.csv and the round plans.

What a user decides with, in one file (Method 3 itself: `phases.isoflop_method3`):
- **Method 2** on a window around each budget's minimum (`isoflop.window_ratio`,
  `window_sizes`), each budget's N_opt with its own interval, a budget whose minimum sits at an
  edge flagged and left out of the laws (top-level keys, as `fit isoflop` writes them, so every
  reader stays as it was);
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

from scalinglab.config import StudyConfig
from scalinglab.errors import UserError
from scalinglab.fitting.allocation import allocation_samples_at
from scalinglab.fitting.inputs import FitError
from scalinglab.fitting.isoflop_window import WindowFit, fit_isoflop_window
from scalinglab.fitting.parametric import fit_parametric
from scalinglab.phases import study
from scalinglab.phases.isoflop_method3 import (  # noqa: F401 - FlopsPerToken, optimum_on_grid: API
    FlopsPerToken,
    band,
    band_grid,
    finished,
    huber_delta_of,
    interval,
    method3,
    optimum_on_grid,
)
from scalinglab.phases.runs import phase_flops
from scalinglab.training.metrics import trained_rows


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


# -- the budgets that train nothing ----------------------------------------------------------------
def predicted_noise(points: pd.DataFrame, sigma: float | None) -> np.ndarray | None:
    """A predicted point's standard error: the noise floor and the law's own error (its series'
    leave-one-out RMS, relative) in quadrature; a trained point's is `point_noise`'s."""
    if sigma is None:
        return None
    law = points["predicted_rel_error"].fillna(0).to_numpy(float) * points["loss"].to_numpy()
    return np.sqrt(sigma**2 + law**2)


def _width(ci) -> float | None:
    return float(ci[1] - ci[0]) if ci else None


def _ratio(ci) -> float | None:
    return float(ci[1] / ci[0]) if ci else None


def with_predicted(cfg: StudyConfig, trained: dict, points: pd.DataFrame, predicted: pd.DataFrame,
                   noise: dict, window: dict, n_boot: int, seed: int) -> dict:
    """Method 2 again, on the trained points and the predicted budgets' (`loss_source`
    predicted), each predicted point weighed by `predicted_noise`; with the compute it saves
    and how the intervals change against the trained-only fit `trained`."""
    ok = finished(predicted)
    budgets = sorted(float(c) for c in ok["C"].unique())
    if noise["sigma"] is None or ok["predicted_rel_error"].isna().any():
        # without a noise floor, or a law error, a prediction cannot be weighed against a
        # trained loss: fitted unweighted, it would count as much as a run that trained
        return {"predicted_budgets": budgets, "n_predicted_points": 0,
                "skipped": "no noise floor (isoflop.noise_seeds: 0, or no repeated run)"
                           if noise["sigma"] is None else
                           "a predicted row has no predicted_rel_error"}
    extra = ok.groupby(["C", "N"], as_index=False).agg(
        D=("D", "mean"), loss=("loss", "mean"), n_seeds=("loss", "size"),
        predicted_rel_error=("predicted_rel_error", "first"))
    both = pd.concat([points.assign(is_predicted=False, predicted_rel_error=np.nan),
                      extra.assign(is_predicted=True)], ignore_index=True)
    both = both.sort_values(["C", "N"]).reset_index(drop=True)
    sigmas = np.where(both["is_predicted"], predicted_noise(both, noise["sigma"]),
                      point_noise(both, noise["sigma"]))
    m2 = method2(both, sigmas, window, n_boot, seed)
    plan = study.plan_predicted(cfg)
    extra_flops = float(plan[plan["run_id"].isin(ok["run_id"])]["C_actual"].sum())
    spent = trained["compute"]["trained_flops"]
    independent = trained["compute"]["independent_flops"] + extra_flops
    ci0, ci1 = trained.get("ci") or {}, m2.get("ci") or {}
    keep = ("a", "b", "k_n", "k_d", "tokens_per_param", "tokens_per_param_at_C",
            "tokens_per_param_at_largest", "loss_law", "budgets", "n_law_budgets", "ci")
    return {
        "method": "isoflop-window on the trained and the predicted points; a predicted point's "
                  "noise: the noise floor and its series' leave-one-out error in quadrature",
        "predicted_budgets": budgets,
        "n_predicted_points": len(extra),
        **{key: m2[key] for key in keep},
        "compute": {"trained_flops": spent, "independent_flops": independent,
                    "compute_saving_ratio": independent / spent if spent else None},
        "compared": {
            "a_ci_width": {"trained": _width(ci0.get("a")), "with_predicted": _width(ci1.get("a"))},
            "tokens_per_param_ci_ratio": {"trained": _ratio(ci0.get("tokens_per_param")),
                                          "with_predicted": _ratio(ci1.get("tokens_per_param"))},
            "compute_saving_ratio": {"trained": trained["compute"]["compute_saving_ratio"],
                                     "with_predicted": independent / spent if spent else None},
        },
    }


def analyse(cfg: StudyConfig, runs: pd.DataFrame, plans: list[pd.DataFrame], *,
            n_boot: int = 1000, seed: int = 0) -> dict:
    """The content of results/fits/isoflop.json (and of each round's fit.json): every key from
    the trained runs; `with_predicted` when runs.csv has predicted budgets too."""
    for col in ("C", "N", "D", "loss", "diverged", "seed", "round", "n_layer", "n_embd"):
        if col not in runs.columns:
            raise UserError(f"runs.csv: no column {col!r} (made by an older scalinglab? rerun "
                            "isoflop collect)")
    predicted = runs.drop(trained_rows(runs).index)
    runs = trained_rows(runs)
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
    if len(predicted):
        result["with_predicted"] = with_predicted(cfg, result, points, predicted, noise, window,
                                                  n_boot, seed)
    return result
