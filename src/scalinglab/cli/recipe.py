"""`scalinglab recipe fit|make` and `scalinglab validation spec|fit`: the recipe and its check.

`recipe fit` fits N_opt, D_opt and L_opt against C on the IsoFLOP runs, `recipe make` evaluates
the fits at a compute budget, `validation spec` writes the spec of the run that tests the
recipe and `validation fit` compares the prediction with that run. The work is done in
`phases.recipe` and `plots.hparams`, imported inside the handlers: they import torch, pandas,
scipy and matplotlib, which `--help` should not wait for.
"""

from __future__ import annotations

import json
from pathlib import Path

from scalinglab import atomic
from scalinglab.cli import grammar
from scalinglab.cli.io import read_csv, read_json, study_config, write_json
from scalinglab.config import to_dict
from scalinglab.errors import UserError

RECIPE_OUT = "results/recipe.json"
# the workflow target that makes each fit file `recipe make` reads, for its error messages
FIT_TARGETS = {
    "compute_optimal.json": "snakemake results/fits/compute_optimal.json",
    "hparams.json": "snakemake results/fits/hparams.json (with hparams.enabled: true)",
}


def _fit(args) -> None:
    from scalinglab.phases.recipe import fit_compute_optimal

    cfg = study_config(args.config)
    runs = read_csv(args.runs, "runs table")
    fit = fit_compute_optimal(runs, to_dict(cfg), n_boot=args.bootstrap, seed=args.seed)
    write_json(args.out, fit)
    print(f"N_opt = {fit['k_n']:.4g} C^{fit['a']:.4f}; D_opt = {fit['k_d']:.4g} C^{fit['b']:.4f}; "
          f"L_opt = {fit['k_L']:.4g} C^{fit['e_L']:.4f}; D/N at {fit['largest_budget']:.3g}: "
          f"{fit['tokens_per_param']['at_largest_budget']:.1f}")


def _make(args) -> None:
    from scalinglab.phases.recipe import make_recipe

    if not args.compute > 0:
        raise UserError(f"--compute {args.compute!r}: a FLOP budget must be positive")
    fits = Path(args.fits)
    needed = ["compute_optimal.json"] + (["hparams.json"] if args.hparams == "fits" else [])
    for name in needed:
        if not (fits / name).is_file():
            raise UserError(f"{fits / name}: not found; make it with `{FIT_TARGETS[name]}`")
    compute_fit = read_json(fits / "compute_optimal.json")
    hparams_fit = read_json(fits / "hparams.json") if args.hparams == "fits" else None
    # the accuracy step only when the study that made the compute fit has downstream on: a
    # downstream.json left in the folder by an earlier study must not leak into this recipe
    downstream = fits / "downstream.json"
    wanted = compute_fit.get("study", {}).get("downstream", {}).get("enabled", False)
    downstream_fit = read_json(downstream) if wanted and downstream.is_file() else None
    recipe = make_recipe(compute_fit, hparams_fit, args.compute, downstream_fit)
    write_json(args.out, recipe)
    shape = recipe["shape"]
    lo, hi = recipe["predicted_loss_ci"]
    print(f"C {recipe['compute']:.3g}: N {recipe['N']:.4g} -> l{shape['n_layer']}-"
          f"d{shape['n_embd']}-h{shape['n_head']} (N {shape['N']:,}), D {shape['tokens']:,} "
          f"tokens, lr {recipe['lr']:.3g}, batch {recipe['batch_tokens']} tokens; predicted "
          f"loss {recipe['predicted_loss']:.4f} [{lo:.4f}, {hi:.4f}]")
    print(_range_line(recipe))
    if "predicted_accuracy" in recipe:
        lo, hi = recipe["predicted_accuracy_ci"]
        print(f"predicted downstream accuracy {recipe['predicted_accuracy']:.4f} "
              f"[{lo:.4f}, {hi:.4f}] (chance {recipe['accuracy_chance']:g})")


