"""The IsoFLOP phase's analysis: `results/fits/isoflop.json` from runs.csv and the round plans.

What a user decides with, in one file:
- **Method 2** on a window of `isoflop.window_sizes` sizes around each budget's lowest loss, each
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

from scalinglab.errors import UserError
from scalinglab.phases import study

LEVEL = [2.5, 97.5]


def fit_points(runs: pd.DataFrame) -> pd.DataFrame:
    """One point per (size, budget): the mean loss over its seeds, with `n_seeds`.

    Runs that diverged or lack a loss are left out (counted in the JSON); the seed repeats of a
    point are averaged so that a repeated point does not count as several sizes in a parabola.
    """
    ok = runs[runs["loss"].notna() & ~runs["diverged"].astype(bool)]
    if ok.empty:
        raise UserError("runs.csv: no finished run with a loss to fit")
    keys = ["C", "N", "n_layer", "n_embd", "n_head"]
    points = ok.groupby(keys, as_index=False).agg(
        D=("D", "mean"), loss=("loss", "mean"), n_seeds=("loss", "size"),
        round=("round", "min"))
    return points.sort_values(["C", "N"]).reset_index(drop=True)


def noise_floor(runs: pd.DataFrame) -> dict:
    """The seed-to-seed spread of the final loss at the repeated points.

    `sigma` pools the variance of every point trained with two or more seeds (ddof 1); each
    point's own spread is listed. None when nothing was repeated.
    """
    ok = runs[runs["loss"].notna() & ~runs["diverged"].astype(bool)]
    groups = ok.groupby(["C", "N"])["loss"]
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
    for plan in plans:
        rows = study.trained_runs(plan) if len(plan) else plan
        if rows.empty:
            continue
        stable = (rows.groupby("series_id").first()["stable_steps"]
                  * rows.groupby("series_id").first()["flops_per_token"]).sum() * batch_tokens
        decays = ((rows["steps"] - rows["decay_start"]) * rows["flops_per_token"]).sum()
        trained = float(stable + decays * batch_tokens)
        equivalent = float(rows["C_actual"].sum())
        trained_flops += trained
        independent += equivalent
        by_round.append({"round": int(rows["round"].iloc[0]) if "round" in rows else 0,
                         "series": int(rows["series_id"].nunique()), "branches": len(rows),
                         "trained_flops": trained, "independent_flops": equivalent})
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


def method2(points: pd.DataFrame, noise, window_sizes: int, n_boot: int, seed: int) -> dict:
    """Method 2 on a window per budget: top-level keys of isoflop.json, as `fit isoflop`'s."""
    from scalinglab.fitting.allocation import allocation_samples_at
    from scalinglab.fitting.isoflop_window import fit_isoflop_window

    fit = fit_isoflop_window(points["C"], points["N"], points["loss"], points["D"],
                             window_sizes=window_sizes, noise=noise, n_boot=n_boot, seed=seed)
    law = [b.C for b in fit.law_budgets]
    centre, top = centre_budget(law), max(law)
    result = {
        "method": "isoflop-window",
        "a": fit.a, "k_n": fit.k_n, "b": fit.b, "k_d": fit.k_d,
        "laws": "N_opt = k_n * C^a; D_opt = k_d * C^b",
        "window_sizes": window_sizes,
        "tokens_per_param": float(fit.d_opt(centre) / fit.n_opt(centre)),
        "tokens_per_param_at_C": centre,
        "tokens_per_param_note": "D_opt/N_opt from the fitted laws at the geometric centre of "
                                 "the budgets in the law, where its interval is narrowest",
        "tokens_per_param_at_largest": float(fit.d_opt(top) / fit.n_opt(top)),
        "budgets": [_budget_entry(b) for b in fit.budgets],
        "n_law_budgets": len(law),
        "ci": None,
    }
    if fit.boot is not None:
        ci = fit.boot.intervals()
        result["ci"] = {k: ci[k] for k in ("a", "b", "k_n", "k_d")}
        for name, at in (("tokens_per_param", centre), ("tokens_per_param_at_largest", top)):
            result["ci"][name] = interval(allocation_samples_at(fit.boot, at)["tokens_per_param"])
        result["bootstrap"] = {"n": fit.boot.n_requested, "n_failed": fit.boot.n_failed,
                               "seed": seed, "level": 0.95,
                               "kind": "residual: each window's parabola plus noise of the "
                                       "noise floor (or its residual scatter)"}
    return result
