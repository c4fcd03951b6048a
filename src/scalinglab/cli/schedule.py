"""`scalinglab fit schedule`: fit a loss-curve law that takes the LR schedule as input
(the Multi-Power Law, arXiv 2503.12811, or Tissue et al.'s, arXiv 2408.11029) to users' curves.

Two long tables: the curves (run, step, loss at evaluation steps) and the schedules (run, step,
lr at every optimizer step from 0 to the run's last step). The law is fitted on the training
runs (all by default) and every run is predicted; the JSON gives the named parameters, their
bootstrap intervals over curves, and each run's mean and last-point relative error.
Bad input raises a `UserError` that names the file, run, column or step, before anything is
written.
"""

from __future__ import annotations

import time

import numpy as np

from scalinglab.cli import grammar
from scalinglab.cli.io import read_table, write_csv, write_json
from scalinglab.errors import UserError
from scalinglab.fitting import schedule_fit as sf
from scalinglab.fitting import schedule_law as sl


def add_parser(methods) -> None:
    """Add `schedule` to the methods of `scalinglab fit`."""
    p = grammar.verb(
        methods, "schedule", run,
        "a law of the whole loss curve under any LR schedule (Multi-Power Law, Tissue)",
        description=__doc__,
    )
    p.add_argument("--input", required=True,
                   help="CSV (or JSON records) of losses: one row per (run, evaluation step)")
    p.add_argument("--lr", required=True,
                   help="CSV (or JSON records) of learning rates: one row per (run, step), every "
                   "optimizer step from 0 to the run's last step")
    p.add_argument("--out", required=True, help="JSON file to write")
    p.add_argument("--train-runs",
                   help="comma-separated runs to fit on (default: every run); the rest are "
                   "predicted only")
    p.add_argument("--form", choices=sl.FORMS, default="mpl",
                   help="mpl: Multi-Power Law, 7 parameters (default); tissue: L0 + A S1^-alpha "
                   f"- C S2, 4 parameters, lambda fixed at {sl.TISSUE_LAMBDA}")
    p.add_argument("--run-col", default="run", help="run column in both tables (default run)")
    p.add_argument("--step-col", default="step",
                   help="step column in both tables (default step)")
    p.add_argument("--loss-col", default="loss", help="loss column of --input (default loss)")
    p.add_argument("--lr-col", default="lr", help="learning-rate column of --lr (default lr)")
    p.add_argument("--predict-out",
                   help="CSV to write: run, step, observed loss, predicted loss, train")
    p.add_argument("--bootstrap", type=int, default=0,
                   help="resamples of the training runs (with replacement) for 95%% intervals; "
                   "each distinct resample is refitted once (3 runs: at most 10 refits, about "
                   "20 s on upstream's curves); default 0: no intervals")
    p.add_argument("--seed", type=int, default=0, help="bootstrap seed (default 0)")
    p.add_argument("--huber-delta", type=float, default=sf.HUBER_DELTA,
                   help=f"Huber delta on log-loss residuals (default {sf.HUBER_DELTA:g})")


# --------------------------------------------------------------------------------------------
# Reading and checking the two tables


def _columns(df, path: str, names: dict[str, str]):
    for role, name in names.items():
        if name not in df.columns:
            have = ", ".join(map(str, df.columns))
            raise UserError(f"{path}: no column {name!r} (for {role}); columns are: {have}")


def _numeric(df, path: str, col: str) -> np.ndarray:
    try:
        return df[col].astype(float).to_numpy()
    except (TypeError, ValueError) as err:
        raise UserError(f"{path}: column {col!r} is not numeric") from err


def _steps(values: np.ndarray, path: str, col: str) -> np.ndarray:
    bad = np.flatnonzero(~np.isfinite(values) | (values < 0) | (values != np.round(values)))
    if len(bad):
        raise UserError(f"{path}: column {col!r} must hold whole steps >= 0 "
                        f"(data row {bad[0] + 1}: {values[bad[0]]!r})")
    return values.astype(np.int64)


