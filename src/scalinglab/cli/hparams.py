"""The verbs of the hyperparameter, schedule and recipe phases.

`hparams-plan`, `hparams-fit`, `critical-batch-fit`, `wsd-vs-cosine-fit`, `fit-compute-optimal`,
`plan` (the recipe), `validation-spec` and `validation-fit`. `cli.py` calls `register(sub)`; the
work is done in `hparams`, `critical_batch`, `wsd_vs_cosine`, `recipe` and `hparams_plots`,
imported inside the handlers so that `--help` stays fast.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

from scalinglab.errors import UserError

RECIPE_OUT = "results/recipe.json"
# the workflow target that makes each fit file `plan` reads, for its error messages
FIT_TARGETS = {
    "compute_optimal.json": "snakemake results/fits/compute_optimal.json",
    "hparams.json": "snakemake results/fits/hparams.json (with hparams.enabled: true)",
}


def _read_json(path, what: str = "file") -> dict:
    try:
        return json.loads(Path(path).read_text())
    except FileNotFoundError:
        raise UserError(f"{path}: {what} not found") from None
    except json.JSONDecodeError as err:
        raise UserError(f"{path}: not valid JSON ({err})") from None


def _study_config(path: str):
    from scalinglab.config import StudyConfig, from_dict

    return from_dict(StudyConfig, _read_json(path, "config"))


def _finite_or_none(obj):
    """NaN and inf become null: strict JSON has no NaN."""
    if isinstance(obj, dict):
        return {k: _finite_or_none(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_finite_or_none(v) for v in obj]
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if hasattr(obj, "item") and not isinstance(obj, str):  # numpy scalars
        return _finite_or_none(obj.item())
    return obj


def _write_json(path, data: dict) -> None:
    from scalinglab import atomic

    atomic.write_json(path, _finite_or_none(data))
    print(f"wrote {path}")


def phase_tables(cfg) -> dict:
    """The run table of every phase of this module that is switched on."""
    from scalinglab.phases import critical_batch, hparams, wsd_vs_cosine

    tables = {"hparams": hparams.plan(cfg), "critical_batch": critical_batch.plan(cfg),
              "wsd_vs_cosine": wsd_vs_cosine.plan(cfg)}
    return {k: v for k, v in tables.items() if not v.empty}


def check(cfg) -> list[str]:
    """Lines describing the phases' plans; a bad key raises a UserError naming it."""
    from scalinglab.phases import recipe
    from scalinglab.phases import runs as phase_runs

    lines = []
    for phase, table in phase_tables(cfg).items():
        flops = phase_runs.phase_flops(table)
        trained = table[table["reason"] == ""]
        runs = (f"{len(trained)} constant-LR runs" if phase == "critical_batch" else
                f"{trained['series_id'].nunique()} stable runs, {len(trained)} decay branches")
        lines.append(f"{phase}: {runs}, {flops['total']:.3g} FLOPs")
    if cfg.validation.enabled:
        lines.append(f"validation: one run at {recipe.validation_compute(cfg):.3g} FLOPs "
                     f"({cfg.validation.compute_factor:g}x the largest fitted budget)")
    return lines


def _hparams_plan(args) -> None:
    import pandas as pd

    from scalinglab import atomic

    cfg = _study_config(args.config)
    lines = check(cfg)
    tables = phase_tables(cfg)
    table = pd.concat(tables.values(), ignore_index=True) if tables else pd.DataFrame()
    atomic.write_text(args.out, table.to_csv(index=False))
    print("\n".join(lines) or "no hyperparameter phase is switched on")


def _hparams_fit(args) -> None:
    from scalinglab import atomic
    from scalinglab.phases import hparams
    from scalinglab.plots import hparams as hparams_plots

    if args.near_optimal < 0:
        raise UserError(f"--near-optimal {args.near_optimal}: must be >= 0")
    runs = hparams.read_runs(args.runs)
    fit = hparams.analyse(runs, args.near_optimal, n_boot=args.bootstrap, seed=args.seed)
    atomic.write_text(args.runs_out, runs.to_csv(index=False))
    target = args.target_compute or 4 * max(b["C"] for b in fit["budgets"])
    fit["target_compute"] = target
    fit["at_target"] = {name: hparams.law_at(law, target) for name, law in fit["laws"].items()
                        if name.endswith("_C")}
    hparams_plots.hparams_figure(fit, args.figure, target)
    _write_json(args.out, fit)
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
    _write_json(args.out, fit)
    law = fit["law"]
    if "error" in law:
        print(f"no fit: {law['error']}")
    else:
        print(f"B_opt = {law['k']:.4g} / L^{law['gamma']:.3f}")


