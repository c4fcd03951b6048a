"""Hyperparameter laws, DeepSeek style: eta_opt(C) and B_opt(C) from LR x batch sweeps.

DeepSeek LLM (arXiv:2401.02954, Sec. 3.1) trains a grid of batch sizes x learning rates at several
small compute budgets, calls every run whose loss is within a small fraction of its budget's best
"near-optimal" (0.25% there), and fits eta_opt = k C^e and B_opt = k C^e through the near-optimal
points of all budgets. This phase does the same on the study's corpus and model family:

- one model size per budget, the ladder size (`model.sizes`) whose tokens per parameter D/N at
  that budget is closest to `hparams.tokens_per_param` (a stand-in for the compute-optimal size,
  which the IsoFLOP phase only knows afterwards);
- batch sizes in tokens (`hparams.batch_tokens`, whole sequences of `model.block_size`), and a
  learning-rate grid shared by every budget (at least 3 LRs, so a budget's optimum can be inside);
- every run under the study's schedule (WSD with its decay) and the study's warmup in tokens.

Near-optimal: |loss / best - 1| < near_optimal, best being the budget's lowest loss (which
always counts), as `fitting.hparam_laws` selects for `fit hparams`. The default 1% (DeepSeek:
0.25%) is about two standard deviations of the seed noise of such runs: four seeds of a 300-step
WSD run of the default study's l2-d32 model ended at 4.550 +- 0.023 (0.5%; range 1.2%), so at
0.25% which runs count as near-optimal would be decided by the seed.

The same near-optimal points are fitted against the model size N as well (eta*(N) ~ N^-alpha,
B*(N) ~ N^beta, the seed recipe's step 1). Sizes grow with the budget here, so the two forms share
their points and differ only in the x axis.

Runs follow the IsoFLOP phase's layout: a series is (size, lr, batch, seed) and carries one branch
label per budget; only the budgets where its size was chosen are trained (`reason` says why the
others are not), so a stable job's outputs are the same named files for every series.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from scalinglab.config import SizeConfig
from scalinglab.errors import UserError
from scalinglab.model.flops import model_counts
from scalinglab.phases import runs as phase_runs
from scalinglab.phases import study
from scalinglab.phases.runs import finished_run
from scalinglab.training.spec import RunSpec

PHASE = "hparams"
SERIES_PREFIX = "hp"
NOT_CHOSEN = "size not chosen for this budget"


def choose_size(cfg, budget: float):
    """The ladder size whose D/N at `budget` is closest (in log) to the target tokens/param."""
    target = cfg.hparams.tokens_per_param

    def distance(size) -> float:
        counts = model_counts(study.gpt_config(cfg, size), cfg.flops.convention)
        return abs(math.log(budget / counts.flops_per_token / counts.N / target))

    return min(cfg.model.sizes, key=distance)


def series_id(p: str, size, lr: float, batch_size: int, seed: int) -> str:
    return f"{SERIES_PREFIX}-{study.series_id(p, size, lr, batch_size)}-s{seed}"


def plan(cfg) -> pd.DataFrame:
    """One row per (series, budget) in `study.plan_isoflop`'s layout; empty when off."""

    hp = cfg.hparams
    if not hp.enabled:
        return pd.DataFrame()
    batches = [phase_runs.batch_size_of(bt, cfg.model.block_size, f"hparams.batch_tokens[{i}]")
               for i, bt in enumerate(hp.batch_tokens)]
    chosen = {b: choose_size(cfg, b) for b in hp.budgets}
    rows = []
    for size in dict.fromkeys(chosen.values()):
        for lr in hp.lrs:
            for batch in batches:
                for seed in hp.seeds:
                    run_cfg = phase_runs.run_config(cfg, size=size, lr=lr, batch_size=batch,
                                                    seed=seed)
                    sid = series_id(cfg.parametrization.name, size, lr, batch, seed)
                    for i, budget in enumerate(hp.budgets):
                        rows.append(_row(run_cfg, sid, size, budget, i, chosen[budget] == size))
    table = phase_runs.finish(rows)
    trained_steps = table["steps"].where(table["reason"] == "", 1)
    return table.assign(eval_every=trained_steps.groupby(table["series_id"]).transform("max"))


