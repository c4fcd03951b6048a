"""`scalinglab fit METHOD`: the law library (`scalinglab.fitting`) on any table of points.

A thin layer over `scalinglab.fitting` (one module per method): read a table, check the
columns, fit, write one JSON file. Bad input (a missing column, a non-positive value, too few
rows, an unreadable file) raises a `UserError` that names the column or file, before anything is
written. The fitting modules import scipy (most of a second), so they are imported inside the
handlers; `fit schedule` lives in `cli.schedule`.
"""

from __future__ import annotations

import math

import numpy as np

from scalinglab.cli import grammar, schedule
from scalinglab.cli.columns import Columns, flops_columns, require_named
from scalinglab.cli.io import read_table, write_json
from scalinglab.errors import UserError

FLOPS_HELP = (
    "Without a D column, D = C/(6N); without a C column, C = 6ND. "
    "The JSON records which under 'flops_convention'."
)


def register(sub) -> None:
    """Add `fit METHOD` to the `scalinglab` parser's subparsers."""
    methods = grammar.group(sub, "fit", "fit a scaling law to a CSV of points (JSON out)",
                            description=__doc__.split("\n\n")[0], metavar="METHOD")
    _add_parametric(methods)
    _add_isoflop(methods)
    _add_envelope(methods)
    _add_powerlaw(methods)
    schedule.add_parser(methods)
    _add_hparams(methods)


def _law(methods, name: str, func, help: str, description: str, *, bootstrap: int = 1000):
    """A verb that fits a law of loss in N (and D or C) to --input: its parser, with the options
    every such verb shares; the verb adds its own."""
    p = grammar.verb(methods, name, func, help, description=description)
    p.add_argument("--input", required=True, help="CSV (or JSON records) with one row per point")
    p.add_argument("--out", required=True, help="JSON file to write")
    p.add_argument("--n-col", default="N", help="model size column (default N)")
    p.add_argument("--loss-col", default="loss", help="loss column (default loss)")
    grammar.add_bootstrap(p, bootstrap)
    return p


def _flops_options(p, *, tokens: str = "tokens column (default D, derived when absent)",
                   flops: str = "FLOPs column (default C, derived when absent)") -> None:
    p.add_argument("--c-col", help=flops)
    p.add_argument("--d-col", help=tokens)


def _add_parametric(methods) -> None:
    p = _law(methods, "parametric", run_parametric,
             "Method 3: L = E + A/N^alpha + B/D^beta (Huber, L-BFGS-B, grid starts)",
             "Method 3 fitted as Epoch AI refitted Chinchilla (arXiv 2404.10102). " + FLOPS_HELP)
    _flops_options(p, flops="FLOPs column, used when D is absent (default C)")
    p.add_argument("--huber-delta", type=float, default=1e-3, help="Huber delta (default 1e-3)")
    p.add_argument("--at-compute", type=float, nargs="+", default=[], metavar="C",
                   help="report N_opt, D_opt, tokens/param and loss at these FLOP budgets")
    p.add_argument("--fix-alpha", type=float, help="hold alpha at this value")
    p.add_argument("--fix-beta", type=float, help="hold beta at this value")
    p.add_argument("--workers", type=int, help="bootstrap processes (default: one per core)")


def _add_isoflop(methods) -> None:
    p = _law(methods, "isoflop", run_isoflop,
             "Method 2: a parabola in log N per budget, then N_opt and D_opt power laws",
             "Method 2 (Hoffmann et al. 2203.15556, Approach 2). Budgets are the distinct values "
             "of the C column. " + FLOPS_HELP)
    _flops_options(p)


def _add_envelope(methods) -> None:
    p = _law(methods, "envelope", run_envelope,
             "Method 1: the lower envelope of training curves on a log-spaced FLOP grid",
             "Method 1 (Hoffmann et al. 2203.15556, Approach 1). A long table, one row per "
             "evaluation; when every run has one row, the grid is the distinct budgets. "
             + FLOPS_HELP, bootstrap=200)
    _flops_options(p)
    p.add_argument("--run-col",
                   help="run column (default run_id; when absent, every row is its own run)")
    p.add_argument("--grid-points", type=int, default=50, help="FLOP grid size (default 50)")


