"""`scalinglab coord-check | lr-transfer-plan | lr-transfer`: the muP verbs.

`cli.py` calls `register(sub)`; the work is done in `coord_check`, `lr_transfer` and `mup_plots`,
imported inside the handlers so that `--help` stays fast.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from scalinglab.errors import UserError


def _study_config(path: str | None):
    from scalinglab.config import StudyConfig, from_dict

    if path is None:
        return from_dict(StudyConfig, {})
    try:
        data = json.loads(Path(path).read_text())
    except FileNotFoundError:
        raise UserError(f"{path}: file not found") from None
    except json.JSONDecodeError as err:
        raise UserError(f"{path}: not valid JSON ({err})") from None
    return from_dict(StudyConfig, data)


def _coord_check(args) -> None:
    from dataclasses import replace

    import pandas as pd
    import torch

    from scalinglab import atomic
    from scalinglab.plots import mup as mup_plots
    from scalinglab.training.coord_check import CoordCheckShape, coord_check, verdict

    if args.threads > 0:
        torch.set_num_threads(args.threads)
    cfg = _study_config(args.config)
    pcfgs = {name: replace(cfg.parametrization, name=name) for name in ("sp", "mup")}
    shape = CoordCheckShape(n_layer=args.n_layer, n_head=args.n_head,
                            block_size=args.block_size, batch_size=args.batch_size)
    table = coord_check(args.widths, pcfgs, steps=args.steps, lr=args.lr, seeds=args.seeds,
                        shape=shape, data_dir=args.data_dir)
    atomic.write_text(args.csv_out, table.to_csv(index=False))
    mup_plots.coord_check_figure(table, args.figure_out)
    step = min(3, args.steps)
    result = verdict(table, step)
    if args.json_out:
        atomic.write_json(args.json_out, result)
    print(f"logit RMS at step {step}, widest / narrowest width: "
          + ", ".join(f"{k} {v['growth']:.2f}x ({'flat' if v['passes'] else 'grows'})"
                      for k, v in result["parametrizations"].items()))
    slopes = {k: v["slopes"] for k, v in result["parametrizations"].items()}
    print(f"slope of log RMS against log width at step {step}:\n"
          f"{pd.DataFrame(slopes).round(2).to_string()}")
    print(f"as expected (muP flat, SP growing): {result['as_expected']}")


def _lr_transfer_plan(args) -> None:
    from scalinglab import atomic
    from scalinglab.phases import lr_transfer

    cfg = _study_config(args.config)
    table = lr_transfer.plan(cfg)
    atomic.write_text(args.out, table.to_csv(index=False))
    if table.empty:
        print("lr_transfer: phase disabled")
    else:
        print(f"lr_transfer: {len(table)} runs of {int(table['D'].iloc[0]):,} tokens, "
              f"{table['C_actual'].sum():.3g} FLOPs in all")


def _lr_transfer(args) -> None:
    from scalinglab import atomic
    from scalinglab.phases import lr_transfer
    from scalinglab.plots import mup as mup_plots

    runs = lr_transfer.read_runs(args.runs)
    fit = lr_transfer.analyse(runs)
    points = lr_transfer.mean_over_seeds(runs)
    atomic.write_json(args.out, fit)
    atomic.write_text(args.runs_out, runs.to_csv(index=False))
    mup_plots.lr_transfer_figure(points, fit, args.figure)
    for p, res in fit["parametrizations"].items():
        best = ", ".join(f"d{w}: {lr:.3g}{' (edge)' if edge else ''}" for w, lr, edge
                         in zip(res["widths"], res["best_lr"], res["at_grid_edge"], strict=True))
        print(f"{p}: eta* {best}; slope {res['slope']:+.3f}; moves "
              f"{res['spread_grid_steps']:.2f} grid steps over {res['width_range']:g}x width; "
              f"transfers: {'yes' if res['transfers'] else 'no'}", file=sys.stdout)


def register(sub) -> None:
    """Add the muP verbs to the `scalinglab` argument parser's subparsers."""
    p = sub.add_parser("coord-check", help="muP coordinate check: activation RMS vs width")
    p.add_argument("--config", help="resolved study config (JSON); its parametrization section "
                   "sets base_width, init_std and the multipliers (default: built-in defaults)")
    p.add_argument("--data-dir", help="token folder (train.bin, meta.json); default: random "
                   "tokens")
    p.add_argument("--widths", type=int, nargs="+", default=[64, 128, 256, 512])
    p.add_argument("--steps", type=int, default=4, help="AdamW steps recorded after init")
    p.add_argument("--lr", type=float, default=1e-2)
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    p.add_argument("--n-layer", type=int, default=2)
    p.add_argument("--n-head", type=int, default=4)
    p.add_argument("--block-size", type=int, default=32)
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    p.add_argument("--csv-out", required=True)
    p.add_argument("--figure-out", required=True)
    p.add_argument("--json-out", help="verdict JSON: logit growth, slopes, passes, as_expected")
    p.set_defaults(func=_coord_check)

    p = sub.add_parser("lr-transfer-plan", help="the LR-transfer phase's run table")
    p.add_argument("--config", required=True, help="resolved study config (JSON)")
    p.add_argument("--out", required=True)
    p.set_defaults(func=_lr_transfer_plan)

    p = sub.add_parser("lr-transfer", help="best LR per width and its slope; the figure")
    p.add_argument("--runs", nargs="+", required=True, help="run.json of each decay branch")
    p.add_argument("--out", required=True, help="fit JSON")
    p.add_argument("--runs-out", required=True, help="CSV of the runs' final losses")
    p.add_argument("--figure", required=True)
    p.set_defaults(func=_lr_transfer)