def _row(run_cfg, sid: str, size, budget: float, i: int, trained: bool) -> dict:
    fpt = model_counts(study.gpt_config(run_cfg, size), run_cfg.flops.convention).flops_per_token
    steps = phase_runs.steps_for(budget, fpt, study.batch_tokens(run_cfg))
    label = study.budget_label(budget)
    key = f"hparams.budgets[{i}]"
    reason = "" if trained else NOT_CHOSEN
    if trained and steps < run_cfg.isoflop.min_steps:
        raise UserError(f"{key}: budget {budget:.3g} gives {steps} steps of "
                        f"{study.batch_tokens(run_cfg)} tokens for size "
                        f"{study.size_label(size)}, fewer than isoflop.min_steps="
                        f"{run_cfg.isoflop.min_steps}; raise the budget or lower batch_tokens")
    if not trained:  # a placeholder checkpoint is all the stable run writes for it
        steps, start = max(steps, 1), max(steps, 1)
    elif run_cfg.schedule.kind == "cosine":
        start = 0  # a cosine run cannot be branched: its decay job trains it all
    else:
        start = phase_runs.wsd_decay_start(run_cfg, steps, key, f"{sid}_{label}")
    return phase_runs.branch_row(run_cfg, phase=PHASE, series_id=sid, label=label, size=size,
                                 steps=steps, decay_start=start, C=float(budget), reason=reason)


def series_spec(cfg, table: pd.DataFrame, sid: str) -> RunSpec:
    """The spec of one series, in the format `train.train_stable` / `decay_branch` read; it
    evaluates only at branch points and at the end (only final losses enter the fit)."""
    rows = table[table["series_id"] == sid]
    if rows.empty:
        raise UserError(f"unknown hparams series {sid!r}")
    first = rows.iloc[0]
    run_cfg = phase_runs.run_config(
        cfg, size=SizeConfig(int(first.n_layer), int(first.n_embd), int(first.n_head)),
        lr=float(first.lr), batch_size=int(first.batch_size), seed=int(first.seed),
        eval_every=int(first.eval_every))
    return study.series_spec(run_cfg, rows, sid)


# -- analysis -------------------------------------------------------------------------------------
def read_runs(run_jsons) -> pd.DataFrame:
    """One row per finished branch: budget C, N, lr, batch in tokens, seed, loss, diverged."""
    from scalinglab.phases.lr_transfer import is_diverged

    rows = []
    for path in run_jsons:
        record, loss = finished_run(path)
        spec = record["spec"]
        rows.append({
            "run_id": record["run_id"], "C": float(record["C"]), "N": int(spec["N"]),
            "n_layer": spec["model"]["n_layer"], "n_embd": spec["model"]["n_embd"],
            "lr": float(spec["training"]["lr"]),
            "batch_tokens": spec["training"]["batch_size"] * spec["model"]["block_size"],
            "seed": spec["seed"], "D": record["D"], "loss": loss,
            # marked by training (training.divergence), or a final loss no better than chance
            "diverged": (bool(record.get("diverged", False))
                         or is_diverged(loss, spec["model"]["vocab_size"])),
        })
    if not rows:
        raise UserError("no runs given")
    return pd.DataFrame(rows).sort_values(["C", "batch_tokens", "lr", "seed"], ignore_index=True)


def mean_over_seeds(runs: pd.DataFrame) -> pd.DataFrame:
    """One point per (C, batch, lr): the mean loss of the seeds that did not diverge."""
    keys = ["C", "N", "batch_tokens", "lr"]
    ok = runs[~runs["diverged"]]
    points = ok.groupby(keys, as_index=False)["loss"].mean()
    every = runs.groupby(keys, as_index=False).size()[keys]
    points = every.merge(points, on=keys, how="left")
    points["diverged"] = points["loss"].isna()
    return points


def near_optimal(points: pd.DataFrame, tolerance: float) -> pd.Series:
    """True for points within `tolerance` (a fraction) of their budget's lowest loss, and for
    that lowest one: `hparam_laws.near_optimal` with the budget C as the group. Diverged
    points are never near-optimal, nor their budget's best."""
    from scalinglab.fitting import hparam_laws

    loss = points["loss"].where(~points["diverged"])
    mask = hparam_laws.near_optimal(loss, [points["C"]], tolerance)
    return pd.Series(mask, index=points.index)


