"""The recipe: from the fits to one concrete run at a new compute budget, and its check.

Step 5 of the seed recipe (predict the final run, then check the prediction):

1. `fit_compute_optimal` fits, on the IsoFLOP runs (`results/metrics/runs.csv`), the IsoFLOP
   phase's Method 2 (fitting.isoflop_window: a parabola on a window per budget; N_opt = k_n C^a,
   D_opt = k_d C^b) and the loss of the compute-optimal model L_opt(C) = k_L C^e_L through the
   per-budget vertices (Kaplan et al., arXiv:2001.08361, Sec. 6: L(C_min) is a power law in C).
   The bootstrap redraws every budget's window and refits all three laws together, so that any
   quantity at any compute gets an interval from the same replicates; they are stored in the
   JSON.
2. `make_recipe` evaluates the laws at the target compute C: N, D, tokens per parameter, the
   predicted loss with its 95% interval, a concrete (n_layer, n_embd, n_head) near N, and the
   learning rate and batch (from `results/fits/hparams.json` when the LR x batch phase ran, else
   the study's own `training.lr` / `batch_size`, under which the IsoFLOP runs were trained).
3. The validation run trains that shape for C FLOPs (its tokens are C / its FLOPs per token)
   under the study's schedule; `validate` compares its final loss with the prediction.
With `downstream.enabled`, the recipe carries LLaMA 3's second step too (arXiv:2407.21783,
Sec. 3.2.1): the predicted loss through the sigmoid of `results/fits/downstream.json`
(training.downstream) gives a predicted accuracy, which `validate` checks against the run's.

The shape: heads of the width d_head of the ladder's largest size, and among the shapes whose N is
within 10% of the target, the one whose width/depth ratio is closest to that size's (the closest
N when none is within 10%).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from scalinglab.config import SizeConfig, StudyConfig, from_dict
from scalinglab.errors import UserError
from scalinglab.model.flops import model_counts
from scalinglab.phases import extrapolation, isoflop_fit, study
from scalinglab.phases import runs as phase_runs
from scalinglab.phases.base import STUDY_SPEC, TOKENS_DIR, Phase, Step, TrainingGroup
from scalinglab.training import downstream
from scalinglab.training.metrics import trained_rows

PHASE = "validation"
SERIES_PREFIX = "val"
N_TOLERANCE = 0.10

# Tokens per parameter of published compute-optimal or production recipes (issue 6, item 6).
PUBLISHED_TOKENS_PER_PARAM = (
    {"name": "Chinchilla", "tokens_per_param": 20.0,
     "source": "Hoffmann et al., arXiv:2203.15556, Table 3 (70B on 1.4T tokens)"},
    {"name": "LLaMA 3", "tokens_per_param": 39.0,
     "source": "Llama Team, arXiv:2407.21783, Sec. 3.2.1 (405B on 15.6T tokens, 3.8e25 FLOPs)"},
    {"name": "MiniCPM", "tokens_per_param": 192.0,
     "source": "Hu et al., arXiv:2404.06395, Sec. 4.5"},
)
SAMPLE_NAMES = ("k_n", "a", "k_d", "b", "k_L", "e_L")


# -- 1. the compute-optimal fit with its loss law ------------------------------------------------
def fit_compute_optimal(runs: pd.DataFrame, study: dict, *, n_boot: int = 1000,
                        seed: int = 0) -> dict:
    """The content of `results/fits/compute_optimal.json` from the IsoFLOP runs table: the
    IsoFLOP phase's Method 2 (a window per budget, the seed repeats averaged and weighed by
    the noise floor) with its loss law, and the bootstrap replicates of all six coefficients."""
    for col in ("C", "N", "D", "loss"):
        if col not in runs.columns:
            raise UserError(f"runs table: no column {col!r}")
    cfg = _study_config(study)
    runs = trained_rows(runs)  # a recipe stands on trained runs only
    runs = runs[np.isfinite(runs["loss"].astype(float))]
    points = isoflop_fit.fit_points(runs)
    noise = isoflop_fit.noise_floor(runs)
    window = isoflop_fit.window_of_config(cfg)
    point_noise = isoflop_fit.point_noise(points, noise["sigma"])
    fit = isoflop_fit.window_fit(points, point_noise, window, n_boot, seed)
    point = (fit.k_n, fit.a, fit.k_d, fit.b, fit.k_L, fit.e_L)
    samples = (np.column_stack([fit.boot.samples[:, fit.boot.names.index(k)]
                                for k in SAMPLE_NAMES]) if fit.boot is not None
               else np.empty((0, len(SAMPLE_NAMES))))
    samples = samples[np.all(np.isfinite(samples), axis=1)]
    ci = {name: [float(v) for v in np.percentile(samples[:, i], [2.5, 97.5])]
          for i, name in enumerate(SAMPLE_NAMES)} if len(samples) else None
    law = fit.law_budgets
    top = max(b.C for b in law)
    return {
        "method": "isoflop (Chinchilla Method 2, a window per budget) + L_opt(C) power law",
        "laws": {"N_opt": "k_n * C^a", "D_opt": "k_d * C^b", "L_opt": "k_L * C^e_L"},
        **dict(zip(SAMPLE_NAMES, map(float, point), strict=True)),
        "ci": ci,
        "budgets": [{"C": b.C, "N_opt": b.N_opt, "D_opt": b.D_opt, "loss_opt": b.loss_opt,
                     "tokens_per_param": b.tokens_per_param, "n_points": len(b.sizes),
                     "inside_range": b.edge is None} for b in law],
        "dropped": [{"C": b.C, "n_points": len(b.sizes), "reason": b.reason}
                    for b in fit.budgets if not b.in_law],
        "largest_budget": top,
        "tokens_per_param": {
            "per_budget": {f"{b.C:.4g}": b.tokens_per_param for b in law},
            "at_largest_budget": float(fit.d_opt(top) / fit.n_opt(top)),
            "published": list(PUBLISHED_TOKENS_PER_PARAM),
        },
        "noise_sigma": noise["sigma"],
        # how well the loss law has extrapolated on the study's own budgets (the recipe's error)
        "extrapolation_backtest": extrapolation.summary(fit, points, point_noise, window,
                                                        n_boot=min(n_boot, 200), seed=seed),
        "points": runs[["C", "N", "D", "loss"]].to_dict(orient="records"),
        "bootstrap": {"n": n_boot, "seed": seed, "n_failed": n_boot - len(samples),
                      "level": 0.95, "names": list(SAMPLE_NAMES),
                      "samples": [[float(f"{v:.7g}") for v in row] for row in samples]},
        "study": study,
    }


# -- 2. the recipe at a compute C ----------------------------------------------------------------
def _study_config(study: dict):
    return from_dict(StudyConfig, study)


def _counts(cfg, size):
    return model_counts(study.gpt_config(cfg, size), cfg.flops.convention)


def choose_shape(cfg, n_target: float, *, max_layers: int = 64, max_heads: int = 64):
    """A (n_layer, n_embd, n_head) near `n_target` non-embedding parameters, in the family of the
    ladder's largest size: its head width d_head (another of the ladder's when none is within
    N_TOLERANCE) and, among the shapes within tolerance, its width/depth ratio."""
    ladder = sorted(cfg.model.sizes, key=lambda s: _counts(cfg, s).N)
    # muP is defined from its base width up: a narrower shape would not build
    min_width = cfg.parametrization.base_width if cfg.parametrization.name == "mup" else 1
    ref = ladder[-1]
    ref_head, aspect = ref.n_embd // ref.n_head, ref.n_embd / ref.n_layer
    best, best_key = None, None
    for d_head in sorted({s.n_embd // s.n_head for s in ladder}):
        for n_layer in range(1, max_layers + 1):
            for n_head in range(1, max_heads + 1):
                size = SizeConfig(n_layer, n_head * d_head, n_head)
                if size.n_embd < min_width:
                    continue
                n = _counts(cfg, size).N
                if n > 2 * n_target and n_head > 1:
                    break  # N only grows with the width from here
                miss = abs(math.log(n / n_target))
                shape_miss = abs(math.log(size.n_embd / n_layer / aspect))
                if miss <= math.log1p(N_TOLERANCE):
                    key = (0, d_head != ref_head, shape_miss, miss)
                else:
                    key = (1, miss, d_head != ref_head, shape_miss)
                if best_key is None or key < best_key:
                    best, best_key = size, key
    return best


def _from_samples(samples: np.ndarray, fn) -> list[float]:
    if len(samples) == 0:
        return [float("nan"), float("nan")]
    values = fn(*(samples[:, i] for i in range(samples.shape[1])))
    return [float(v) for v in np.percentile(values, [2.5, 97.5])]


def make_recipe(compute_fit: dict, hparams_fit: dict | None, compute: float,
                downstream_fit: dict | None = None) -> dict:
    """The content of `results/recipe.json` at `compute` FLOPs; with `downstream_fit` (the
    sigmoid of `results/fits/downstream.json`) also the accuracy predicted from the loss."""
    from scalinglab.phases.hparams import law_at

    cfg = _study_config(compute_fit["study"])
    block = cfg.model.block_size
    smallest = min(cfg.model.sizes, key=lambda s: _counts(cfg, s).flops_per_token)
    one_step = _counts(cfg, smallest).flops_per_token * study.batch_tokens(cfg)
    if not compute >= one_step:
        raise UserError(f"--compute {compute:.3g}: below one optimizer step of the smallest model "
                        f"({study.size_label(smallest)}: {one_step:.3g} FLOPs)")
    f = compute_fit
    C = float(compute)
    s = np.asarray(f["bootstrap"]["samples"], float).reshape(-1, len(SAMPLE_NAMES))
    n_opt, d_opt = f["k_n"] * C ** f["a"], f["k_d"] * C ** f["b"]
    loss = f["k_L"] * C ** f["e_L"]
    shape = choose_shape(cfg, n_opt)
    counts = _counts(cfg, shape)
    if hparams_fit is None:
        lr = {"value": cfg.training.lr, "ci": None, "source": "study config training.lr"}
        batch = {"value": float(study.batch_tokens(cfg)), "ci": None,
                 "source": "study config training.batch_size"}
    else:
        lr = {**law_at(hparams_fit["laws"]["lr_vs_C"], C), "source": "hparams.json lr_vs_C"}
        batch = {**law_at(hparams_fit["laws"]["batch_vs_C"], C),
                 "source": "hparams.json batch_vs_C"}
        if not (math.isfinite(lr["value"]) and math.isfinite(batch["value"])):
            raise UserError("hparams.json: the LR or batch law has no fit "
                            f"({lr.get('error') or batch.get('error')})")
    batch_size = max(1, round(batch["value"] / block))
    tokens = C / counts.flops_per_token
    loss_ci = _from_samples(s, lambda kn, a, kd, b, kl, el: kl * C**el)
    backtest = f.get("extrapolation_backtest")  # absent from a fit made before it existed
    law_c = [b["C"] for b in f["budgets"]]
    form_error = extrapolation.systematic_error(backtest["rows"] if backtest else [],
                                                C / f["largest_budget"],
                                                math.log(max(law_c) / min(law_c)))
    steps = max(1, round(tokens / (batch_size * block)))
    return {
        "compute": C,
        "extrapolation": C / f["largest_budget"],
        "N": n_opt, "N_ci": _from_samples(s, lambda kn, a, kd, b, kl, el: kn * C**a),
        "D": d_opt, "D_ci": _from_samples(s, lambda kn, a, kd, b, kl, el: kd * C**b),
        "tokens_per_param": d_opt / n_opt,
        "tokens_per_param_ci": _from_samples(
            s, lambda kn, a, kd, b, kl, el: kd * C**b / (kn * C**a)),
        "predicted_loss": loss,
        "predicted_loss_ci": loss_ci,
        # the bootstrap interval holds the fitted budgets' noise; the range adds the error the
        # law made when the study carried it as far on its own budgets (phases.extrapolation)
        "extrapolation_error": form_error,
        "predicted_loss_range": extrapolation.predicted_range(
            loss, loss_ci, form_error["value"], f.get("noise_sigma")),
        "loss_law": f"L_opt = {f['k_L']:.5g} * C^{f['e_L']:.5g}",
        "shape": {"n_layer": shape.n_layer, "n_embd": shape.n_embd, "n_head": shape.n_head,
                  "N": counts.N, "N_total": counts.N_total,
                  "flops_per_token": counts.flops_per_token,
                  "tokens": steps * batch_size * block, "tokens_per_param": tokens / counts.N},
        "lr": lr["value"], "lr_ci": lr["ci"], "lr_source": lr["source"],
        "batch_tokens": batch_size * block, "batch_tokens_law": batch["value"],
        "batch_ci": batch["ci"], "batch_source": batch["source"], "batch_size": batch_size,
        "steps": steps,
        "schedule": study.schedule_name(cfg),
        "interval_level": 0.95,
        # LLaMA 3's two steps chained: compute -> loss (above) -> accuracy (the sigmoid)
        **({} if downstream_fit is None else downstream.recipe_prediction(
            downstream_fit, loss, loss_ci)),
    }


# -- 3. the validation run ------------------------------------------------------------------------
def fitted_budgets(cfg) -> list[float]:
    """Every budget the recipe's fits used: the IsoFLOP grid, and the LR x batch sweep when on."""
    budgets = list(cfg.isoflop.budgets)
    if cfg.hparams.enabled:
        budgets += list(cfg.hparams.budgets)
    return budgets


