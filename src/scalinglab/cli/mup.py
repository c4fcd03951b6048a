"""`scalinglab coord-check`, `scalinglab lr-transfer plan|fit` and `scalinglab depth-transfer
plan|fit`: the muP phases.

The work is done in `training.coord_check`, `phases.lr_transfer` / `phases.depth_transfer` and
`plots.mup`, imported inside the handlers: they import torch, pandas and matplotlib, which
`--help` should not wait for.
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


def _sweep_module(name: str):
    """The phase module of a transfer sweep, imported when its verb runs."""
    from importlib import import_module

    return import_module(f"scalinglab.phases.{name}")


def _sweep_plan(phase: str):
    def handler(args) -> None:
        table = _sweep_module(phase).plan(study_config(args.config))
        write_csv(args.out, table)
        if table.empty:
            print(f"{phase}: phase disabled")
        else:
            print(f"{phase}: {len(table)} runs of {int(table['D'].iloc[0]):,} tokens, "
                  f"{table['C_actual'].sum():.3g} FLOPs in all")

    return handler


def _sweep_fit(phase: str):
    def handler(args) -> None:
        from scalinglab.plots import mup as mup_plots

        module = _sweep_module(phase)
        axis = module.AXIS
        runs = module.read_runs(args.runs)
        fit = module.analyse(runs)
        write_json(args.out, fit)
        write_csv(args.runs_out, runs)
        mup_plots.lr_transfer_figure(module.mean_over_seeds(runs), fit, args.figure,
                                     axis=axis.column, values_key=axis.values_key,
                                     label=axis.label)
        for p, res in fit["parametrizations"].items():
            best = ", ".join(f"{v}: {lr:.3g}{' (edge)' if edge else ''}" for v, lr, edge in
                             zip(res[axis.values_key], res["best_lr"], res["at_grid_edge"],
                                 strict=True))
            print(f"{p}: eta* by {axis.label} {best}; slope {res['slope']:+.3f}; moves "
                  f"{res['spread_grid_steps']:.2f} grid steps (drift "
                  f"{res['drift_grid_steps']:+.2f}) over {res[axis.range_key]:g}x "
                  f"{axis.label}; transfers: {'yes' if res['transfers'] else 'no'}")

    return handler


def _add_sweep(sub, phase: str, what: str, along: str) -> None:
    """`<phase> plan` and `<phase> fit` of one transfer sweep (dashes for underscores)."""
    group = grammar.group(sub, phase.replace("_", "-"), what)
    p = grammar.verb(group, "plan", _sweep_plan(phase), "the phase's run table")
    grammar.add_config(p)
    p.add_argument("--out", required=True, help="CSV of the phase's runs to write")

    p = grammar.verb(group, "fit", _sweep_fit(phase),
                     f"best LR per {along} and its slope against {along}; the figure")
    p.add_argument("--runs", nargs="+", required=True, help="run.json of each decay branch")
    p.add_argument("--out", required=True, help="fit JSON")
    p.add_argument("--runs-out", required=True, help="CSV of the runs' final losses")
    p.add_argument("--figure", required=True, help="PNG to write")


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

    _add_sweep(sub, "lr_transfer", "the muP learning-rate transfer phase", "width")
    _add_sweep(sub, "depth_transfer", "the learning-rate transfer across depth, muP and "
               "CompleteP", "depth")