def fit_law(x, y, *, n_boot: int, seed: int) -> dict:
    """y = coef * x^exponent on the given points (`hparam_laws.fit_loglinear`), with a pairs-
    bootstrap 95% interval and the replicates (the recipe evaluates them at its own compute)."""
    from scalinglab.fitting import hparam_laws

    x, y = np.asarray(x, float), np.asarray(y, float)
    try:
        fit = hparam_laws.fit_loglinear(y, {"x": x})
    except hparam_laws.HparamFitError as err:
        return {"error": str(err)}
    out = {"form": "y = coef * x^exponent", "coef": fit.coef, "exponent": fit.exponents["x"],
           "n_points": fit.n_points, "rss_log": fit.rss, "ci": None, "samples": []}
    if n_boot > 0:
        reps = hparam_laws.bootstrap_loglinear(y, {"x": x}, hparam_laws.resample(len(x), n_boot,
                                                                                 seed))
        ok = reps[np.isfinite(reps[:, 0])]
        out["ci"] = {"coef": hparam_laws.percentile_interval(ok[:, 0]),
                     "exponent": hparam_laws.percentile_interval(ok[:, 1])}
        out["bootstrap"] = {"n": n_boot, "seed": seed, "n_failed": n_boot - len(ok),
                            "level": hparam_laws.LEVEL}
        out["samples"] = [[float(f"{c:.6g}"), float(f"{e:.6g}")] for c, e in ok]
    return out


def law_at(law: dict, x: float) -> dict:
    """A fitted law and its bootstrap interval evaluated at x."""
    if "error" in law:
        return {"value": float("nan"), "ci": [float("nan"), float("nan")], "error": law["error"]}
    value = law["coef"] * x ** law["exponent"]
    ci = [float("nan"), float("nan")]
    if law.get("samples"):
        s = np.asarray(law["samples"], float)
        ci = [float(v) for v in np.percentile(s[:, 0] * x ** s[:, 1], [2.5, 97.5])]
    return {"value": float(value), "ci": ci}


def analyse(runs: pd.DataFrame, tolerance: float, *, n_boot: int = 1000, seed: int = 0) -> dict:
    """The content of `results/fits/hparams.json`."""
    points = mean_over_seeds(runs)
    points["near_optimal"] = near_optimal(points, tolerance)
    lrs, batches = np.sort(points["lr"].unique()), np.sort(points["batch_tokens"].unique())
    budgets = []
    for c, at in points.groupby("C", sort=True):
        ok = at[~at["diverged"]]
        near = at[at["near_optimal"]]
        if ok.empty:
            budgets.append({"C": float(c), "N": int(at["N"].iloc[0]), "all_diverged": True})
            continue
        best = ok.loc[ok["loss"].idxmin()]
        budgets.append({
            "C": float(c), "N": int(best["N"]), "best_loss": float(best["loss"]),
            "best_lr": float(best["lr"]), "best_batch_tokens": int(best["batch_tokens"]),
            # the best run at an end of the grid: the optimum may lie beyond it
            "lr_at_grid_edge": bool(best["lr"] in (lrs[0], lrs[-1])),
            "batch_at_grid_edge": bool(best["batch_tokens"] in (batches[0], batches[-1])),
            "n_near_optimal": int(len(near)),
            "near_optimal_lr_geomean": float(np.exp(np.log(near["lr"]).mean())),
            "near_optimal_batch_geomean": float(np.exp(np.log(near["batch_tokens"]).mean())),
        })
    near = points[points["near_optimal"]]
    laws_out = {}
    for name, x_col, y_col in (("lr_vs_C", "C", "lr"), ("batch_vs_C", "C", "batch_tokens"),
                               ("lr_vs_N", "N", "lr"), ("batch_vs_N", "N", "batch_tokens")):
        laws_out[name] = fit_law(near[x_col], near[y_col], n_boot=n_boot, seed=seed)
    return {
        "criterion": f"near-optimal: |loss / best - 1| < {tolerance:g}, best the budget's lowest "
                     "loss, which counts too (mean over seeds; diverged runs left out)",
        "near_optimal": tolerance,
        "laws_form": {"lr_vs_C": "eta_opt = coef * C^exponent",
                      "batch_vs_C": "B_opt (tokens) = coef * C^exponent",
                      "lr_vs_N": "eta_opt = coef * N^exponent (N non-embedding parameters)",
                      "batch_vs_N": "B_opt (tokens) = coef * N^exponent"},
        "grid": {"lrs": lrs.tolist(), "batch_tokens": [int(b) for b in batches]},
        "budgets": budgets,
        "laws": laws_out,
        "n_runs": int(len(runs)),
        "n_diverged": int(runs["diverged"].sum()),
        "n_near_optimal": int(len(near)),
        "points": points.to_dict(orient="records"),
    }
