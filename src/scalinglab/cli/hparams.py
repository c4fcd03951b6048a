"""`scalinglab hparams plan|fit`, `critical-batch fit`, `wsd-vs-cosine fit`: the sweep phases.

The three phases share one plan (`hparams plan`, results/hparams/plan.csv) and each has its fit.
The work is done in `hparams`, `critical_batch`, `wsd_vs_cosine` and `plots.hparams`, imported
inside the handlers: they import pandas, scipy and matplotlib, which `--help` should not wait
for.
"""

from __future__ import annotations

from pathlib import Path

from scalinglab.cli import grammar
from scalinglab.cli.io import study_config, write_csv, write_json
from scalinglab.errors import UserError


def _hparams_plan(args) -> None:
    """The sweeps' shared plan; its lines are those `check-config` prints for them."""
    import pandas as pd

    from scalinglab.phases.recipe import Validation
    from scalinglab.phases.sweeps import CRITICAL_BATCH, HPARAMS, WSD_VS_COSINE

    cfg = study_config(args.config)
    sweeps = (HPARAMS, CRITICAL_BATCH, WSD_VS_COSINE)
    tables = [table for table in (sweep.plan(cfg) for sweep in sweeps) if not table.empty]
    lines = [line for phase in (*sweeps, Validation()) for line in phase.summary(cfg)]
    write_csv(args.out, pd.concat(tables, ignore_index=True) if tables else pd.DataFrame())
    print("\n".join(lines) or "no hyperparameter phase is switched on")


def _hparams_fit(args) -> None:
    from scalinglab.phases import hparams
    from scalinglab.plots import hparams as hparams_plots

    if args.near_optimal < 0:
        raise UserError(f"--near-optimal {args.near_optimal}: must be >= 0")
    runs = hparams.read_runs(args.runs)
    fit = hparams.analyse(runs, args.near_optimal, n_boot=args.bootstrap, seed=args.seed)
    write_csv(args.runs_out, runs)
    target = args.target_compute or 4 * max(b["C"] for b in fit["budgets"])
    fit["target_compute"] = target
    fit["at_target"] = {name: hparams.law_at(law, target) for name, law in fit["laws"].items()
                        if name.endswith("_C")}
    hparams_plots.hparams_figure(fit, args.figure, target)
    write_json(args.out, fit)
    for name, law in fit["laws"].items():
        if "error" in law:
            print(f"{name}: no fit ({law['error']})")
        else:
            print(f"{name}: coef {law['coef']:.4g}, exponent {law['exponent']:+.4f} "
                  f"(95% CI {law['ci']['exponent'] if law['ci'] else 'n/a'})")


def _critical_batch_fit(args) -> None:
    from scalinglab.phases import critical_batch
    from scalinglab.plots import hparams as hparams_plots

    curves = critical_batch.read_curves(args.runs)
    steps = int(curves.groupby("run_id")["step"].max().min())
    fit = critical_batch.analyse(curves, args.losses, steps_budget=steps,
                                 n_losses=args.n_losses, n_boot=args.bootstrap, seed=args.seed)
    hparams_plots.critical_batch_figure(curves, fit, args.figure)
    write_json(args.out, fit)
    law = fit["law"]
    if "error" in law:
        print(f"no fit: {law['error']}")
    else:
        print(f"B_opt = {law['k']:.4g} / L^{law['gamma']:.3f}")


def _wsd_vs_cosine_fit(args) -> None:
    from scalinglab.phases import wsd_vs_cosine, wsd_vs_cosine_tuned
    from scalinglab.plots import hparams as hparams_plots

    cfg = study_config(args.config)
    table = wsd_vs_cosine.plan(cfg)
    if table.empty:
        raise UserError("wsd_vs_cosine.enabled: the phase is off in this config")
    finals = wsd_vs_cosine.read_finals(table, args.runs)
    fit = wsd_vs_cosine_tuned.analyse(finals)
    fit["cosine_final_lr_ratio"] = cfg.wsd_vs_cosine.cosine_final_lr_ratio
    curves = _curves(args.runs)
    finals["grid_best"] = wsd_vs_cosine.grid_best(finals)
    hparams_plots.wsd_vs_cosine_figure(finals, curves, fit, args.figure)
    write_json(args.out, fit)
    print(f"compute_saving_ratio {fit['compute_saving_ratio']:.2f}; mean gap "
          f"{100 * fit['mean_gap_rel']:+.2f}%, largest |gap| {100 * fit['max_abs_gap_rel']:.2f}%")
    for pair in fit.get("tuned_per_budget", ()):
        print(f"tuned {pair['size']} C={pair['C']:.3g}: lr wsd {pair['best_lr_wsd']:.3g}, "
              f"cosine {pair['best_lr_cosine']:.3g}; gap {100 * pair['gap']:+.2f}%")


def _curves(run_jsons):
    import pandas as pd

    from scalinglab.training.metrics import collect

    stable = [p for p in run_jsons if Path(p).parent.name == "stable"]
    branches = [p for p in run_jsons if Path(p).parent.name != "stable"]
    return collect(stable, branches)[1] if branches else pd.DataFrame()


def register(sub) -> None:
    """Add the sweep phases' groups to the `scalinglab` parser's subparsers."""
    hp = grammar.group(sub, "hparams", "the LR x batch sweep phase (DeepSeek LLM), and the "
                       "plan of every sweep phase")
    p = grammar.verb(hp, "plan", _hparams_plan, "run table of the LR x batch, critical-batch "
                     "and WSD-vs-cosine phases that are switched on")
    grammar.add_config(p)
    p.add_argument("--out", required=True, help="CSV of every run of the phases switched on")

    p = grammar.verb(hp, "fit", _hparams_fit,
                     "eta_opt and B_opt against C and N (DeepSeek LLM); the figure")
    p.add_argument("--runs", nargs="+", required=True, help="run.json of each decay branch")
    p.add_argument("--near-optimal", type=float, default=0.01,
                   help="a run within this fraction of its budget's best loss is near-optimal "
                   "(default 0.01)")
    p.add_argument("--target-compute", type=float,
                   help="extrapolate the laws to this C (default 4x the largest budget)")
    grammar.add_bootstrap(p)
    p.add_argument("--out", required=True, help="fit JSON")
    p.add_argument("--runs-out", required=True, help="CSV of the runs' final losses")
    p.add_argument("--figure", required=True, help="PNG to write")

    cb = grammar.group(sub, "critical-batch", "the critical-batch phase (MiniCPM)")
    p = grammar.verb(cb, "fit", _critical_batch_fit, "B_opt against loss (MiniCPM); the figure")
    p.add_argument("--runs", nargs="+", required=True, help="run.json of each stable run")
    p.add_argument("--losses", type=float, nargs="*", default=[],
                   help="target losses (default: --n-losses chosen from the curves)")
    p.add_argument("--n-losses", type=int, default=6,
                   help="how many target losses to choose when --losses is empty (default 6)")
    grammar.add_bootstrap(p)
    p.add_argument("--out", required=True, help="fit JSON")
    p.add_argument("--figure", required=True, help="PNG to write")

    wc = grammar.group(sub, "wsd-vs-cosine", "the WSD-against-cosine schedule phase")
    p = grammar.verb(wc, "fit", _wsd_vs_cosine_fit,
                     "final-loss gaps and compute_saving_ratio; the figure")
    grammar.add_config(p)
    p.add_argument("--runs", nargs="+", required=True,
                   help="run.json of every WSD stable run, WSD branch and cosine run")
    p.add_argument("--out", required=True, help="fit JSON")
    p.add_argument("--figure", required=True, help="PNG to write")