def _groups(runs: np.ndarray, steps: np.ndarray, path: str) -> dict[str, np.ndarray]:
    """Row indices of each run, in file order, whose steps must strictly increase."""
    out: dict[str, list] = {}
    for i, r in enumerate(runs):
        out.setdefault(r, []).append(i)
    groups = {}
    for run, rows in out.items():
        rows = np.asarray(rows)
        back = np.flatnonzero(np.diff(steps[rows]) <= 0)
        if len(back):
            j = back[0]
            raise UserError(
                f"{path}: run {run!r}: steps must increase; step {steps[rows[j + 1]]} follows "
                f"step {steps[rows[j]]} (data row {rows[j + 1] + 1})"
            )
        groups[run] = rows
    return groups


def _runs(df, path: str, args):
    """The step of each row, and each run's rows (`_groups`)."""
    steps = _steps(_numeric(df, path, args.step_col), path, args.step_col)
    return steps, _groups(df[args.run_col].astype(str).to_numpy(), steps, path)


def read_curves(args):
    """{run: (steps, loss)} from --input, rows with a missing loss dropped and counted."""
    df = read_table(args.input)
    _columns(df, args.input, {"run": args.run_col, "step": args.step_col, "loss": args.loss_col})
    loss = _numeric(df, args.input, args.loss_col)
    keep = np.isfinite(loss) & df[args.run_col].notna().to_numpy()
    n_nan = int((~keep).sum())
    df, loss = df[keep], loss[keep]
    if len(df) == 0:
        raise UserError(f"{args.input}: no rows with a loss")
    bad = np.flatnonzero(loss <= 0)
    if len(bad):
        raise UserError(f"{args.input}: column {args.loss_col!r} has {len(bad)} non-positive "
                        f"value(s) (first: {loss[bad[0]]!r})")
    steps, groups = _runs(df, args.input, args)
    return {run: (steps[rows], loss[rows]) for run, rows in groups.items()}, n_nan


def read_schedules(args, wanted) -> dict[str, np.ndarray]:
    """{run: lr at steps 0..T} from --lr for the runs in `wanted` (other runs are ignored)."""
    df = read_table(args.lr)
    _columns(df, args.lr, {"run": args.run_col, "step": args.step_col, "lr": args.lr_col})
    lr = _numeric(df, args.lr, args.lr_col)
    bad = np.flatnonzero(~np.isfinite(lr) | (lr < 0))
    if len(bad):
        raise UserError(f"{args.lr}: column {args.lr_col!r} must be finite and >= 0 "
                        f"(data row {bad[0] + 1}: {lr[bad[0]]!r})")
    steps, groups = _runs(df, args.lr, args)
    out = {}
    for run in wanted:
        if run not in groups:
            have = ", ".join(sorted(groups)) or "none"
            raise UserError(f"{args.lr}: no rows for run {run!r} (runs there: {have})")
        rows = groups[run]
        s = steps[rows]
        gap = np.flatnonzero(s != np.arange(len(s)))
        if len(gap):
            j = gap[0]
            raise UserError(
                f"{args.lr}: run {run!r}: needs every step from 0; step {j} is missing "
                f"(found {s[j]} at data row {rows[j] + 1})"
            )
        out[run] = lr[rows]
    return out


def _curves(args):
    table, n_nan = read_curves(args)
    schedules = read_schedules(args, table)
    curves = {}
    for run, (steps, loss) in table.items():
        lr = schedules[run]
        if steps[-1] >= len(lr):
            raise UserError(f"{args.lr}: run {run!r} ends at step {len(lr) - 1}, but "
                            f"{args.input} has an evaluation at step {steps[-1]}")
        s1 = sl.forward_area(lr, steps)
        if not s1[0] > 0:
            raise UserError(
                f"{args.input}: run {run!r}: at step {steps[0]} the LR summed over steps "
                f"1..{steps[0]} is 0, where the law is undefined; drop evaluations before the "
                "first step with lr > 0"
            )
        curves[run] = sl.Curve(lr=lr, steps=steps, loss=loss, name=run)
    return curves, n_nan


