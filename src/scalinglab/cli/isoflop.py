"""`scalinglab isoflop plan|collect|plot`: the IsoFLOP phase, the study's spine.

`plan` expands the study table and checks epochs, `collect` turns the finished runs into
runs.csv and curves.csv, `plot` draws the phase's figures. The phase's fit is the law library's
`fit isoflop` on runs.csv. The planner, the metrics and the plots are imported inside the
handlers: they import torch, pandas and matplotlib, which `--help` should not wait for.
"""

from __future__ import annotations

from scalinglab.cli import grammar
from scalinglab.cli.io import read_json, study_config, write_csv
from scalinglab.training.downstream import check_split

FIGURES = ("loss-curves", "isoflop", "compute-optimal")


def _plan(args) -> None:
    from scalinglab.phases.study import check_epochs, plan_isoflop

    cfg = study_config(args.config)
    meta = read_json(args.meta, "token metadata")
    table = check_epochs(cfg, plan_isoflop(cfg), int(meta["train_tokens"]))
    check_split(cfg.downstream, int(meta["val_tokens"]))  # before any branch trains
    write_csv(args.out, table)


def _collect(args) -> None:
    from scalinglab.training.metrics import collect

    runs, curves = collect(args.stable, args.branches)
    write_csv(args.runs_out, runs)
    write_csv(args.curves_out, curves)


def _plot(args) -> None:
    from scalinglab.plots import study as plots

    plots.draw(args.figure, args)


def register(sub) -> None:
    """Add `isoflop VERB` to the `scalinglab` parser's subparsers."""
    isoflop = grammar.group(sub, "isoflop", "the IsoFLOP phase: plan, collect and plot "
                            "(its fit: fit isoflop)")

    p = grammar.verb(isoflop, "plan", _plan, "expand the study table and check epochs")
    grammar.add_config(p)
    p.add_argument("--meta", required=True, help="meta.json of the token files (data encode)")
    p.add_argument("--out", required=True, help="CSV of the study's runs to write")

    p = grammar.verb(isoflop, "collect", _collect, "runs.csv and curves.csv from finished runs")
    grammar.add_collected_runs(p)

    p = grammar.verb(isoflop, "plot", _plot, "draw one of the phase's figures")
    p.add_argument("figure", choices=FIGURES,
                   help="loss-curves (needs --curves), isoflop (--runs, --fit) or "
                   "compute-optimal (--fit)")
    p.add_argument("--runs", help="runs.csv (isoflop collect)")
    p.add_argument("--curves", help="curves.csv (isoflop collect)")
    p.add_argument("--fit", help="isoflop.json (fit isoflop)")
    p.add_argument("--out", required=True, help="PNG to write")
