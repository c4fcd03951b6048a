"""`scalinglab schedule-law fit`: the Multi-Power Law per IsoFLOP series (scalinglab.phases.
schedule_law), its leave-one-out check of every branch, the LR table and the figure."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd

from scalinglab import atomic
from scalinglab.errors import UserError
from scalinglab.phases import schedule_law
from scalinglab.plots import schedule_law as schedule_law_plots


def _read_specs(paths: list[str]) -> list[dict]:
    specs = []
    for path in paths:
        try:
            specs.append(json.loads(Path(path).read_text()))
        except FileNotFoundError:
            raise UserError(f"{path}: spec not found") from None
        except json.JSONDecodeError as err:
            raise UserError(f"{path}: not valid JSON ({err})") from None
    return specs


def run(args) -> None:
    try:
        curves = pd.read_csv(args.curves)
    except FileNotFoundError:
        raise UserError(f"{args.curves}: curves table not found") from None
    missing = {"series_id", "kind", "label", "step", "loss", "diverged"} - set(curves.columns)
    if missing:
        raise UserError(f"{args.curves}: missing column(s) {', '.join(sorted(missing))}")
    specs = _read_specs(args.specs)
    fit = schedule_law.analyse(curves, specs)
    atomic.write_text(args.lr_out, schedule_law.lr_table(specs).to_csv(index=False))
    atomic.write_json(args.out, fit)
    schedule_law_plots.draw(schedule_law.prediction_panels(curves, specs, fit), args.figure)
    loo = fit["leave_one_out_final_rel_error"]
    print(f"wrote {args.out}: {len(fit['sizes'])} series, leave-one-out final-loss error "
          f"median {loo['median']}, max {loo['max']} over {loo['n']} branches")


def register(sub) -> None:
    group = sub.add_parser("schedule-law", help="the schedule law fitted on the study's curves")
    verbs = group.add_subparsers(dest="verb", required=True, metavar="VERB")
    p = verbs.add_parser("fit", help="fit the Multi-Power Law per IsoFLOP series and check "
                                     "each branch by leaving it out")
    p.add_argument("--curves", required=True, help="results/metrics/curves.csv")
    p.add_argument("--specs", nargs="+", required=True, help="the series' spec JSON files")
    p.add_argument("--out", required=True, help="fit JSON to write")
    p.add_argument("--lr-out", required=True, help="(run, step, lr) CSV to write")
    p.add_argument("--figure", required=True, help="PNG to write")
    p.set_defaults(func=run)