def _add_powerlaw(methods) -> None:
    p = grammar.verb(
        methods, "powerlaw", run_powerlaw,
        "y = coef * x^exponent (+ offset): LR, batch and loss laws",
        description="Log-log least squares; --offset fits y = offset + coef x^exponent by "
        "nonlinear least squares on relative residuals, from a grid of exponents.",
    )
    p.add_argument("--input", required=True, help="CSV (or JSON records)")
    p.add_argument("--out", required=True, help="JSON file to write")
    p.add_argument("--x-col", required=True, help="x column")
    p.add_argument("--y-col", required=True, help="y column")
    p.add_argument("--offset", action="store_true", help="fit y = offset + coef x^exponent")
    grammar.add_bootstrap(p)


def _add_hparams(methods) -> None:
    p = _law(methods, "hparams", run_hparams,
             "lr and batch laws from an LR x batch sweep (Step Law; DeepSeek eta(C), B(C))",
             "Near-optimal runs: in each (N, D) group, the runs with |loss / group best - 1| < "
             "--near-optimal. Through them, least squares in logs: lr = coef N^exp_N D^exp_D and "
             "B = coef D^exp_D (Step Law, arXiv 2503.04715), and eta_opt = coef C^exponent, "
             "B_opt = coef C^exponent (DeepSeek LLM, arXiv 2401.02954); C = 6ND without a C "
             "column. Intervals from a bootstrap over the near-optimal runs.")
    p.add_argument("--d-col", default="D", help="training tokens column (default D)")
    p.add_argument("--lr-col", default="lr", help="peak learning rate column (default lr)")
    p.add_argument("--batch-col", default="batch", help="batch size column (default batch)")
    p.add_argument("--batch-scale", type=float, default=1.0,
                   help="multiply the batch column by this, e.g. the sequence length when the "
                   "column counts sequences and the laws should be in tokens (default 1)")
    p.add_argument("--c-col", help="compute column in FLOPs (default C; when absent, C = 6ND)")
    p.add_argument("--near-optimal", type=float, default=0.0025,
                   help="tolerance: a run within this fraction of its group's best loss is "
                   "near-optimal (default 0.0025, Step Law's and DeepSeek's 0.25%%)")


# --------------------------------------------------------------------------------------------
# Handlers


def _fit_or_user_error(fn, *a, **kw):
    from scalinglab.fitting.inputs import FitError

    try:
        return fn(*a, **kw)
    except FitError as err:
        raise UserError(f"cannot fit: {err}") from err


def _write(args, result: dict) -> int:
    write_json(args.out, result)
    return 0


def _bootstrap_block(boot) -> dict:
    return {"n": boot.n_requested, "seed": boot.seed, "n_failed": boot.n_failed, "level": 0.95}


# --------------------------------------------------------------------------------------------
# Handlers


def run_parametric(args) -> int:
    from scalinglab.fitting.inputs import FLOPS_PER_PARAM_TOKEN
    from scalinglab.fitting.parametric import (
        bootstrap_parametric,
        compute_optimal_samples,
        fit_parametric,
        fit_parametric_varpro,
    )

    df = read_table(args.input)
    c_col, d_col, convention = flops_columns(df, args, need_c=False)
    names = {"N": args.n_col, "D": d_col, "C": None if d_col else c_col, "loss": args.loss_col}
    cols = Columns(df, args.input, names)
    n_free = 5 - (args.fix_alpha is not None) - (args.fix_beta is not None)
    cols.require(n_free + 1, f"a fit of {n_free} free parameters")
    N, loss = cols.values["N"], cols.values["loss"]
    D = cols.values["D"] if d_col else cols.values["C"] / (FLOPS_PER_PARAM_TOKEN * N)
    fixed = {"fix_alpha": args.fix_alpha, "fix_beta": args.fix_beta}
    fit = _fit_or_user_error(fit_parametric, N, D, loss, huber_delta=args.huber_delta, **fixed)
    varpro = _fit_or_user_error(fit_parametric_varpro, N, D, loss, **fixed)
    result = {
        "method": "parametric",
        "form": "L = E + A/N^alpha + B/D^beta",
        **fit.params(),
        "a": fit.a,
        "b": fit.b,
        "n_points": fit.n_points,
        "n_dropped_nan": cols.n_dropped_nan,
        "n_dropped_diverged": cols.n_dropped_diverged,
        "objective": fit.objective,
        "objective_kind": f"summed Huber (delta={fit.huber_delta:g}) on log-loss residuals",
        "fixed": {"alpha": args.fix_alpha, "beta": args.fix_beta},
        "flops_convention": convention,
        "ci": None,
        "at_compute": [],
    }
    boot = None
    if args.bootstrap > 0:
        boot = bootstrap_parametric(
            N, D, loss, fit, n_boot=args.bootstrap, seed=args.seed, workers=args.workers
        )
        ci = boot.intervals()
        result["ci"] = {k: ci[k] for k in ("E", "A", "B", "alpha", "beta", "a")}
        result["bootstrap"] = _bootstrap_block(boot)
    for C in args.at_compute:
        if not C > 0:
            raise UserError(f"--at-compute {C!r}: a FLOP budget must be positive")
        n_opt, d_opt = fit.compute_optimal(C)
        entry = {
            "C": C,
            "N_opt": float(n_opt),
            "D_opt": float(d_opt),
            "tokens_per_param": float(d_opt / n_opt),
            "loss": float(fit.loss(n_opt, d_opt)),
        }
        if boot is not None:
            samples = compute_optimal_samples(boot, C)
            entry["ci"] = {
                k: [float(x) for x in np.percentile(v, [2.5, 97.5])] for k, v in samples.items()
            }
        result["at_compute"].append(entry)
    result["variable_projection"] = {
        **varpro.params(),
        "a": varpro.a,
        "b": varpro.b,
        "objective": varpro.objective,
        "objective_kind": "summed squared relative residual; (E, A, B) by NNLS per (alpha, beta)",
    }
    return _write(args, result)