def _range_line(prediction: dict) -> str:
    lo, hi = prediction["predicted_loss_range"]
    error = prediction["extrapolation_error"]
    said = (f"the backtest's bound on the law's form error, {100 * error['value']:.2f}% "
            f"({error['basis']})" if error.get("value") is not None
            else "no form error measured")
    return f"range for one run [{lo:.4f}, {hi:.4f}]: the interval, one run's noise and {said}"


def _validation_spec(args) -> None:
    from scalinglab.phases.recipe import validation_spec

    cfg = study_config(args.config)
    recipe = read_json(args.recipe, "recipe")
    meta = read_json(args.meta, "token metadata") if args.meta else {}
    spec = validation_spec(cfg, recipe, meta.get("train_tokens"))
    atomic.write_text(args.out, json.dumps(spec, sort_keys=True) + "\n")


def _validation_fit(args) -> None:
    from scalinglab.phases.recipe import validate
    from scalinglab.plots import hparams as hparams_plots

    recipe = read_json(args.recipe, "recipe")
    record = read_json(args.run, "run record")
    fit = read_json(args.fit, "compute-optimal fit")
    result = validate(recipe, record)
    hparams_plots.prediction_figure(fit, recipe, result, args.figure)
    write_json(args.out, result)
    lo, hi = result["predicted_loss_ci"]
    print(f"predicted {result['predicted_loss']:.4f} [{lo:.4f}, {hi:.4f}], actual "
          f"{result['actual_loss']:.4f}: relative error {100 * result['relative_error']:+.2f}%")
    if "inside_range" in result:
        said = {True: ": inside", False: ": OUTSIDE", None: ""}[result["inside_range"]]
        print(_range_line(result) + said)
    if "actual_accuracy" in result:
        print(f"accuracy: predicted {result['predicted_accuracy']:.4f}, actual "
              f"{result['actual_accuracy']:.4f} ({result['accuracy_error_points']:+.2f} points)")


def register(sub) -> None:
    """Add `recipe VERB` and `validation VERB` to the `scalinglab` parser's subparsers."""
    recipe = grammar.group(sub, "recipe", "the recipe: the compute-optimal fit and the run it "
                           "predicts at a compute budget")
    p = grammar.verb(recipe, "fit", _fit, "N_opt, D_opt and L_opt against C with joint "
                     "bootstrap replicates (results/fits/compute_optimal.json)")
    p.add_argument("--runs", required=True, help="runs.csv of the IsoFLOP phase "
                   "(results/metrics/runs.csv)")
    grammar.add_config(p)
    grammar.add_bootstrap(p)
    p.add_argument("--out", required=True, help="fit JSON")

    p = grammar.verb(recipe, "make", _make, "the recipe at a compute budget: N, D, shape, lr, "
                     "batch and the predicted loss")
    p.add_argument("--fits", required=True, help="folder with compute_optimal.json "
                   "(and hparams.json, downstream.json)")
    p.add_argument("--compute", type=float, required=True, help="FLOPs of the planned run")
    p.add_argument("--hparams", choices=("fits", "config"), default="fits",
                   help="lr and batch from hparams.json (fits) or from the study config the "
                   "IsoFLOP runs used (config)")
    p.add_argument("--out", default=RECIPE_OUT, help=f"JSON to write (default {RECIPE_OUT})")

    validation = grammar.group(sub, "validation", "the validation run that tests the recipe")
    p = grammar.verb(validation, "spec", _validation_spec,
                     "the validation run's spec from the recipe")
    grammar.add_config(p)
    p.add_argument("--recipe", required=True, help="recipe.json (recipe make)")
    p.add_argument("--meta", help="meta.json of the token files (epoch check)")
    p.add_argument("--out", required=True, help="spec JSON to write")

    p = grammar.verb(validation, "fit", _validation_fit,
                     "the recipe's prediction against the validation run; the figure")
    p.add_argument("--recipe", required=True, help="recipe.json (recipe make)")
    p.add_argument("--run", required=True, help="run.json of the validation run")
    p.add_argument("--fit", required=True, help="compute_optimal.json (recipe fit)")
    p.add_argument("--out", required=True, help="JSON of the comparison to write")
    p.add_argument("--figure", required=True, help="PNG to write")
