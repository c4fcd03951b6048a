"""The analysis of the architecture-variants phase (`scalinglab.phases.variants` plans it):
the runs and curves tables with each variant's columns (`collect`), per variant Method 1 and
Method 2 allocation laws against active parameters and the frontier's loss-compute law
(`fit_variant`, `loss_law`, `frontier_samples`), the comparison of every variant with the
reference one (`compare`), and the lines `variants-fit` prints (`summary_lines`).

Hunyuan-Large (arXiv:2411.02265) fitted IsoFLOP profiles of mixture-of-experts models against
ACTIVE parameters; MiniMax-01 (arXiv:2501.08313) compared attentions by their loss-compute
frontiers: both are what this module computes from the runs' final losses.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd

from scalinglab.config.variants import MODEL_SETTINGS, SETTINGS
from scalinglab.errors import UserError

# -- metrics ---------------------------------------------------------------------------------------
EXTRA_COLUMNS = ("variant", "N_active", "N_nonembedding", *MODEL_SETTINGS)


def collect(stable_jsons, branch_jsons) -> tuple[pd.DataFrame, pd.DataFrame]:
    """`metrics.collect`'s runs and curves tables with the columns `EXTRA_COLUMNS` added: the
    variant's name, counts and model settings (`N` is already the active count: the specs carry
    it). The runs table has `parametrization` and `lr` already, read from the spec the run
    trained with."""
    from scalinglab.training.metrics import collect as collect_runs

    runs, curves = collect_runs(stable_jsons, branch_jsons)
    info = {}
    for path in [*stable_jsons, *branch_jsons]:
        spec = json.loads(Path(path).read_text())["spec"]
        if "variant" not in spec:
            raise UserError(f"{path}: not a run of the variants phase (no 'variant' in its spec)")
        v = spec["variant"]
        info[spec["series_id"]] = (v["name"], spec["N_active"], spec["N_nonembedding"],
                                   *(v[k] for k in MODEL_SETTINGS))
    for table in (runs, curves):
        for j, column in enumerate(EXTRA_COLUMNS):
            table.insert(1 + j, column, [info[s][j] for s in table["series_id"]])
    return runs, curves


# -- fits ------------------------------------------------------------------------------------------
def _allocation(fit, boot) -> dict:
    """An `AllocationFit` as JSON, with the keys of `scalinglab fit isoflop|envelope`."""
    from scalinglab.fitting.allocation import allocation_samples_at

    top = max(b.C for b in fit.budgets)
    out = {
        "method": fit.method, "a": fit.a, "k_n": fit.k_n, "b": fit.b, "k_d": fit.k_d,
        "laws": "N_opt = k_n * C^a; D_opt = k_d * C^b (N: active parameters)",
        "tokens_per_param": float(fit.tokens_per_param(top)),
        "tokens_per_param_at_C": top,
        "tokens_per_param_geomean": float(np.exp(np.mean(
            [np.log(b.tokens_per_param) for b in fit.budgets]))),
        "budgets": [{"C": b.C, "N_opt": b.N_opt, "D_opt": b.D_opt, "loss_opt": b.loss_opt,
                     "tokens_per_param": b.tokens_per_param, "n_points": b.n_points,
                     "inside_range": b.inside_range} for b in fit.budgets],
        "dropped": [{"C": d.C, "n_points": d.n_points, "reason": d.reason}
                    for d in fit.dropped],
        "ci": None,
    }
    if boot is not None and len(boot.samples):
        ci = boot.intervals()
        out["ci"] = {k: ci[k] for k in ("a", "b")}
        tpp = allocation_samples_at(boot, top)["tokens_per_param"]
        tpp = tpp[np.isfinite(tpp)]
        if len(tpp):
            out["ci"]["tokens_per_param"] = [float(x) for x in np.percentile(tpp, [2.5, 97.5])]
    return out


def _attempt(fn, *args, **kw):
    from scalinglab.fitting.inputs import FitError

    try:
        return fn(*args, **kw), None
    except FitError as err:
        return None, str(err)


def fit_variant(runs: pd.DataFrame, n_boot: int = 1000, seed: int = 0) -> dict:
    """Method 2 (`fit_isoflop`) and Method 1 (`fit_envelope`) on one variant's final
    losses, against active parameters, plus a power law of the envelope's loss in compute.

    Method 1 takes the decay branches' final (annealed) losses, so its grid is the budgets and
    its optimum the best ladder size at each; the stable runs' evaluations are at the constant
    peak LR and would put the envelope too high. A fit the data cannot support is recorded as
    {"error": why} rather than stopping the phase's other variants.
    """
    from scalinglab.fitting.envelope import bootstrap_envelope, fit_envelope
    from scalinglab.fitting.isoflop import bootstrap_isoflop, fit_isoflop

    ok = runs[np.isfinite(runs["loss"])]
    C, N, loss, D = (ok[k].to_numpy(float) for k in ("C", "N", "loss", "D"))
    out: dict = {"n_runs": int(len(runs)), "n_nonfinite": int(len(runs) - len(ok))}
    fit, err = _attempt(fit_isoflop, C, N, loss, D)
    boot = bootstrap_isoflop(C, N, loss, D, n_boot=n_boot, seed=seed) if fit else None
    out["isoflop"] = _allocation(fit, boot) if fit else {"error": err}
    run = ok["run_id"].to_numpy()
    env, err = _attempt(fit_envelope, run, C, N, loss, D)
    boot = (bootstrap_envelope(run, C, N, loss, D, n_boot=min(n_boot, 200), seed=seed)
            if env else None)
    out["envelope"] = _allocation(env, boot) if env else {"error": err}
    out["loss_law"] = (loss_law(ok, env, n_boot=n_boot, seed=seed) if env
                       else {"error": "no envelope"})
    return out


def loss_law(runs: pd.DataFrame, env, *, n_boot: int, seed: int) -> dict:
    """The compute frontier's law L_opt = coef·C^exponent through the envelope's minima (least
    squares in log-log), its bootstrap 95% intervals (`frontier_samples`: each budget's runs
    resampled) and each minimum's relative residual L_opt / law(C) - 1 (the figure's lower
    panel)."""
    from scalinglab.fitting.powerlaw import fit_power_law

    c, loss = (np.array(v, float) for v in zip(*[(b.C, b.loss_opt) for b in env.budgets],
                                               strict=True))
    law, err = _attempt(fit_power_law, c, loss)
    if law is None:
        return {"error": err}
    fitted = law.coef * c ** law.exponent
    out = {"form": "L_opt = coef * C^exponent (envelope minima)", "coef": law.coef,
           "exponent": law.exponent, "n_points": law.n_points,
           "points": [{"C": float(x), "loss_opt": float(y), "fitted": float(f),
                       "relative_residual": float(y / f - 1)}
                      for x, y, f in zip(c, loss, fitted, strict=True)],
           "ci": None}
    samples = frontier_samples(runs, n_boot, seed)
    if len(samples):
        low, high = np.percentile(samples, [2.5, 97.5], axis=0)
        out["ci"] = {"coef": [float(low[0]), float(high[0])],
                     "exponent": [float(low[1]), float(high[1])], "n_boot": len(samples)}
    return out


def fit(runs: pd.DataFrame, *, n_boot: int = 1000, seed: int = 0,
        reference: str | None = None) -> dict:
    """The content of `results/fits/<name>.json` from `collect`'s runs table: per variant its
    settings (model settings, parametrization, peak LR), counts and `fit_variant`, variants in
    name order, and with two or more variants the `comparison` of each with `reference`
    (None: `reference_variant`)."""
    if runs.empty:
        raise UserError("no runs given")
    if reference is not None and reference not in set(runs["variant"]):
        raise UserError(f"reference {reference!r} is not a variant of the runs "
                        f"({', '.join(sorted(runs['variant'].unique()))})")
    result = {
        "parameter_axis": "N = active non-embedding parameters (scalinglab.model.flops.N_active); "
                          "tokens_per_param = D_opt / N_opt per active parameter",
        "variants": {},
    }
    for name in sorted(runs["variant"].unique()):
        rows = runs[runs["variant"] == name]
        sizes = rows.drop_duplicates("series_id").sort_values("N")
        first = rows.iloc[0]
        entry = {"settings": {k: first[k].item() if hasattr(first[k], "item") else first[k]
                              for k in SETTINGS},
                 "sizes": [{"n_layer": int(r.n_layer), "n_embd": int(r.n_embd),
                            "N_active": int(r.N), "N_nonembedding": int(r.N_nonembedding),
                            "N_total": int(r.N_total)} for r in sizes.itertuples()]}
        entry.update(fit_variant(rows, n_boot=n_boot, seed=seed))
        result["variants"][str(name)] = entry
    if runs["variant"].nunique() > 1:
        result["comparison"] = compare(
            runs, reference or reference_variant(runs["variant"].unique()), n_boot=n_boot,
            seed=seed)
    return result


def frontier_samples(runs: pd.DataFrame, n_boot: int, seed: int) -> np.ndarray:
    """Bootstrap samples (n_boot, 2) of (coef, exponent) of L_opt = coef·C^exponent, where L_opt
    is the lowest final loss at each budget: the runs of each budget are resampled with
    replacement, so a budget whose minimum rests on one lucky run gets a wide interval. Empty
    with fewer than 3 budgets."""
    ok = runs[np.isfinite(runs["loss"])]
    groups = [g["loss"].to_numpy(float) for _, g in ok.groupby("C")]
    budgets = np.array(sorted(ok["C"].unique()), float)
    if len(budgets) < 3:
        return np.empty((0, 2))
    rng = np.random.default_rng(seed)
    log_c = np.log(budgets)
    samples = np.empty((n_boot, 2))
    for i in range(n_boot):
        best = [rng.choice(g, size=len(g)).min() for g in groups]
        exponent, log_coef = np.polyfit(log_c, np.log(best), 1)
        samples[i] = (np.exp(log_coef), exponent)
    return samples


def frontier_exponent_samples(runs: pd.DataFrame, n_boot: int, seed: int) -> np.ndarray:
    """The exponents of `frontier_samples`."""
    return frontier_samples(runs, n_boot, seed)[:, 1]


def compare(runs: pd.DataFrame, reference: str, *, n_boot: int = 1000, seed: int = 0) -> dict:
    """Every variant against `reference`, the MiniMax-01 way (Chinchilla Method 1): the relative
    gap of the lowest loss at each shared budget, and the difference of the frontier's loss-vs-
    compute exponents with a bootstrap 95% interval. "scale alike" when that interval holds 0."""
    ref_runs = runs[runs["variant"] == reference]
    ref_best = ref_runs.groupby("C")["loss"].min()
    ref_samples = frontier_exponent_samples(ref_runs, n_boot, seed)
    out = {"reference": reference, "variants": {}}
    for name in sorted(set(runs["variant"]) - {reference}):
        rows = runs[runs["variant"] == name]
        best = rows.groupby("C")["loss"].min()
        shared = sorted(set(best.index) & set(ref_best.index))
        entry = {"loss_gap": [{"C": float(c), "loss_opt": float(best[c]),
                               "reference_loss_opt": float(ref_best[c]),
                               "relative_gap": float(best[c] / ref_best[c] - 1)}
                              for c in shared]}
        samples = frontier_exponent_samples(rows, n_boot, seed + 1)
        if len(samples) and len(ref_samples):
            diff = samples - ref_samples
            low, high = (float(x) for x in np.percentile(diff, [2.5, 97.5]))
            point = (np.polyfit(np.log(best.index.to_numpy(float)), np.log(best.to_numpy()), 1)[0]
                     - np.polyfit(np.log(ref_best.index.to_numpy(float)),
                                  np.log(ref_best.to_numpy()), 1)[0])
            entry["exponent_difference"] = {"value": float(point), "ci": [low, high]}
            entry["verdict"] = "scale alike" if low <= 0 <= high else "scale differently"
        else:
            entry["exponent_difference"] = None
            entry["verdict"] = "too few budgets to compare (need 3)"
        out["variants"][str(name)] = entry
    return out


def reference_variant(names) -> str:
    """The variant the others are compared with: `dense` when there is one, else the first name."""
    names = sorted(names)
    return "dense" if "dense" in names else names[0]


def summary_lines(result: dict) -> list[str]:
    lines = []
    for name, v in result["variants"].items():
        settings = v.get("settings", {})
        parts = [name + (f" ({settings['parametrization']}, lr {settings['lr']:.3g})"
                         if "parametrization" in settings else "")]
        for method in ("isoflop", "envelope"):
            f = v[method]
            parts.append(f"{method}: " + (f"a={f['a']:.3f} b={f['b']:.3f} "
                                          f"{f['tokens_per_param']:.1f} tokens/active param"
                                          if "error" not in f else f"failed ({f['error']})"))
        law = v["loss_law"]
        if "error" not in law:
            ci = law.get("ci")
            parts.append(f"L_opt ~ C^{law['exponent']:.3f}" + (
                f" [{ci['exponent'][0]:.3f}, {ci['exponent'][1]:.3f}]" if ci else ""))
        lines.append("; ".join(parts))
    comparison = result.get("comparison")
    if comparison:
        for name, c in comparison["variants"].items():
            gaps = ", ".join(f"{g['relative_gap']:+.1%} at {g['C']:.2g}" for g in c["loss_gap"])
            diff = c["exponent_difference"]
            slope = (f"; exponent difference {diff['value']:+.3f} "
                     f"[{diff['ci'][0]:+.3f}, {diff['ci'][1]:+.3f}]" if diff else "")
            lines.append(f"{name} vs {comparison['reference']}: loss {gaps}{slope}: "
                         f"{c['verdict']}")
    return lines