def _allocation_result(fit, boot, cols, convention, extra) -> dict:
    from scalinglab.fitting.allocation import allocation_samples_at

    top = max(b.C for b in fit.budgets)
    result = {
        "method": fit.method,
        "a": fit.a,
        "k_n": fit.k_n,
        "b": fit.b,
        "k_d": fit.k_d,
        "laws": "N_opt = k_n * C^a; D_opt = k_d * C^b",
        "tokens_per_param": float(fit.tokens_per_param(top)),
        "tokens_per_param_at_C": top,
        "tokens_per_param_geomean": float(
            np.exp(np.mean([np.log(b.tokens_per_param) for b in fit.budgets]))
        ),
        "ci": None,
        "budgets": [
            {
                "C": b.C,
                "N_opt": b.N_opt,
                "D_opt": b.D_opt,
                "loss_opt": b.loss_opt,
                "tokens_per_param": b.tokens_per_param,
                "n_points": b.n_points,
                "inside_range": b.inside_range,
            }
            for b in fit.budgets
        ],
        "dropped": [{"C": d.C, "n_points": d.n_points, "reason": d.reason} for d in fit.dropped],
        "n_points": cols.n,
        "n_dropped_nan": cols.n_dropped_nan,
        "n_dropped_diverged": cols.n_dropped_diverged,
        "flops_convention": convention,
        **extra,
    }
    if boot is not None:
        ci = boot.intervals()
        result["ci"] = {k: ci[k] for k in ("a", "b", "k_n", "k_d")}
        tpp = allocation_samples_at(boot, top)["tokens_per_param"]
        result["ci"]["tokens_per_param"] = [float(x) for x in np.percentile(tpp, [2.5, 97.5])]
        result["bootstrap"] = _bootstrap_block(boot)
    return result


def _allocation_inputs(args, *, with_run: bool):
    from scalinglab.fitting.inputs import FLOPS_PER_PARAM_TOKEN

    df = read_table(args.input)
    c_col, d_col, convention = flops_columns(df, args, need_c=True)
    names = {"N": args.n_col, "C": c_col, "D": d_col, "loss": args.loss_col}
    if with_run:
        # the default run_id may be absent (final points only); a named column must exist
        names["run"] = args.run_col or ("run_id" if "run_id" in df.columns else None)
    cols = Columns(df, args.input, names)
    cols.require(3, "a compute-optimal fit")
    v = cols.values
    C = v["C"] if c_col else FLOPS_PER_PARAM_TOKEN * v["N"] * v["D"]
    return cols, convention, C, v["N"], v["loss"], v.get("D")


def run_isoflop(args) -> int:
    from scalinglab.fitting.isoflop import bootstrap_isoflop, fit_isoflop

    cols, convention, C, N, loss, D = _allocation_inputs(args, with_run=False)
    fit = _fit_or_user_error(fit_isoflop, C, N, loss, D)
    boot = None
    if args.bootstrap > 0:
        boot = bootstrap_isoflop(C, N, loss, D, n_boot=args.bootstrap, seed=args.seed)
    extra = {"tokens_per_param_note": "D_opt/N_opt from the fitted laws at the largest budget"}
    return _write(args, _allocation_result(fit, boot, cols, convention, extra))


