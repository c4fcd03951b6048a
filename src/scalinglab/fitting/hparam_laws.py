"""Hyperparameter laws from any LR x batch sweep: near-optimal runs, then least squares in logs.

The method of Step Law (Li et al., "Predictable Scale: Part I", arXiv:2503.04715; upstream
`code/fit_tool.py: query_optimal_lr_bs_data`) and of DeepSeek LLM (arXiv:2401.02954, Sec. 3.1):

1. Near-optimal runs: within each group of runs that differ only in LR and batch (one (N, D)
   pair for Step Law, one compute budget C for DeepSeek), a run is near-optimal when
   |loss / best - 1| < tolerance, best being the group's lowest loss (0.25% in both papers).
   The best run itself always counts, so a tolerance of 0 keeps each group's minimum.
2. Laws: ordinary least squares of ln y on ln x_1, ..., ln x_k through the near-optimal runs of
   all groups, y = coef * x_1^e_1 * ... * x_k^e_k. Step Law fits lr = coef N^exp_N D^exp_D and
   B = coef D^exp_D; DeepSeek fits eta_opt = coef C^e and B_opt = coef C^e.
3. Intervals: a pairs bootstrap over the near-optimal runs (resample them with replacement,
   refit), percentile 95% intervals; a replicate whose x values do not vary enough to fit is
   counted as failed and left out.

Pure functions on arrays (numpy, pandas); `fit sweep` is the whole `scalinglab fit hparams`,
and the hparams phase (`scalinglab.phases.hparams`) selects and fits with the same functions.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

FLOPS_PER_PARAM_TOKEN = 6.0
"""C = 6ND when a sweep has no compute column (Kaplan et al., arXiv:2001.08361, Sec. 2.1)."""
LEVEL = 0.95
"""Coverage of the bootstrap percentile intervals."""


class HparamFitError(ValueError):
    """The runs cannot support the fit (no near-optimal runs, x values that do not vary)."""


def near_optimal(loss, groups, tolerance: float) -> np.ndarray:
    """True for each run with |loss / best - 1| < `tolerance`, and for each group's best run.

    `groups` is a list of arrays, one per key column (runs with equal keys form a group); best is
    the group's lowest finite loss. A NaN loss (a failed or diverged run) is never near-optimal
    and never a group's best.
    """
    loss = pd.Series(np.asarray(loss, float))
    keys = [pd.Series(np.asarray(g)) for g in groups]
    best = loss.groupby(keys).transform("min").to_numpy()
    values = loss.to_numpy()
    with np.errstate(invalid="ignore", divide="ignore"):
        close = np.abs(values / best - 1.0) < tolerance
    return (close | (values == best)) & np.isfinite(values)


@dataclass(frozen=True)
class LogLinearFit:
    """y = coef * prod_i x_i^exponents[name_i], fitted by least squares on ln y."""

    coef: float
    exponents: dict[str, float]
    n_points: int
    rss: float
    """Residual sum of squares in ln y."""


def _design(xs: dict[str, np.ndarray], n: int) -> np.ndarray:
    return np.column_stack([np.ones(n), *(np.log(x) for x in xs.values())])


def _as_positive(name: str, values) -> np.ndarray:
    values = np.asarray(values, float)
    if not np.all(np.isfinite(values) & (values > 0)):
        raise HparamFitError(f"{name}: every value must be positive and finite")
    return values


def fit_loglinear(y, xs: dict) -> LogLinearFit:
    """Least squares of ln y on an intercept and ln x for each named x (at least one).

    Needs every x with at least 2 distinct values, one point more than there are parameters,
    and x columns that vary independently of each other (a full-rank design)."""
    y = _as_positive("y", y)
    xs = {name: _as_positive(name, x) for name, x in xs.items()}
    n, k = len(y), len(xs) + 1
    for name, x in xs.items():
        if len(x) != n:
            raise HparamFitError(f"{name}: {len(x)} values for {n} y values")
        if len(np.unique(x)) < 2:
            raise HparamFitError(f"fewer than 2 distinct {name} values")
    if n < k + 1:
        raise HparamFitError(f"{n} points are too few for a law with {k} parameters "
                             f"(need {k + 1})")
    design = _design(xs, n)
    if np.linalg.matrix_rank(design) < k:
        raise HparamFitError(f"{', '.join(xs)} do not vary independently: cannot separate "
                             "their exponents")
    solution, *_ = np.linalg.lstsq(design, np.log(y), rcond=None)
    resid = np.log(y) - design @ solution
    exponents = {name: float(e) for name, e in zip(xs, solution[1:], strict=True)}
    return LogLinearFit(float(np.exp(solution[0])), exponents, n, float(resid @ resid))


def resample(n: int, n_boot: int, seed: int) -> np.ndarray:
    """(n_boot, n) row indices drawn with replacement: the pairs bootstrap's resamples.

    Drawn as `fitting.powerlaw.bootstrap_power_law` draws them, so a one-x law gets the replicates
    that function gives."""
    return np.random.default_rng(seed).integers(0, n, size=(n_boot, n))


def bootstrap_loglinear(y, xs: dict, indices: np.ndarray) -> np.ndarray:
    """(len(indices), 1 + len(xs)) replicates of (coef, exponents...) refitted on each resample;
    a row of NaN where the resample cannot be fitted."""
    y = np.asarray(y, float)
    xs = {name: np.asarray(x, float) for name, x in xs.items()}
    out = np.full((len(indices), 1 + len(xs)), np.nan)
    for row, idx in enumerate(indices):
        try:
            fit = fit_loglinear(y[idx], {name: x[idx] for name, x in xs.items()})
        except HparamFitError:
            continue
        out[row] = [fit.coef, *fit.exponents.values()]
    return out


def percentile_interval(samples, level: float = LEVEL) -> list[float]:
    """The percentile interval of the finite samples (NaN, NaN when there are none)."""
    samples = np.asarray(samples, float)
    samples = samples[np.isfinite(samples)]
    if len(samples) == 0:
        return [float("nan"), float("nan")]
    tail = 50.0 * (1.0 - level)
    return [float(v) for v in np.percentile(samples, [tail, 100.0 - tail])]


# --------------------------------------------------------------------------------------------
# The whole fit of one sweep (`scalinglab fit hparams`)

LAWS = {
    # name: (y, x names, form, key of each exponent in the output)
    "lr_law": ("lr", ("N", "D"), "lr = coef * N^exp_N * D^exp_D", ("exp_N", "exp_D")),
    "batch_law": ("batch", ("D",), "B = coef * D^exp_D", ("exp_D",)),
    "lr_vs_C": ("lr", ("C",), "eta_opt = coef * C^exponent (DeepSeek)", ("exponent",)),
    "batch_vs_C": ("batch", ("C",), "B_opt = coef * C^exponent (DeepSeek)", ("exponent",)),
}
REQUIRED = ("lr_law", "batch_law")
"""The Step Law forms: a sweep that cannot give them is an error; the C forms record theirs."""


def fit_sweep(N, D, lr, batch, loss, C=None, *, tolerance: float = 0.0025, n_boot: int = 1000,
              seed: int = 0) -> dict:
    """Near-optimal runs per (N, D) group, the four laws through them, bootstrap intervals.

    Arrays of equal length, one entry per run, every value positive (losses may be NaN: those
    runs are left out); C defaults to 6ND. Returns the JSON of `scalinglab fit hparams`; raises
    `HparamFitError` when no run is near-optimal or a Step Law form cannot be fitted.
    """
    cols = {name: np.asarray(v, float) for name, v in
            (("N", N), ("D", D), ("lr", lr), ("batch", batch), ("loss", loss))}
    c_derived = C is None
    cols["C"] = FLOPS_PER_PARAM_TOKEN * cols["N"] * cols["D"] if c_derived else np.asarray(C, float)
    if not tolerance >= 0:
        raise HparamFitError(f"near-optimal tolerance {tolerance!r}: must be >= 0")
    if n_boot < 0:
        raise HparamFitError(f"bootstrap resamples {n_boot}: must be >= 0")
    mask = near_optimal(cols["loss"], [cols["N"], cols["D"]], tolerance)
    if not mask.any():
        raise HparamFitError("no near-optimal runs (no run has a finite loss)")
    near = {name: v[mask] for name, v in cols.items()}
    result: dict = {
        "method": "hparams",
        "criterion": f"near-optimal: |loss / best - 1| < {tolerance:g} within each (N, D) group "
                     "(the group's best run always counts)",
        "near_optimal": tolerance,
        "n_runs": int(np.isfinite(cols["loss"]).sum()),
        "n_near_optimal": int(mask.sum()),
        "C_source": "C = 6ND" if c_derived else "C column",
    }
    indices = resample(int(mask.sum()), n_boot, seed)
    ci, failed = {}, {}
    for name, (y, x_names, form, keys) in LAWS.items():
        xs = {x: near[x] for x in x_names}
        try:
            fit = fit_loglinear(near[y], xs)
        except HparamFitError as err:
            if name in REQUIRED:
                raise HparamFitError(f"cannot fit {name}: {err}") from None
            result[name] = {"form": form, "error": str(err)}
            continue
        result[name] = {"form": form, "coef": fit.coef,
                        **{k: fit.exponents[x] for k, x in zip(keys, x_names, strict=True)},
                        "n_points": fit.n_points, "rss_log": fit.rss}
        if n_boot > 0:
            reps = bootstrap_loglinear(near[y], xs, indices)
            ci[name] = {k: percentile_interval(reps[:, j]) for j, k in
                        enumerate(("coef", *keys))}
            failed[name] = int(np.isnan(reps[:, 0]).sum())
    result["groups"] = _groups(cols, mask)
    result["n_groups"] = len(result["groups"])
    result["ci"] = ci or None
    if n_boot > 0:
        result["bootstrap"] = {"n": n_boot, "seed": seed, "level": LEVEL,
                               "over": "near-optimal runs", "n_failed": failed}
    return result


def _groups(cols: dict, mask: np.ndarray) -> list[dict]:
    """Per (N, D) group: its runs, its best loss and its near-optimal runs."""
    table = pd.DataFrame({"N": cols["N"], "D": cols["D"], "loss": cols["loss"], "near": mask})
    return [{"N": float(n), "D": float(d), "n_runs": int(at["loss"].notna().sum()),
             "best_loss": float(at["loss"].min()), "n_near_optimal": int(at["near"].sum())}
            for (n, d), at in table.groupby(["N", "D"], sort=True)]
