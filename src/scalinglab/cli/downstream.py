"""`scalinglab downstream fit`: the sigmoid from validation loss to downstream accuracy.

The work is done in `downstream` and `plots.study`, imported inside the handler: they import
scipy and matplotlib, which `--help` should not wait for.
"""

from __future__ import annotations

from scalinglab.cli import grammar
from scalinglab.cli.io import read_csv, write_json
from scalinglab.errors import UserError


def read_points(path: str):
    """The runs table's (loss, accuracy) rows and the task's chance, one value for the table."""
    from scalinglab.training.metrics import trained_rows

    runs = read_csv(path, "runs table")
    for column in ("loss", "accuracy", "chance"):
        if column not in runs.columns:
            raise UserError(f"{path}: no column {column!r} (made before downstream existed? "
                            "remake it with isoflop collect)")
    runs = trained_rows(runs)  # a predicted budget's loss has no accuracy to pair it with
    chances = runs["chance"].dropna().unique()
    if len(chances) == 0:
        raise UserError(f"{path}: no run has a downstream accuracy (downstream.enabled: false "
                        "when the runs were trained?)")
    if len(chances) > 1:
        raise UserError(f"{path}: the runs were scored with different downstream.choices "
                        f"(chance {', '.join(f'{c:g}' for c in sorted(chances))})")
    return runs["loss"].to_numpy(float), runs["accuracy"].to_numpy(float), float(chances[0])


def _fit(args) -> None:
    from scalinglab.plots import study as plots
    from scalinglab.training import downstream

    loss, acc, chance = read_points(args.runs)
    fit = downstream.fit_sigmoid(loss, acc, chance, n_boot=args.bootstrap, seed=args.seed)
    fit["runs"] = str(args.runs)
    plots.downstream(fit, args.figure)
    write_json(args.out, fit)
    ci = fit["ci"] or {}
    print(f"acc(L) = {chance:g} + ({fit['top']:.4f} - {chance:g}) / (1 + exp({fit['k']:.4g} "
          f"(L - {fit['L_mid']:.4f}))) on {fit['n_points']} runs; L_mid 95% CI "
          f"{ci.get('L_mid', 'n/a')}")


def register(sub) -> None:
    """Add `downstream fit` to the `scalinglab` parser's subparsers."""
    downstream = grammar.group(sub, "downstream", "downstream accuracy beyond loss (LLaMA 3)")
    p = grammar.verb(downstream, "fit", _fit, "sigmoid from validation loss to downstream "
                     "accuracy (LLaMA 3); the figure")
    p.add_argument("--runs", required=True, help="runs.csv of the IsoFLOP phase "
                   "(results/metrics/runs.csv)")
    grammar.add_bootstrap(p)
    p.add_argument("--out", required=True, help="fit JSON")
    p.add_argument("--figure", required=True, help="PNG to write")