def run_envelope(args) -> int:
    from scalinglab.fitting.envelope import bootstrap_envelope, fit_envelope

    if args.grid_points < 2:
        raise UserError(f"--grid-points {args.grid_points}: need at least 2")
    cols, convention, C, N, loss, D = _allocation_inputs(args, with_run=True)
    run = cols.values.get("run", np.arange(cols.n))
    kw = {"grid_points": args.grid_points}
    fit = _fit_or_user_error(fit_envelope, run, C, N, loss, D, **kw)
    boot = None
    if args.bootstrap > 0:
        boot = bootstrap_envelope(
            run, C, N, loss, D, n_boot=args.bootstrap, seed=args.seed, **kw
        )
    extra = {
        "run_column": (args.run_col or "run_id") if "run" in cols.values else None,
        "tokens_per_param_note": "D_opt/N_opt from the fitted laws at the largest budget",
    }
    return _write(args, _allocation_result(fit, boot, cols, convention, extra))


def run_powerlaw(args) -> int:
    from scalinglab.fitting.powerlaw import bootstrap_power_law, fit_power_law, fit_power_law_offset

    df = read_table(args.input)
    cols = Columns(df, args.input, {"x": args.x_col, "y": args.y_col})
    cols.require(4 if args.offset else 3, "this power law")
    x, y = cols.values["x"], cols.values["y"]
    fitter = fit_power_law_offset if args.offset else fit_power_law
    fit = _fit_or_user_error(fitter, x, y)
    result = {
        "method": "powerlaw",
        "form": "y = offset + coef * x^exponent" if args.offset else "y = coef * x^exponent",
        "x_col": args.x_col,
        "y_col": args.y_col,
        "coef": fit.coef,
        "exponent": fit.exponent,
        **({"offset": fit.offset} if args.offset else {}),
        "n_points": fit.n_points,
        "n_dropped_nan": cols.n_dropped_nan,
        "n_dropped_diverged": cols.n_dropped_diverged,
        "rss": fit.rss,
        "rss_kind": "relative residuals" if args.offset else "log y residuals",
        "ci": None,
    }
    if args.bootstrap > 0:
        boot = bootstrap_power_law(
            x, y, offset=args.offset, n_boot=args.bootstrap, seed=args.seed
        )
        result["ci"] = boot.intervals()
        result["bootstrap"] = _bootstrap_block(boot)
    return _write(args, result)


def run_hparams(args) -> int:
    from scalinglab.fitting import hparam_laws

    if not args.near_optimal >= 0:
        raise UserError(f"--near-optimal {args.near_optimal!r}: must be >= 0")
    if not (math.isfinite(args.batch_scale) and args.batch_scale > 0):
        raise UserError(f"--batch-scale {args.batch_scale!r}: must be positive")
    if args.bootstrap < 0:
        raise UserError(f"--bootstrap {args.bootstrap}: must be >= 0")
    df = read_table(args.input)
    require_named(df, args.input, "--c-col", args.c_col)
    c_col = args.c_col or ("C" if "C" in df.columns else None)
    names = {"N": args.n_col, "D": args.d_col, "lr": args.lr_col, "batch": args.batch_col,
             "loss": args.loss_col, "C": c_col}
    cols = Columns(df, args.input, names)
    if cols.n == 0:
        cols.require(1, "a near-optimal run")
    v = cols.values
    try:
        result = hparam_laws.fit_sweep(
            v["N"], v["D"], v["lr"], args.batch_scale * v["batch"], v["loss"], v.get("C"),
            tolerance=args.near_optimal, n_boot=args.bootstrap, seed=args.seed)
    except hparam_laws.HparamFitError as err:
        raise UserError(f"{args.input}: {err}") from err
    result["columns"] = {role: name for role, name in names.items() if name is not None}
    result["batch_scale"] = args.batch_scale
    result["n_dropped_nan"] = cols.n_dropped_nan
    result["n_dropped_diverged"] = cols.n_dropped_diverged
    _write(args, result)
    lr_law, batch_law = result["lr_law"], result["batch_law"]
    print(f"{result['n_near_optimal']} near-optimal runs of {result['n_runs']} in "
          f"{result['n_groups']} (N, D) groups; lr = {lr_law['coef']:.4g} N^{lr_law['exp_N']:.3f}"
          f" D^{lr_law['exp_D']:.3f}; B = {batch_law['coef']:.4g} D^{batch_law['exp_D']:.3f}")
    return 0
