"""`scalinglab coord-check` and `scalinglab lr-transfer plan|fit`: the muP phases.

The work is done in `training.coord_check`, `lr_transfer` and `plots.mup`, imported inside the
handlers: they import torch, pandas and matplotlib, which `--help` should not wait for.
"""

from __future__ import annotations

from scalinglab.cli import grammar
from scalinglab.cli.io import study_config, write_csv, write_json


def _coord_check(args) -> None:
    from dataclasses import replace

    import pandas as pd
    import torch

    from scalinglab.plots import mup as mup_plots
    from scalinglab.training.coord_check import CoordCheckShape, coord_check, verdict

    if args.threads > 0:
        torch.set_num_threads(args.threads)
    cfg = study_config(args.config)
    pcfgs = {name: replace(cfg.parametrization, name=name) for name in ("sp", "mup")}
    shape = CoordCheckShape(n_layer=args.n_layer, n_head=args.n_head,
                            block_size=args.block_size, batch_size=args.batch_size)
    table = coord_check(args.widths, pcfgs, steps=args.steps, lr=args.lr, seeds=args.seeds,
                        shape=shape, data_dir=args.data_dir)
    write_csv(args.csv_out, table)
    mup_plots.coord_check_figure(table, args.figure_out)
    step = min(3, args.steps)
    result = verdict(table, step)
    if args.json_out:
        write_json(args.json_out, result)
    print(f"logit RMS at step {step}, widest / narrowest width: "
          + ", ".join(f"{k} {v['growth']:.2f}x ({'flat' if v['passes'] else 'grows'})"
                      for k, v in result["parametrizations"].items()))
    slopes = {k: v["slopes"] for k, v in result["parametrizations"].items()}
    print(f"slope of log RMS against log width at step {step}:\n"
          f"{pd.DataFrame(slopes).round(2).to_string()}")
    print(f"as expected (muP flat, SP growing): {result['as_expected']}")


def _lr_transfer_plan(args) -> None:
    from scalinglab.phases import lr_transfer

    cfg = study_config(args.config)
    table = lr_transfer.plan(cfg)
    write_csv(args.out, table)
    if table.empty:
        print("lr_transfer: phase disabled")
    else:
        print(f"lr_transfer: {len(table)} runs of {int(table['D'].iloc[0]):,} tokens, "
              f"{table['C_actual'].sum():.3g} FLOPs in all")


def _lr_transfer_fit(args) -> None:
    from scalinglab.phases import lr_transfer
    from scalinglab.plots import mup as mup_plots

    runs = lr_transfer.read_runs(args.runs)
    fit = lr_transfer.analyse(runs)
    points = lr_transfer.mean_over_seeds(runs)
    write_json(args.out, fit)
    write_csv(args.runs_out, runs)
    mup_plots.lr_transfer_figure(points, fit, args.figure)
    for p, res in fit["parametrizations"].items():
        best = ", ".join(f"d{w}: {lr:.3g}{' (edge)' if edge else ''}" for w, lr, edge
                         in zip(res["widths"], res["best_lr"], res["at_grid_edge"], strict=True))
        print(f"{p}: eta* {best}; slope {res['slope']:+.3f}; moves "
              f"{res['spread_grid_steps']:.2f} grid steps over {res['width_range']:g}x width; "
              f"transfers: {'yes' if res['transfers'] else 'no'}")


def register(sub) -> None:
    """Add `coord-check` and `lr-transfer VERB` to the `scalinglab` parser's subparsers."""
    p = grammar.verb(sub, "coord-check", _coord_check,
                     "muP coordinate check: activation RMS against width, SP and muP")
    grammar.add_config(p, required=False,
                       help="resolved study config (JSON); its parametrization section sets "
                       "base_width, init_std and the multipliers (default: built-in defaults)")
    p.add_argument("--data-dir", help="token folder (train.bin, meta.json); default: random "
                   "tokens")
    p.add_argument("--widths", type=int, nargs="+", default=[64, 128, 256, 512],
                   help="model widths (n_embd) to compare (default 64 128 256 512)")
    p.add_argument("--steps", type=int, default=4,
                   help="AdamW steps recorded after init (default 4)")
    p.add_argument("--lr", type=float, default=1e-2, help="learning rate (default 1e-2)")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1],
                   help="seeds averaged over (default 0 1)")
    grammar.add_shape(p, n_layer=2, n_head=4, block_size=32, batch_size=8)
    grammar.add_threads(p)
    p.add_argument("--csv-out", required=True, help="CSV of the RMS per site, width and step")
    p.add_argument("--figure-out", required=True, help="PNG to write")
    p.add_argument("--json-out", help="verdict JSON: logit growth, slopes, passes, as_expected")

    lr = grammar.group(sub, "lr-transfer", "the muP learning-rate transfer phase")
    p = grammar.verb(lr, "plan", _lr_transfer_plan, "the phase's run table")
    grammar.add_config(p)
    p.add_argument("--out", required=True, help="CSV of the phase's runs to write")

    p = grammar.verb(lr, "fit", _lr_transfer_fit,
                     "best LR per width and its slope against width; the figure")
    p.add_argument("--runs", nargs="+", required=True, help="run.json of each decay branch")
    p.add_argument("--out", required=True, help="fit JSON")
    p.add_argument("--runs-out", required=True, help="CSV of the runs' final losses")
    p.add_argument("--figure", required=True, help="PNG to write")
