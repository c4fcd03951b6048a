"""`scalinglab schedule-law fit`: the Multi-Power Law per IsoFLOP series (scalinglab.phases.
schedule_law), its leave-one-out check of every branch, the LR table and the figure.

The law library's own verb, on any table of curves, is `fit schedule`. The phase and its plot
are imported inside the handler: they import pandas, scipy and matplotlib, which `--help`
should not wait for.
"""

from __future__ import annotations

from scalinglab.cli import grammar
from scalinglab.cli.io import read_csv, read_json, study_config, write_csv, write_json
from scalinglab.errors import UserError


def _fit(args) -> None:
    from scalinglab.phases import schedule_law
    from scalinglab.plots import schedule_law as schedule_law_plots

    curves = read_csv(args.curves, "curves table")
    missing = {"series_id", "kind", "label", "step", "loss", "diverged"} - set(curves.columns)
    if missing:
        raise UserError(f"{args.curves}: missing column(s) {', '.join(sorted(missing))}")
    specs = [read_json(path, "spec") for path in args.specs]
    fit = schedule_law.analyse(curves, specs)
    write_csv(args.lr_out, schedule_law.lr_table(specs))
    write_json(args.out, fit)
    schedule_law_plots.draw(schedule_law.prediction_panels(curves, specs, fit), args.figure)
    loo = fit["leave_one_out_final_rel_error"]
    print(f"{len(fit['sizes'])} series, leave-one-out final-loss error median {loo['median']}, "
          f"max {loo['max']} over {loo['n']} branches")


def _predict(args) -> None:
    from scalinglab.phases import schedule_law, study

    cfg = study_config(args.config)
    fit = read_json(args.fit, "schedule-law fit")
    specs = [read_json(path, "spec") for path in args.specs]
    table = study.plan_predicted(cfg)
    runs = schedule_law.predict_runs(fit, specs, table)
    write_csv(args.out, runs)
    left = table[table["reason"] != ""]
    print(f"{len(runs)} predicted branches on {runs['C'].nunique()} budgets; "
          f"{len(left)} (size, budget) pairs left out")
    for row in left.itertuples():
        print(f"  left out {row.run_id}: {row.reason}")
    for sid, why in schedule_law.unpredictable_series(fit, specs, table).items():
        print(f"  left out series {sid}: {why}")


def register(sub) -> None:
    """Add `schedule-law fit` to the `scalinglab` parser's subparsers."""
    group = grammar.group(sub, "schedule-law", "the schedule law fitted on the study's curves")
    p = grammar.verb(group, "fit", _fit, "fit the Multi-Power Law per IsoFLOP series and check "
                     "each branch by leaving it out; the LR table and the figure")
    p.add_argument("--curves", required=True,
                   help="curves.csv of the IsoFLOP phase (results/metrics/curves.csv)")
    p.add_argument("--specs", nargs="+", required=True, help="the series' spec JSON files")
    p.add_argument("--out", required=True, help="fit JSON to write")
    p.add_argument("--lr-out", required=True, help="(run, step, lr) CSV to write")
    p.add_argument("--figure", required=True, help="PNG to write")

    p = grammar.verb(group, "predict", _predict, "the final losses of the budgets that train "
                     "nothing (isoflop.predicted_budgets), from each series' fitted law")
    p.add_argument("--fit", required=True, help="schedule_law.json (schedule-law fit)")
    p.add_argument("--specs", nargs="+", required=True, help="the series' spec JSON files")
    grammar.add_config(p)
    p.add_argument("--out", required=True, help="predicted_runs.csv to write")
