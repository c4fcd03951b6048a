"""`scalinglab isoflop plan|collect|fit|round-plan|plot`: the IsoFLOP phase, the
study's spine.

`plan` expands the study table and checks epochs, `collect` turns the finished runs into
runs.csv and curves.csv, `fit` writes the phase's analysis (isoflop.json: Method 2 windowed,
Method 3, the noise floor, the compute saved, the leave-largest-out check), `round-plan` plans a
refinement round from a fit and writes its series' specs (the workflow's checkpoint), `plot`
draws the phase's figures. The planner, the metrics and the plots are imported inside the
handlers: they import torch, pandas and matplotlib, which `--help` should not wait for.
"""

from __future__ import annotations

from scalinglab.cli import grammar
from scalinglab.cli.io import read_csv, read_json, read_table, study_config, write_csv, write_json
from scalinglab.errors import UserError
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
    from scalinglab.training.metrics import collect, with_predicted

    runs, curves = collect(args.stable, args.branches)
    for path in args.predicted:
        runs = with_predicted(runs, read_csv(path, "predicted runs"), where=str(path))
    write_csv(args.runs_out, runs)
    write_csv(args.curves_out, curves)


def _fit(args) -> None:
    from scalinglab.phases import isoflop_fit, isoflop_rounds

    cfg = study_config(args.config)
    runs = read_table(args.runs)
    plans = [isoflop_rounds.read_plan(path) for path in args.plans]
    write_json(args.out, isoflop_fit.analyse(cfg, runs, plans, n_boot=args.bootstrap,
                                             seed=args.seed))


def _round_plan(args) -> None:
    from scalinglab.phases import isoflop, isoflop_rounds

    if args.round < 1:
        raise UserError(f"--round {args.round}: refinement rounds count from 1")
    cfg = study_config(args.config)
    meta = read_json(args.meta, "token metadata")
    table = isoflop_rounds.plan_round(cfg, read_json(args.fit, "fit"), read_table(args.runs),
                                      args.round, int(meta["train_tokens"]))
    if args.specs_dir:
        isoflop.write_round_specs(cfg, table, args.specs_dir)
    write_csv(args.out, table)
    trained = table[table["reason"] == ""] if len(table) else table
    print(f"round {args.round}: {trained['series_id'].nunique() if len(trained) else 0} "
          f"series, {len(trained)} branches")


def _plot(args) -> None:
    from scalinglab.plots import study as plots

    plots.draw(args.figure, args)


def register(sub) -> None:
    """Add `isoflop VERB` to the `scalinglab` parser's subparsers."""
    isoflop = grammar.group(sub, "isoflop", "the IsoFLOP phase: plan, collect, fit, the "
                            "refinement rounds and the figures")

    p = grammar.verb(isoflop, "plan", _plan, "expand the study table and check epochs")
    grammar.add_config(p)
    p.add_argument("--meta", required=True, help="meta.json of the token files (data encode)")
    p.add_argument("--out", required=True, help="CSV of the study's runs to write")

    p = grammar.verb(isoflop, "collect", _collect, "runs.csv and curves.csv from finished runs")
    grammar.add_collected_runs(p)
    p.add_argument("--predicted", nargs="*", default=[],
                   help="predicted_runs.csv (schedule-law predict): rows of the budgets that "
                   "train nothing, added to runs.csv with loss_source predicted")

    p = grammar.verb(isoflop, "fit", _fit, "the phase's analysis (isoflop.json): Method 2 on a "
                     "window per budget, Method 3, noise floor, compute saved, leave-largest-out")
    p.add_argument("--runs", required=True, help="runs.csv (isoflop collect)")
    p.add_argument("--plans", nargs="+", required=True,
                   help="plan.csv of the first grid (isoflop plan) and of each refinement round "
                   "(isoflop round-plan): the FLOPs trained")
    grammar.add_config(p)
    p.add_argument("--out", required=True, help="isoflop.json to write")
    grammar.add_bootstrap(p)

    p = grammar.verb(isoflop, "round-plan", _round_plan,
                     "plan a refinement round from the fit of the rounds before it")
    grammar.add_config(p)
    p.add_argument("--fit", required=True, help="isoflop.json of the rounds before (isoflop fit)")
    p.add_argument("--runs", required=True, help="runs.csv of the rounds before")
    p.add_argument("--meta", required=True, help="meta.json of the token files (epoch check)")
    p.add_argument("--round", type=int, required=True, help="the round to plan (1, 2, ...)")
    p.add_argument("--out", required=True, help="the round's plan.csv to write")
    p.add_argument("--specs-dir", help="also write the spec of each series the round trains "
                   "here, as SERIES.json")

    p = grammar.verb(isoflop, "plot", _plot, "draw one of the phase's figures")
    p.add_argument("figure", choices=FIGURES,
                   help="loss-curves (needs --curves), isoflop (--runs, --fit) or "
                   "compute-optimal (--fit)")
    p.add_argument("--runs", help="runs.csv (isoflop collect)")
    p.add_argument("--curves", help="curves.csv (isoflop collect)")
    p.add_argument("--fit", help="isoflop.json (isoflop fit)")
    p.add_argument("--out", required=True, help="PNG to write")
    p.add_argument("--words-out", help="isoflop only: also write each budget's N_opt and its "
                   "interval in words (reStructuredText, the report caption's)")