def _train_runs(args, curves) -> list[str]:
    if not args.train_runs:
        return list(curves)
    names = [n.strip() for n in args.train_runs.split(",") if n.strip()]
    unknown = [n for n in names if n not in curves]
    if unknown:
        raise UserError(f"--train-runs: no run {unknown[0]!r} in {args.input} "
                        f"(runs there: {', '.join(curves)})")
    if not names:
        raise UserError("--train-runs: no run named")
    return list(dict.fromkeys(names))


# --------------------------------------------------------------------------------------------
# The handler


def run(args) -> int:
    if args.bootstrap < 0:
        raise UserError(f"--bootstrap {args.bootstrap}: must be >= 0")
    if not args.huber_delta > 0:
        raise UserError(f"--huber-delta {args.huber_delta}: must be > 0")
    curves, n_nan = _curves(args)
    train = _train_runs(args, curves)
    train_curves = [curves[n] for n in train]
    t0 = time.perf_counter()
    try:
        fit = sf.fit_schedule_law(train_curves, args.form, huber_delta=args.huber_delta)
    except sf.ScheduleFitError as err:
        raise UserError(f"cannot fit: {err}") from err
    fit_seconds = time.perf_counter() - t0
    result = {
        "form": fit.form,
        "law": sl.FORMULAS[fit.form],
        "params": fit.params,
        "fixed": fit.fixed,
        "ci": None,
        "objective": fit.objective,
        "objective_kind": f"summed Huber (delta={fit.huber_delta:g}) on log-loss residuals "
        "over every point of every training run",
        "train_runs": train,
        "n_points": fit.n_points,
        "n_dropped_nan": n_nan,
        "runs": {},
    }
    if args.bootstrap > 0:
        boot = sf.bootstrap_schedule_law(train_curves, fit, n_boot=args.bootstrap,
                                      seed=args.seed)
        if len(boot.samples):
            result["ci"] = boot.intervals()
        result["bootstrap"] = {
            "n": boot.n_requested, "seed": boot.seed, "n_failed": boot.n_failed,
            "n_distinct": boot.n_distinct, "level": 0.95, "unit": "training runs",
            # an interval that ends at a bound means the resamples do not pin that parameter
            "bounds": {n: list(sf.PARAM_BOUNDS[n]) for n in fit.params},
        }
    rows = []
    print(f"{fit.form} fit on {len(train)} run(s), {fit.n_points} points, "
          f"in {fit_seconds:.1f} s: " + ", ".join(f"{k}={v:.4g}" for k, v in fit.params.items()))
    print(f"{'run':<24} {'train':<6} {'points':>6} {'mean err':>9} {'last err':>9}")
    for name, c in curves.items():
        pred = fit.predict(c.lr, c.steps)
        mean, final = sl.relative_errors(pred, c.loss)
        is_train = name in train
        result["runs"][name] = {
            "train": is_train, "n_points": len(c.steps), "mean_rel_error": mean,
            "final_rel_error": final, "final_step": int(c.steps[-1]),
        }
        print(f"{name:<24} {str(is_train):<6} {len(c.steps):>6} {mean:>9.3%} {final:>9.3%}")
        if args.predict_out:
            rows.append((name, c, pred, is_train))
    if args.predict_out:
        _write_predictions(args, rows)
    write_json(args.out, result)
    return 0


def _write_predictions(args, rows) -> None:
    import pandas as pd

    table = pd.concat([
        pd.DataFrame({args.run_col: name, args.step_col: c.steps, args.loss_col: c.loss,
                      "pred": pred, "train": is_train})
        for name, c, pred, is_train in rows
    ])
    write_csv(args.predict_out, table)
    print(f"wrote {args.predict_out}")