def validation_compute(cfg) -> float:
    return cfg.validation.compute_factor * max(fitted_budgets(cfg))


def validation_ids(cfg) -> tuple[str, str]:
    """(series id, label) of the validation run, known before the recipe exists."""
    label = study.budget_label(validation_compute(cfg))
    return f"{SERIES_PREFIX}-{label}", label


@dataclass(frozen=True)
class RecipeFiles:
    """The inputs of the make_recipe step (`Recipe.steps`)."""

    cfg: object

    def inputs(self, wildcards=None) -> dict:
        """The fits `recipe make` reads: hparams.json only when the LR x batch phase ran,
        downstream.json only when the runs were scored on the downstream task."""
        fits = {"compute_optimal": "results/fits/compute_optimal.json"}
        if self.cfg.hparams.enabled:
            fits["hparams"] = "results/fits/hparams.json"
        if self.cfg.downstream.enabled:
            fits["downstream"] = "results/fits/downstream.json"
        return fits


def validation_spec(cfg, recipe: dict, train_tokens: int | None = None) -> dict:
    """The spec file of the validation run (`RunSpec.to_dict`, which the `validation-spec` verb
    writes): the recipe's shape, LR, batch and compute."""
    shape = recipe["shape"]
    size = SizeConfig(shape["n_layer"], shape["n_embd"], shape["n_head"])
    steps = int(recipe["steps"])
    run_cfg = phase_runs.run_config(cfg, size=size, lr=float(recipe["lr"]),
                                    batch_size=int(recipe["batch_size"]),
                                    eval_every=max(1, steps // 10))
    sid, label = validation_ids(cfg)
    key = "validation.compute_factor"
    if run_cfg.schedule.kind == "cosine":
        start = 0
    else:
        start = phase_runs.wsd_decay_start(run_cfg, steps, key, f"{sid}_{label}")
    row = phase_runs.branch_row(run_cfg, phase=PHASE, series_id=sid, label=label, size=size,
                                steps=steps, decay_start=start, C=float(recipe["compute"]))
    if train_tokens and row["D"] / train_tokens > cfg.isoflop.max_epochs:
        raise UserError(f"{key}: the validation run needs {row['D']:,} tokens = "
                        f"{row['D'] / train_tokens:.1f} epochs of the {train_tokens:,} training "
                        f"tokens (limit isoflop.max_epochs={cfg.isoflop.max_epochs:g})")
    return study.series_spec(run_cfg, phase_runs.finish([row]), sid).to_dict()


def validate(recipe: dict, record: dict) -> dict:
    """The content of `results/fits/validation.json`: prediction against the run's loss."""
    actual = record.get("final_val_loss")
    actual = float("nan") if actual is None else float(actual)
    predicted = float(recipe["predicted_loss"])
    low, high = recipe["predicted_loss_ci"]
    spec = record["spec"]
    return {
        "compute": recipe["compute"],
        "extrapolation": recipe["extrapolation"],
        "predicted_loss": predicted,
        "predicted_loss_ci": [low, high],
        "interval_level": recipe["interval_level"],
        "actual_loss": actual,
        "relative_error": (actual - predicted) / predicted,
        "abs_relative_error": abs(actual - predicted) / predicted,
        "inside_interval": bool(low <= actual <= high),
        **extrapolation.range_check(recipe, actual),
        "run_id": record["run_id"],
        "N": spec["N"], "N_recipe": recipe["N"], "D": record["D"],
        "shape": {k: spec["model"][k] for k in ("n_layer", "n_embd", "n_head")},
        "lr": spec["training"]["lr"],
        "batch_tokens": spec["training"]["batch_size"] * spec["model"]["block_size"],
        "wall_seconds": record.get("wall_seconds"),
        "device": record.get("device"),
        **downstream.validation_check(recipe, record),
    }


# -- the phase, on the shared abstraction (scalinglab.phases.base) ----------------------------
COMPUTE_OPTIMAL = "results/fits/compute_optimal.json"
RECIPE = "results/recipe.json"


def fits_dir(wildcards, input) -> str:
    """The folder of the fits `recipe make` reads, from its inputs (a param function, so that the
    rule names no path its inputs do not give)."""
    return str(Path(input.fits[0]).parent)


@dataclass(frozen=True)
class Recipe(Phase):
    name: str = "recipe"

    def targets(self, cfg):
        return [COMPUTE_OPTIMAL, RECIPE]

    def steps(self, cfg, groups):
        return [
            Step("fit_compute_optimal", "recipe fit --runs {input.runs} --config {input.spec}"
                 " --out {output.fit}",
                 inputs={"runs": "results/metrics/runs.csv", "spec": STUDY_SPEC},
                 outputs={"fit": COMPUTE_OPTIMAL}),
            # the LR and batch from the LR x batch laws when that phase ran, else the config's
            Step("make_recipe", "recipe make --fits {params.fits} --compute {params.compute}"
                 " --hparams {params.hparams} --out {output.recipe}",
                 inputs={"fits": list(RecipeFiles(cfg).inputs().values())},
                 outputs={"recipe": RECIPE},
                 params={"fits": fits_dir, "compute": validation_compute(cfg),
                         "hparams": "fits" if cfg.hparams.enabled else "config"}),
        ]


@dataclass(frozen=True)
class Validation(Phase):
    name: str = PHASE
    section: str = "validation"

    def groups(self, cfg):
        series, label = validation_ids(cfg)
        table = pd.DataFrame([{"series_id": series, "label": label, "reason": ""}])
        # the last training job of the study: it can have both cores of a small machine
        return [TrainingGroup(self.name, f"results/runs/{self.name}",
                              f"results/specs/{self.name}", table, None, threads=2)]

    def targets(self, cfg):
        if not self.enabled(cfg):
            return []
        return ["results/fits/validation.json", "results/figures/prediction.png"]

    def steps(self, cfg, groups):
        # the run's spec comes from the recipe, so a job writes it; the shared rules train it
        series, label = validation_ids(cfg)
        return [
            Step("validation_spec", "validation spec --config {input.spec} --recipe"
                 " {input.recipe} --meta {input.meta} --out {output.spec}",
                 inputs={"spec": STUDY_SPEC, "recipe": RECIPE, "meta": f"{TOKENS_DIR}/meta.json"},
                 outputs={"spec": f"results/specs/{self.name}/{series}.json"}),
            Step("fit_validation", "validation fit --recipe {input.recipe} --run {input.run}"
                 " --fit {input.fit} --out {output.fit} --figure {output.figure}",
                 inputs={"recipe": RECIPE, "fit": COMPUTE_OPTIMAL,
                         "run": f"results/runs/{self.name}/{series}/{label}/run.json"},
                 outputs={"fit": "results/fits/validation.json"},
                 figures={"figure": ("results/figures/prediction.png", "prediction.rst",
                                     "Recipe")}),
        ]

    def summary(self, cfg):
        if not self.enabled(cfg):
            return []
        return [f"validation: one run at {validation_compute(cfg):.3g} FLOPs "
                f"({cfg.validation.compute_factor:g}x the largest fitted budget)"]