def _wsd_vs_cosine_fit(args) -> None:
    from scalinglab.phases import wsd_vs_cosine
    from scalinglab.plots import hparams as hparams_plots

    cfg = _study_config(args.config)
    table = wsd_vs_cosine.plan(cfg)
    if table.empty:
        raise UserError("wsd_vs_cosine.enabled: the phase is off in this config")
    finals = wsd_vs_cosine.read_finals(table, args.runs)
    fit = wsd_vs_cosine.analyse(finals)
    fit["cosine_final_lr_ratio"] = cfg.wsd_vs_cosine.cosine_final_lr_ratio
    curves = _curves(args.runs)
    hparams_plots.wsd_vs_cosine_figure(finals, curves, fit, args.figure)
    _write_json(args.out, fit)
    print(f"compute_saving_ratio {fit['compute_saving_ratio']:.2f}; mean gap "
          f"{100 * fit['mean_gap_rel']:+.2f}%, largest |gap| {100 * fit['max_abs_gap_rel']:.2f}%")


def _curves(run_jsons):
    import pandas as pd

    from scalinglab.training.metrics import collect

    stable = [p for p in run_jsons if Path(p).parent.name == "stable"]
    branches = [p for p in run_jsons if Path(p).parent.name != "stable"]
    return collect(stable, branches)[1] if branches else pd.DataFrame()


def _fit_compute_optimal(args) -> None:
    import pandas as pd

    from scalinglab.config import to_dict
    from scalinglab.phases.recipe import fit_compute_optimal

    cfg = _study_config(args.config)
    try:
        runs = pd.read_csv(args.runs)
    except FileNotFoundError:
        raise UserError(f"{args.runs}: runs table not found") from None
    fit = fit_compute_optimal(runs, to_dict(cfg), n_boot=args.bootstrap, seed=args.seed)
    _write_json(args.out, fit)
    print(f"N_opt = {fit['k_n']:.4g} C^{fit['a']:.4f}; D_opt = {fit['k_d']:.4g} C^{fit['b']:.4f}; "
          f"L_opt = {fit['k_L']:.4g} C^{fit['e_L']:.4f}; D/N at {fit['largest_budget']:.3g}: "
          f"{fit['tokens_per_param']['at_largest_budget']:.1f}")


def _plan(args) -> None:
    from scalinglab.phases.recipe import make_recipe

    if not args.compute > 0:
        raise UserError(f"--compute {args.compute!r}: a FLOP budget must be positive")
    fits = Path(args.fits)
    needed = ["compute_optimal.json"] + (["hparams.json"] if args.hparams == "fits" else [])
    for name in needed:
        if not (fits / name).is_file():
            raise UserError(f"{fits / name}: not found; make it with `{FIT_TARGETS[name]}`")
    compute_fit = _read_json(fits / "compute_optimal.json")
    hparams_fit = _read_json(fits / "hparams.json") if args.hparams == "fits" else None
    # the accuracy step only when the study that made the compute fit has downstream on: a
    # downstream.json left in the folder by an earlier study must not leak into this recipe
    downstream = fits / "downstream.json"
    wanted = compute_fit.get("study", {}).get("downstream", {}).get("enabled", False)
    downstream_fit = _read_json(downstream) if wanted and downstream.is_file() else None
    recipe = make_recipe(compute_fit, hparams_fit, args.compute, downstream_fit)
    _write_json(args.out, recipe)
    shape = recipe["shape"]
    lo, hi = recipe["predicted_loss_ci"]
    print(f"C {recipe['compute']:.3g}: N {recipe['N']:.4g} -> l{shape['n_layer']}-"
          f"d{shape['n_embd']}-h{shape['n_head']} (N {shape['N']:,}), D {shape['tokens']:,} "
          f"tokens, lr {recipe['lr']:.3g}, batch {recipe['batch_tokens']} tokens; predicted "
          f"loss {recipe['predicted_loss']:.4f} [{lo:.4f}, {hi:.4f}]")
    if "predicted_accuracy" in recipe:
        lo, hi = recipe["predicted_accuracy_ci"]
        print(f"predicted downstream accuracy {recipe['predicted_accuracy']:.4f} "
              f"[{lo:.4f}, {hi:.4f}] (chance {recipe['accuracy_chance']:g})")


def _validation_spec(args) -> None:
    from scalinglab import atomic
    from scalinglab.phases.recipe import validation_spec

    cfg = _study_config(args.config)
    recipe = _read_json(args.recipe, "recipe")
    meta = _read_json(args.meta, "token metadata") if args.meta else {}
    spec = validation_spec(cfg, recipe, meta.get("train_tokens"))
    atomic.write_text(args.out, json.dumps(spec, sort_keys=True) + "\n")


