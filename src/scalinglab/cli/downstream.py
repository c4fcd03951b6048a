"""The verb of the downstream fit: `downstream-fit`, the sigmoid from loss to accuracy.

`cli.py` calls `register(sub)`; the work is done in `downstream` and `plots`, imported inside the
handler so that `--help` stays fast.
"""

from __future__ import annotations

from scalinglab.errors import UserError


def read_points(path: str):
    """The runs table's (loss, accuracy) rows and the task's chance, one value for the table."""
    import pandas as pd

    try:
        runs = pd.read_csv(path)
    except FileNotFoundError:
        raise UserError(f"{path}: runs table not found") from None
    except pd.errors.EmptyDataError:
        raise UserError(f"{path}: empty file") from None
    for column in ("loss", "accuracy", "chance"):
        if column not in runs.columns:
            raise UserError(f"{path}: no column {column!r} (made before downstream existed? "
                            "remake it with collect-metrics)")
    chances = runs["chance"].dropna().unique()
    if len(chances) == 0:
        raise UserError(f"{path}: no run has a downstream accuracy (downstream.enabled: false "
                        "when the runs were trained?)")
    if len(chances) > 1:
        raise UserError(f"{path}: the runs were scored with different downstream.choices "
                        f"(chance {', '.join(f'{c:g}' for c in sorted(chances))})")
    return runs["loss"].to_numpy(float), runs["accuracy"].to_numpy(float), float(chances[0])


def _downstream_fit(args) -> None:
    from scalinglab import atomic
    from scalinglab.plots import study as plots
    from scalinglab.training import downstream

    loss, acc, chance = read_points(args.runs)
    fit = downstream.fit_sigmoid(loss, acc, chance, n_boot=args.bootstrap, seed=args.seed)
    fit["runs"] = str(args.runs)
    plots.downstream(fit, args.figure)
    atomic.write_json(args.out, fit)  # finite numbers only: the fit keeps finite points
    ci = fit["ci"] or {}
    print(f"acc(L) = {chance:g} + ({fit['top']:.4f} - {chance:g}) / (1 + exp({fit['k']:.4g} "
          f"(L - {fit['L_mid']:.4f}))) on {fit['n_points']} runs; L_mid 95% CI "
          f"{ci.get('L_mid', 'n/a')}")


def register(sub) -> None:
    """Add this module's verb to the `scalinglab` argument parser's subparsers."""
    p = sub.add_parser("downstream-fit", help="sigmoid from validation loss to downstream "
                       "accuracy (LLaMA 3); figure")
    p.add_argument("--runs", required=True, help="results/metrics/runs.csv")
    p.add_argument("--bootstrap", type=int, default=1000)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", required=True, help="fit JSON")
    p.add_argument("--figure", required=True)
    p.set_defaults(func=_downstream_fit)