def _validation_fit(args) -> None:
    from scalinglab.phases.recipe import validate
    from scalinglab.plots import hparams as hparams_plots

    recipe = _read_json(args.recipe, "recipe")
    record = _read_json(args.run, "run record")
    fit = _read_json(args.fit, "compute-optimal fit")
    result = validate(recipe, record)
    hparams_plots.prediction_figure(fit, recipe, result, args.figure)
    _write_json(args.out, result)
    lo, hi = result["predicted_loss_ci"]
    print(f"predicted {result['predicted_loss']:.4f} [{lo:.4f}, {hi:.4f}], actual "
          f"{result['actual_loss']:.4f}: relative error {100 * result['relative_error']:+.2f}%")
    if "actual_accuracy" in result:
        print(f"accuracy: predicted {result['predicted_accuracy']:.4f}, actual "
              f"{result['actual_accuracy']:.4f} ({result['accuracy_error_points']:+.2f} points)")


def register(sub) -> None:
    """Add this module's verbs to the `scalinglab` argument parser's subparsers."""
    p = sub.add_parser("hparams-plan", help="run tables of the LR x batch, critical-batch and "
                       "WSD-vs-cosine phases")
    p.add_argument("--config", required=True, help="resolved study config (JSON)")
    p.add_argument("--out", required=True, help="CSV of every run of the phases switched on")
    p.set_defaults(func=_hparams_plan)

    p = sub.add_parser("hparams-fit", help="eta_opt and B_opt against C and N (DeepSeek); figure")
    p.add_argument("--runs", nargs="+", required=True, help="run.json of each decay branch")
    p.add_argument("--near-optimal", type=float, default=0.01,
                   help="fraction of the budget's best loss (default 0.01)")
    p.add_argument("--target-compute", type=float,
                   help="extrapolate the laws to this C (default 4x the largest budget)")
    p.add_argument("--bootstrap", type=int, default=1000)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", required=True, help="fit JSON")
    p.add_argument("--runs-out", required=True, help="CSV of the runs' final losses")
    p.add_argument("--figure", required=True)
    p.set_defaults(func=_hparams_fit)

    p = sub.add_parser("critical-batch-fit", help="B_opt against loss (MiniCPM); figure")
    p.add_argument("--runs", nargs="+", required=True, help="run.json of each stable run")
    p.add_argument("--losses", type=float, nargs="*", default=[],
                   help="target losses (default: chosen from the curves)")
    p.add_argument("--n-losses", type=int, default=6)
    p.add_argument("--bootstrap", type=int, default=1000)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", required=True)
    p.add_argument("--figure", required=True)
    p.set_defaults(func=_critical_batch_fit)

    p = sub.add_parser("wsd-vs-cosine-fit", help="final-loss gaps and compute_saving_ratio")
    p.add_argument("--config", required=True, help="resolved study config (JSON)")
    p.add_argument("--runs", nargs="+", required=True,
                   help="run.json of every WSD stable run, WSD branch and cosine run")
    p.add_argument("--out", required=True)
    p.add_argument("--figure", required=True)
    p.set_defaults(func=_wsd_vs_cosine_fit)

    p = sub.add_parser("fit-compute-optimal",
                       help="N_opt, D_opt and L_opt against C with joint bootstrap replicates")
    p.add_argument("--runs", required=True, help="results/metrics/runs.csv")
    p.add_argument("--config", required=True, help="resolved study config (JSON)")
    p.add_argument("--bootstrap", type=int, default=1000)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", required=True)
    p.set_defaults(func=_fit_compute_optimal)

    p = sub.add_parser("plan", help="the recipe at a compute budget: N, D, shape, lr, batch and "
                       "the predicted loss")
    p.add_argument("--fits", required=True, help="folder with compute_optimal.json "
                   "(and hparams.json)")
    p.add_argument("--compute", type=float, required=True, help="FLOPs of the planned run")
    p.add_argument("--hparams", choices=("fits", "config"), default="fits",
                   help="lr and batch from hparams.json (fits) or from the study config the "
                   "IsoFLOP runs used (config)")
    p.add_argument("--out", default=RECIPE_OUT, help=f"default {RECIPE_OUT}")
    p.set_defaults(func=_plan)

    p = sub.add_parser("validation-spec", help="the validation run's spec from the recipe")
    p.add_argument("--config", required=True, help="resolved study config (JSON)")
    p.add_argument("--recipe", required=True)
    p.add_argument("--meta", help="meta.json of the token files (epoch check)")
    p.add_argument("--out", required=True)
    p.set_defaults(func=_validation_spec)

    p = sub.add_parser("validation-fit", help="the prediction against the validation run")
    p.add_argument("--recipe", required=True)
    p.add_argument("--run", required=True, help="run.json of the validation run")
    p.add_argument("--fit", required=True, help="compute_optimal.json")
    p.add_argument("--out", required=True)
    p.add_argument("--figure", required=True)
    p.set_defaults(func=_validation_fit)
